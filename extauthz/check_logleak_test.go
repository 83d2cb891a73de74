package extauthz

import (
	"context"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/jwt"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"

	"github.com/gatehouse-proxy/gatehouse/internal/logging/logtest"
)

// leakWindow is the length of the substrings of a secret looked for in the
// logs: long enough never to match by chance, short enough to catch a
// truncated or partly logged secret.
const leakWindow = 16

// findLeak returns the first leakWindow-byte window of secret (or the whole
// secret when shorter) that occurs in logs, or "".
func findLeak(logs, secret string) string {
	if len(secret) <= leakWindow {
		if secret != "" && strings.Contains(logs, secret) {
			return secret
		}
		return ""
	}
	for i := 0; i+leakWindow <= len(secret); i++ {
		if w := secret[i : i+leakWindow]; strings.Contains(logs, w) {
			return w
		}
	}
	return ""
}

// debugServer is the fixture's Server rebuilt with its policy engine, its
// JWT verifier and itself logging at DEBUG into one buffer, as `gatehouse
// authz` wires them with log.level debug.
func debugServer(t *testing.T, f *fixture) (authv3.AuthorizationClient, *logtest.Buffer) {
	t.Helper()
	buf := &logtest.Buffer{}
	dbg := slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	engine, err := policy.New(ctx, policy.WithDir(f.policyDir), policy.WithQuery("data.envoy.authz.decision"),
		policy.WithLogger(dbg), policy.WithDecisionCache(0))
	if err != nil {
		t.Fatal(err)
	}
	v, err := jwt.NewVerifier(ctx, []jwt.IssuerConfig{{
		Issuer: f.idp.Issuer(), Audiences: []string{"gatehouse"}, JWKSURI: f.idp.JWKSURI(), Kind: identity.KindUser,
	}}, jwt.WithLogger(dbg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	srv := New(engine, WithLogger(dbg), WithTokenVerifier(JWTTokens(v)), WithTimeout(2*time.Second),
		WithHeaders(HeaderOptions{Prefix: "x-gatehouse-", StripAuthorization: true}))
	return serveGRPC(t, srv), buf
}

// sigOf is the signature part of a compact JWS.
func sigOf(tok string) string { return tok[strings.LastIndexByte(tok, '.')+1:] }

// TestLogLeakCheck drives Check at DEBUG through allow, deny and every
// credential failure and looks for any 16-byte window of a token
// signature, a Basic password or a cookie value in what was logged.
func TestLogLeakCheck(t *testing.T) {
	f := newFixture(t)
	client, logs := debugServer(t, f)

	reader := f.idp.Token(t, userClaims(f.idp, "reader"))
	expiredClaims := userClaims(f.idp, "reader")
	expiredClaims["exp"] = time.Now().Add(-time.Hour).Unix()
	expired := f.idp.Token(t, expiredClaims)
	// A valid header and payload with another token's signature.
	other := f.idp.Token(t, userClaims(f.idp, "writer"))
	badSig := reader[:strings.LastIndexByte(reader, '.')+1] + sigOf(other)
	basicPass := "basic-pass-5f1c9e0b7a3d42e8b6"
	basic := base64.StdEncoding.EncodeToString([]byte("alice:" + basicPass))
	cookieVal := "sess-c0ffee-7e57-4b1d-9a0a-42d1e5ab5eed"
	queryTok := f.idp.Token(t, userClaims(f.idp, "query-reader"))
	opaque := "opaque-access-token-3f9a8b7c6d5e4f30"
	b64 := base64.RawURLEncoding.EncodeToString
	badJSON := b64([]byte(`{"alg":"RS256","kid":"k1"}`)) + "." + b64([]byte(`{"sub":"alice","secret":"json-claim-7a6b5c4d3e2f1a0b",}`)) + "." + sigOf(other)
	unknownIss := userClaims(f.idp, "reader")
	unknownIss["iss"] = "https://unknown-issuer.example/6c5d4e3f2a1b"
	foreign := f.idp.Token(t, unknownIss)

	run := func(t *testing.T, c authv3.AuthorizationClient, reqs ...*authv3.CheckRequest) {
		t.Helper()
		for _, r := range reqs {
			if _, err := c.Check(context.Background(), r); err != nil {
				t.Fatalf("Check: %v", err)
			}
		}
	}
	secrets := map[string]string{
		"valid token signature":      sigOf(reader),
		"valid token payload":        strings.Split(reader, ".")[1],
		"expired token signature":    sigOf(expired),
		"bad-signature token":        sigOf(badSig),
		"Basic credentials":          basic,
		"Basic password":             basicPass,
		"cookie value":               cookieVal,
		"query-string token":         sigOf(queryTok),
		"second valid token payload": strings.Split(other, ".")[1],
		"opaque token":               opaque,
		"malformed-JSON token claim": "json-claim-7a6b5c4d3e2f1a0b",
		"unknown-issuer token":       sigOf(foreign),
	}
	assertClean := func(t *testing.T) {
		t.Helper()
		out := logs.String()
		if !strings.Contains(out, `"level":"DEBUG"`) && !strings.Contains(out, `"msg":"decision"`) {
			t.Fatalf("nothing was logged; the test proves nothing:\n%s", out)
		}
		for name, s := range secrets {
			if w := findLeak(out, s); w != "" {
				t.Errorf("%s leaked into the log (window %q):\n%s", name, w, out)
			}
		}
	}

	t.Run("allow and deny with tokens, cookies and Basic", func(t *testing.T) {
		run(t, client,
			request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + reader, "cookie": "session=" + cookieVal}),
			request("POST", "/api/orders", map[string]string{"authorization": "Bearer " + reader}),
			request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + badSig}),
			request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + expired}),
			request("GET", "/api/orders", map[string]string{"authorization": "Basic " + basic}),
			request("GET", "/public/x", map[string]string{"cookie": "session=" + cookieVal, "authorization": "Basic " + basic}),
			request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + reader + "x"}),
			request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + strings.Repeat(sigOf(reader), 200)}),
			request("GET", "/limited/x", map[string]string{"authorization": "Bearer " + reader}),
			request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + opaque}),
			request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + badJSON}),
			request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + foreign}),
			request("GET", "/api/orders", map[string]string{"authorization": "bearer  " + reader + " trailing"}),
		)
		assertClean(t)
	})

	// StrictBuiltinErrors: a builtin failing on request data is an
	// evaluation error, logged by the engine and in the decision reason.
	for _, pe := range []struct{ name, rule string }{
		{"to_number on a header", `decision := {"allowed": to_number(input.attributes.request.http.headers.authorization) > 0}`},
		// The opa-envoy-plugin tutorial's way of reading a bearer token.
		{"io.jwt.decode on the bearer token", `decision := {"allowed": payload.sub == "alice"} if {
	[_, payload, _] := io.jwt.decode(substring(input.attributes.request.http.headers.authorization, count("Bearer "), -1))
}`},
	} {
		t.Run("policy error: "+pe.name, func(t *testing.T) {
			f.writePolicy(t, "package envoy.authz\n\n"+pe.rule+"\n")
			defer f.writePolicy(t, testPolicy)
			c, l := debugServer(t, f)
			run(t, c, request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + opaque}),
				request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + badJSON}),
				request("GET", "/api/orders", map[string]string{"authorization": "Basic " + basic, "cookie": "session=" + cookieVal}))
			out := l.String()
			if !strings.Contains(out, "policy evaluation failed") {
				t.Fatalf("no policy error logged:\n%s", out)
			}
			for name, s := range secrets {
				if w := findLeak(out, s); w != "" {
					t.Errorf("%s leaked (window %q):\n%s", name, w, out)
				}
			}
		})
	}

	t.Run("invalid result", func(t *testing.T) {
		f.writePolicy(t, "package envoy.authz\n\ndecision := {\"allowed\": input.attributes.request.http.headers.authorization}\n")
		defer f.writePolicy(t, testPolicy)
		c, l := debugServer(t, f)
		run(t, c, request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + reader, "cookie": "session=" + cookieVal}))
		out := l.String()
		if !strings.Contains(out, "invalid policy result") {
			t.Fatalf("no invalid-result log:\n%s", out)
		}
		for name, s := range secrets {
			if w := findLeak(out, s); w != "" {
				t.Errorf("%s leaked (window %q):\n%s", name, w, out)
			}
		}
	})

	t.Run("undecodable path with a token in the query", func(t *testing.T) {
		// A bad escape in the path makes the policy input fail; the decision
		// log drops the query string, so nothing else may log it either.
		req := request("GET", "/api/%zz?access_token="+queryTok, map[string]string{"authorization": "Bearer " + reader})
		c, l := debugServer(t, f)
		run(t, c, req)
		if w := findLeak(l.String(), sigOf(queryTok)); w != "" {
			t.Errorf("a query-string token leaked (window %q):\n%s", w, l.String())
		}
	})
}

