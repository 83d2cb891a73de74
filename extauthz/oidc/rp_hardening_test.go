package oidc_test

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/oidc"
	"github.com/gatehouse-proxy/gatehouse/test/scriptedidp"
)

// Relying-party cases of RFC 9700 (OAuth 2.0 Security BCP) and OpenID
// Connect Core that the other tests leave out: session fixation, CSRF on
// the callback, IdP mix-up (RFC 9207), the exact redirect_uri, PKCE
// downgrade, and what the flow does not ask for (prompt, max_age).
//
// rpIdP is test/scriptedidp in its permissive form: it records every
// authorization and token request it sees, so a test can say which IdP a
// code was redeemed at, and what the token request carried. It checks PKCE
// like a real IdP and accepts any redirect_uri (it records it for the test
// to judge).

const rpClient = "rp-app" // the same client_id at every rpIdP: the worst case for mix-up

type rpIdP struct{ *scriptedidp.IdP }

// newRPIdP starts an rpIdP whose key ID and codes are named by name, so
// those of two IdPs differ, with the extra discovery metadata disc.
func newRPIdP(t testing.TB, name string, disc map[string]any) *rpIdP {
	t.Helper()
	return &rpIdP{scriptedidp.NewWith(t, scriptedidp.Options{ClientID: rpClient, ClientSecret: "rp-secret", Name: name,
		Subject: "victim", Claims: map[string]any{"email": "victim@example.com"}, Discovery: disc})}
}

func (p *rpIdP) provider(name, prefix string) oidc.ProviderConfig {
	return oidc.ProviderConfig{Name: name, Issuer: p.Issuer, ClientID: rpClient, ClientSecret: "rp-secret",
		ExternalURL: appURL, PathPrefixes: []string{prefix}, Scopes: []string{"openid", "email"}}
}

// authorizeAt follows a redirect to an IdP's authorization endpoint and
// returns the IdP's redirect back (not followed).
func authorizeAt(t testing.TB, location string) *url.URL {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(location)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, err := resp.Location()
	if err != nil {
		t.Fatalf("IdP answered %d without a redirect", resp.StatusCode)
	}
	return back
}

// startLogin makes b request path, expects the redirect to log in, and
// returns the IdP's redirect back to the callback (not yet sent).
func (b *browser) startLogin(path string) *url.URL {
	b.t.Helper()
	r := b.check("GET", path)
	if r.status != http.StatusFound {
		b.t.Fatalf("GET %s: status %d body %q, want a redirect to log in", path, r.status, r.body)
	}
	return authorizeAt(b.t, r.location)
}

// callbackWith is the callback request URI with q.
func callbackWith(q url.Values) string { return oidc.DefaultCallbackPath + "?" + q.Encode() }

// sessionSet reports the session (not login) cookies r sets with a value.
func sessionSet(r reply) []string {
	var out []string
	for _, c := range r.cookies {
		if strings.HasPrefix(c.Name, "__Host-gatehouse-") && !strings.HasPrefix(c.Name, "__Host-gatehouse-login-") && c.MaxAge >= 0 {
			out = append(out, c.Name)
		}
	}
	return out
}

// expires reports whether the last Set-Cookie of name in r expires it.
func expires(r reply, name string) bool {
	var cleared bool
	for _, c := range r.cookies {
		if c.Name == name {
			cleared = c.MaxAge < 0
		}
	}
	return cleared
}

// loggedInAs asserts that b's request for path is allowed as subject sub.
func loggedInAs(t *testing.T, b *browser, path, sub string) {
	t.Helper()
	if r := b.check("GET", path); !r.allowed || r.headers["x-gatehouse-subject"] != sub {
		t.Fatalf("after login: allowed %v subject %q, want %q", r.allowed, r.headers["x-gatehouse-subject"], sub)
	}
}

// logSince returns what the flow logged after mark (a length of e.logs).
func (e *env) logSince(mark int) string { return e.logs.String()[mark:] }

// callbackWithForeignCode starts a login at own in one browser and sends
// its callback with the code of another browser's login at other instead
// of its own; it returns the mark taken before the callback, and its reply.
func (e *env) callbackWithForeignCode(t *testing.T, own, other string) (mark int, r reply) {
	t.Helper()
	br := e.browserFor(t)
	back := br.startLogin(own)
	q := back.Query()
	q.Set("code", e.browserFor(t).startLogin(other).Query().Get("code"))
	mark = len(e.logs.String())
	return mark, br.check("GET", callbackWith(q))
}

