package oidc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// loginState travels in the sealed login cookie from the redirect to the
// callback: what the callback must check, and where to return.
type loginState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"` // PKCE code verifier
	Provider string `json:"p"`
	Return   string `json:"r"`
	Expires  int64  `json:"e"` // unix seconds
}

// Challenge answers a request policy denied for want of an identity. A
// browser-like request on a route a provider covers is redirected to the
// IdP's authorization endpoint; ok is false for everything else, which
// keeps its 401.
func (f *Flow) Challenge(ctx context.Context, r *Request) (*Response, bool) {
	if !browserLike(r) {
		return nil, false
	}
	path, _, _ := strings.Cut(r.Path, "?")
	p := f.route(r.Host, path)
	if p == nil {
		return nil, false
	}
	d, err := p.discover(ctx)
	if err != nil {
		f.log.WarnContext(ctx, "oidc login unavailable", "provider", p.cfg.Name, "err", err)
		h := errorPage(http.StatusServiceUnavailable, "Login is temporarily unavailable. Please try again shortly.", nil)
		h.Header.Set("Retry-After", "5")
		return h, true
	}
	ret, ok := safeReturnPath(r.Path)
	if !ok {
		ret = "/"
	}
	ls := loginState{
		State: randomToken(), Nonce: randomToken(), Verifier: oauth2.GenerateVerifier(),
		Provider: p.cfg.Name, Return: ret, Expires: f.now().Add(f.cfg.LoginTTL).Unix(),
	}
	b, _ := json.Marshal(ls)
	name := f.loginCookieName(ls.State)
	cookies := f.dropPendingLogins(parseCookies(r.header("cookie")))
	cookies = append(cookies, setCookie(name, f.seal.seal("login|"+name, b), f.cfg.LoginTTL))
	authURL := d.oauth.AuthCodeURL(ls.State, oauth2.S256ChallengeOption(ls.Verifier), oidc.Nonce(ls.Nonce))
	return redirect(authURL, cookies), true
}

// maxPendingLogins bounds the login cookies one browser holds: every
// redirect to the IdP adds one, and a page that makes a browser load many
// protected URLs must not grow its Cookie header past what Envoy accepts.
const maxPendingLogins = 4

