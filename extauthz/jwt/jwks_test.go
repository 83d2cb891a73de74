package jwt

import (
	"context"
	"crypto/elliptic"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

func jwksIssuer(idp *testIdP) IssuerConfig {
	return IssuerConfig{Issuer: idp.issuer(), Audiences: []string{"api"}, DiscoveryURL: idp.issuer(), Algorithms: []string{"RS256", "ES256"}}
}

func wantReason(t *testing.T, err error, want Reason) {
	t.Helper()
	if got := ReasonOf(err); got != want {
		t.Fatalf("reason = %q, want %q (err: %v)", got, want, err)
	}
}

func TestJWKSUnknownKIDRefetchIsRateLimited(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	b := rsaTestKey("b", "RS256", 1)
	j := newJWKSTest(t, []testKey{a})
	if got := j.idp.jwksHits.Load(); got != 1 {
		t.Fatalf("startup fetches = %d, want 1", got)
	}

	// Startup fetch happened "now": an unknown kid right away must not
	// refetch (the last attempt is less than 10 s old).
	_, err := j.verify(j.token(t, b))
	wantReason(t, err, ReasonUnknownKID)
	if got := j.idp.jwksHits.Load(); got != 1 {
		t.Fatalf("fetches after unknown kid within interval = %d, want 1", got)
	}

	// After the interval one refetch happens; a burst of unknown kids
	// causes no more.
	j.clock.Advance(11 * time.Second)
	for i := range 5 {
		_, err := j.verify(testKey{kid: "zz" + string(rune('a'+i)), alg: "RS256", priv: b.priv}.token(t, j.claims(), nil))
		wantReason(t, err, ReasonUnknownKID)
	}
	if got := j.idp.jwksHits.Load(); got != 2 {
		t.Fatalf("fetches after burst = %d, want 2", got)
	}

	// The IdP rotates b in. Still inside the interval: rejected without a
	// fetch. After it: the refetch finds b and the token verifies.
	j.idp.setKeys(t, a, b)
	tokB := j.token(t, b)
	_, err = j.verify(tokB)
	wantReason(t, err, ReasonUnknownKID)
	if got := j.idp.jwksHits.Load(); got != 2 {
		t.Fatalf("fetches while rate limited = %d, want 2", got)
	}
	j.clock.Advance(10 * time.Second)
	if _, err := j.verify(tokB); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if got := j.idp.jwksHits.Load(); got != 3 {
		t.Fatalf("fetches = %d, want 3", got)
	}
	// Known kids never cause a fetch.
	for range 3 {
		if _, err := j.verify(a.token(t, j.claims(), map[string]any{"x": j.clock.Now().UnixNano()})); err != nil {
			t.Fatal(err)
		}
	}
	if got := j.idp.jwksHits.Load(); got != 3 {
		t.Fatalf("fetches for known kids = %d, want 3", got)
	}
}

func TestJWKSKeepsLastGoodSet(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	j := newJWKSTest(t, []testKey{a}, WithCache(0, 0))
	ctx := context.Background()

	breakages := []struct {
		name  string
		apply func()
	}{
		{"HTTP 500", func() { j.idp.status.Store(http.StatusInternalServerError) }},
		{"HTTP 404", func() { j.idp.status.Store(http.StatusNotFound) }},
		{"garbage body", func() { j.idp.setBody([]byte("<html>oops</html>")) }},
		{"empty key set", func() { j.idp.setBody([]byte(`{"keys":[]}`)) }},
		{"no keys member", func() { j.idp.setBody([]byte(`{}`)) }},
		{"only symmetric keys", func() {
			j.idp.setBody([]byte(`{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}`))
		}},
		{"oversized body", func() { j.idp.setBody([]byte(`{"keys":[],"pad":"` + strings.Repeat("x", jwksMaxBodyBytes) + `"}`)) }},
	}
	for _, br := range breakages {
		t.Run(br.name, func(t *testing.T) {
			j.idp.status.Store(0)
			j.idp.setKeys(t, a)
			must(t, j.v.Refresh(ctx))
			br.apply()
			if err := j.v.Refresh(ctx); err == nil {
				t.Fatal("Refresh reported success against a broken IdP")
			}
			if _, err := j.verify(j.token(t, a)); err != nil {
				t.Fatalf("last good key set not kept: %v", err)
			}
		})
	}
}

func TestJWKSKeyRotationViaRefresh(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	b := ecTestKey(t, "b", "ES256", elliptic.P256())
	j := newJWKSTest(t, []testKey{a}, WithCache(0, 0))
	if _, err := j.verify(j.token(t, a)); err != nil {
		t.Fatal(err)
	}
	j.idp.setKeys(t, b) // a withdrawn, b introduced
	must(t, j.v.Refresh(context.Background()))
	if _, err := j.verify(j.token(t, b)); err != nil {
		t.Fatalf("new key: %v", err)
	}
	_, err := j.verify(j.token(t, a))
	wantReason(t, err, ReasonUnknownKID)
}

func TestJWKSLazyFetchWhenIdPDownAtStartup(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	idp := newTestIdP(t, a)
	idp.status.Store(http.StatusServiceUnavailable)
	j := jwksTestFor(t, idp)
	tok := j.token(t, a)

	_, err := j.verify(tok)
	wantReason(t, err, ReasonKeyUnavailable)
	j.idp.status.Store(0)
	j.clock.Advance(11 * time.Second)
	if _, err := j.verify(tok); err != nil {
		t.Fatalf("after IdP recovered: %v", err)
	}
}

func TestJWKSWithoutPrefetchFetchesOnFirstUse(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	j := newJWKSTest(t, []testKey{a}, WithoutPrefetch())
	if got := j.idp.jwksHits.Load(); got != 0 {
		t.Fatalf("fetches before first use = %d", got)
	}
	if _, err := j.verify(j.token(t, a)); err != nil {
		t.Fatal(err)
	}
	if got := j.idp.jwksHits.Load(); got != 1 {
		t.Fatalf("fetches = %d, want 1", got)
	}
}

func TestDiscoveryIssuerMismatchIsRejected(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	idp := newTestIdP(t, a)
	evil := "https://evil.example"
	idp.discoveryIss.Store(&evil)
	j := jwksTestFor(t, idp)
	if err := j.v.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("Refresh error = %v, want issuer mismatch", err)
	}
	if got := j.idp.jwksHits.Load(); got != 0 {
		t.Errorf("JWKS fetched %d times despite bad discovery document", got)
	}
	_, err := j.verify(j.token(t, a))
	wantReason(t, err, ReasonKeyUnavailable)
}