// refused asserts an exact rejection: status, no session cookie, and the
// reason the flow logged.
func refused(t *testing.T, e *env, mark int, r reply, status int, reason string) {
	t.Helper()
	if r.allowed || r.status != status {
		t.Errorf("allowed %v status %d body %q, want %d", r.allowed, r.status, r.body, status)
	}
	if r.location != "" {
		t.Errorf("location %q on a rejected callback", r.location)
	}
	if s := sessionSet(r); len(s) != 0 {
		t.Errorf("session cookies set: %v", s)
	}
	if log := e.logSince(mark); !strings.Contains(log, `reason="`+reason) {
		t.Errorf("log lacks reason %q:\n%s", reason, log)
	}
}

// TestRPSessionFixation: a session cookie the browser had before login is
// never adopted: the callback writes a new session (new value, new id) and
// expires every cookie of another layout.
func TestRPSessionFixation(t *testing.T) {
	t.Parallel()
	idp := newRPIdP(t, "a", nil)
	e := newEnv(t, []oidc.ProviderConfig{idp.provider("a", "/app")})
	const name = "__Host-gatehouse-a"
	asUser := func(sub string) func(map[string]any) {
		return func(c map[string]any) { c["sub"] = sub }
	}

	// The attacker's own, valid session.
	idp.SetTamper(asUser("attacker"))
	attacker := e.browser()
	if r := attacker.check("GET", attacker.startLogin("/app/x").RequestURI()); r.status != http.StatusFound {
		t.Fatalf("attacker login: %d", r.status)
	}
	planted := attacker.cookies[name]
	if planted == "" {
		t.Fatal("attacker has no session")
	}

	t.Run("garbage session cookie is cleared and replaced", func(t *testing.T) {
		idp.SetTamper(asUser("victim"))
		v := e.browserFor(t)
		v.cookies[name] = "planted-by-attacker"
		r := v.check("GET", "/app/x")
		if r.status != http.StatusFound {
			t.Fatalf("status %d, want a redirect to log in", r.status)
		}
		if c := r.cookieNamed(name); c == nil || c.Name != name || c.MaxAge >= 0 {
			t.Errorf("the planted cookie is not expired by the challenge: %v", r.cookies)
		}
		v.cookies[name] = "planted-by-attacker" // the attacker plants it again
		cb := v.check("GET", authorizeAt(t, r.location).RequestURI())
		c := cb.cookieNamed(name)
		if cb.status != http.StatusFound || c == nil || c.Value == "planted-by-attacker" || c.MaxAge <= 0 {
			t.Fatalf("callback: status %d cookie %v", cb.status, c)
		}
		loggedInAs(t, v, "/app/x", "victim")
	})

	t.Run("attacker's valid session planted during the login is replaced", func(t *testing.T) {
		idp.SetTamper(asUser("victim"))
		v := e.browserFor(t)
		back := v.startLogin("/app/x")
		v.cookies[name] = planted
		cb := v.check("GET", back.RequestURI())
		c := cb.cookieNamed(name)
		if cb.status != http.StatusFound || c == nil || c.Value == planted {
			t.Fatalf("callback: status %d cookie %v", cb.status, c)
		}
		loggedInAs(t, v, "/app/x", "victim")
		// The session id is new: the attacker's logout (which revokes the
		// planted session's id) does not end the victim's session.
		kept := attacker.in(t)
		if lo := kept.check("GET", oidc.DefaultLogoutPath); lo.status != http.StatusFound {
			t.Fatalf("attacker logout: %d", lo.status)
		}
		if r := v.check("GET", "/app/x"); !r.allowed || r.headers["x-gatehouse-subject"] != "victim" {
			t.Fatalf("victim's session ended with the attacker's: allowed %v status %d", r.allowed, r.status)
		}
	})

	t.Run("planted single cookie with a chunked session is expired", func(t *testing.T) {
		idp.SetTamper(func(c map[string]any) {
			c["sub"] = "victim"
			var g []string
			for i := range 60 {
				g = append(g, fmt.Sprintf("group-%03d-%s", i, strings.Repeat("x", 90)))
			}
			c["groups"] = g
		})
		defer idp.SetTamper(asUser("victim"))
		v := e.browserFor(t)
		back := v.startLogin("/app/x")
		v.cookies[name] = planted
		cb := v.check("GET", back.RequestURI())
		if cb.status != http.StatusFound || cb.cookieNamed(name+".0") == nil {
			t.Fatalf("callback: status %d cookies %v, want a chunked session", cb.status, cb.cookies)
		}
		if !expires(cb, name) {
			t.Fatalf("the planted %s is not expired; it would shadow the new chunks", name)
		}
		loggedInAs(t, v, "/app/x", "victim")
	})

	t.Run("planted chunks with a single-cookie session are expired", func(t *testing.T) {
		idp.SetTamper(asUser("victim"))
		v := e.browserFor(t)
		back := v.startLogin("/app/x")
		v.cookies[name+".0"], v.cookies[name+".1"] = planted[:len(planted)/2], planted[len(planted)/2:]
		cb := v.check("GET", back.RequestURI())
		if cb.status != http.StatusFound || cb.cookieNamed(name) == nil {
			t.Fatalf("callback: %d", cb.status)
		}
		for _, n := range []string{name + ".0", name + ".1"} {
			if !expires(cb, n) {
				t.Errorf("planted %s not expired", n)
			}
		}
		loggedInAs(t, v, "/app/x", "victim")
	})
}

