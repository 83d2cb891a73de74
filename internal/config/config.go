// Package config is Gatehouse's configuration file: its schema, strict
// decoding (unknown keys are errors) and validation with file:line errors.
//
// One file describes a deployment. The ext_authz server reads the authz
// section; the xDS control plane reads the mesh section; `gatehouse serve`
// reads both. Packages that implement a part take the section they need, so
// the schema is defined once, here.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/store"
)

// Config is the whole file.
type Config struct {
	// Listen addresses of the servers in this process.
	Listen Listen `yaml:"listen"`
	// Authz configures the ext_authz server.
	Authz Authz `yaml:"authz"`
	// XDS configures the control plane's own ADS server.
	XDS XDS `yaml:"xds"`
	// Mesh declares proxies, services and routes for the xDS control plane.
	Mesh Mesh `yaml:"mesh"`
	// Log configures structured logging.
	Log Log `yaml:"log"`
	// Store is the state replicas share (revocations, refresh locks, fleet
	// certificates): in memory for one replica, Redis for several.
	Store store.Config `yaml:"store"`
	// Shutdown paces how the process leaves on SIGTERM or SIGINT.
	Shutdown Shutdown `yaml:"shutdown"`
}

// Shutdown is the drain on SIGTERM/SIGINT: /readyz fails at once while
// everything keeps serving for Delay, so endpoint updates reach kube-proxy
// and Envoy before the listeners close; then the gRPC servers stop, giving
// in-flight Checks up to Grace to finish.
type Shutdown struct {
	// Delay keeps serving after the signal. Default 0 (stop at once); on
	// Kubernetes a few seconds (the Helm chart sets 5s).
	Delay time.Duration `yaml:"delay"`
	// Grace bounds the graceful stop of the ext_authz server. Default 10s.
	Grace time.Duration `yaml:"grace"`
}

// Bounds of shutdown.delay and shutdown.grace.
const (
	MaxShutdownDelay = 5 * time.Minute
	MaxShutdownGrace = 5 * time.Minute
)

// CheckShutdownDelay reports what is wrong with d as shutdown.delay.
func CheckShutdownDelay(d time.Duration) error {
	if d < 0 || d > MaxShutdownDelay {
		return fmt.Errorf("must be between 0 and %s; got %s", MaxShutdownDelay, d)
	}
	return nil
}

// CheckShutdownGrace reports what is wrong with d as shutdown.grace.
func CheckShutdownGrace(d time.Duration) error {
	if d <= 0 || d > MaxShutdownGrace {
		return fmt.Errorf("must be above 0 and at most %s; got %s", MaxShutdownGrace, d)
	}
	return nil
}

// Listen holds the addresses servers bind.
type Listen struct {
	Authz string `yaml:"authz"` // gRPC ext_authz, default ":9001"
	XDS   string `yaml:"xds"`   // gRPC ADS, default ":18000"
	Admin string `yaml:"admin"` // HTTP admin/metrics, default "127.0.0.1:9901"
}

// XDS configures the ADS server.
type XDS struct {
	TLS XDSTLS `yaml:"tls"`
}

// XDSTLS secures ADS. Proxies receive their private keys over it, so
// anything beyond loopback should enable it.
type XDSTLS struct {
	// Enabled serves ADS over TLS 1.3 with a certificate Gatehouse issues
	// itself from its CA (spiffe://<trust_domain>/gatehouse/xds), rotated
	// like every other leaf.
	Enabled bool `yaml:"enabled"`
	// DNSNames are the names proxies dial, put on that certificate.
	// Default [localhost].
	DNSNames []string `yaml:"dns_names"`
	// ClientAuth is "require" (default): a proxy presents a certificate from
	// the CA (`gatehouse ca issue`) and may subscribe only as the node whose
	// SPIFFE id it carries. "none" accepts any client (not recommended).
	ClientAuth string `yaml:"client_auth"`
}

// Log selects log level and format.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error, default info
	Format string `yaml:"format"` // json|text, default json
}