// TestLogLeakAssertion sends user tokens through the edge and assertions
// (valid, tampered, expired, forged) to the sidecars with the chain env's
// logger, and looks for the assertion or the token in the log.
func TestLogLeakAssertion(t *testing.T) {
	e := newChainEnv(t, true)
	tok := e.idp.Token(t, userClaims(e.idp, "reader"))
	a := e.edgeAssertion(t, "reader")
	tampered := a[:strings.LastIndexByte(a, '.')+1] + sigOf(tok)[:len(sigOf(a))]
	forged := "forged-assertion-6a1f0e4c9b2d7385"
	for _, hop := range []struct{ role, svc, peer, asr string }{
		{"sidecar", "orders", edgeID, a},
		{"sidecar", "inventory", ordersID, a},
		{"sidecar", "payments", ordersID, a},       // not an allowed chain
		{"sidecar", "orders", edgeID, tampered},    // bad signature
		{"sidecar", "orders", edgeID, forged},      // not a JWT
		{"sidecar", "orders", paymentsID, a},       // wrong presenter
		{"edge", "orders", "", "forged-by-client"}, // ignored at the edge
	} {
		e.check(t, at(t, request("GET", "/api/orders/1", map[string]string{
			hAssertion: hop.asr, "authorization": "Bearer " + tok,
		}), hop.role, hop.svc, hop.peer))
	}
	e.clock.add(time.Hour) // every assertion has expired
	e.check(t, at(t, request("GET", "/api/orders/1", map[string]string{hAssertion: a}), "sidecar", "orders", edgeID))
	e.clock.reset()

	out := e.log.String()
	if !strings.Contains(out, `"msg":"decision"`) {
		t.Fatalf("no decision logged:\n%s", out)
	}
	for name, s := range map[string]string{
		"assertion signature": sigOf(a), "assertion payload": strings.Split(a, ".")[1],
		"tampered assertion": sigOf(tampered), "forged assertion": forged, "user token signature": sigOf(tok),
	} {
		if w := findLeak(out, s); w != "" {
			t.Errorf("%s leaked (window %q):\n%s", name, w, out)
		}
	}
}