// TestRPCallbackCSRF: a callback completes only the login its browser
// started, with the provider that login was for.
func TestRPCallbackCSRF(t *testing.T) {
	t.Parallel()
	a := newRPIdP(t, "a", nil)
	b := newRPIdP(t, "b", nil)
	other := a.provider("c", "/")
	other.ExternalURL = "https://other.test"
	e := newEnv(t, []oidc.ProviderConfig{a.provider("a", "/app/a"), b.provider("b", "/app/b"), other})

	tests := []struct {
		name string
		// run returns the callback's reply; mark is taken before it.
		run    func(t *testing.T) (mark int, r reply)
		status int
		reason string
		// token requests expected at a and b during the case
		tokA, tokB int
	}{
		{
			name: "no login cookie (attacker's callback URL in the victim's browser)",
			run: func(t *testing.T) (int, reply) {
				back := e.browserFor(t).startLogin("/app/a/x")
				mark := len(e.logs.String())
				return mark, e.browserFor(t).check("GET", back.RequestURI())
			},
			status: 400, reason: "no login cookie for this state",
		},
		{
			name: "another login's state (its cookie gone)",
			run: func(t *testing.T) (int, reply) {
				br := e.browserFor(t)
				first := br.startLogin("/app/a/x")
				firstCookies := br.clone().cookies
				br.startLogin("/app/a/y")
				for n := range firstCookies {
					delete(br.cookies, n) // only the second login's cookie is left
				}
				mark := len(e.logs.String())
				return mark, br.check("GET", first.RequestURI())
			},
			status: 400, reason: "no login cookie for this state",
		},
		{
			name: "another login's cookie under this state's name",
			run: func(t *testing.T) (int, reply) {
				attacker := e.browserFor(t)
				attacker.startLogin("/app/a/x")
				victim := e.browserFor(t)
				back := victim.startLogin("/app/a/x")
				var own, foreign string
				for n := range victim.cookies {
					own = n
				}
				for _, v := range attacker.cookies {
					foreign = v
				}
				victim.cookies[own] = foreign
				mark := len(e.logs.String())
				return mark, victim.check("GET", back.RequestURI())
			},
			status: 400, reason: "login cookie does not open",
		},
		{
			name: "attacker's own login completed with the victim's code (code injection)",
			run: func(t *testing.T) (int, reply) {
				// The attacker's login, the victim's code.
				return e.callbackWithForeignCode(t, "/app/a/x", "/app/a/x")
			},
			status: 400, reason: "code exchange refused", tokA: 1,
		},
		{
			name: "state cookie for another provider on this host: code redeemed there only",
			run: func(t *testing.T) (int, reply) {
				// A login with b, a code of a.
				return e.callbackWithForeignCode(t, "/app/b/x", "/app/a/x")
			},
			status: 400, reason: "code exchange refused", tokB: 1,
		},
		{
			name: "state cookie for a provider of another host",
			run: func(t *testing.T) (int, reply) {
				r := e.rawHost("other.test", "GET", "/x", map[string]string{"accept": "text/html"})
				if r.status != http.StatusFound {
					t.Fatalf("other.test: status %d", r.status)
				}
				back := authorizeAt(t, r.location)
				br := e.browserFor(t)
				br.apply(r)
				mark := len(e.logs.String())
				return mark, br.check("GET", back.RequestURI())
			},
			status: 400, reason: "provider or host mismatch",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			beforeA, beforeB := len(a.TokenRequests()), len(b.TokenRequests())
			mark, r := tt.run(t)
			refused(t, e, mark, r, tt.status, tt.reason)
			// A refused code may be posted twice to the same endpoint
			// (x/oauth2 retries with the other client authentication
			// style until one has worked): count endpoints, not posts.
			if got := len(a.TokenRequests()) - beforeA; (got > 0) != (tt.tokA > 0) {
				t.Errorf("%d token requests at IdP a, want %d", got, tt.tokA)
			}
			if got := len(b.TokenRequests()) - beforeB; (got > 0) != (tt.tokB > 0) {
				t.Errorf("%d token requests at IdP b, want %d", got, tt.tokB)
			}
		})
	}
}

