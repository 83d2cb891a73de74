// Package jwt verifies bearer JWTs for the ext_authz server: strict compact
// JWS parsing (RFC 7515, RFC 8725), routing by the unverified iss to a
// configured issuer, key selection by header — x5c (embedded chain rooted in
// the issuer's CAs), x5t/x5t#S256 (local trust store), kid (JWKS via OIDC
// discovery or jwks_uri) — signature verification with jwx, registered-claim
// validation, and a bounded cache of verified tokens.
//
// Prepare once with NewVerifier, then call Verify concurrently.
package jwt

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

// Per-issuer defaults and limits.
const (
	DefaultClockSkew     = 60 * time.Second
	DefaultMaxTokenBytes = 16 << 10
	maxClockSkew         = 10 * time.Minute
	maxMaxTokenBytes     = 1 << 20
	defaultRolesClaim    = "roles"
	defaultGroupsClaim   = "groups"
)

// IssuerConfig describes one trusted token issuer. At least one key source
// (JWKS, X5T, X5C) must be enabled.
type IssuerConfig struct {
	// Issuer must equal the token's iss exactly.
	Issuer string
	// Audiences: the token's aud must contain at least one. Required.
	Audiences []string
	// Kind says whether tokens from this issuer identify users (default) or
	// services.
	Kind identity.Kind
	// Type, when set, is the typ header every token must carry (RFC 8725
	// §3.11 explicit typing: a token minted for another purpose by the same
	// keys is refused). Compared case-insensitively, "application/" optional.
	Type string
	// Algorithms is the allow-list for the header alg; default RS256, ES256.
	// Only RS256/384/512, PS256/384/512, ES256/384/512 and EdDSA (or Ed25519)
	// are accepted; "none" and HMAC can never be configured.
	Algorithms []string

	// JWKS strategy (tokens with kid): set JWKSURI, or DiscoveryURL (the
	// issuer URL or its full /.well-known/openid-configuration URL) to read
	// jwks_uri from OIDC discovery. https is required except for loopback.
	JWKSURI      string
	DiscoveryURL string
	// X5T strategy (tokens with x5t or x5t#S256): keys come from TrustStore,
	// or the Verifier's WithTrustStore store when nil.
	X5T        bool
	TrustStore *TrustStore
	// X5C strategy (tokens with x5c): the embedded chain must lead to one of
	// these CAs. System roots are never used. Empty disables x5c.
	TrustedCAs []*x509.Certificate

	// ClockSkew tolerated for exp, nbf and iat; 0 means DefaultClockSkew.
	ClockSkew time.Duration
	// MaxTokenBytes caps the token length; 0 means DefaultMaxTokenBytes.
	MaxTokenBytes int
	// RolesClaim and GroupsClaim name the claims (a dotted path is allowed,
	// e.g. "realm_access.roles") copied to Result; defaults "roles", "groups".
	RolesClaim  string
	GroupsClaim string
}

// issuer is a validated IssuerConfig ready for use.
type issuer struct {
	cfg      IssuerConfig
	algs     map[string]bool
	skew     time.Duration
	maxBytes int
	jwks     *jwksSource    // nil when JWKS is not enabled
	trust    *TrustStore    // nil when X5T is not enabled
	roots    *x509.CertPool // nil when X5C is not enabled
}

// Result is a verified token. Treat it as read-only: cached results are
// shared between callers. Numeric claims in Claims are json.Number.
type Result struct {
	Issuer    string
	Subject   string
	Audience  []string
	Expiry    time.Time
	IssuedAt  time.Time // zero when the token has no iat
	NotBefore time.Time // zero when the token has no nbf
	Email     string
	Roles     []string
	Groups    []string
	Claims    map[string]any
	Kind      identity.Kind
	Method    identity.Method
	Algorithm string
	// KeyID is the kid (JWKS), or the base64url SHA-256 thumbprint of the
	// signing certificate (x5t, x5c).
	KeyID string
	// Certificate is the signing certificate for x5t and x5c; nil for JWKS.
	Certificate *x509.Certificate
	// certValidUntil is when the signing certificate (with its chain, for
	// x5c) stops being valid; zero for JWKS. The result cache honours it.
	certValidUntil time.Time
}