// Authz configures the ext_authz server.
type Authz struct {
	// Policies is the Rego policy set.
	Policies Policies `yaml:"policies"`
	// Timeout bounds one Check, identity and policy included. Default 500ms.
	Timeout time.Duration `yaml:"timeout"`
	// JWT lists trusted token issuers.
	JWT JWT `yaml:"jwt"`
	// Headers controls what is sent to the upstream on allow.
	Headers Headers `yaml:"headers"`
	// MaxBodyBytes bounds the request body accepted into policy input.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// OIDC logs browsers in through an OpenID Connect provider.
	OIDC OIDC `yaml:"oidc"`
	// Assertion propagates the decided identity across service hops.
	Assertion Assertion `yaml:"assertion"`
}

// Assertion configures the Gatehouse assertion: on every allowed edge
// request ext_authz adds x-gatehouse-assertion, a short-lived ES256 JWS of
// the decided identity whose aud is the destination service's SPIFFE id;
// sidecar routes verify it and give policy input.on_behalf_of.
type Assertion struct {
	Enabled bool `yaml:"enabled"`
	// Issuer is the iss of assertions. Default https://gatehouse.<mesh.trust_domain>.
	Issuer string `yaml:"issuer"`
	// TTL is an assertion's lifetime, at most 60s. Default 30s.
	TTL time.Duration `yaml:"ttl"`
	// Rotation is how long a signing key signs before its successor takes
	// over; the previous key stays published until its last token expired.
	// Default 24h, at least 10m.
	Rotation time.Duration `yaml:"rotation"`
	// ClockSkew tolerated on exp/iat by verifiers. Default 5s, at most 30s.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// JWKSURI is where verifiers fetch the keys. Default the admin
	// listener's /.well-known/gatehouse/jwks.json over loopback; https, or
	// http only to a loopback host.
	JWKSURI string `yaml:"jwks_uri"`
	// KeysDir, when set, is a read-only directory shared by every replica
	// (a mounted Kubernetes Secret) holding keys.json: keys are loaded from
	// there and re-read when it changes, never generated or rotated by
	// Gatehouse; the operator rotates by replacing the file. Empty (the
	// default): <state-dir>/assertion, generated and rotated by this process.
	KeysDir string `yaml:"keys_dir"`
	// Chains let an assertion minted for From be presented by From's own
	// SPIFFE identity at To (orders → inventory).
	Chains []AssertionChain `yaml:"chains"`
}

// AssertionChain is one hop an assertion may travel on.
type AssertionChain struct {
	From string `yaml:"from"`
	To   string `yaml:"to"`
}

// OIDC configures browser login (authorization code + PKCE) inside Check.
type OIDC struct {
	CallbackPath          string `yaml:"callback_path"`           // default /oauth2/callback
	LogoutPath            string `yaml:"logout_path"`             // default /oauth2/logout
	BackChannelLogoutPath string `yaml:"backchannel_logout_path"` // default /oauth2/backchannel-logout
	PostLogoutPath        string `yaml:"post_logout_path"`        // default /
	CookiePrefix          string `yaml:"cookie_prefix"`           // default __Host-gatehouse
	// CookieKeyFiles hold base64 32-byte AEAD keys; the first seals, all
	// open (rotation). Empty: a random key per process start, so sessions
	// do not survive a restart or work across replicas.
	CookieKeyFiles  []string       `yaml:"cookie_key_files"`
	SessionTTL      time.Duration  `yaml:"session_ttl"`    // default 12h
	LoginTTL        time.Duration  `yaml:"login_ttl"`      // default 10m
	RefreshBefore   time.Duration  `yaml:"refresh_before"` // default 1m
	ClockSkew       time.Duration  `yaml:"clock_skew"`     // default 1m
	MaxCookieChunks int            `yaml:"max_cookie_chunks"`
	Providers       []OIDCProvider `yaml:"providers"`
}