// TestRPMixUp: with two IdPs, a login started with A is completed with A
// only: an authorization response naming B (RFC 9207 iss) is refused, a
// code is only ever sent to A's token endpoint, and an ID token of B is no
// ID token of A.
func TestRPMixUp(t *testing.T) {
	t.Parallel()
	a := newRPIdP(t, "a", nil)
	b := newRPIdP(t, "b", nil)
	e := newEnv(t, []oidc.ProviderConfig{a.provider("a", "/app/a"), b.provider("b", "/app/b")})

	tests := []struct {
		name   string
		idpA   func(p *rpIdP) // how A misbehaves (reset after)
		edit   func(t *testing.T, q url.Values)
		ok     bool
		reason string
		tokA   int
	}{
		{name: "iss of A", edit: func(_ *testing.T, q url.Values) { q.Set("iss", a.Issuer) }, ok: true, tokA: 1},
		{name: "no iss (A does not advertise RFC 9207)", ok: true, tokA: 1},
		{name: "iss of B", edit: func(_ *testing.T, q url.Values) { q.Set("iss", b.Issuer) }, reason: "iss is not this login's issuer"},
		{name: "iss of A with a trailing slash", edit: func(_ *testing.T, q url.Values) { q.Set("iss", a.Issuer+"/") }, reason: "iss is not this login's issuer"},
		{name: "iss of A and of B", edit: func(_ *testing.T, q url.Values) { q["iss"] = []string{a.Issuer, b.Issuer} }, reason: "iss is not this login's issuer"},
		{name: "empty iss", edit: func(_ *testing.T, q url.Values) { q.Set("iss", "") }, reason: "iss is not this login's issuer"},
		{name: "iss of B on an error response", edit: func(_ *testing.T, q url.Values) {
			q.Del("code")
			q.Set("error", "access_denied")
			q.Set("iss", b.Issuer)
		}, reason: "iss is not this login's issuer"},
		{name: "code of B", edit: func(t *testing.T, q url.Values) {
			q.Set("code", e.browserFor(t).startLogin("/app/b/x").Query().Get("code"))
		}, reason: "code exchange refused", tokA: 1},
		{name: "ID token of B from A's token endpoint", idpA: func(p *rpIdP) {
			p.SetIDToken(func(c map[string]any) string { c["iss"] = b.Issuer; return b.Sign(c) })
		}, reason: "id token", tokA: 1},
		{name: "ID token of B claiming A's issuer", idpA: func(p *rpIdP) {
			p.SetIDToken(func(c map[string]any) string { return b.Sign(c) })
		}, reason: "id token", tokA: 1},
		{name: "ID token of A naming B as issuer", idpA: func(p *rpIdP) {
			p.SetTamper(func(c map[string]any) { c["iss"] = b.Issuer })
		}, reason: "id token", tokA: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.idpA != nil {
				tt.idpA(a)
				defer func() { a.SetIDToken(nil); a.SetTamper(nil) }()
			}
			br := e.browserFor(t)
			back := br.startLogin("/app/a/x")
			q := back.Query()
			if tt.edit != nil {
				tt.edit(t, q)
			}
			beforeA, beforeB := len(a.TokenRequests()), len(b.TokenRequests())
			mark := len(e.logs.String())
			r := br.check("GET", callbackWith(q))
			if tt.ok {
				if r.status != http.StatusFound || r.location != "/app/a/x" || r.cookieNamed("__Host-gatehouse-a") == nil {
					t.Fatalf("status %d location %q body %q", r.status, r.location, r.body)
				}
			} else {
				refused(t, e, mark, r, http.StatusBadRequest, tt.reason)
			}
			if got := len(a.TokenRequests()) - beforeA; (got > 0) != (tt.tokA > 0) {
				t.Errorf("%d token requests at A, want %d", got, tt.tokA)
			}
			if got := len(b.TokenRequests()) - beforeB; got != 0 {
				t.Errorf("%d token requests at B in a login with A", got)
			}
		})
	}
	// Over all these cases, B's token endpoint never saw a request.
	if n := len(b.TokenRequests()); n != 0 {
		t.Errorf("B's token endpoint got %d requests", n)
	}

	// An IdP that advertises RFC 9207 must send iss: a response without
	// it is refused (an attacker's IdP would leave it out).
	t.Run("iss missing where the IdP advertises it", func(t *testing.T) {
		c := newRPIdP(t, "c", map[string]any{"authorization_response_iss_parameter_supported": true})
		ec := newEnv(t, []oidc.ProviderConfig{c.provider("c", "/")})
		br := ec.browserFor(t)
		back := br.startLogin("/app/x")
		mark := len(ec.logs.String())
		refused(t, ec, mark, br.check("GET", back.RequestURI()), http.StatusBadRequest, "iss missing")
		if n := len(c.TokenRequests()); n != 0 {
			t.Errorf("the code was redeemed anyway (%d token requests)", n)
		}
		// With iss, the same IdP logs in.
		c.SetAuthResponse(func(v url.Values) { v.Set("iss", c.Issuer) })
		br = ec.browserFor(t)
		if r := br.check("GET", br.startLogin("/app/x").RequestURI()); r.status != http.StatusFound || r.cookieNamed("__Host-gatehouse-c") == nil {
			t.Fatalf("with iss: status %d body %q", r.status, r.body)
		}
	})
}

