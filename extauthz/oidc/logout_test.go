package oidc_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/oidc"
	"github.com/gatehouse-proxy/gatehouse/test/dex"
)

func postLogout(t *testing.T, srv *httptest.Server, token string) int {
	t.Helper()
	resp, err := http.PostForm(srv.URL, url.Values{"logout_token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("back-channel response Cache-Control = %q", resp.Header.Get("Cache-Control"))
	}
	return resp.StatusCode
}

// TestBackChannelLogout: a verified logout token from the IdP ends live
// sessions — by sid only that session, by sub all of the user's sessions
// up to now — and every malformed or replayed token is refused.
func TestBackChannelLogout(t *testing.T) {
	t.Parallel()
	idp := newScriptedIdP(t)
	e := newEnv(t, []oidc.ProviderConfig{idp.provider()})
	bcl := httptest.NewServer(e.flow.BackChannelLogoutHandler())
	t.Cleanup(bcl.Close)

	first := e.browser()
	if r := first.scriptedLogin("/app/"); r.status != http.StatusFound {
		t.Fatalf("callback: %d %q", r.status, r.body)
	}
	sid1, idToken := idp.last()
	second := e.browser()
	second.scriptedLogin("/app/")
	for _, b := range []*browser{first, second} {
		if r := b.check("GET", "/app/"); !r.allowed {
			t.Fatalf("before logout: status %d", r.status)
		}
	}

	// Refused tokens, each signed by the IdP's real key unless noted.
	refused := map[string]string{
		"nonce present":        idp.logoutToken(func(c map[string]any) { c["nonce"] = "n" }),
		"no events claim":      idp.logoutToken(func(c map[string]any) { delete(c, "events") }),
		"other audience":       idp.logoutToken(func(c map[string]any) { c["aud"] = "someone-else" }),
		"other issuer":         idp.logoutToken(func(c map[string]any) { c["iss"] = "https://evil.example" }),
		"iat too old":          idp.logoutToken(func(c map[string]any) { c["iat"] = time.Now().Add(-time.Hour).Unix() }),
		"iat in the future":    idp.logoutToken(func(c map[string]any) { c["iat"] = time.Now().Add(time.Hour).Unix() }),
		"no iat":               idp.logoutToken(func(c map[string]any) { delete(c, "iat") }),
		"expired":              idp.logoutToken(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }),
		"no sub nor sid":       idp.logoutToken(func(c map[string]any) { delete(c, "sub") }),
		"no jti":               idp.logoutToken(func(c map[string]any) { delete(c, "jti") }),
		"an ID token":          idToken,
		"signed by a stranger": newScriptedIdPWithIssuer(t, idp.Issuer).logoutToken(nil),
		"not a JWT":            "abc",
		"empty":                "",
	}
	for name, tok := range refused {
		if got := postLogout(t, bcl, tok); got != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", name, got)
		}
	}
	for _, b := range []*browser{first, second} {
		if r := b.check("GET", "/app/"); !r.allowed {
			t.Fatalf("a refused token logged a session out (status %d)", r.status)
		}
	}
	if resp, _ := http.Get(bcl.URL); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d", resp.StatusCode)
	}

	// By sid: only that session ends.
	bySID := idp.logoutToken(func(c map[string]any) { c["sid"] = sid1 })
	if got := postLogout(t, bcl, bySID); got != http.StatusOK {
		t.Fatalf("logout by sid: status %d", got)
	}
	if got := postLogout(t, bcl, bySID); got != http.StatusBadRequest {
		t.Errorf("replayed jti: status %d, want 400", got)
	}
	if r := first.check("GET", "/app/"); r.allowed || r.status != http.StatusFound {
		t.Fatalf("session ended by sid: allowed %v status %d", r.allowed, r.status)
	}
	if r := second.check("GET", "/app/"); !r.allowed {
		t.Fatalf("other session ended too: status %d", r.status)
	}

	// By sub, routed through Envoy to Check: every session of the user so far.
	body := url.Values{"logout_token": {idp.logoutToken(nil)}}.Encode()
	r := e.rawRequest(t, appHost, "POST", oidc.DefaultBackChannelLogoutPath,
		map[string]string{"content-type": "application/x-www-form-urlencoded"}, []byte(body))
	if r.allowed || r.status != http.StatusOK {
		t.Fatalf("logout by sub via Check: allowed %v status %d body %q", r.allowed, r.status, r.body)
	}
	if r := second.check("GET", "/app/"); r.allowed {
		t.Fatal("session survived logout by sub")
	}
	bad := url.Values{"logout_token": {"abc"}}.Encode()
	if r := e.rawRequest(t, appHost, "POST", oidc.DefaultBackChannelLogoutPath,
		map[string]string{"content-type": "application/x-www-form-urlencoded"}, []byte(bad)); r.status != http.StatusBadRequest {
		t.Errorf("bad token via Check: status %d", r.status)
	}

	// A login after the logout is a new session.
	e.clock.set(time.Second)
	third := e.browser()
	third.scriptedLogin("/app/")
	if r := third.check("GET", "/app/"); !r.allowed {
		t.Fatalf("new login after logout by sub: status %d", r.status)
	}
}