// OIDCProvider is one IdP client.
type OIDCProvider struct {
	Name             string `yaml:"name"`
	Issuer           string `yaml:"issuer"`
	ClientID         string `yaml:"client_id"`
	ClientSecret     string `yaml:"client_secret"`
	ClientSecretFile string `yaml:"client_secret_file"` // or client_secret; neither: a public PKCE client
	// ExternalURL is the https origin browsers use; the redirect_uri is
	// exactly ExternalURL + callback_path.
	ExternalURL           string   `yaml:"external_url"`
	PathPrefixes          []string `yaml:"path_prefixes"` // default [/]
	Scopes                []string `yaml:"scopes"`        // default openid email profile offline_access
	GroupsClaim           string   `yaml:"groups_claim"`  // default groups
	RolesClaim            string   `yaml:"roles_claim"`   // default roles
	PostLogoutRedirectURL string   `yaml:"post_logout_redirect_url"`
}

// Policies locates the Rego files and the decision to evaluate.
type Policies struct {
	Dir   string `yaml:"dir"`   // default "policies"
	Query string `yaml:"query"` // default "data.envoy.authz.allow"
	// DecisionCache bounds the decisions kept per policy revision and reused
	// for requests equal in everything the policy reads; used only for
	// deterministic policies. Default 4096; 0 turns it off.
	DecisionCache *int `yaml:"decision_cache"`
}

// JWT configures bearer-token verification.
type JWT struct {
	// TrustStore is a directory of PEM certificates for the x5t strategy.
	TrustStore string   `yaml:"trust_store"`
	Issuers    []Issuer `yaml:"issuers"`
	// CacheSize bounds the verified-token cache (entries). Default 10000.
	CacheSize int `yaml:"cache_size"`
}

// Strategy names a way to find a JWT's verification key.
type Strategy string

const (
	StrategyJWKS Strategy = "jwks" // the issuer's published key set
	StrategyX5T  Strategy = "x5t"  // certificate thumbprint in the local trust store
	StrategyX5C  Strategy = "x5c"  // embedded chain rooted in a trusted CA
)

// Issuer is one trusted token issuer.
type Issuer struct {
	Issuer     string        `yaml:"issuer"`
	Audiences  []string      `yaml:"audiences"`
	Strategies []Strategy    `yaml:"strategies"` // default [jwks]
	Discovery  bool          `yaml:"discovery"`  // find jwks_uri via /.well-known/openid-configuration
	JWKSURI    string        `yaml:"jwks_uri"`
	Algorithms []string      `yaml:"algorithms"`  // default [RS256, ES256]
	TrustedCAs []string      `yaml:"trusted_cas"` // PEM files, for x5c
	ClockSkew  time.Duration `yaml:"clock_skew"`  // default 60s
	// Kind is the identity kind tokens of this issuer establish: user|service.
	Kind        string `yaml:"kind"`
	RolesClaim  string `yaml:"roles_claim"`  // default "roles"
	GroupsClaim string `yaml:"groups_claim"` // default "groups"
}

// Headers controls the identity headers added to allowed requests.
type Headers struct {
	// Prefix of the identity headers, default "x-gatehouse-". Any
	// client-supplied header with this prefix is overwritten or removed.
	Prefix string `yaml:"prefix"`
	// StripAuthorization removes the Authorization header before the request
	// reaches the upstream.
	StripAuthorization bool `yaml:"strip_authorization"`
}

