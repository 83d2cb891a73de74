package oidc_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/gatehouse-proxy/gatehouse/extauthz/oidc"
	"github.com/gatehouse-proxy/gatehouse/test/dex"
)

// TestBrowserLoginAgainstDex drives the whole login as a browser would,
// with only HTTP (to Dex) and gRPC (to Gatehouse): Check without a cookie →
// 302 to Dex → Dex's login form → credentials → redirect to the callback →
// Check on the callback → Set-Cookie and 302 → Check with the cookie →
// allowed with identity headers, and policy deciding on Dex's groups.
func TestBrowserLoginAgainstDex(t *testing.T) {
	t.Parallel()
	d := dex.Start(t, dex.Options{RedirectURIs: []string{callbackURL}})
	e := newEnv(t, []oidc.ProviderConfig{dexProvider(d, dex.ConfidentialClient)})
	alice := e.browser()

	// 1. No session, a browser: redirected to Dex's authorization endpoint.
	r := alice.check("GET", "/admin/reports?year=2026")
	if r.status != http.StatusFound || r.code != code.Code_UNAUTHENTICATED {
		t.Fatalf("first request: status %d code %v, want 302 UNAUTHENTICATED", r.status, r.code)
	}
	auth, err := url.Parse(r.location)
	if err != nil {
		t.Fatal(err)
	}
	q := auth.Query()
	if got := auth.Scheme + "://" + auth.Host + auth.Path; got != d.Issuer+"/auth" {
		t.Errorf("authorization endpoint = %s, want %s/auth (from discovery)", got, d.Issuer)
	}
	want := map[string]string{
		"response_type": "code", "client_id": dex.ConfidentialClient, "redirect_uri": callbackURL,
		"code_challenge_method": "S256", "scope": "openid email profile groups offline_access",
	}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("auth URL %s = %q, want %q", k, q.Get(k), v)
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(k)) < 43 {
			t.Errorf("auth URL %s = %q: want ≥ 256 bits", k, q.Get(k))
		}
	}
	if r.headers["cache-control"] != "no-store" {
		t.Errorf("redirect cache-control = %q", r.headers["cache-control"])
	}
	lc := r.cookieNamed("__Host-gatehouse-login-")
	if lc == nil {
		t.Fatalf("no login cookie in %v", r.cookies)
	}
	assertStrictCookie(t, lc)
	if lc.MaxAge <= 0 || lc.MaxAge > int((10*time.Minute).Seconds()) {
		t.Errorf("login cookie Max-Age = %d, want short-lived", lc.MaxAge)
	}
	if strings.Contains(lc.Value, q.Get("state")) || strings.Contains(lc.Value, q.Get("nonce")) {
		t.Error("login cookie shows state or nonce in clear")
	}

	// 2. At Dex: the login form, the credentials, the redirect back.
	back := alice.idpLogin(d, r.location, "alice")
	if back.Query().Get("state") != q.Get("state") || back.Query().Get("code") == "" {
		t.Fatalf("callback URL %s lacks code or state", back)
	}

	// 3. The callback: session cookie set, login cookie cleared, back to
	// the original URL.
	cb := alice.check("GET", back.RequestURI())
	if cb.status != http.StatusFound || cb.location != "/admin/reports?year=2026" {
		t.Fatalf("callback: status %d location %q body %q", cb.status, cb.location, cb.body)
	}
	sc := cb.cookieNamed("__Host-gatehouse-dex")
	if sc == nil {
		t.Fatalf("callback set no session cookie: %v", cb.cookies)
	}
	assertStrictCookie(t, sc)
	if c := cb.cookieNamed(lc.Name); c == nil || c.MaxAge >= 0 {
		t.Errorf("login cookie not cleared by the callback")
	}
	for _, secret := range []string{"alice", "admins", "example.com"} {
		if strings.Contains(sc.Value, secret) {
			t.Errorf("session cookie shows %q in clear", secret)
		}
	}

	// 4. With the cookie: allowed, with identity headers; the admins group
	// from Dex satisfied the policy.
	ok := alice.check("GET", "/admin/reports?year=2026")
	if !ok.allowed {
		t.Fatalf("with session: status %d body %q", ok.status, ok.body)
	}
	for k, v := range map[string]string{
		"x-gatehouse-email": "alice@example.com", "x-gatehouse-groups": "admins,devs",
		"x-gatehouse-kind": "user", "x-gatehouse-verified-by": "session", "x-gatehouse-issuer": d.Issuer,
	} {
		if ok.headers[k] != v {
			t.Errorf("upstream %s = %q, want %q", k, ok.headers[k], v)
		}
	}
	if ok.headers["x-gatehouse-subject"] == "" {
		t.Error("no subject header")
	}
	if !slices.Contains(ok.removed, "cookie") {
		t.Errorf("Gatehouse's cookies reach the upstream: removed %v, headers %v", ok.removed, ok.headers)
	}

	// Nothing secret reached the logs: no cookie, code, state, nonce or token.
	secrets := map[string]string{"state": q.Get("state"), "nonce": q.Get("nonce"), "code": back.Query().Get("code"),
		"login cookie": lc.Value, "session cookie": sc.Value, "session cookie prefix": sc.Value[:40]}
	for what, v := range secrets {
		if strings.Contains(e.logs.String(), v) {
			t.Errorf("the log contains the %s", what)
		}
	}
	if !strings.Contains(e.logs.String(), "oidc login") {
		t.Error("the login was not logged at all; the check above proves nothing")
	}

	// Bob is in devs only: logged in, but policy says no to /admin.
	bob := e.browser()
	if r := bob.login(d, "/app/home", "bob"); !r.allowed {
		t.Fatalf("bob /app: status %d", r.status)
	}
	if r := bob.check("GET", "/admin/reports"); r.allowed || r.status != http.StatusForbidden {
		t.Errorf("bob /admin: allowed %v status %d, want 403 (identified, not a redirect)", r.allowed, r.status)
	}

	// API clients get 401, not a redirect.
	for name, hdrs := range map[string][][2]string{
		"no text/html":         {header("accept", "application/json")},
		"authorization header": {header("authorization", "Basic YWxpY2U6eA==")},
		"XHR":                  {header("x-requested-with", "XMLHttpRequest")},
		"fetch":                {header("sec-fetch-mode", "cors")},
	} {
		r := e.browser().check("GET", "/app/x", hdrs...)
		if r.status != http.StatusUnauthorized || r.location != "" {
			t.Errorf("%s: status %d location %q, want 401", name, r.status, r.location)
		}
	}
	if r := e.browser().check("POST", "/app/x"); r.status != http.StatusUnauthorized {
		t.Errorf("POST: status %d, want 401 (no redirect for non-idempotent requests)", r.status)
	}
	// Public paths need no login; unknown hosts never get a redirect_uri.
	if r := e.browser().check("GET", "/public/x"); !r.allowed {
		t.Errorf("public: status %d", r.status)
	}
	if r := e.rawHost("evil.test", "GET", "/app/x", map[string]string{"accept": "text/html"}); r.status != http.StatusUnauthorized || r.location != "" {
		t.Errorf("unknown host: status %d location %q, want 401 without a redirect", r.status, r.location)
	}
}