// newScriptedIdPWithIssuer signs with its own key but claims issuer.
func newScriptedIdPWithIssuer(t *testing.T, issuer string) *scriptedIdP {
	p := newScriptedIdP(t)
	p.Issuer = issuer
	return p
}

// TestDexTokenIsNoLogoutToken: Dex sends no logout tokens; a Dex ID token
// posted as one (signed by Dex, right audience) is refused: it has a nonce
// and no events claim.
func TestDexTokenIsNoLogoutToken(t *testing.T) {
	t.Parallel()
	d := dex.Start(t, dex.Options{RedirectURIs: []string{callbackURL}})
	p := dexProvider(d, dex.ConfidentialClient)
	e := newEnv(t, []oidc.ProviderConfig{p})
	b := e.browser()
	r := b.check("GET", "/app/")
	back := b.idpLogin(d, r.location, "alice")
	if r := b.check("GET", back.RequestURI()); r.status != http.StatusFound {
		t.Fatal(r.status)
	}
	// Exchange a second code ourselves to hold a Dex-signed ID token.
	r = e.browser().check("GET", "/app/")
	u, _ := url.Parse(r.location)
	q := u.Query()
	q.Del("code_challenge")
	q.Del("code_challenge_method")
	u.RawQuery = q.Encode()
	back = b.idpLogin(d, u.String(), "alice")
	resp, err := http.PostForm(d.Issuer+"/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")}, "redirect_uri": {callbackURL},
		"client_id": {p.ClientID}, "client_secret": {p.ClientSecret},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		IDToken string `json:"id_token"`
	}
	if err := jsonDecode(resp, &tok); err != nil || tok.IDToken == "" {
		t.Fatalf("token: %v status %d", err, resp.StatusCode)
	}
	bcl := httptest.NewServer(e.flow.BackChannelLogoutHandler())
	defer bcl.Close()
	if got := postLogout(t, bcl, tok.IDToken); got != http.StatusBadRequest {
		t.Fatalf("Dex ID token as logout token: status %d, want 400", got)
	}
	if r := b.check("GET", "/app/"); !r.allowed {
		t.Fatalf("session ended: %d", r.status)
	}
}