// Defaults fills unset fields. Load calls it before Validate.
func (c *Config) Defaults() {
	setDefault(&c.Listen.Authz, ":9001")
	setDefault(&c.Listen.XDS, ":18000")
	setDefault(&c.Listen.Admin, "127.0.0.1:9901")
	setDefault(&c.Log.Level, "info")
	setDefault(&c.Log.Format, "json")
	if c.Shutdown.Grace == 0 {
		c.Shutdown.Grace = 10 * time.Second
	}
	if c.XDS.TLS.Enabled {
		setDefault(&c.XDS.TLS.ClientAuth, "require")
		if len(c.XDS.TLS.DNSNames) == 0 {
			c.XDS.TLS.DNSNames = []string{"localhost"}
		}
	}
	a := &c.Authz
	setDefault(&a.Policies.Dir, "policies")
	setDefault(&a.Policies.Query, "data.envoy.authz.allow")
	if a.Timeout == 0 {
		a.Timeout = 500 * time.Millisecond
		if len(a.OIDC.Providers) > 0 {
			// A login callback exchanges a code with the IdP inside Check.
			a.Timeout = 5 * time.Second
		}
	}
	if a.MaxBodyBytes == 0 {
		a.MaxBodyBytes = 64 << 10
	}
	if a.JWT.CacheSize == 0 {
		a.JWT.CacheSize = 10000
	}
	setDefault(&a.Headers.Prefix, "x-gatehouse-")
	for i := range a.JWT.Issuers {
		is := &a.JWT.Issuers[i]
		if len(is.Strategies) == 0 {
			is.Strategies = []Strategy{StrategyJWKS}
		}
		if len(is.Algorithms) == 0 {
			is.Algorithms = []string{"RS256", "ES256"}
		}
		if is.ClockSkew == 0 {
			is.ClockSkew = 60 * time.Second
		}
		setDefault(&is.Kind, "user")
		setDefault(&is.RolesClaim, "roles")
		setDefault(&is.GroupsClaim, "groups")
	}
	c.Mesh.Defaults()
	if as := &a.Assertion; as.Enabled {
		setDefault(&as.Issuer, "https://gatehouse."+c.Mesh.TrustDomain)
		if as.TTL == 0 {
			as.TTL = 30 * time.Second
		}
		if as.Rotation == 0 {
			as.Rotation = 24 * time.Hour
		}
		if as.ClockSkew == 0 {
			as.ClockSkew = 5 * time.Second
		}
	}
}

// MaxHeaderPrefixLen bounds authz.headers.prefix: with 40 characters the
// sidecar's strip-all-but-the-assertion regex compiles to about 89 RE2
// instructions, under Envoy's default limit of 100.
const MaxHeaderPrefixLen = 40

// ResolvePaths makes every relative file path in c relative to baseDir,
// the directory of the config file.
func (c *Config) ResolvePaths(baseDir string) {
	for _, p := range []*string{&c.Authz.Policies.Dir, &c.Authz.JWT.TrustStore, &c.Mesh.CertDir, &c.Authz.Assertion.KeysDir} {
		*p = resolve(baseDir, *p)
	}
	c.Store.Redis.PasswordFile = resolve(baseDir, c.Store.Redis.PasswordFile)
	c.Store.Redis.CAFile = resolve(baseDir, c.Store.Redis.CAFile)
	for i := range c.Authz.OIDC.CookieKeyFiles {
		c.Authz.OIDC.CookieKeyFiles[i] = resolve(baseDir, c.Authz.OIDC.CookieKeyFiles[i])
	}
	for i := range c.Authz.OIDC.Providers {
		pr := &c.Authz.OIDC.Providers[i]
		pr.ClientSecretFile = resolve(baseDir, pr.ClientSecretFile)
	}
	for i := range c.Authz.JWT.Issuers {
		for j, f := range c.Authz.JWT.Issuers[i].TrustedCAs {
			c.Authz.JWT.Issuers[i].TrustedCAs[j] = resolve(baseDir, f)
		}
	}
}

func resolve(base, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}

// Validate records every problem in the file.
func (c *Config) Validate(p *Problems) {
	c.Defaults()
	checkAddr(p, "listen.authz", c.Listen.Authz)
	checkAddr(p, "listen.xds", c.Listen.XDS)
	checkAddr(p, "listen.admin", c.Listen.Admin)
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		p.Addf("log.level", "must be one of debug, info, warn, error; got %q", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		p.Addf("log.format", "must be json or text; got %q", c.Log.Format)
	}
	if err := CheckShutdownDelay(c.Shutdown.Delay); err != nil {
		p.Addf("shutdown.delay", "%v", err)
	}
	if err := CheckShutdownGrace(c.Shutdown.Grace); err != nil {
		p.Addf("shutdown.grace", "%v", err)
	}
	if ca := c.XDS.TLS.ClientAuth; ca != "" && ca != "require" && ca != "none" {
		p.Addf("xds.tls.client_auth", "must be require or none; got %q", ca)
	}
	c.Store = c.Store.WithDefaults()
	if err := c.Store.Validate(); err != nil {
		var fes store.ValidationErrors
		if errors.As(err, &fes) {
			for _, fe := range fes {
				p.Addf("store."+fe.Field, "%s", fe.Msg)
			}
		} else {
			p.Addf("store", "%v", err)
		}
	}
	c.Authz.validate(p)
	c.Mesh.Validate(p)
	c.validateAssertion(p)
	if len(c.Mesh.Edges)+len(c.Mesh.Sidecars) > 0 && c.Mesh.Authz.Timeout <= c.Authz.Timeout {
		p.Addf("mesh.authz.timeout", "must be longer than authz.timeout (%s), so Gatehouse, not Envoy's timeout, answers a slow check", c.Authz.Timeout)
	}
}