// Identity converts the result into the principal handed to policy.
func (r *Result) Identity() identity.Identity {
	return identity.Identity{
		Kind:    r.Kind,
		Subject: r.Subject,
		Issuer:  r.Issuer,
		Method:  r.Method,
		Email:   r.Email,
		Roles:   r.Roles,
		Groups:  r.Groups,
		Expiry:  r.Expiry,
		Claims:  r.Claims,
	}
}

// Option configures NewVerifier.
type Option func(*options)

type options struct {
	client     *http.Client
	logger     *slog.Logger
	now        func() time.Time
	trust      *TrustStore
	cacheSize  int
	cacheTTL   time.Duration
	noPrefetch bool
	observe    func(issuer string, err error)
}

// WithFetchObserver calls fn after every JWKS fetch attempt (err nil on
// success), for metrics. fn must not block.
func WithFetchObserver(fn func(issuer string, err error)) Option {
	return func(o *options) { o.observe = fn }
}

// WithHTTPClient sets the client for discovery and JWKS fetches (default: a
// client with a 10 s timeout). Redirects are limited and must stay on https.
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) {
		if c != nil {
			o.client = c
		}
	}
}

// WithLogger sets the logger (default slog.Default()). Tokens are never logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithClock sets the time source for claim checks, certificate validity,
// the cache and the unknown-kid rate limit (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// WithTrustStore sets the trust store used by issuers with X5T enabled that
// have no store of their own.
func WithTrustStore(t *TrustStore) Option {
	return func(o *options) { o.trust = t }
}

// WithCache sizes the verified-token cache (default 10,000 entries, entries
// kept at most 5 minutes and never past exp). size <= 0 disables it.
func WithCache(size int, maxTTL time.Duration) Option {
	return func(o *options) {
		o.cacheSize = size
		if maxTTL > 0 {
			o.cacheTTL = maxTTL
		}
	}
}

// WithoutPrefetch skips the initial JWKS fetch in NewVerifier; keys are then
// fetched on first use.
func WithoutPrefetch() Option {
	return func(o *options) { o.noPrefetch = true }
}