func assertStrictCookie(t *testing.T, c *http.Cookie) {
	t.Helper()
	if !strings.HasPrefix(c.Name, "__Host-") || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" {
		t.Errorf("cookie %s: Secure=%v HttpOnly=%v SameSite=%v Path=%q Domain=%q; want __Host-, Secure, HttpOnly, Lax, /, no domain",
			c.Name, c.Secure, c.HttpOnly, c.SameSite, c.Path, c.Domain)
	}
	if len(c.String()) > 4000 {
		t.Errorf("cookie %s is %d bytes", c.Name, len(c.String()))
	}
}

// TestCallbackRejects: every way a callback can be wrong ends without a
// session.
func TestCallbackRejects(t *testing.T) {
	t.Parallel()
	d := dex.Start(t, dex.Options{RedirectURIs: []string{callbackURL}})
	e := newEnv(t, []oidc.ProviderConfig{dexProvider(d, dex.ConfidentialClient)})

	// start returns a browser with a login in progress and Dex's redirect
	// back, after tamper changed the authorization URL.
	start := func(t *testing.T, tamper func(url.Values)) (*browser, *url.URL) {
		b := e.browserFor(t)
		r := b.check("GET", "/app/x")
		u, _ := url.Parse(r.location)
		if tamper != nil {
			q := u.Query()
			tamper(q)
			u.RawQuery = q.Encode()
		}
		return b, b.idpLogin(d, u.String(), "alice")
	}
	rejected := func(t *testing.T, r reply, want int) {
		t.Helper()
		if r.status != want || r.allowed {
			t.Errorf("status %d allowed %v, want %d", r.status, r.allowed, want)
		}
		if r.cookieNamed("__Host-gatehouse-dex") != nil {
			t.Error("a session cookie was set")
		}
	}

	t.Run("missing state", func(t *testing.T) {
		b, back := start(t, nil)
		q := back.Query()
		q.Del("state")
		rejected(t, b.check("GET", oidc.DefaultCallbackPath+"?"+q.Encode()), 400)
	})
	t.Run("wrong state", func(t *testing.T) {
		b, back := start(t, nil)
		q := back.Query()
		q.Set("state", q.Get("state")+"x")
		rejected(t, b.check("GET", oidc.DefaultCallbackPath+"?"+q.Encode()), 400)
	})
	t.Run("state without its cookie (another browser)", func(t *testing.T) {
		_, back := start(t, nil)
		rejected(t, e.browserFor(t).check("GET", back.RequestURI()), 400)
	})
	t.Run("replayed callback", func(t *testing.T) {
		b, back := start(t, nil)
		keep := b.clone()
		if r := b.check("GET", back.RequestURI()); r.status != 302 {
			t.Fatalf("first callback: %d", r.status)
		}
		rejected(t, keep.check("GET", back.RequestURI()), 400)
	})
	t.Run("replayed code with a fresh state", func(t *testing.T) {
		b, back := start(t, nil)
		if r := b.check("GET", back.RequestURI()); r.status != 302 {
			t.Fatalf("first callback: %d", r.status)
		}
		b2 := e.browserFor(t)
		r := b2.check("GET", "/app/x")
		fresh, _ := url.Parse(r.location)
		q := url.Values{"code": {back.Query().Get("code")}, "state": {fresh.Query().Get("state")}}
		before := e.transport.exchanges.Load()
		rejected(t, b2.check("GET", oidc.DefaultCallbackPath+"?"+q.Encode()), 400)
		if e.transport.exchanges.Load() != before+1 {
			t.Error("the code was not even sent to Dex: the test proves nothing")
		}
	})
	t.Run("wrong nonce", func(t *testing.T) {
		b, back := start(t, func(q url.Values) { q.Set("nonce", "attacker-chosen-nonce-value-0123456789abcdef") })
		rejected(t, b.check("GET", back.RequestURI()), 400)
	})
	t.Run("wrong PKCE challenge", func(t *testing.T) {
		b, back := start(t, func(q url.Values) { q.Set("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM") })
		rejected(t, b.check("GET", back.RequestURI()), 400)
	})
	t.Run("IdP error", func(t *testing.T) {
		b := e.browserFor(t)
		r := b.check("GET", "/app/x")
		u, _ := url.Parse(r.location)
		q := url.Values{"error": {"access_denied"}, "state": {u.Query().Get("state")}}
		rejected(t, b.check("GET", oidc.DefaultCallbackPath+"?"+q.Encode()), 403)
	})
	t.Run("expired login", func(t *testing.T) {
		b, back := start(t, nil)
		e.clock.set(11 * time.Minute)
		defer e.clock.set(0)
		rejected(t, b.check("GET", back.RequestURI()), 400)
	})
	t.Run("callback on an unknown host is not ours", func(t *testing.T) {
		b, back := start(t, nil)
		h := map[string]string{"cookie": b.cookieHeader(), "accept": "text/html"}
		req := e.rawHost("evil.test", "GET", back.RequestURI(), h)
		if req.location != "" || req.cookieNamed("__Host-gatehouse-dex") != nil {
			t.Errorf("foreign host got location %q", req.location)
		}
	})
}