// TestRPRedirectURIExact: the redirect_uri sent to the IdP (authorization
// and token request) is external_url + callback_path byte for byte,
// whatever :authority or forwarding headers the request had; a host no
// provider is configured for gets no redirect at all.
func TestRPRedirectURIExact(t *testing.T) {
	t.Parallel()
	idp := newRPIdP(t, "a", nil)
	p := idp.provider("a", "/")
	p.ExternalURL = appURL + "/" // a trailing slash in the config changes nothing
	e := newEnv(t, []oidc.ProviderConfig{p})
	custom := newEnv(t, []oidc.ProviderConfig{idp.provider("a", "/")}, func(c *oidc.Config) { c.CallbackPath = "/auth/cb" })

	forged := map[string]string{
		"accept": "text/html", "host": "evil.test", "x-forwarded-host": "evil.test",
		"x-forwarded-proto": "http", "forwarded": "host=evil.test;proto=http", "x-original-url": "https://evil.test/",
	}
	tests := []struct {
		env    *env
		host   string
		hdrs   map[string]string
		want   string // "" = no redirect
		cbPath string
	}{
		{e, "app.test", nil, callbackURL, oidc.DefaultCallbackPath},
		{e, "APP.test", nil, callbackURL, oidc.DefaultCallbackPath},
		{e, "app.test:443", nil, callbackURL, oidc.DefaultCallbackPath},
		{e, "App.Test:443", forged, callbackURL, oidc.DefaultCallbackPath},
		{custom, "app.test", forged, appURL + "/auth/cb", "/auth/cb"},
		{e, "evil.test", nil, "", ""},
		{e, "app.test:8443", nil, "", ""},
		{e, "app.test.", nil, "", ""},
		{e, "app.test.evil.test", nil, "", ""},
		{e, "evil.test", map[string]string{"accept": "text/html", "x-forwarded-host": "app.test", "host": "app.test"}, "", ""},
		{e, "", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q %v", tt.host, tt.hdrs != nil), func(t *testing.T) {
			h := map[string]string{"accept": "text/html"}
			for k, v := range tt.hdrs {
				h[k] = v
			}
			r := tt.env.rawRequest(t, tt.host, "GET", "/x", h, nil)
			if tt.want == "" {
				if r.status != http.StatusUnauthorized || r.location != "" || len(r.cookies) != 0 {
					t.Fatalf("status %d location %q cookies %v, want a plain 401", r.status, r.location, r.cookies)
				}
				return
			}
			if r.status != http.StatusFound {
				t.Fatalf("status %d", r.status)
			}
			u, _ := url.Parse(r.location)
			if got := u.Query()["redirect_uri"]; len(got) != 1 || got[0] != tt.want {
				t.Fatalf("redirect_uri %q, want exactly %q", got, tt.want)
			}
			if !strings.Contains(u.RawQuery, "redirect_uri="+url.QueryEscape(tt.want)+"&") && !strings.HasSuffix(u.RawQuery, "redirect_uri="+url.QueryEscape(tt.want)) {
				t.Errorf("raw query %q lacks the encoded redirect_uri", u.RawQuery)
			}
			// The callback on the same host: the token request repeats it.
			back := authorizeAt(t, r.location)
			if back.Path != tt.cbPath {
				t.Fatalf("IdP sent the browser to %s", back)
			}
			br := tt.env.browserFor(t)
			br.apply(r)
			h["cookie"] = br.cookieHeader()
			before := len(idp.TokenRequests())
			cb := tt.env.rawRequest(t, tt.host, "GET", back.RequestURI(), h, nil)
			if cb.status != http.StatusFound || len(sessionSet(cb)) == 0 {
				t.Fatalf("callback: status %d body %q", cb.status, cb.body)
			}
			reqs := idp.TokenRequests()
			if len(reqs) != before+1 || reqs[before].Get("redirect_uri") != tt.want {
				t.Fatalf("token request redirect_uri %q, want %q", reqs[len(reqs)-1].Get("redirect_uri"), tt.want)
			}
		})
	}
}

