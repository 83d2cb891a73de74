package oidc

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/secretfile"
)

// Config is the browser-login configuration (authz.oidc in the config file).
type Config struct {
	// Providers are the IdP clients; each covers the routes of one external
	// origin (and optionally path prefixes on it).
	Providers []ProviderConfig
	// CallbackPath receives the IdP's redirect, shared by all providers.
	// Default "/oauth2/callback".
	CallbackPath string
	// LogoutPath ends the sessions on the request's host. Default "/oauth2/logout".
	LogoutPath string
	// BackChannelLogoutPath accepts OIDC back-channel logout tokens when the
	// IdP reaches them through Envoy. Default "/oauth2/backchannel-logout".
	BackChannelLogoutPath string
	// PostLogoutPath is where the browser goes after logout when the IdP has
	// no end_session_endpoint. Default "/".
	PostLogoutPath string
	// CookiePrefix names the cookies; it must start with "__Host-".
	// Default "__Host-gatehouse".
	CookiePrefix string
	// CookieKeys seal cookies: 32 bytes each, the first seals, all open.
	// Rotate by prepending a new key and dropping the oldest later.
	CookieKeys [][]byte
	// SessionTTL bounds a session from login, refreshes included. Default 12h.
	SessionTTL time.Duration
	// LoginTTL bounds a login from redirect to callback. Default 10m.
	LoginTTL time.Duration
	// RefreshBefore refreshes tokens this long before the ID token expires.
	// Default 1m.
	RefreshBefore time.Duration
	// ClockSkew tolerated on iat and exp. Default 1m.
	ClockSkew time.Duration
	// MaxCookieChunks bounds a session's cookies (about 3.8 KB each).
	// Default 4.
	MaxCookieChunks int
}

// ProviderConfig is one IdP client.
type ProviderConfig struct {
	// Name identifies the provider in cookies and logs: [a-z0-9-], ≤ 32.
	Name string
	// Issuer is the IdP's issuer URL; its discovery document is fetched
	// from Issuer + "/.well-known/openid-configuration".
	Issuer       string
	ClientID     string
	ClientSecret string
	// ClientSecretFile is read at New when ClientSecret is empty. Neither:
	// a public client (PKCE only).
	ClientSecretFile string
	// ExternalURL is the origin browsers use, e.g. "https://app.example.com".
	// The redirect_uri is ExternalURL + CallbackPath, exactly; requests are
	// matched to the provider by this host.
	ExternalURL string
	// PathPrefixes limit the provider to routes under these prefixes on its
	// host (longest match wins across providers). Default ["/"].
	PathPrefixes []string
	// Scopes requested; "openid" is always included. Default
	// [openid, email, profile, offline_access].
	Scopes []string
	// GroupsClaim and RolesClaim name the ID token claims copied into the
	// identity. Defaults "groups" and "roles".
	GroupsClaim string
	RolesClaim  string
	// PostLogoutRedirectURL is sent as post_logout_redirect_uri to an IdP
	// with an end_session_endpoint (it must be registered there). Default
	// ExternalURL + Config.PostLogoutPath.
	PostLogoutRedirectURL string
}

// Defaults used when a field is zero.
const (
	DefaultCallbackPath          = "/oauth2/callback"
	DefaultLogoutPath            = "/oauth2/logout"
	DefaultBackChannelLogoutPath = "/oauth2/backchannel-logout"
	DefaultCookiePrefix          = "__Host-gatehouse"
)

// KeySize is the length of a cookie key.
const KeySize = 32

var providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// withDefaults returns a copy with zero fields set.
func (c Config) withDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.CallbackPath, DefaultCallbackPath)
	def(&c.LogoutPath, DefaultLogoutPath)
	def(&c.BackChannelLogoutPath, DefaultBackChannelLogoutPath)
	def(&c.PostLogoutPath, "/")
	def(&c.CookiePrefix, DefaultCookiePrefix)
	durations := []struct {
		d *time.Duration
		v time.Duration
	}{{&c.SessionTTL, 12 * time.Hour}, {&c.LoginTTL, 10 * time.Minute}, {&c.RefreshBefore, time.Minute}, {&c.ClockSkew, time.Minute}}
	for _, x := range durations {
		if *x.d == 0 {
			*x.d = x.v
		}
	}
	if c.MaxCookieChunks == 0 {
		c.MaxCookieChunks = 4
	}
	c.Providers = slices.Clone(c.Providers)
	for i := range c.Providers {
		p := &c.Providers[i]
		if len(p.PathPrefixes) == 0 {
			p.PathPrefixes = []string{"/"}
		}
		if len(p.Scopes) == 0 {
			p.Scopes = []string{"openid", "email", "profile", "offline_access"}
		} else if !slices.Contains(p.Scopes, "openid") {
			p.Scopes = append([]string{"openid"}, p.Scopes...)
		}
		def(&p.GroupsClaim, "groups")
		def(&p.RolesClaim, "roles")
		if p.PostLogoutRedirectURL == "" && p.ExternalURL != "" {
			p.PostLogoutRedirectURL = strings.TrimSuffix(p.ExternalURL, "/") + c.PostLogoutPath
		}
	}
	return c
}

