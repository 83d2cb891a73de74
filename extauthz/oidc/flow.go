package oidc

import (
	"context"
	"fmt"
	"github.com/gatehouse-proxy/gatehouse/internal/store"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// Request is what the login flow needs of one ext_authz Check.
type Request struct {
	Method string
	// Host is :authority as Envoy saw it.
	Host string
	// Path is :path, query included.
	Path string
	// Header holds the request headers with lower-case names, as Envoy
	// sends them (repeated headers joined).
	Header map[string]string
	// Body is the request body when Envoy forwards it (only the
	// back-channel logout path reads it).
	Body []byte
}

func (r *Request) header(name string) string { return r.Header[name] }

// Response is an answer the flow gives instead of a policy decision:
// a redirect, an error page, or the back-channel logout result.
type Response struct {
	Status int
	// Header may repeat Set-Cookie.
	Header http.Header
	Body   string
}

// Flow is the browser login of one configuration. It is safe for
// concurrent use.
type Flow struct {
	cfg       Config
	providers []*provider
	byName    map[string]*provider
	seal      *sealer

	http    *http.Client
	log     *slog.Logger
	now     func() time.Time
	revoked RevocationStore

	usedStates *ttlCache[struct{}]
	usedJTIs   *ttlCache[struct{}]
	refreshed  *ttlCache[refreshResult]
	flights    singleflight.Group

	// once, when set, runs each refresh once across the replicas sharing
	// it; results travel sealed with the cookie keys (shared).
	once   OnceRunner
	shared *store.Sealer
	// claims, when set, makes login states and logout-token jtis one-time
	// across the replicas sharing it, not only on this one.
	claims Claimer

	reg      prometheus.Registerer
	refreshN *prometheus.CounterVec // nil without WithRegisterer
}

// Option configures a Flow.
type Option func(*Flow)

// WithLogger sets the logger (default slog.Default()). Tokens, codes and
// cookie values are never logged.
func WithLogger(l *slog.Logger) Option { return func(f *Flow) { f.log = l } }

// WithClock sets the clock used for every expiry decision, ID token
// verification included (default time.Now).
func WithClock(now func() time.Time) Option { return func(f *Flow) { f.now = now } }

// WithHTTPClient sets the client for discovery, JWKS, token and refresh
// requests (default: a client with a 10s timeout).
func WithHTTPClient(c *http.Client) Option { return func(f *Flow) { f.http = c } }

// WithRevocationStore shares logouts with other replicas (default: a
// store.LocalRevocations of 100000 entries).
func WithRevocationStore(s RevocationStore) Option { return func(f *Flow) { f.revoked = s } }

// WithRegisterer registers the flow's metrics with reg (default: none):
// gatehouse_oidc_refresh_grants_total counts refresh_token grants sent to
// the IdPs, by provider and result, which is how one sees that a fleet
// refreshes each session once.
func WithRegisterer(reg prometheus.Registerer) Option { return func(f *Flow) { f.reg = reg } }

// OnceRunner runs a function once per key across replicas and hands its
// bytes to every caller; internal/store's Store implements it.
type OnceRunner interface {
	Once(ctx context.Context, key string, ttl time.Duration, fn func(context.Context) ([]byte, error)) ([]byte, error)
}

// WithSharedRefresh makes the refresh of one session happen once across
// every replica sharing r (the Redis store), not once per replica: refresh
// tokens are often single-use, so a second refresh of the same token at
// the IdP can end the session. The new session travels through r sealed
// with the cookie keys, which every replica must share. Without it (or
// with r nil) refreshes are shared within this process only.
func WithSharedRefresh(r OnceRunner) Option { return func(f *Flow) { f.once = r } }

// Claimer makes a value usable once across replicas; internal/store's
// Store implements it (SET NX in Redis).
type Claimer interface {
	Claim(ctx context.Context, key string, ttl time.Duration) (first bool, err error)
}

// WithSharedClaims makes a login's state and a back-channel logout token's
// jti one-time across every replica sharing c, not once per replica: a
// callback or logout token replayed to another replica is refused there
// too. This replica's own bounded sets are checked first either way. When
// c fails (Redis unreachable) a login callback fails closed (503, the user
// starts again) while a logout token is still honoured on this replica's
// word: refusing it would leave the session alive.
func WithSharedClaims(c Claimer) Option { return func(f *Flow) { f.claims = c } }

// firstUse reports whether key (in namespace kind) is used for the first
// time: on this replica, then, with shared claims, on any replica. err is
// set only when the shared answer is unknown; first is then this
// replica's answer.
func (f *Flow) firstUse(ctx context.Context, local *ttlCache[struct{}], kind, key string, ttl time.Duration) (first bool, err error) {
	if !local.add(key, struct{}{}, ttl) {
		return false, nil
	}
	if f.claims == nil {
		return true, nil
	}
	first, err = f.claims.Claim(ctx, "oidc:"+kind+"|"+key, ttl)
	if err != nil {
		return true, fmt.Errorf("shared %s claim: %w", kind, err)
	}
	return first, nil
}

// Bounds of the in-memory sets.
const (
	maxUsedStates     = 100_000
	maxUsedJTIs       = 100_000
	maxRefreshResults = 10_000
	// refreshShare is how long a refresh result serves requests still
	// carrying the old cookie (in flight when the new one was set).
	refreshShare = 30 * time.Second
	// transientRetry is how long a failed refresh (IdP unreachable) is not
	// retried for the same session.
	transientRetry = 5 * time.Second
	refreshTimeout = 10 * time.Second
	// maxLogoutTokenAge bounds how old a back-channel logout token's iat may be.
	maxLogoutTokenAge = 5 * time.Minute
	maxTokenBytes     = 16 << 10
)

// New checks cfg and returns its Flow. It does not contact the IdPs:
// discovery happens on first use and is retried until it succeeds, so an
// IdP that is down at start delays logins, not Gatehouse.
func New(cfg Config, opts ...Option) (*Flow, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("oidc config: %w", err)
	}
	cfg = cfg.withDefaults()
	f := &Flow{cfg: cfg, byName: map[string]*provider{}, log: slog.Default(), now: time.Now,
		http: &http.Client{Timeout: 10 * time.Second}}
	for _, o := range opts {
		o(f)
	}
	if f.revoked == nil {
		f.revoked = store.NewLocalRevocations(0, f.now)
	}
	seal, err := newSealer(cfg.CookieKeys)
	if err != nil {
		return nil, err
	}
	f.seal = seal
	if f.reg != nil {
		f.refreshN = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "oidc", Name: "refresh_grants_total",
			Help: "refresh_token grants sent to the IdP, by provider and result (ok, refused, error).",
		}, []string{"provider", "result"})
		if err := f.reg.Register(f.refreshN); err != nil {
			return nil, fmt.Errorf("oidc metrics: %w", err)
		}
	}
	if f.once != nil {
		if f.shared, err = store.NewSealer(cfg.CookieKeys...); err != nil {
			return nil, err
		}
	}
	f.usedStates = newTTLCache[struct{}](maxUsedStates, f.now)
	f.usedJTIs = newTTLCache[struct{}](maxUsedJTIs, f.now)
	f.refreshed = newTTLCache[refreshResult](maxRefreshResults, f.now)
	for _, pc := range cfg.Providers {
		secret, err := pc.readSecret()
		if err != nil {
			return nil, err
		}
		host, _ := externalHost(pc.ExternalURL) // validated
		p := &provider{cfg: pc, host: host, secret: secret, flow: f,
			redirectURI: strings.TrimSuffix(pc.ExternalURL, "/") + cfg.CallbackPath}
		f.providers = append(f.providers, p)
		f.byName[pc.Name] = p
	}
	return f, nil
}