func TestJWKSEntriesThatMustNotBeUsed(t *testing.T) {
	good := rsaTestKey("good", "RS256", 0)
	dupA := rsaTestKey("dup", "RS256", 1)
	dupB := rsaTestKey("dup", "RS256", 2)
	noVerify := rsaTestKey("ops", "RS256", 1)
	noVerify.ops = []string{"encrypt"}
	withVerify := rsaTestKey("ops-ok", "RS256", 2)
	withVerify.ops = []string{"verify"}
	j := newJWKSTest(t, []testKey{good, dupA, dupB, noVerify, withVerify})
	now := j.clock.Now()
	tests := []struct {
		key  testKey
		want Reason
	}{
		{good, ""},
		{dupA, ReasonAmbiguousKID},
		{noVerify, ReasonKeyMismatch},
		{withVerify, ""},
	}
	for _, tc := range tests {
		t.Run(tc.key.kid, func(t *testing.T) {
			_, err := j.verify(tc.key.token(t, claimsFor(j.idp.issuer(), now), nil))
			if got := ReasonOf(err); got != tc.want {
				t.Errorf("reason = %q, want %q (%v)", got, tc.want, err)
			}
		})
	}

	// A JWKS that leaks private key material: the key is refused.
	var pubSet map[string][]any
	must(t, json.Unmarshal(jwksJSON(t, withVerify), &pubSet))
	leaky := mustJSON(t, map[string]any{"keys": append(pubSet["keys"], privJWK(t, good))})
	ks, err := parseJWKS(leaky, quietLogger())
	must(t, err)
	e, err := ks.lookup("good")
	must(t, err)
	if ReasonOf(e.usableFor("RS256")) != ReasonKeyMismatch {
		t.Errorf("private JWK usable: %v", e.usableFor("RS256"))
	}
}

func TestRefreshInterval(t *testing.T) {
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"", jwksDefaultRefresh},
		{"max-age=600", 10 * time.Minute},
		{"public, max-age=7200", time.Hour},
		{"max-age=5", time.Minute},
		{"max-age=0", time.Minute},
		{"no-store", time.Minute},
		{"no-cache, max-age=3000", time.Minute},
		{"max-age=abc", jwksDefaultRefresh},
		{"max-age=-5", jwksDefaultRefresh},
		{`max-age="300"`, 5 * time.Minute},
		{"max-age=99999999999999999999", jwksDefaultRefresh},
		{"max-age=9999999999", time.Hour},
	}
	for _, tc := range tests {
		if got := refreshInterval(tc.header); got != tc.want {
			t.Errorf("refreshInterval(%q) = %s, want %s", tc.header, got, tc.want)
		}
	}
}

