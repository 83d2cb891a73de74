package extauthz

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-proxy/gatehouse/extauthz/assertion"
	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/jwt"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
	"github.com/gatehouse-proxy/gatehouse/test/testidp"

	"github.com/gatehouse-proxy/gatehouse/internal/logging/logtest"
)

const (
	edgeID      = "spiffe://gatehouse.local/edge/edge"
	ordersID    = "spiffe://gatehouse.local/sidecar/orders"
	paymentsID  = "spiffe://gatehouse.local/sidecar/payments"
	assertIssue = "https://gatehouse.gatehouse.local"
	hAssertion  = "x-gatehouse-assertion"
)

// shiftClock is real time plus an offset tests move forward.
type shiftClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *shiftClock) now() time.Time              { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.off) }
func (c *shiftClock) add(d time.Duration)         { c.mu.Lock(); c.off += d; c.mu.Unlock() }
func (c *shiftClock) reset()                      { c.mu.Lock(); c.off = 0; c.mu.Unlock() }
func (c *shiftClock) keyOpt() assertion.KeyOption { return assertion.WithKeyClock(c.now) }

// chainEnv is one ext_authz server, as `gatehouse authz` wires it with
// authz.assertion on, answering the edge and both sidecars over gRPC with
// the shipped policies.
type chainEnv struct {
	client authv3.AuthorizationClient
	idp    *testidp.IDP
	keys   *assertion.KeySet
	clock  *shiftClock
	log    *logtest.Buffer
}