// provider is one configured IdP client and its discovered metadata.
type provider struct {
	cfg         ProviderConfig
	host        string // normalized external host
	redirectURI string
	secret      string
	flow        *Flow

	disc     atomic.Pointer[discovered]
	mu       sync.Mutex // serializes discovery
	failedAt time.Time
	failErr  error
}

// discovered is what the discovery document gave us.
type discovered struct {
	verifier   *oidc.IDTokenVerifier
	oauth      *oauth2.Config
	endSession string
	// issParam: the IdP sends iss in authorization responses (RFC 9207).
	issParam bool
}

// discoveryBackoff spaces discovery attempts against an unreachable IdP.
const discoveryBackoff = time.Second

func (p *provider) discover(ctx context.Context) (*discovered, error) {
	if d := p.disc.Load(); d != nil {
		return d, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if d := p.disc.Load(); d != nil {
		return d, nil
	}
	if p.failErr != nil && time.Since(p.failedAt) < discoveryBackoff {
		return nil, p.failErr
	}
	f := p.flow
	op, err := oidc.NewProvider(oidc.ClientContext(ctx, f.http), p.cfg.Issuer)
	if err != nil {
		p.failedAt, p.failErr = time.Now(), fmt.Errorf("provider %s: discovery: %w", p.cfg.Name, err)
		return nil, p.failErr
	}
	var meta struct {
		EndSession  string   `json:"end_session_endpoint"`
		IssParam    bool     `json:"authorization_response_iss_parameter_supported"`
		AuthMethods []string `json:"token_endpoint_auth_methods_supported"`
	}
	_ = op.Claims(&meta) // optional metadata
	ep := op.Endpoint()
	if ep.AuthStyle, err = tokenAuthStyle(p.secret != "", meta.AuthMethods); err != nil {
		p.failedAt, p.failErr = time.Now(), fmt.Errorf("provider %s: discovery: %w", p.cfg.Name, err)
		return nil, p.failErr
	}
	d := &discovered{
		verifier:   op.Verifier(&oidc.Config{ClientID: p.cfg.ClientID, Now: f.now}),
		endSession: meta.EndSession,
		issParam:   meta.IssParam,
		oauth: &oauth2.Config{
			ClientID: p.cfg.ClientID, ClientSecret: p.secret, Endpoint: ep,
			RedirectURL: p.redirectURI, Scopes: slices.Clone(p.cfg.Scopes),
		},
	}
	p.disc.Store(d)
	p.failErr = nil
	f.log.Info("oidc provider discovered", "provider", p.cfg.Name, "issuer", p.cfg.Issuer,
		"end_session", d.endSession != "")
	return d, nil
}

// tokenAuthStyle picks, once, how the client authenticates at the token
// endpoint, from the IdP's token_endpoint_auth_methods_supported (absent,
// OpenID Connect Discovery's default is client_secret_basic). Leaving it to
// oauth2's auto-detection would retry a refused request the other way,
// posting a refused authorization code a second time. A public client
// sends its client_id in the form; PKCE proves the rest.
func tokenAuthStyle(confidential bool, methods []string) (oauth2.AuthStyle, error) {
	switch {
	case !confidential:
		return oauth2.AuthStyleInParams, nil
	case len(methods) == 0 || slices.Contains(methods, "client_secret_basic"):
		return oauth2.AuthStyleInHeader, nil
	case slices.Contains(methods, "client_secret_post"):
		return oauth2.AuthStyleInParams, nil
	}
	return oauth2.AuthStyleAutoDetect, fmt.Errorf("token_endpoint_auth_methods_supported %q has neither client_secret_basic nor client_secret_post, the methods a client secret can use", methods)
}

// oauthContext makes the oauth2 package use our HTTP client.
func (f *Flow) oauthContext(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, f.http)
}