// TestOpenRedirect: whatever the original path, the browser returns only
// to a same-origin path.
func TestOpenRedirect(t *testing.T) {
	t.Parallel()
	d := dex.Start(t, dex.Options{RedirectURIs: []string{callbackURL}})
	e := newEnv(t, []oidc.ProviderConfig{dexProvider(d, dex.ConfidentialClient)})
	for _, path := range []string{
		"//evil.example/x", `/\evil.example`, "/%2F%2Fevil.example", "/%2f/evil.example", "/%5Cevil.example",
		"/%252F%252Fevil.example", "https://evil.example/", "/./%2F/evil.example", "/app/\x00",
	} {
		t.Run(path, func(t *testing.T) {
			b := e.browserFor(t)
			r := b.check("GET", path)
			if r.status != http.StatusFound {
				t.Fatalf("status %d, want a redirect to log in", r.status)
			}
			back := b.idpLogin(d, r.location, "alice")
			cb := b.check("GET", back.RequestURI())
			if cb.location != "/" {
				t.Errorf("return location = %q, want /", cb.location)
			}
		})
	}
}

// TestSessionCookie: a tampered cookie, a cookie under a retired key and a
// session past its lifetime are no session at all: the browser logs in again.
func TestSessionCookie(t *testing.T) {
	t.Parallel()
	d := dex.Start(t, dex.Options{RedirectURIs: []string{callbackURL}})
	p := dexProvider(d, dex.ConfidentialClient)
	e := newEnv(t, []oidc.ProviderConfig{p})
	b := e.browser()
	if r := b.login(d, "/app/", "alice"); !r.allowed {
		t.Fatalf("login: %d", r.status)
	}
	name := "__Host-gatehouse-dex"

	t.Run("tampered", func(t *testing.T) {
		for i := range []int{0, 1, 2} {
			c := b.in(t)
			v := []byte(c.cookies[name])
			pos := []int{0, len(v) / 2, len(v) - 1}[i]
			v[pos] ^= 1
			if v[pos] == '=' || v[pos] > 'z' {
				v[pos] = 'A'
			}
			c.cookies[name] = string(v)
			r := c.check("GET", "/app/")
			if r.allowed || r.status != http.StatusFound {
				t.Fatalf("tampered at %d: allowed %v status %d, want a redirect to log in", pos, r.allowed, r.status)
			}
			if cl := r.cookieNamed(name); cl == nil || cl.MaxAge >= 0 {
				t.Error("the bad cookie was not cleared")
			}
		}
	})
	t.Run("key rotation", func(t *testing.T) {
		// New key first, old key still accepted: the old cookie works.
		rotated, err := oidc.New(oidc.Config{Providers: []oidc.ProviderConfig{p}, CookieKeys: [][]byte{newKey(t), e.keys[0]}},
			oidc.WithLogger(quiet()))
		if err != nil {
			t.Fatal(err)
		}
		other := &env{t: t, flow: rotated, client: serve(t, rotated, quiet()), clock: e.clock, transport: e.transport}
		c := b.in(t)
		c.e, c.t = other, t
		if r := c.check("GET", "/app/"); !r.allowed {
			t.Fatalf("cookie sealed by the previous key: status %d", r.status)
		}
		// Old key dropped: the cookie is no session.
		retired, _ := oidc.New(oidc.Config{Providers: []oidc.ProviderConfig{p}, CookieKeys: [][]byte{newKey(t)}}, oidc.WithLogger(quiet()))
		c.e = &env{t: t, flow: retired, client: serve(t, retired, quiet()), clock: e.clock, transport: e.transport}
		if r := c.check("GET", "/app/"); r.allowed {
			t.Fatal("cookie accepted after its key was retired")
		}
	})
	t.Run("session lifetime over", func(t *testing.T) {
		e.clock.set(12*time.Hour + time.Second)
		defer e.clock.set(0)
		if r := b.in(t).check("GET", "/app/"); r.allowed || r.status != http.StatusFound {
			t.Fatalf("expired session: allowed %v status %d", r.allowed, r.status)
		}
		if r := b.in(t).check("GET", "/app/", header("accept", "application/json")); r.status != http.StatusUnauthorized {
			t.Fatalf("expired session, API client: status %d", r.status)
		}
	})
	t.Run("still valid", func(t *testing.T) {
		if r := b.in(t).check("GET", "/app/"); !r.allowed {
			t.Fatalf("status %d", r.status)
		}
	})
}