// TestEndSessionLogout: with an IdP that advertises end_session_endpoint,
// logout goes there with id_token_hint, post_logout_redirect_uri and
// client_id.
func TestEndSessionLogout(t *testing.T) {
	t.Parallel()
	idp := newScriptedIdP(t)
	e := newEnv(t, []oidc.ProviderConfig{idp.provider()})
	b := e.browser()
	b.scriptedLogin("/app/")
	_, idToken := idp.last()
	r := b.check("GET", oidc.DefaultLogoutPath)
	u, err := url.Parse(r.location)
	if r.status != http.StatusFound || err != nil || !strings.HasPrefix(r.location, idp.Issuer+"/logout?") {
		t.Fatalf("logout: status %d location %q", r.status, r.location)
	}
	q := u.Query()
	if q.Get("id_token_hint") != idToken || q.Get("post_logout_redirect_uri") != appURL+"/" || q.Get("client_id") != scriptedClient {
		t.Errorf("end_session query = %v", q)
	}
	if r := b.check("GET", "/app/"); r.allowed {
		t.Fatal("allowed after logout")
	}
}

// TestIDTokenChecks: what go-oidc leaves to the caller — nonce, azp, iat —
// and what it does check are all enforced at the callback.
func TestIDTokenChecks(t *testing.T) {
	t.Parallel()
	idp := newScriptedIdP(t)
	e := newEnv(t, []oidc.ProviderConfig{idp.provider()})
	tests := []struct {
		name   string
		tamper func(map[string]any)
		ok     bool
	}{
		{"valid", nil, true},
		{"several audiences, azp is us", func(c map[string]any) { c["aud"] = []string{scriptedClient, "other"}; c["azp"] = scriptedClient }, true},
		{"several audiences, no azp", func(c map[string]any) { c["aud"] = []string{scriptedClient, "other"} }, false},
		{"azp is someone else", func(c map[string]any) { c["azp"] = "other" }, false},
		{"audience is someone else", func(c map[string]any) { c["aud"] = "other" }, false},
		{"other issuer", func(c map[string]any) { c["iss"] = "https://evil.example" }, false},
		{"expired", func(c map[string]any) { c["exp"] = time.Now().Add(-time.Second).Unix() }, false},
		{"iat in the future", func(c map[string]any) { c["iat"] = time.Now().Add(time.Hour).Unix() }, false},
		{"iat long ago", func(c map[string]any) { c["iat"] = time.Now().Add(-time.Hour).Unix() }, false},
		{"no iat", func(c map[string]any) { delete(c, "iat") }, false},
		{"no nonce", func(c map[string]any) { delete(c, "nonce") }, false},
		{"wrong nonce", func(c map[string]any) { c["nonce"] = "x" }, false},
		{"no sub", func(c map[string]any) { delete(c, "sub") }, false},
		{"wrong at_hash", func(c map[string]any) { c["at_hash"] = "AAAAAAAAAAAAAAAAAAAAAA" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idp.setTamper(tt.tamper)
			defer idp.setTamper(nil)
			b := e.browser()
			r := b.scriptedLogin("/app/x")
			if tt.ok {
				if r.status != http.StatusFound || r.location != "/app/x" || r.cookieNamed("__Host-gatehouse-corp") == nil {
					t.Fatalf("status %d location %q body %q", r.status, r.location, r.body)
				}
				if r := b.check("GET", "/app/x"); !r.allowed || r.headers["x-gatehouse-groups"] != "staff" {
					t.Fatalf("after login: allowed %v headers %v", r.allowed, r.headers)
				}
				return
			}
			if r.status != http.StatusBadRequest || r.cookieNamed("__Host-gatehouse-corp") != nil {
				t.Fatalf("status %d, session cookie %v; want 400 and no session", r.status, r.cookieNamed("__Host-gatehouse-corp"))
			}
		})
	}
}