// route picks the provider for a request: its external host, then the
// longest matching path prefix. nil when no provider covers the request.
func (f *Flow) route(host, path string) *provider {
	host = normalizeHost(host, "https")
	var best *provider
	bestLen := -1
	for _, p := range f.providers {
		if p.host != host {
			continue
		}
		for _, prefix := range p.cfg.PathPrefixes {
			if pathHasPrefix(path, prefix) && len(prefix) > bestLen {
				best, bestLen = p, len(prefix)
			}
		}
	}
	return best
}

// hostProviders are the providers whose external host is host.
func (f *Flow) hostProviders(host string) []*provider {
	host = normalizeHost(host, "https")
	var out []*provider
	for _, p := range f.providers {
		if p.host == host {
			out = append(out, p)
		}
	}
	return out
}

// pathHasPrefix matches whole segments: "/app" covers "/app" and "/app/x",
// not "/apple".
func pathHasPrefix(path, prefix string) bool {
	if prefix == "/" || path == prefix {
		return true
	}
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(path, prefix)
	}
	return strings.HasPrefix(path, prefix+"/")
}

// Intercept answers the requests the flow owns — the callback, logout and
// back-channel logout paths on a configured host. ok is false for every
// other request.
func (f *Flow) Intercept(ctx context.Context, r *Request) (resp *Response, ok bool) {
	path, query, _ := strings.Cut(r.Path, "?")
	switch path {
	case f.cfg.CallbackPath, f.cfg.LogoutPath, f.cfg.BackChannelLogoutPath:
	default:
		return nil, false
	}
	if len(f.hostProviders(r.Host)) == 0 {
		return nil, false // not our host: policy decides as for any path
	}
	switch path {
	case f.cfg.CallbackPath:
		return f.callback(ctx, r, query), true
	case f.cfg.LogoutPath:
		return f.logout(ctx, r), true
	default:
		return f.backChannelViaCheck(ctx, r), true
	}
}

// browserLike reports whether a denied request should be sent to log in:
// a top-level page load, not an API call. Anything with credentials of its
// own, a script's request or a non-idempotent method keeps its 401.
func browserLike(r *Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if _, ok := r.Header["authorization"]; ok {
		return false
	}
	if strings.EqualFold(r.header("x-requested-with"), "XMLHttpRequest") {
		return false
	}
	if m := r.header("sec-fetch-mode"); m != "" && m != "navigate" {
		return false
	}
	return strings.Contains(strings.ToLower(r.header("accept")), "text/html")
}

// redirect is a 302 that no cache keeps.
func redirect(location string, cookies []string) *Response {
	h := http.Header{}
	h.Set("Location", location)
	h.Set("Cache-Control", "no-store")
	for _, c := range cookies {
		h.Add("Set-Cookie", c)
	}
	return &Response{Status: http.StatusFound, Header: h}
}

// errorPage is a small plain-text error; msg is for the user and names no
// internal detail.
func errorPage(status int, msg string, cookies []string) *Response {
	h := http.Header{}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	for _, c := range cookies {
		h.Add("Set-Cookie", c)
	}
	return &Response{Status: status, Header: h, Body: msg + "\n"}
}