// dropPendingLogins expires all login cookies once there are too many;
// logins still in progress in other tabs then start over.
func (f *Flow) dropPendingLogins(jar cookieJar) []string {
	prefix := f.cfg.CookiePrefix + "-login-"
	var names []string
	for name := range jar {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	if len(names) < maxPendingLogins {
		return nil
	}
	slices.Sort(names)
	out := make([]string, 0, len(names))
	for _, n := range names {
		out = append(out, clearCookie(n))
	}
	return out
}

// loginCookieName gives each login its own cookie, so two tabs logging in
// at once do not overwrite each other's state.
func (f *Flow) loginCookieName(state string) string {
	sum := sha256.Sum256([]byte(state))
	return f.cfg.CookiePrefix + "-login-" + hex.EncodeToString(sum[:8])
}

// callback completes a login: state, code exchange with the PKCE verifier,
// ID token verification, then the session cookie and a redirect back.
func (f *Flow) callback(ctx context.Context, r *Request, query string) *Response {
	if r.Method != http.MethodGet {
		return errorPage(http.StatusMethodNotAllowed, "Method not allowed.", nil)
	}
	q, err := url.ParseQuery(query)
	state := q.Get("state")
	if err != nil || state == "" || len(state) > 512 {
		f.log.InfoContext(ctx, "oidc callback rejected", "reason", "missing or malformed state")
		return errorPage(http.StatusBadRequest, "Login failed: invalid request. Please start again.", nil)
	}
	jar := parseCookies(r.header("cookie"))
	name := f.loginCookieName(state)
	raw, present := jar[name]
	if !present {
		f.log.InfoContext(ctx, "oidc callback rejected", "reason", "no login cookie for this state")
		return errorPage(http.StatusBadRequest, "Login failed: the login expired or was started elsewhere. Please start again.", nil)
	}
	clear := []string{clearCookie(name)}
	fail := func(status int, reason string, err error) *Response {
		attrs := []any{"reason", reason}
		if err != nil {
			attrs = append(attrs, "err", err)
		}
		f.log.InfoContext(ctx, "oidc callback rejected", attrs...)
		msg := "Login failed. Please start again."
		if status >= 500 {
			msg = "Login is temporarily unavailable. Please try again shortly."
		}
		return errorPage(status, msg, clear)
	}
	var ls loginState
	pt, err := f.seal.open("login|"+name, raw)
	if err != nil || json.Unmarshal(pt, &ls) != nil {
		return fail(http.StatusBadRequest, "login cookie does not open", nil)
	}
	if subtle.ConstantTimeCompare([]byte(ls.State), []byte(state)) != 1 {
		return fail(http.StatusBadRequest, "state mismatch", nil)
	}
	if !f.now().Before(time.Unix(ls.Expires, 0)) {
		return fail(http.StatusBadRequest, "login expired", nil)
	}
	p := f.byName[ls.Provider]
	if p == nil || p.host != normalizeHost(r.Host, "https") {
		return fail(http.StatusBadRequest, "provider or host mismatch", nil)
	}
	switch first, err := f.firstUse(ctx, f.usedStates, "state", name, f.cfg.LoginTTL+f.cfg.ClockSkew); {
	case err != nil:
		// Fail closed: without the shared answer a replay sent to this
		// replica cannot be told from a first use.
		return fail(http.StatusServiceUnavailable, "one-time state check unavailable", err)
	case !first:
		return fail(http.StatusBadRequest, "state replayed", nil)
	}
	// RFC 9207: an authorization response naming another issuer is a
	// mix-up (the browser was sent to another IdP than this login's);
	// refuse it before the code goes anywhere. Compared byte for byte with
	// the configured issuer, which discovery proved is the IdP's.
	if iss, ok := q["iss"]; ok && (len(iss) != 1 || iss[0] != p.cfg.Issuer) {
		return fail(http.StatusBadRequest, "iss is not this login's issuer", nil)
	}
	if e := q.Get("error"); e != "" {
		return fail(http.StatusForbidden, "IdP returned error "+truncate(e, 64), nil)
	}
	code := q.Get("code")
	if code == "" || len(code) > 4096 {
		return fail(http.StatusBadRequest, "missing code", nil)
	}
	d, err := p.discover(ctx)
	if err != nil {
		return fail(http.StatusServiceUnavailable, "discovery", err)
	}
	if d.issParam && !q.Has("iss") {
		// RFC 9207 §2.4: an IdP that says it sends iss must send it.
		return fail(http.StatusBadRequest, "iss missing from the authorization response", nil)
	}
	tok, err := d.oauth.Exchange(f.oauthContext(ctx), code, oauth2.VerifierOption(ls.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return fail(http.StatusBadRequest, "code exchange refused", fmt.Errorf("%s", re.ErrorCode))
		}
		return fail(http.StatusBadGateway, "code exchange", err)
	}
	s, err := f.newSession(ctx, p, d, tok, ls.Nonce)
	if err != nil {
		return fail(http.StatusBadRequest, "id token", err)
	}
	cookies, err := f.sessionCookies(jar, p, s)
	if err != nil {
		return fail(http.StatusInternalServerError, "session cookie", err)
	}
	f.log.InfoContext(ctx, "oidc login", "provider", p.cfg.Name, "subject", s.Subject)
	return redirect(ls.Return, append(clear, cookies...))
}

// idClaims are the ID token claims a session keeps.
type idClaims struct {
	Email             string `json:"email"`
	EmailVerified     any    `json:"email_verified"`
	Name              string `json:"name"`
	PreferredUsername string `json:"preferred_username"`
	SessionID         string `json:"sid"`
	AuthorizedParty   string `json:"azp"`
	groups, roles     []string
}

// verifyIDToken checks what go-oidc checks (signature, iss, aud, exp, nbf,
// algorithm) and what it leaves to us: iat not in the future nor older than
// maxAge, the nonce when one was sent, azp when there are several audiences
// (or when present at all), and at_hash when present.
func (f *Flow) verifyIDToken(ctx context.Context, p *provider, d *discovered, tok *oauth2.Token, nonce string, maxAge time.Duration) (string, *oidc.IDToken, *idClaims, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", nil, nil, errors.New("token response has no id_token")
	}
	if len(raw) > maxTokenBytes {
		return "", nil, nil, errors.New("id_token too large")
	}
	idt, err := d.verifier.Verify(ctx, raw)
	if err != nil {
		return "", nil, nil, err
	}
	if idt.Subject == "" || len(idt.Subject) > 255 {
		return "", nil, nil, errors.New("id_token sub missing or too long")
	}
	now, skew := f.now(), f.cfg.ClockSkew
	if idt.IssuedAt.IsZero() || idt.IssuedAt.After(now.Add(skew)) {
		return "", nil, nil, errors.New("id_token iat missing or in the future")
	}
	if now.Sub(idt.IssuedAt) > maxAge+skew {
		return "", nil, nil, errors.New("id_token issued too long ago")
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return "", nil, nil, errors.New("id_token nonce mismatch")
	}
	var all map[string]any
	var c idClaims
	if err := idt.Claims(&all); err != nil {
		return "", nil, nil, err
	}
	if err := idt.Claims(&c); err != nil {
		return "", nil, nil, err
	}
	if (len(idt.Audience) > 1 && c.AuthorizedParty == "") || (c.AuthorizedParty != "" && c.AuthorizedParty != p.cfg.ClientID) {
		return "", nil, nil, errors.New("id_token azp is not this client")
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return "", nil, nil, err
		}
	}
	c.groups = stringList(all[p.cfg.GroupsClaim])
	c.roles = stringList(all[p.cfg.RolesClaim])
	return raw, idt, &c, nil
}

// stringList reads a claim holding a string or a list of strings, bounded
// so one user's claims cannot bloat the session.
func stringList(v any) []string {
	const maxItems, maxLen = 256, 256
	var out []string
	switch x := v.(type) {
	case string:
		if x != "" {
			out = append(out, truncate(x, maxLen))
		}
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok && s != "" && len(out) < maxItems {
				out = append(out, truncate(s, maxLen))
			}
		}
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// randomToken is 256 bits from crypto/rand, base64url.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
