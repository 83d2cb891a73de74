package oidc_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/oidc"
	"github.com/gatehouse-proxy/gatehouse/test/scriptedidp"
)

// leakSecrets collects every secret a flow handled; check looks for any
// 16-byte window of each (or the whole value, when shorter) in the logs.
type leakSecrets map[string]string

func (s leakSecrets) add(name, v string) {
	if v != "" {
		s[name+"#"+v[:min(8, len(v))]] = v
	}
}

func (s leakSecrets) check(t *testing.T, logs string) {
	t.Helper()
	for name, v := range s {
		n := min(16, len(v))
		for i := 0; i+n <= len(v); i++ {
			if strings.Contains(logs, v[i:i+n]) {
				t.Errorf("%s leaked into the log (window %q)", name, v[i:i+n])
				break
			}
		}
	}
}

func randomString(t *testing.T) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestLogLeakOIDCFlow runs logins, a refresh, logout, back-channel logout
// and their failure paths against the scripted IdP with the flow and the
// ext_authz server logging at DEBUG (newEnv's logger), then looks for the
// client secret, codes, state, nonce, PKCE verifier, ID/access/refresh
// tokens, logout tokens, cookie values and cookie keys in the log.
func TestLogLeakOIDCFlow(t *testing.T) {
	name := "idp" + strings.ToLower(hex.EncodeToString([]byte(randomString(t)[:6])))
	idp := &scriptedIdP{scriptedidp.NewWith(t, scriptedidp.Options{
		ClientID: scriptedClient, ClientSecret: "cs-" + randomString(t), RedirectURI: callbackURL, Sessions: true, Name: name,
		Claims: map[string]any{"email": "carol@corp.example", "groups": []string{"staff"}},
	})}
	e := newEnv(t, []oidc.ProviderConfig{idp.provider()})
	issueOnClock(idp, e.clock)
	sec := leakSecrets{}
	sec.add("client secret", idp.ClientSecret)
	for _, k := range e.keys {
		sec.add("cookie key (base64)", base64.StdEncoding.EncodeToString(k))
		sec.add("cookie key (base64url)", base64.RawURLEncoding.EncodeToString(k))
		sec.add("cookie key (hex)", hex.EncodeToString(k))
	}
	keep := func(r reply) reply {
		for _, c := range r.cookies {
			sec.add("cookie "+c.Name, c.Value)
		}
		if u, err := url.Parse(r.location); err == nil {
			for k, vs := range u.Query() {
				if k == "state" || k == "nonce" || k == "code_challenge" || k == "code" {
					sec.add(k, vs[0])
				}
			}
		}
		return r
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// start begins a login and returns the callback the IdP redirects to.
	start := func(b *browser, path string) *url.URL {
		t.Helper()
		r := keep(b.check("GET", path))
		if r.status != http.StatusFound {
			t.Fatalf("GET %s: status %d", path, r.status)
		}
		resp, err := noRedirect.Get(r.location)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		back, err := resp.Location()
		if err != nil {
			t.Fatalf("IdP answered %d", resp.StatusCode)
		}
		sec.add("code", back.Query().Get("code"))
		sec.add("state", back.Query().Get("state"))
		return back
	}
	login := func(b *browser, path string) {
		t.Helper()
		if r := keep(b.check("GET", start(b, path).RequestURI())); r.status != http.StatusFound {
			t.Fatalf("callback: status %d %q", r.status, r.body)
		}
		_, idt := idp.last()
		sec.add("id token signature", idt[strings.LastIndexByte(idt, '.')+1:])
		sec.add("id token payload", strings.Split(idt, ".")[1])
	}

	// A full login with PKCE, then a request on the session.
	b := e.browser()
	login(b, "/app/x")
	if r := keep(b.check("GET", "/app/x")); !r.allowed {
		t.Fatalf("session refused: %d", r.status)
	}
	// Refresh: the ID token is due, the refresh token grant runs.
	e.clock.set(nearExpiry)
	if r := keep(b.check("GET", "/app/x")); !r.allowed {
		t.Fatalf("refresh: status %d", r.status)
	}
	if e.transport.refreshes.Load() == 0 {
		t.Fatal("no refresh grant was sent")
	}
	e.clock.set(0)

	// Failure paths of the callback.
	t.Run("bad state", func(t *testing.T) {
		c := e.browserFor(t)
		back := start(c, "/app/bad-state")
		q := back.Query()
		q.Set("state", "st-"+randomString(t))
		sec.add("forged state", q.Get("state"))
		keep(c.check("GET", back.Path+"?"+q.Encode()))
		keep(c.check("GET", back.Path+"?state=&code="+q.Get("code")))
	})
	t.Run("replayed callback and replayed code", func(t *testing.T) {
		c := e.browserFor(t)
		back := start(c, "/app/replay")
		jar := c.clone()
		keep(c.check("GET", back.RequestURI()))
		keep(jar.check("GET", back.RequestURI())) // state replayed
		d := e.browserFor(t)
		old := back.Query().Get("code")
		idp.SetAuthResponse(func(v url.Values) { v.Set("code", old) })
		next := start(d, "/app/replay2")
		idp.SetAuthResponse(nil)
		if r := keep(d.check("GET", next.RequestURI())); r.status != http.StatusBadRequest {
			t.Errorf("replayed code: status %d, want 400", r.status)
		}
	})
	t.Run("IdP error and bad ID token", func(t *testing.T) {
		desc := "err-" + randomString(t)
		idp.SetAuthResponse(func(v url.Values) {
			v.Del("code")
			v.Set("error", "access_denied")
			v.Set("error_description", desc)
		})
		c := e.browserFor(t)
		keep(c.check("GET", start(c, "/app/denied").RequestURI()))
		idp.SetAuthResponse(nil)
		idp.setTamper(func(cl map[string]any) {
			now := e.clock.now()
			cl["iat"], cl["exp"], cl["nonce"] = now.Unix(), now.Add(time.Hour).Unix(), "other-nonce-"+randomString(t)
		})
		c = e.browserFor(t)
		keep(c.check("GET", start(c, "/app/nonce").RequestURI()))
		_, idt := idp.last()
		sec.add("refused id token", idt[strings.LastIndexByte(idt, '.')+1:])
		issueOnClock(idp, e.clock)
	})
	t.Run("tampered session cookie and refused refresh", func(t *testing.T) {
		c := e.browserFor(t)
		login(c, "/app/t")
		c.mu.Lock()
		for k, v := range c.cookies {
			c.cookies[k] = v[:len(v)-4] + "AAAA"
		}
		c.mu.Unlock()
		keep(c.check("GET", "/app/t"))
		d := e.browserFor(t)
		login(d, "/app/r")
		idp.setTamper(func(cl map[string]any) {
			now := e.clock.now()
			cl["iat"], cl["exp"], cl["sub"] = now.Unix(), now.Add(time.Hour).Unix(), "someone-else"
		})
		e.clock.set(nearExpiry)
		keep(d.check("GET", "/app/r")) // refreshed ID token for another user
		e.clock.set(0)
		issueOnClock(idp, e.clock)
	})

	// Logout, then back-channel logouts: direct, via Check, refused and replayed.
	keep(b.check("GET", oidc.DefaultLogoutPath))
	bcl := httptest.NewServer(e.flow.BackChannelLogoutHandler())
	t.Cleanup(bcl.Close)
	sid, _ := idp.last()
	bySID := idp.logoutToken(func(c map[string]any) { c["sid"] = sid })
	bySub := idp.logoutToken(nil)
	refused := idp.logoutToken(func(c map[string]any) { c["nonce"] = "n" })
	for _, tok := range []string{bySID, bySID, refused, "not." + randomString(t) + ".a-jwt"} {
		sec.add("logout token", tok[strings.LastIndexByte(tok, '.')+1:])
		postLogout(t, bcl, tok)
	}
	body := url.Values{"logout_token": {bySub}}.Encode()
	sec.add("logout token via Check", bySub[strings.LastIndexByte(bySub, '.')+1:])
	e.rawRequest(t, appHost, "POST", oidc.DefaultBackChannelLogoutPath,
		map[string]string{"content-type": "application/x-www-form-urlencoded"}, []byte(body))

	for _, q := range idp.AuthRequests() {
		sec.add("nonce", q.Get("nonce"))
		sec.add("code_challenge", q.Get("code_challenge"))
	}
	for _, f := range idp.TokenRequests() {
		sec.add("code_verifier", f.Get("code_verifier"))
		sec.add("refresh token", f.Get("refresh_token"))
		if c := f.Get("code"); c != "" {
			// Codes start with the IdP name (its kid); look for them whole.
			if strings.Contains(e.logs.String(), c) {
				t.Errorf("authorization code %q leaked", c)
			}
		}
	}
	for k := range sec {
		if strings.HasPrefix(k, "code#") {
			delete(sec, k)
		}
	}
	// Access and refresh tokens are at-sid-N / rt-sid-N: short, look for them whole.
	logs := e.logs.String()
	if m := regexp.MustCompile(`\b(at|rt)-sid-[0-9]+`).FindString(logs); m != "" {
		t.Errorf("access or refresh token %s leaked", m)
	}
	if !strings.Contains(logs, "level=DEBUG") || !strings.Contains(logs, "oidc back-channel logout") {
		t.Fatalf("the flow did not log what the test drove:\n%s", logs)
	}
	sec.check(t, logs)
	if t.Failed() {
		t.Logf("log:\n%s", logs)
	}
}