// TestLogout: logout clears the cookie and revokes the session, so a kept
// copy of the cookie is no longer a session either.
func TestLogout(t *testing.T) {
	t.Parallel()
	d := dex.Start(t, dex.Options{RedirectURIs: []string{callbackURL}})
	e := newEnv(t, []oidc.ProviderConfig{dexProvider(d, dex.ConfidentialClient)})
	b := e.browser()
	if r := b.login(d, "/app/", "alice"); !r.allowed {
		t.Fatalf("login: %d", r.status)
	}
	stolen := b.clone()
	other := e.browser()
	if r := other.login(d, "/app/", "alice"); !r.allowed {
		t.Fatalf("second login: %d", r.status)
	}

	r := b.check("GET", oidc.DefaultLogoutPath)
	// Dex advertises no end_session_endpoint: back to the post-logout path.
	if r.status != http.StatusFound || r.location != "/" {
		t.Fatalf("logout: status %d location %q", r.status, r.location)
	}
	if c := r.cookieNamed("__Host-gatehouse-dex"); c == nil || c.MaxAge >= 0 {
		t.Fatal("logout did not clear the session cookie")
	}
	if r := b.check("GET", "/app/"); r.allowed {
		t.Fatal("allowed after logout")
	}
	if r := stolen.check("GET", "/app/"); r.allowed {
		t.Fatal("a copy of the cookie still works after logout")
	}
	// Another session of the same user (another browser) is not affected.
	if r := other.check("GET", "/app/"); !r.allowed {
		t.Fatalf("other session: status %d", r.status)
	}
}