func (a *Authz) validate(p *Problems) {
	if a.Timeout < 0 || a.Timeout > time.Minute {
		p.Addf("authz.timeout", "must be between 0 and 1m; got %s", a.Timeout)
	}
	if a.MaxBodyBytes < 0 || a.MaxBodyBytes > 16<<20 {
		p.Addf("authz.max_body_bytes", "must be between 0 and 16 MiB")
	}
	if !strings.HasPrefix(a.Policies.Query, "data.") {
		p.Addf("authz.policies.query", "must be a reference under data, e.g. data.envoy.authz.allow")
	}
	if n := a.Policies.DecisionCache; n != nil && (*n < 0 || *n > 1_000_000) {
		p.Addf("authz.policies.decision_cache", "must be between 0 (off) and 1000000, got %d", *n)
	}
	if a.JWT.CacheSize < 0 || a.JWT.CacheSize > 1_000_000 {
		p.Addf("authz.jwt.cache_size", "must be between 0 and 1000000")
	}
	pre := a.Headers.Prefix
	if pre != strings.ToLower(pre) || !strings.HasPrefix(pre, "x-") {
		p.Addf("authz.headers.prefix", "must be lower case and start with x-; got %q", pre)
	}
	if len(pre) > MaxHeaderPrefixLen {
		p.Addf("authz.headers.prefix", "at most %d characters, got %d: a sidecar's header-matching regex grows with it, and Envoy refuses one over its RE2 program size limit", MaxHeaderPrefixLen, len(pre))
	}
	a.OIDC.validate(p)
	seen := map[string]int{}
	for i, is := range a.JWT.Issuers {
		at := fmt.Sprintf("authz.jwt.issuers[%d]", i)
		if is.Issuer == "" {
			p.Addf(at, "issuer is required")
		} else if j, dup := seen[is.Issuer]; dup {
			p.Addf(at+".issuer", "duplicate of authz.jwt.issuers[%d]", j)
		}
		seen[is.Issuer] = i
		if len(is.Audiences) == 0 {
			p.Addf(at, "audiences is required: a token for another audience must not be accepted")
		}
		if is.Kind != "user" && is.Kind != "service" {
			p.Addf(at+".kind", "must be user or service; got %q", is.Kind)
		}
		for j, s := range is.Strategies {
			sat := fmt.Sprintf("%s.strategies[%d]", at, j)
			switch s {
			case StrategyJWKS:
				if !is.Discovery && is.JWKSURI == "" {
					p.Addf(at, "strategy jwks needs discovery: true or jwks_uri")
				}
			case StrategyX5T:
				if a.JWT.TrustStore == "" {
					p.Addf(sat, "strategy x5t needs authz.jwt.trust_store")
				}
			case StrategyX5C:
				if len(is.TrustedCAs) == 0 {
					p.Addf(sat, "strategy x5c needs trusted_cas")
				}
			default:
				p.Addf(sat, "unknown strategy %q (want jwks, x5t or x5c)", s)
			}
		}
		if is.JWKSURI != "" {
			checkURL(p, at+".jwks_uri", is.JWKSURI)
		}
		if is.Discovery {
			checkURL(p, at+".issuer", is.Issuer)
		}
		for j, alg := range is.Algorithms {
			if !slices.Contains(allowedAlgorithms, alg) {
				p.Addf(fmt.Sprintf("%s.algorithms[%d]", at, j), "%q is not allowed (asymmetric only: %s)", alg, strings.Join(allowedAlgorithms, ", "))
			}
		}
		if is.ClockSkew < 0 || is.ClockSkew > 10*time.Minute {
			p.Addf(at+".clock_skew", "must be between 0 and 10m")
		}
	}
}