// TestSeveralProviders: two IdPs on one host split by path prefix, one
// callback path; each route logs in with its own IdP and keeps its own
// session.
func TestSeveralProviders(t *testing.T) {
	t.Parallel()
	d := dex.Start(t, dex.Options{RedirectURIs: []string{callbackURL}})
	idp := newScriptedIdP(t)
	corp := idp.provider()
	corp.PathPrefixes = []string{"/app/corp"}
	e := newEnv(t, []oidc.ProviderConfig{dexProvider(d, dex.ConfidentialClient), corp})
	b := e.browser()

	r := b.check("GET", "/app/corp/x")
	if !strings.HasPrefix(r.location, idp.Issuer+"/auth?") {
		t.Fatalf("/app/corp: location %q, want the corp IdP", r.location)
	}
	r = b.check("GET", "/app/corpus")
	if !strings.HasPrefix(r.location, d.Issuer+"/auth?") {
		t.Fatalf("/app/corpus: location %q, want Dex (prefixes match whole segments)", r.location)
	}

	if r := b.scriptedLogin("/app/corp/x"); r.status != http.StatusFound {
		t.Fatalf("corp login: %d", r.status)
	}
	if r := b.check("GET", "/app/corp/x"); !r.allowed || r.headers["x-gatehouse-email"] != "carol@corp.example" {
		t.Fatalf("corp route: allowed %v headers %v", r.allowed, r.headers)
	}
	// The corp session does not open Dex's routes.
	if r := b.check("GET", "/app/other"); r.allowed || !strings.HasPrefix(r.location, d.Issuer+"/auth?") {
		t.Fatalf("dex route with a corp session: allowed %v location %q", r.allowed, r.location)
	}
	if r := b.login(d, "/app/other", "alice"); !r.allowed || r.headers["x-gatehouse-email"] != "alice@example.com" {
		t.Fatalf("dex route: allowed %v headers %v", r.allowed, r.headers)
	}
	if r := b.check("GET", "/app/corp/x"); !r.allowed || r.headers["x-gatehouse-email"] != "carol@corp.example" {
		t.Fatal("corp session lost after the Dex login")
	}
	// Logout ends both sessions of the host.
	b.check("GET", oidc.DefaultLogoutPath)
	for _, p := range []string{"/app/corp/x", "/app/other"} {
		if r := b.check("GET", p); r.allowed {
			t.Errorf("%s allowed after logout", p)
		}
	}
}

// TestLargeSession: a session too large for one cookie is split into
// chunks (dropping the ID token kept for logout first); one too large for
// the bound is no session at all, never a truncated one.
func TestLargeSession(t *testing.T) {
	t.Parallel()
	idp := newScriptedIdP(t)
	e := newEnv(t, []oidc.ProviderConfig{idp.provider()})
	groups := func(n int) []string {
		var g []string
		for i := range n {
			g = append(g, fmt.Sprintf("group-%03d-%s", i, strings.Repeat("x", 90)))
		}
		return g
	}

	idp.setTamper(func(c map[string]any) { c["groups"] = groups(90) })
	b := e.browser()
	r := b.scriptedLogin("/app/")
	if r.status != http.StatusFound {
		t.Fatalf("callback: %d %q", r.status, r.body)
	}
	var chunks int
	for _, c := range r.cookies {
		if strings.HasPrefix(c.Name, "__Host-gatehouse-corp.") {
			chunks++
			assertStrictCookie(t, c)
		}
	}
	if chunks < 2 || chunks > 4 {
		t.Fatalf("%d session chunks, want 2..4", chunks)
	}
	ok := b.check("GET", "/app/")
	if !ok.allowed || !strings.HasPrefix(ok.headers["x-gatehouse-groups"], "group-000-") {
		t.Fatalf("chunked session: allowed %v, groups header %d bytes", ok.allowed, len(ok.headers["x-gatehouse-groups"]))
	}
	// Without the ID token, logout still works (no id_token_hint).
	lo := b.check("GET", oidc.DefaultLogoutPath)
	if u, _ := url.Parse(lo.location); lo.status != http.StatusFound || u.Query().Get("id_token_hint") != "" {
		t.Fatalf("logout: %d %q", lo.status, lo.location)
	}
	if r := b.check("GET", "/app/"); r.allowed {
		t.Fatal("allowed after logout")
	}

	// The same session with a bound of two cookies: login fails.
	small := newEnv(t, []oidc.ProviderConfig{idp.provider()}, func(c *oidc.Config) { c.MaxCookieChunks = 2 })
	r = small.browser().scriptedLogin("/app/")
	if r.status != http.StatusInternalServerError || r.cookieNamed("__Host-gatehouse-corp") != nil {
		t.Fatalf("oversized session: status %d, cookies %v", r.status, r.cookies)
	}
	// An ID token beyond 16 KiB is refused outright.
	idp.setTamper(func(c map[string]any) { c["groups"] = groups(140) })
	r = e.browser().scriptedLogin("/app/")
	if r.status != http.StatusBadRequest || r.cookieNamed("__Host-gatehouse-corp") != nil {
		t.Fatalf("oversized ID token: status %d, cookies %v", r.status, r.cookies)
	}
}