// Validate reports every problem in c (after defaults), joined.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(c.Providers) == 0 {
		add("providers: at least one is required")
	}
	for _, p := range []struct{ name, v string }{
		{"callback_path", c.CallbackPath}, {"logout_path", c.LogoutPath},
		{"backchannel_logout_path", c.BackChannelLogoutPath}, {"post_logout_path", c.PostLogoutPath},
	} {
		if _, ok := safeReturnPath(p.v); !ok || strings.ContainsAny(p.v, "?#") {
			add("%s: must be an absolute path without query; got %q", p.name, p.v)
		}
	}
	if c.CallbackPath == c.LogoutPath || c.CallbackPath == c.BackChannelLogoutPath || c.LogoutPath == c.BackChannelLogoutPath {
		add("callback_path, logout_path and backchannel_logout_path must differ")
	}
	if !strings.HasPrefix(c.CookiePrefix, "__Host-") || !validCookieName(c.CookiePrefix) || len(c.CookiePrefix) > 64 {
		add("cookie_prefix: must start with __Host- and be a cookie name token; got %q", c.CookiePrefix)
	}
	if len(c.CookieKeys) == 0 {
		add("cookie_keys: at least one 32-byte key is required")
	}
	for i, k := range c.CookieKeys {
		if len(k) != KeySize {
			add("cookie_keys[%d]: must be %d bytes, got %d", i, KeySize, len(k))
		}
	}
	if c.SessionTTL < time.Minute || c.SessionTTL > 30*24*time.Hour {
		add("session_ttl: must be between 1m and 720h; got %s", c.SessionTTL)
	}
	if c.LoginTTL < 30*time.Second || c.LoginTTL > time.Hour {
		add("login_ttl: must be between 30s and 1h; got %s", c.LoginTTL)
	}
	if c.RefreshBefore < 0 || c.ClockSkew < 0 || c.ClockSkew > 10*time.Minute {
		add("refresh_before and clock_skew must not be negative; clock_skew at most 10m")
	}
	if c.MaxCookieChunks < 1 || c.MaxCookieChunks > 10 {
		add("max_cookie_chunks: must be between 1 and 10")
	}
	names := map[string]bool{}
	routes := map[string]string{}
	for i, p := range c.Providers {
		at := fmt.Sprintf("providers[%d]", i)
		if !providerName.MatchString(p.Name) {
			add("%s.name: must match %s; got %q", at, providerName, p.Name)
		} else if names[p.Name] {
			add("%s.name: duplicate %q", at, p.Name)
		}
		names[p.Name] = true
		if u, err := url.Parse(p.Issuer); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			add("%s.issuer: must be an absolute http(s) URL; got %q", at, p.Issuer)
		}
		if p.ClientID == "" {
			add("%s.client_id: required", at)
		}
		if p.ClientSecret != "" && p.ClientSecretFile != "" {
			add("%s: client_secret and client_secret_file are exclusive", at)
		}
		host, err := externalHost(p.ExternalURL)
		if err != nil {
			add("%s.external_url: %v", at, err)
		}
		if u, err := url.Parse(p.PostLogoutRedirectURL); err != nil || !u.IsAbs() {
			add("%s.post_logout_redirect_url: must be an absolute URL", at)
		}
		for _, prefix := range p.PathPrefixes {
			if !strings.HasPrefix(prefix, "/") {
				add("%s.path_prefixes: %q must start with /", at, prefix)
			}
			if other, dup := routes[host+prefix]; dup {
				add("%s.path_prefixes: %s%s is already covered by provider %q", at, host, prefix, other)
			}
			routes[host+prefix] = p.Name
		}
	}
	return errors.Join(errs...)
}

// externalHost checks an external URL (https origin, no path beyond "/")
// and returns its normalized host.
func externalHost(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("invalid URL: %w", err)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("must be an https origin (the session cookie is Secure); got %q", raw)
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("must be a bare origin like https://app.example.com; got %q", raw)
	}
	return normalizeHost(u.Host, "https"), nil
}

// normalizeHost lower-cases a host[:port] and drops the scheme's default port,
// so ":authority: App.Example.com:443" matches "https://app.example.com".
func normalizeHost(hostport, scheme string) string {
	h := strings.ToLower(hostport)
	if host, port, err := net.SplitHostPort(h); err == nil {
		if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
			if strings.Contains(host, ":") {
				return "[" + host + "]"
			}
			return host
		}
	}
	return h
}

// ParseKey decodes a cookie key given as base64 (standard or URL alphabet,
// padded or not) of exactly 32 bytes, e.g. the output of `openssl rand
// -base64 32`.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("cookie key: %d bytes, want %d", len(b), KeySize)
			}
			return b, nil
		}
	}
	return nil, errors.New("cookie key: not base64")
}

// readSecret returns the provider's client secret, reading the file if set.
func (p ProviderConfig) readSecret() (string, error) {
	if p.ClientSecretFile == "" {
		return p.ClientSecret, nil
	}
	b, err := secretfile.Read(p.ClientSecretFile)
	if err != nil {
		return "", fmt.Errorf("provider %s: client_secret_file: %w", p.Name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func validCookieName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return false
		}
	}
	return true
}