func TestCheckFetchURL(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"https://idp.example/jwks", true},
		{"http://127.0.0.1:8080/jwks", true},
		{"http://localhost/jwks", true},
		{"http://[::1]:9/jwks", true},
		{"http://idp.example/jwks", false},
		{"http://10.0.0.1/jwks", false},
		{"ftp://idp.example/jwks", false},
		{"file:///etc/passwd", false},
		{"https:///nohost", false},
		{"::not a url", false},
	}
	for _, tc := range tests {
		if err := checkFetchURL(tc.url); (err == nil) != tc.ok {
			t.Errorf("checkFetchURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

func TestRedirectToPlainHTTPIsRefused(t *testing.T) {
	c := safeClient(http.DefaultClient)
	req, _ := http.NewRequest(http.MethodGet, "http://idp.example/jwks", nil)
	if err := c.CheckRedirect(req, []*http.Request{{}}); err == nil {
		t.Error("redirect to remote plain http allowed")
	}
	req, _ = http.NewRequest(http.MethodGet, "https://idp.example/jwks", nil)
	if err := c.CheckRedirect(req, make([]*http.Request, maxRedirects)); err == nil {
		t.Error("redirect chain beyond limit allowed")
	}
}

// privJWK is k as a JWK including its private parameters.
func privJWK(t *testing.T, k testKey) map[string]any {
	t.Helper()
	jk, err := jwk.Import(k.priv)
	must(t, err)
	m := map[string]any{}
	must(t, json.Unmarshal(mustJSON(t, jk), &m))
	m["kid"], m["alg"], m["use"] = k.kid, k.alg, "sig"
	return m
}

func TestJWKSConcurrentUnknownKIDsShareOneFetch(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	b := rsaTestKey("b", "RS256", 1)
	j := newJWKSTest(t, []testKey{a}, WithCache(0, 0))
	j.idp.setKeys(t, a, b)
	j.clock.Advance(11 * time.Second)

	gate := make(chan struct{})
	j.idp.gate.Store(&gate)
	tok := j.token(t, b)
	const n = 16
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := j.verify(tok)
			errs <- err
		}()
	}
	// Wait until the single refetch has reached the IdP, then release it.
	deadline := time.Now().Add(10 * time.Second)
	for j.idp.jwksHits.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
	if got := j.idp.jwksHits.Load(); got != 2 {
		t.Errorf("JWKS fetched %d times, want 2 (startup + one shared refetch)", got)
	}
}

func TestJWKSWaitHonoursCallerContext(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	b := rsaTestKey("b", "RS256", 1)
	j := newJWKSTest(t, []testKey{a})
	gate := make(chan struct{})
	j.idp.gate.Store(&gate)
	t.Cleanup(func() { close(gate) })
	j.clock.Advance(11 * time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := j.v.Verify(ctx, j.token(t, b))
	wantReason(t, err, ReasonContextCanceled)
}

func TestJWKSNextWait(t *testing.T) {
	s := &jwksSource{}
	tests := []struct {
		name     string
		failures int
		hasKeys  bool
		next     time.Duration
		want     time.Duration
	}{
		{"never fetched", 0, false, 0, 10 * time.Second},
		{"first failure", 1, true, 0, 10 * time.Second},
		{"second failure", 2, true, 0, 20 * time.Second},
		{"third failure", 3, true, 0, 40 * time.Second},
		{"many failures", 30, true, 0, time.Minute},
		{"healthy, from Cache-Control", 0, true, 30 * time.Minute, 30 * time.Minute},
		{"healthy, no interval yet", 0, true, 0, jwksDefaultRefresh},
	}
	for _, tc := range tests {
		s.failures, s.nextRefresh = tc.failures, tc.next
		s.keys.Store(nil)
		if tc.hasKeys {
			s.keys.Store(&keySet{})
		}
		if got := s.nextWait(); got != tc.want {
			t.Errorf("%s: nextWait = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// Over TLS with the server's own client (WithHTTPClient), via a discovery URL
// given in full.
func TestJWKSOverHTTPSWithClient(t *testing.T) {
	a := rsaTestKey("a", "RS256", 0)
	jwks := jwksJSON(t, a)
	var srv *httptest.Server
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "jwks_uri": srv.URL + "/keys"})
		case "/keys":
			_, _ = w.Write(jwks)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	clock := newTestClock()
	v := newTestVerifier(t, clock, []IssuerConfig{{
		Issuer: srv.URL, Audiences: []string{"api"}, DiscoveryURL: srv.URL + "/.well-known/openid-configuration",
	}}, WithHTTPClient(srv.Client()))
	if _, err := v.Verify(context.Background(), a.token(t, claimsFor(srv.URL, clock.Now()), nil)); err != nil {
		t.Fatal(err)
	}

	// Without the test CA the TLS handshake fails: system roots only.
	v2 := newTestVerifier(t, clock, []IssuerConfig{{Issuer: srv.URL, Audiences: []string{"api"}, JWKSURI: srv.URL + "/keys"}})
	_, err := v2.Verify(context.Background(), a.token(t, claimsFor(srv.URL, clock.Now()), nil))
	wantReason(t, err, ReasonKeyUnavailable)
}