func (c *Config) validateAssertion(p *Problems) {
	as := &c.Authz.Assertion
	if !as.Enabled {
		return
	}
	const at = "authz.assertion"
	if as.Issuer == "" || strings.ContainsAny(as.Issuer, " \t\n") {
		p.Addf(at+".issuer", "must be a non-empty string without spaces; got %q", as.Issuer)
	}
	for i, is := range c.Authz.JWT.Issuers {
		if is.Issuer == as.Issuer {
			p.Addf(fmt.Sprintf("authz.jwt.issuers[%d].issuer", i), "is the assertion issuer: Gatehouse assertions are never bearer tokens")
		}
	}
	if as.TTL <= time.Second || as.TTL > time.Minute {
		p.Addf(at+".ttl", "must be above 1s and at most 60s; got %s", as.TTL)
	}
	if as.Rotation < 10*time.Minute {
		p.Addf(at+".rotation", "must be at least 10m; got %s", as.Rotation)
	}
	if as.ClockSkew < 0 || as.ClockSkew > 30*time.Second {
		p.Addf(at+".clock_skew", "must be between 0 and 30s; got %s", as.ClockSkew)
	}
	if as.JWKSURI != "" {
		if u, err := url.Parse(as.JWKSURI); err != nil || u.Host == "" || !(u.Scheme == "https" || u.Scheme == "http" && isLoopbackHost(u.Hostname())) {
			p.Addf(at+".jwks_uri", "must be an https URL, or http to a loopback host; got %q", as.JWKSURI)
		}
	}
	if len(c.Mesh.Services) == 0 {
		p.Addf(at, "needs mesh.services: an assertion's audience is a service's SPIFFE id")
	}
	seen := map[AssertionChain]int{}
	for i, ch := range as.Chains {
		cat := fmt.Sprintf("%s.chains[%d]", at, i)
		if j, dup := seen[ch]; dup {
			p.Addf(cat, "duplicate of %s.chains[%d]", at, j)
		}
		seen[ch] = i
		if ch.From == ch.To {
			p.Addf(cat, "from and to must be two different services")
		}
		for _, f := range [][2]string{{"from", ch.From}, {"to", ch.To}} {
			if c.Mesh.Service(f[1]) == nil {
				p.Addf(cat+"."+f[0], "unknown service %q (not in mesh.services)", f[1])
			}
		}
	}
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (o *OIDC) validate(p *Problems) {
	names := map[string]int{}
	for i, pr := range o.Providers {
		at := fmt.Sprintf("authz.oidc.providers[%d]", i)
		if j, dup := names[pr.Name]; dup {
			p.Addf(at+".name", "duplicate of authz.oidc.providers[%d]", j)
		}
		names[pr.Name] = i
		if pr.Name == "" || pr.ClientID == "" {
			p.Addf(at, "name and client_id are required")
		}
		checkURL(p, at+".issuer", pr.Issuer)
		if u, err := url.Parse(pr.ExternalURL); err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			p.Addf(at+".external_url", "must be an https origin such as https://app.example.com; got %q", pr.ExternalURL)
		}
		if pr.ClientSecret != "" && pr.ClientSecretFile != "" {
			p.Addf(at, "set client_secret or client_secret_file, not both")
		}
	}
	for i, path := range []string{o.CallbackPath, o.LogoutPath, o.BackChannelLogoutPath, o.PostLogoutPath} {
		if path != "" && !strings.HasPrefix(path, "/") {
			p.Addf("authz.oidc."+[]string{"callback_path", "logout_path", "backchannel_logout_path", "post_logout_path"}[i], "must be an absolute path; got %q", path)
		}
	}
}

var allowedAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

func checkAddr(p *Problems, field, addr string) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		p.Addf(field, "not a host:port address: %v", err)
	}
}

func checkURL(p *Problems, field, raw string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		p.Addf(field, "must be an absolute http(s) URL; got %q", raw)
	}
}

func setDefault(s *string, v string) {
	if *s == "" {
		*s = v
	}
}