// Verifier verifies bearer tokens against a fixed set of issuers. It is safe
// for concurrent use. Close stops its background JWKS refreshes.
type Verifier struct {
	issuers  map[string]*issuer
	maxBytes int // largest per-issuer limit: checked before anything else
	now      func() time.Time
	logger   *slog.Logger
	cache    *resultCache

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// NewVerifier validates the configuration, tries a first JWKS fetch for every
// JWKS issuer (bounded by ctx and a 10 s timeout; failures are logged and
// retried, not fatal) and starts background refreshes. Call Close when done.
func NewVerifier(ctx context.Context, issuers []IssuerConfig, opts ...Option) (*Verifier, error) {
	o := options{
		logger:    slog.Default(),
		now:       time.Now,
		cacheSize: defaultCacheSize,
		cacheTTL:  defaultCacheMaxTTL,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.client == nil {
		o.client = &http.Client{Timeout: jwksFetchTimeout}
	}
	client := safeClient(o.client)
	if len(issuers) == 0 {
		return nil, errors.New("jwt: no issuers configured")
	}

	bgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v := &Verifier{
		issuers: make(map[string]*issuer, len(issuers)),
		now:     o.now,
		logger:  o.logger,
		cache:   newResultCache(o.cacheSize, o.cacheTTL),
		cancel:  cancel,
	}
	for i := range issuers {
		ic, err := prepareIssuer(issuers[i], o.trust)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("jwt: issuers[%d] (%q): %w", i, issuers[i].Issuer, err)
		}
		if _, dup := v.issuers[ic.cfg.Issuer]; dup {
			cancel()
			return nil, fmt.Errorf("jwt: issuers[%d]: issuer %q configured twice", i, ic.cfg.Issuer)
		}
		if ic.cfg.JWKSURI != "" || ic.cfg.DiscoveryURL != "" {
			ic.jwks = newJWKSSource(bgCtx, &ic.cfg, client, o.logger, o.now)
			ic.jwks.observe = o.observe
		}
		v.issuers[ic.cfg.Issuer] = ic
		v.maxBytes = max(v.maxBytes, ic.maxBytes)
	}

	var starts []<-chan struct{}
	for _, ic := range v.issuers {
		if ic.jwks == nil {
			continue
		}
		if !o.noPrefetch {
			if done, ok := ic.jwks.startFetch(true); ok {
				starts = append(starts, done)
			}
		}
		v.wg.Go(func() { ic.jwks.run(bgCtx) })
	}
	for _, done := range starts {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	return v, nil
}

func prepareIssuer(c IssuerConfig, defaultTrust *TrustStore) (*issuer, error) {
	if c.Issuer == "" {
		return nil, errors.New("Issuer is required")
	}
	if len(c.Audiences) == 0 || slices.Contains(c.Audiences, "") {
		return nil, errors.New("Audiences must list at least one non-empty audience")
	}
	switch c.Kind {
	case "":
		c.Kind = identity.KindUser
	case identity.KindUser, identity.KindService:
	default:
		return nil, fmt.Errorf("Kind %q: must be %q or %q", c.Kind, identity.KindUser, identity.KindService)
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{"RS256", "ES256"}
	}
	ic := &issuer{algs: make(map[string]bool, len(c.Algorithms))}
	for _, a := range c.Algorithms {
		if _, ok := algorithmSpec(a); !ok {
			return nil, fmt.Errorf("Algorithms: %q is not a supported asymmetric JWS algorithm", a)
		}
		ic.algs[a] = true
	}
	switch {
	case c.ClockSkew == 0:
		ic.skew = DefaultClockSkew
	case c.ClockSkew < 0 || c.ClockSkew > maxClockSkew:
		return nil, fmt.Errorf("ClockSkew %s: must be between 0 and %s", c.ClockSkew, maxClockSkew)
	default:
		ic.skew = c.ClockSkew
	}
	switch {
	case c.MaxTokenBytes == 0:
		ic.maxBytes = DefaultMaxTokenBytes
	case c.MaxTokenBytes < 0 || c.MaxTokenBytes > maxMaxTokenBytes:
		return nil, fmt.Errorf("MaxTokenBytes %d: must be between 1 and %d", c.MaxTokenBytes, maxMaxTokenBytes)
	default:
		ic.maxBytes = c.MaxTokenBytes
	}
	if c.RolesClaim == "" {
		c.RolesClaim = defaultRolesClaim
	}
	if c.GroupsClaim == "" {
		c.GroupsClaim = defaultGroupsClaim
	}

	if c.JWKSURI != "" && c.DiscoveryURL != "" {
		return nil, errors.New("set either JWKSURI or DiscoveryURL, not both")
	}
	for field, u := range map[string]string{"JWKSURI": c.JWKSURI, "DiscoveryURL": c.DiscoveryURL} {
		if u == "" {
			continue
		}
		if err := checkFetchURL(u); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
	}
	if c.X5T {
		ic.trust = c.TrustStore
		if ic.trust == nil {
			ic.trust = defaultTrust
		}
		if ic.trust == nil {
			return nil, errors.New("X5T is enabled but no TrustStore is configured (IssuerConfig.TrustStore or WithTrustStore)")
		}
	}
	if len(c.TrustedCAs) > 0 {
		ic.roots = x509.NewCertPool()
		for i, ca := range c.TrustedCAs {
			if ca == nil || !ca.IsCA {
				return nil, fmt.Errorf("TrustedCAs[%d]: not a CA certificate", i)
			}
			ic.roots.AddCert(ca)
		}
	}
	if c.JWKSURI == "" && c.DiscoveryURL == "" && !c.X5T && ic.roots == nil {
		return nil, errors.New("no key source: set JWKSURI or DiscoveryURL, X5T, or TrustedCAs")
	}
	c.Audiences = slices.Clone(c.Audiences)
	c.Algorithms = slices.Clone(c.Algorithms)
	c.TrustedCAs = slices.Clone(c.TrustedCAs)
	ic.cfg = c
	return ic, nil
}

// Verify checks token (the bare JWT, without "Bearer ") and returns the
// verified result, or an *Error whose Reason says why not. A token verified
// before and still within its exp (and the cache TTL) is answered from the
// cache without re-verification.
func (v *Verifier) Verify(ctx context.Context, token string) (*Result, error) {
	if v.closed.Load() {
		return nil, fail(ReasonVerifierClosed, "")
	}
	if len(token) > v.maxBytes {
		return nil, fail(ReasonTooLarge, "token is %d bytes, limit %d", len(token), v.maxBytes)
	}
	now := v.now()
	var key cacheKey
	if v.cache != nil {
		key = cacheKeyOf(token)
		if res, ok := v.cache.get(&key, now); ok {
			return res, nil
		}
	}
	res, err := v.verify(ctx, token, now)
	if err != nil {
		return nil, err
	}
	if ic := v.issuers[res.Issuer]; v.cache != nil && ic != nil {
		v.cache.put(&key, res, now, ic.skew)
	}
	return res, nil
}

// stackHashBytes is the longest token cacheKeyOf hashes from a stack copy;
// real tokens are well under it.
const stackHashBytes = 2048

// cacheKeyOf is the cache key of token: its SHA-256, so the cache never
// holds the token, and comparing keys says nothing about a token's bytes.
// The common short token is copied to the stack for hashing instead of the
// heap.
func cacheKeyOf(token string) cacheKey {
	if len(token) <= stackHashBytes {
		var buf [stackHashBytes]byte
		return sha256.Sum256(append(buf[:0], token...))
	}
	return sha256.Sum256([]byte(token))
}

func (v *Verifier) verify(ctx context.Context, token string, now time.Time) (*Result, error) {
	c, err := parseCompact(token, v.maxBytes)
	if err != nil {
		return nil, err
	}
	// The payload is parsed before the signature is checked only to route
	// by iss; nothing else is believed until the signature verifies.
	claims, err := decodeStrictObject(c.Payload)
	if err != nil {
		return nil, annotate(err, "claims")
	}
	iss, _ := claims["iss"].(string)
	ic, ok := v.issuers[iss]
	if !ok {
		return nil, fail(ReasonUnknownIssuer, "iss is missing or not a configured issuer")
	}
	res, err := v.verifyForIssuer(ctx, ic, c, claims, len(token), now)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Issuer == "" {
			e.Issuer = ic.cfg.Issuer
		}
		return nil, err
	}
	return res, nil
}

func (v *Verifier) verifyForIssuer(ctx context.Context, ic *issuer, c *compactJWS, claims map[string]any, size int, now time.Time) (*Result, error) {
	if size > ic.maxBytes {
		return nil, fail(ReasonTooLarge, "token is %d bytes, limit %d", size, ic.maxBytes)
	}
	h := &c.Header
	if !ic.algs[h.Alg] {
		return nil, fail(ReasonAlgNotAllowed, "alg %s is not allowed for this issuer", h.Alg)
	}
	if ic.cfg.Type != "" && !sameMediaType(h.Typ, ic.cfg.Type) {
		return nil, fail(ReasonWrongType, "typ is not %s", ic.cfg.Type)
	}

	// Key selection by header, in order of specificity. A token carrying
	// several hints is judged by the first; the others are not consulted.
	var (
		pub    any
		method identity.Method
		keyID  string
		cert   *x509.Certificate
		until  time.Time // certificate validity, for the cache
	)
	switch {
	case h.X5C != nil:
		if ic.roots == nil {
			return nil, fail(ReasonStrategyDisabled, "x5c is not enabled for this issuer")
		}
		iat, _, err := numericDate(claims, "iat")
		if err != nil {
			return nil, err
		}
		leaf, validUntil, err := verifyX5C(h.X5C, ic.roots, now, iat)
		if err != nil {
			return nil, err
		}
		// When the header also carries thumbprints they must describe the leaf.
		if h.X5TS256 != nil || h.X5T != nil {
			if err := thumbprintsMatch(leaf, h); err != nil {
				return nil, err
			}
		}
		sum := sha256.Sum256(leaf.Raw)
		pub, method, keyID, cert, until = leaf.PublicKey, identity.MethodX5C, base64.RawURLEncoding.EncodeToString(sum[:]), leaf, validUntil
	case h.X5T != nil || h.X5TS256 != nil:
		if ic.trust == nil {
			return nil, fail(ReasonStrategyDisabled, "x5t is not enabled for this issuer")
		}
		tc, err := ic.trust.lookup(h.X5T, h.X5TS256, now)
		if err != nil {
			return nil, err
		}
		pub, method, keyID, cert, until = tc.cert.PublicKey, identity.MethodX5T, base64.RawURLEncoding.EncodeToString(tc.sha256[:]), tc.cert, tc.cert.NotAfter
	case h.Kid != "":
		if ic.jwks == nil {
			return nil, fail(ReasonStrategyDisabled, "JWKS is not enabled for this issuer")
		}
		e, err := ic.jwks.key(ctx, h.Kid)
		if err != nil {
			return nil, err
		}
		if err := e.usableFor(h.Alg); err != nil {
			return nil, err
		}
		pub, method, keyID = e.key, identity.MethodJWKS, h.Kid
	default:
		return nil, fail(ReasonMissingKID, "header has none of kid, x5t, x5t#S256, x5c")
	}

	if err := verifySignature(h.Alg, pub, c.SigningInput, c.Signature); err != nil {
		return nil, err
	}
	res, err := checkClaims(claims, ic, now)
	if err != nil {
		return nil, err
	}
	res.Method, res.KeyID, res.Certificate, res.Algorithm, res.certValidUntil = method, keyID, cert, h.Alg, until
	return res, nil
}

func thumbprintsMatch(leaf *x509.Certificate, h *joseHeader) error {
	if h.X5TS256 != nil {
		sum := sha256.Sum256(leaf.Raw)
		if string(sum[:]) != string(h.X5TS256) {
			return fail(ReasonUntrustedCert, "x5t#S256 does not match the x5c leaf")
		}
	}
	if h.X5T != nil {
		if !sha1Matches(leaf.Raw, h.X5T) {
			return fail(ReasonUntrustedCert, "x5t does not match the x5c leaf")
		}
	}
	return nil
}

// Refresh fetches every issuer's JWKS now, ignoring the unknown-kid rate
// limit, and waits for the fetches. Failures keep the last good sets and are
// returned joined.
func (v *Verifier) Refresh(ctx context.Context) error {
	var errs []error
	for _, ic := range v.issuers {
		if ic.jwks == nil {
			continue
		}
		done, ok := ic.jwks.startFetch(true)
		if !ok {
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		ic.jwks.mu.Lock()
		if err := ic.jwks.lastErr; err != nil {
			errs = append(errs, fmt.Errorf("issuer %q: %w", ic.cfg.Issuer, err))
		}
		ic.jwks.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Purge empties the verified-token cache, so the next Verify of every token
// re-checks signature and keys. Call it after trust store reloads if removed
// certificates must stop working before the cache TTL.
func (v *Verifier) Purge() {
	if v.cache != nil {
		v.cache.purge()
	}
}

// Close stops background refreshes and waits for them. Verify fails after
// Close.
func (v *Verifier) Close() error {
	if v.closed.Swap(true) {
		return nil
	}
	v.cancel()
	for _, ic := range v.issuers {
		if ic.jwks != nil {
			ic.jwks.stop()
		}
	}
	v.wg.Wait()
	return nil
}

// sameMediaType compares JOSE typ values: case-insensitively, with the
// "application/" prefix RFC 7515 §4.1.9 lets a typ leave out.
func sameMediaType(a, b string) bool {
	trim := func(s string) string {
		if len(s) > len("application/") && strings.EqualFold(s[:len("application/")], "application/") {
			return s[len("application/"):]
		}
		return s
	}
	return strings.EqualFold(trim(a), trim(b))
}