// TestRefresh: tokens are refreshed before they expire; concurrent requests
// of one session cause one refresh, and all of them get the new cookie.
func TestRefresh(t *testing.T) {
	t.Parallel()
	_, e, b := dexSession(t, "/admin/")
	if n := e.transport.refreshes.Load(); n != 0 {
		t.Fatalf("%d refreshes right after login", n)
	}

	// 4m30s later the 5m ID token is within RefreshBefore (1m) of expiry.
	e.clock.set(4*time.Minute + 30*time.Second)
	const n = 12
	replies := make([]reply, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { replies[i] = b.clone().check("GET", "/admin/") })
	}
	wg.Wait()
	if got := e.transport.refreshes.Load(); got != 1 {
		t.Errorf("%d concurrent requests made %d refresh calls, want 1", n, got)
	}
	for i, r := range replies {
		if !r.allowed || r.cookieNamed("__Host-gatehouse-dex") == nil {
			t.Fatalf("request %d: allowed %v, set-cookie %v", i, r.allowed, r.cookies)
		}
		if r.headers["x-gatehouse-groups"] != "admins,devs" {
			t.Errorf("request %d: groups %q after refresh", i, r.headers["x-gatehouse-groups"])
		}
	}
	b.apply(replies[0])

	// The refreshed cookie is good on its own, with no further refresh.
	e.clock.set(0)
	if r := b.check("GET", "/admin/"); !r.allowed || r.cookieNamed("__Host-gatehouse-dex") != nil {
		t.Fatalf("refreshed session: allowed %v cookies %v", r.allowed, r.cookies)
	}
	if got := e.transport.refreshes.Load(); got != 1 {
		t.Errorf("refresh calls = %d, want still 1", got)
	}
}