// TestRPPKCE: whatever code_challenge_methods_supported the IdP publishes
// (S256, plain only, nothing), the flow sends an S256 challenge — never
// plain, never no challenge — and every authorization_code grant carries
// the code_verifier. It does not refuse an IdP that does not list S256:
// an IdP that does not do PKCE ignores the parameters, and the state,
// nonce and client authentication still hold.
func TestRPPKCE(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		methods any
	}{
		{"not advertised", nil},
		{"S256", []string{"S256"}},
		{"plain only", []string{"plain"}},
		{"plain and S256", []string{"plain", "S256"}},
		{"empty list", []string{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			idp, e := rpWithMetadata(t, "code_challenge_methods_supported", tt.methods)
			br := e.browserFor(t)
			back := br.startLogin("/app/x")
			ar := idp.AuthRequests()[0]
			if ar.Get("code_challenge_method") != "S256" || len(ar.Get("code_challenge")) != 43 {
				t.Fatalf("challenge %q method %q, want S256", ar.Get("code_challenge"), ar.Get("code_challenge_method"))
			}
			if r := br.check("GET", back.RequestURI()); r.status != http.StatusFound || len(sessionSet(r)) == 0 {
				t.Fatalf("callback: %d %q", r.status, r.body)
			}
			tr := idp.TokenRequests()
			if len(tr) != 1 {
				t.Fatalf("%d token requests", len(tr))
			}
			v := tr[0].Get("code_verifier")
			sum := sha256.Sum256([]byte(v))
			if len(v) < 43 || len(v) > 128 || base64.RawURLEncoding.EncodeToString(sum[:]) != ar.Get("code_challenge") {
				t.Fatalf("code_verifier %q does not answer the challenge", v)
			}
		})
	}
}

// TestRPPromptMaxAge: the flow asks for neither prompt nor max_age, so it
// requires neither: no auth_time is needed, and an old one is not judged
// (OIDC Core 3.1.2.1, 3.1.3.7 item 13). Re-authentication is bounded by
// the session lifetime instead.
func TestRPPromptMaxAge(t *testing.T) {
	t.Parallel()
	idp := newRPIdP(t, "a", nil)
	e := newEnv(t, []oidc.ProviderConfig{idp.provider("a", "/")})
	for _, tt := range []struct {
		name   string
		claims func(map[string]any)
	}{
		{"no auth_time", nil},
		{"auth_time a day ago", func(c map[string]any) { c["auth_time"] = time.Now().Add(-24 * time.Hour).Unix() }},
		{"acr and amr present", func(c map[string]any) { c["acr"] = "0"; c["amr"] = []string{"pwd"} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			idp.SetTamper(tt.claims)
			br := e.browserFor(t)
			back := br.startLogin("/app/x")
			ars := idp.AuthRequests()
			q := ars[len(ars)-1]
			for _, k := range []string{"prompt", "max_age", "acr_values", "id_token_hint", "login_hint", "response_mode", "request", "request_uri"} {
				if q.Has(k) {
					t.Errorf("authorization request carries %s=%q", k, q.Get(k))
				}
			}
			if q.Get("response_type") != "code" {
				t.Errorf("response_type %q", q.Get("response_type"))
			}
			if r := br.check("GET", back.RequestURI()); r.status != http.StatusFound || len(sessionSet(r)) == 0 {
				t.Fatalf("callback: %d %q", r.status, r.body)
			}
			if r := br.check("GET", "/app/x"); !r.allowed {
				t.Fatalf("after login: %d", r.status)
			}
		})
	}
}