func newChainEnv(t *testing.T, withVerifier bool) *chainEnv {
	t.Helper()
	ctx := context.Background()
	e := &chainEnv{idp: testidp.New(t), clock: &shiftClock{}, log: &logtest.Buffer{}}
	logger := slog.New(slog.NewJSONHandler(e.log, nil))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	engine, err := policy.New(ctx, policy.WithDir(filepath.Join("..", "policies")), policy.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := jwt.NewVerifier(ctx, []jwt.IssuerConfig{{
		Issuer: e.idp.Issuer(), Audiences: []string{"gatehouse"}, JWKSURI: e.idp.JWKSURI(), Kind: identity.KindUser,
	}}, jwt.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tokens.Close() })

	e.keys, err = assertion.OpenKeySet(filepath.Join(t.TempDir(), "assertion"), e.clock.keyOpt(),
		assertion.WithRetention(assertion.MaxTTL+assertion.DefaultClockSkew), assertion.WithKeyLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(e.keys.Handler()) // the admin listener's JWKS path
	t.Cleanup(jwks.Close)
	minter, err := assertion.NewMinter(e.keys, assertIssue, "gatehouse.local", assertion.WithMintClock(e.clock.now))
	if err != nil {
		t.Fatal(err)
	}
	var verifier AssertionVerifier
	if withVerifier {
		v, err := assertion.NewVerifier(ctx, assertion.VerifierConfig{
			Issuer: assertIssue, JWKSURI: jwks.URL + assertion.JWKSPath, TrustDomain: "gatehouse.local",
			Services: []string{"orders", "inventory", "payments"}, Chains: []assertion.Chain{{From: "orders", To: "inventory"}},
		}, jwt.WithClock(e.clock.now), jwt.WithLogger(quiet))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		verifier = v
	}
	srv := New(engine, WithLogger(logger), WithTokenVerifier(JWTTokens(tokens)), WithTimeout(5*time.Second),
		WithAssertions(minter, verifier))

	e.client = serveGRPC(t, srv)
	return e
}

// at shapes req as the given hop's Envoy sends it: route context
// extensions and, for a caller with a SPIFFE id, its peer certificate.
func at(t *testing.T, req *authv3.CheckRequest, role, service, peer string) *authv3.CheckRequest {
	if role != "" {
		req.Attributes.ContextExtensions = map[string]string{"role": role, "proxy": service, "service": service}
	}
	if peer != "" {
		withPeer(req, selfSignedPeer(t, peer), peer)
	}
	return req
}

func (e *chainEnv) check(t *testing.T, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	resp, err := e.client.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

func status(resp *authv3.CheckResponse) int {
	if resp.GetOkResponse() != nil {
		return 200
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

// edgeAssertion sends a user's request through the edge to orders and
// returns the assertion the edge added.
func (e *chainEnv) edgeAssertion(t *testing.T, roles ...string) string {
	t.Helper()
	token := e.idp.Token(t, userClaims(e.idp, roles...))
	resp := e.check(t, at(t, request("GET", "/api/orders/1", map[string]string{
		"authorization": "Bearer " + token,
		hAssertion:      "forged-by-the-client",
	}), "edge", "orders", ""))
	if status(resp) != 200 {
		t.Fatalf("edge: status %d", status(resp))
	}
	h := headerMap(resp.GetOkResponse().GetHeaders())
	tok := h[hAssertion]
	if tok == "" || tok == "forged-by-the-client" || strings.Count(tok, ".") != 2 {
		t.Fatalf("edge forwarded assertion %q", tok)
	}
	return tok
}

// TestAssertionChain is the two-hop chain at gRPC level: the edge's OK
// response carries a signed assertion; orders' sidecar accepts it from the
// edge; inventory's sidecar accepts it from orders (chain orders →
// inventory) and policy decides on identity (orders, by mTLS) and
// on_behalf_of (the user): readers allowed, others denied.
func TestAssertionChain(t *testing.T) {
	e := newChainEnv(t, true)

	reader := e.edgeAssertion(t, "reader")

	// Hop 1: edge → orders' sidecar. The edge forwards the bearer token too
	// (compose does), so identity is the user; the assertion is checked.
	bearer := e.idp.Token(t, userClaims(e.idp, "reader"))
	resp := e.check(t, at(t, request("GET", "/api/orders/1", map[string]string{"authorization": "Bearer " + bearer, hAssertion: reader}),
		"sidecar", "orders", edgeID))
	if status(resp) != 200 {
		t.Fatalf("orders sidecar: status %d\n%s", status(resp), e.log)
	}
	if h := headerMap(resp.GetOkResponse().GetHeaders()); h["x-gatehouse-on-behalf-of-subject"] != "alice" || h[hAssertion] != reader {
		t.Fatalf("orders sidecar upstream headers %v", h)
	}

	// Hop 2: orders → inventory's sidecar, orders' certificate and the
	// user's assertion, no bearer token.
	resp = e.check(t, at(t, request("GET", "/api/holds/alice", map[string]string{hAssertion: reader}), "sidecar", "inventory", ordersID))
	if status(resp) != 200 {
		t.Fatalf("inventory sidecar for a reader: status %d\n%s", status(resp), e.log)
	}
	h := headerMap(resp.GetOkResponse().GetHeaders())
	if h["x-gatehouse-spiffe-id"] != ordersID || h["x-gatehouse-on-behalf-of-subject"] != "alice" || h["x-gatehouse-on-behalf-of-roles"] != "reader" {
		t.Fatalf("inventory upstream headers %v", h)
	}

	// Same chain for a writer: the edge allows GET /api/orders, inventory
	// refuses because the user lacks the reader role.
	writer := e.edgeAssertion(t, "writer")
	resp = e.check(t, at(t, request("GET", "/api/holds/alice", map[string]string{hAssertion: writer}), "sidecar", "inventory", ordersID))
	if status(resp) != 403 || !strings.Contains(e.log.String(), `"reason":"denied by policy"`) {
		t.Fatalf("inventory sidecar for a writer: status %d\n%s", status(resp), e.log)
	}

	// Without any assertion orders alone may not read holds.
	resp = e.check(t, at(t, request("GET", "/api/holds/alice", nil), "sidecar", "inventory", ordersID))
	if status(resp) != 403 {
		t.Fatalf("inventory sidecar without assertion: status %d", status(resp))
	}
}

// TestAssertionRefused: each misuse and forgery is denied — never treated
// as "no user" — with its reason in the decision log.
func TestAssertionRefused(t *testing.T) {
	e := newChainEnv(t, true)
	reader := e.edgeAssertion(t, "reader")

	otherKeys, err := assertion.OpenKeySet(filepath.Join(t.TempDir(), "other"), assertion.WithRetention(time.Minute),
		assertion.WithKeyLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	rogue, _ := assertion.NewMinter(otherKeys, assertIssue, "gatehouse.local")
	unknownKey, err := rogue.Mint(assertion.Statement{Identity: &identity.Identity{Kind: identity.KindUser, Subject: "mallory", Roles: []string{"reader"}}, Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(reader, ".")
	sig := []byte(parts[2])
	if sig[5] == 'A' { // another valid base64url character: the signature, not the syntax, is wrong
		sig[5] = 'B'
	} else {
		sig[5] = 'A'
	}
	tampered := parts[0] + "." + parts[1] + "." + string(sig)

	tests := []struct {
		name          string
		token         string
		service, peer string
		shift         time.Duration
		status        int
		reason        string
	}{
		{"minted for a different peer", reader, "inventory", paymentsID, 0, 403, "wrong_peer"},
		{"wrong audience: no chain orders → payments", reader, "payments", ordersID, 0, 403, "wrong_audience"},
		{"direct hop from a non-edge", reader, "orders", paymentsID, 0, 403, "wrong_peer"},
		{"no peer certificate", reader, "inventory", "", 0, 403, "no_peer"},
		{"expired", reader, "inventory", ordersID, 2 * time.Minute, 401, "expired"},
		{"unknown key", unknownKey, "orders", edgeID, 0, 401, "unknown_kid"},
		{"tampered", tampered, "inventory", ordersID, 0, 401, "bad_signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.clock.add(tt.shift)
			defer e.clock.reset()
			before := len(e.log.String())
			resp := e.check(t, at(t, request("GET", "/api/holds/alice", map[string]string{hAssertion: tt.token}), "sidecar", tt.service, tt.peer))
			if got := status(resp); got != tt.status {
				t.Fatalf("status %d, want %d", got, tt.status)
			}
			line := e.log.String()[before:]
			if !strings.Contains(line, `"reason":"`) || !strings.Contains(line, "assertion rejected: "+tt.reason) {
				t.Fatalf("decision log lacks reason %q:\n%s", tt.reason, line)
			}
			if strings.Contains(line, tt.token) {
				t.Fatal("the decision log contains the assertion")
			}
		})
	}
}

// TestAssertionIgnoredAtEdge: on edge routes — and routes without a role,
// treated as edge — a client-sent assertion is never verified nor passed
// on; a sidecar without assertion verification refuses one (fail closed).
func TestAssertionIgnoredAtEdge(t *testing.T) {
	e := newChainEnv(t, true)
	reader := e.edgeAssertion(t, "reader")
	for _, role := range []string{"edge", ""} {
		resp := e.check(t, at(t, request("GET", "/api/holds/alice", map[string]string{hAssertion: reader}), role, "inventory", ordersID))
		if status(resp) != 403 {
			t.Errorf("role %q: status %d, want 403 (orders alone, no on_behalf_of)", role, status(resp))
		}
		resp = e.check(t, at(t, request("GET", "/healthz", map[string]string{hAssertion: reader}), role, "inventory", ""))
		if status(resp) != 200 {
			t.Fatalf("role %q healthz: status %d", role, status(resp))
		}
		ok := resp.GetOkResponse()
		if _, sent := headerMap(ok.GetHeaders())[hAssertion]; sent || !strings.Contains(strings.Join(ok.GetHeadersToRemove(), ","), hAssertion) {
			t.Errorf("role %q: client assertion passed on: headers %v, removed %v", role, ok.GetHeaders(), ok.GetHeadersToRemove())
		}
	}

	off := newChainEnv(t, false)
	resp := off.check(t, at(t, request("GET", "/api/holds/alice", map[string]string{hAssertion: reader}), "sidecar", "inventory", ordersID))
	if status(resp) != 401 || !strings.Contains(off.log.String(), "assertion verification is not configured") {
		t.Fatalf("sidecar without verifier: status %d\n%s", status(resp), off.log)
	}
}