// TestIdPDown: with Dex stopped a refresh fails; the session serves until
// its tokens expire and not a moment longer, then the browser must log in
// again. After Dex restarts (new signing keys) the login works again.
func TestIdPDown(t *testing.T) {
	t.Parallel()
	d, e, b := dexSession(t, "/app/")
	oldKeys, err := d.KeyIDs(t.Context())
	if err != nil || len(oldKeys) == 0 {
		t.Fatalf("dex keys: %v %v", oldKeys, err)
	}
	d.Stop()

	e.clock.set(4*time.Minute + 30*time.Second) // refresh due, tokens still valid
	if r := b.clone().check("GET", "/app/"); !r.allowed {
		t.Fatalf("before expiry with the IdP down: status %d, want allowed on the still-valid tokens", r.status)
	}
	e.clock.set(5*time.Minute + time.Second) // past the ID token's expiry
	r := b.check("GET", "/app/")
	if r.allowed || r.status != http.StatusFound || !strings.HasPrefix(r.location, d.Issuer+"/auth?") {
		t.Fatalf("after expiry with the IdP down: allowed %v status %d location %q, want a redirect to log in", r.allowed, r.status, r.location)
	}
	if e.transport.refreshes.Load() == 0 {
		t.Error("no refresh was attempted")
	}

	// Dex comes back with empty storage: new keys, old refresh tokens gone.
	d.Restart()
	newKeys, err := d.KeyIDs(t.Context())
	if err != nil || len(newKeys) == 0 || slices.ContainsFunc(newKeys, func(k string) bool { return slices.Contains(oldKeys, k) }) {
		t.Fatalf("keys after restart %v (before %v): want new ones (err %v)", newKeys, oldKeys, err)
	}
	e.clock.set(0)
	if r := b.login(d, "/app/", "alice"); !r.allowed {
		t.Fatalf("login after Dex restarted with new keys: status %d", r.status)
	}
}

// TestRefreshRefused: an IdP that no longer knows the refresh token (Dex
// restarted with empty storage) ends the session at once, though the
// tokens have not expired yet.
func TestRefreshRefused(t *testing.T) {
	t.Parallel()
	d, e, b := dexSession(t, "/app/")
	d.Restart()
	e.clock.set(4*time.Minute + 30*time.Second)
	r := b.check("GET", "/app/")
	if r.allowed || r.status != http.StatusFound {
		t.Fatalf("refused refresh: allowed %v status %d, want a redirect to log in", r.allowed, r.status)
	}
	if c := r.cookieNamed("__Host-gatehouse-dex"); c == nil || c.MaxAge >= 0 {
		t.Error("session cookie not cleared")
	}
}

// TestPublicClient: a public client (no secret) logs in with PKCE alone.
func TestPublicClient(t *testing.T) {
	t.Parallel()
	d := dex.Start(t, dex.Options{RedirectURIs: []string{callbackURL}})
	e := newEnv(t, []oidc.ProviderConfig{dexProvider(d, dex.PublicClient)})
	if r := e.browser().login(d, "/admin/x", "alice"); !r.allowed {
		t.Fatalf("status %d", r.status)
	}
}