// TestPendingLoginsBounded: a browser made to start many logins does not
// accumulate login cookies without bound.
func TestPendingLoginsBounded(t *testing.T) {
	t.Parallel()
	idp := newScriptedIdP(t)
	e := newEnv(t, []oidc.ProviderConfig{idp.provider()})
	b := e.browser()
	for range 20 {
		if r := b.check("GET", "/app/"); r.status != http.StatusFound {
			t.Fatalf("status %d", r.status)
		}
		if n := strings.Count(b.cookieHeader(), "__Host-gatehouse-login-"); n > 4 {
			t.Fatalf("%d login cookies pending", n)
		}
	}
	// The latest login still completes.
	if r := b.scriptedLogin("/app/"); r.status != http.StatusFound || r.cookieNamed("__Host-gatehouse-corp") == nil {
		t.Fatalf("login after many starts: %d", r.status)
	}
}

// TestLogoutCSRF: another site cannot end the user's sessions. A cross-site
// GET gets a confirmation page that posts back from this site; a
// cross-site POST, or one whose Origin is another host, is refused; the
// session survives both. The page's own POST logs out.
func TestLogoutCSRF(t *testing.T) {
	t.Parallel()
	idp := newScriptedIdP(t)
	e := newEnv(t, []oidc.ProviderConfig{idp.provider()})
	b := e.browser()
	b.scriptedLogin("/app/")
	stillIn := func(step string) {
		t.Helper()
		if r := b.check("GET", "/app/"); !r.allowed {
			t.Fatalf("%s: session ended", step)
		}
	}

	r := b.check("GET", oidc.DefaultLogoutPath, [2]string{"sec-fetch-site", "cross-site"})
	if r.status != http.StatusOK || !strings.Contains(r.body, `<form method="post" action="`+oidc.DefaultLogoutPath+`">`) {
		t.Fatalf("cross-site GET: status %d body %q, want the confirmation page", r.status, r.body)
	}
	if !strings.Contains(r.headers["content-security-policy"], "frame-ancestors 'none'") {
		t.Errorf("confirmation page may be framed: %v", r.headers)
	}
	stillIn("cross-site GET")
	for name, h := range map[string][2]string{
		"Sec-Fetch-Site cross-site": {"sec-fetch-site", "cross-site"},
		"Sec-Fetch-Site same-site":  {"sec-fetch-site", "same-site"},
		"Origin of another host":    {"origin", "https://evil.example"},
		"Origin null":               {"origin", "null"},
	} {
		if r := b.check("POST", oidc.DefaultLogoutPath, h); r.status != http.StatusForbidden {
			t.Errorf("%s POST: status %d, want 403", name, r.status)
		}
		stillIn(name)
	}

	r = b.check("POST", oidc.DefaultLogoutPath, [2]string{"sec-fetch-site", "same-origin"}, [2]string{"origin", appURL})
	if r.status != http.StatusFound {
		t.Fatalf("same-origin POST: status %d %q", r.status, r.body)
	}
	if r := b.check("GET", "/app/"); r.allowed {
		t.Fatal("allowed after the confirmed logout")
	}
}
