package assertion

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/jwt"
)

const (
	td     = "gatehouse.local"
	issuer = "https://gatehouse.gatehouse.local"
	edge   = "spiffe://gatehouse.local/edge/edge"
	orders = "spiffe://gatehouse.local/sidecar/orders"
)

// clock is a fake time source shared by keys, minter and verifier.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// env is a key set served over HTTP, a minter and a verifier on one clock.
type env struct {
	clk    *clock
	t0     time.Time
	dir    string
	keys   *KeySet
	minter *Minter
	ver    *Verifier
}

func newEnv(t *testing.T, chains ...Chain) *env {
	t.Helper()
	e := &env{t0: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC), dir: filepath.Join(t.TempDir(), "assertion")}
	e.clk = &clock{t: e.t0}
	var err error
	e.keys, err = OpenKeySet(e.dir, WithKeyClock(e.clk.now), WithRotation(time.Hour), WithRetention(MaxTTL+DefaultClockSkew), WithKeyLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e.keys.Handler())
	t.Cleanup(srv.Close)
	e.minter, err = NewMinter(e.keys, issuer, td, WithTTL(MaxTTL), WithMintClock(e.clk.now))
	if err != nil {
		t.Fatal(err)
	}
	e.ver, err = NewVerifier(context.Background(), VerifierConfig{
		Issuer: issuer, JWKSURI: srv.URL + JWKSPath, TrustDomain: td,
		Services: []string{"orders", "inventory", "payments"}, Chains: chains,
	}, jwt.WithClock(e.clk.now), jwt.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.ver.Close() })
	return e
}

func alice(roles ...string) *identity.Identity {
	return &identity.Identity{Kind: identity.KindUser, Subject: "alice", Issuer: "https://idp.example", Method: identity.MethodJWKS,
		Email: "alice@example.com", Roles: roles, Groups: []string{"staff"}}
}

func (e *env) mint(t *testing.T, service string, id *identity.Identity) string {
	t.Helper()
	tok, err := e.minter.Mint(Statement{Identity: id, Service: service, DecisionID: "d-1", PolicyRevision: "rev-1"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestMintVerify: what the edge signs, the next hops read back, and the
// claims are the ones the issue names.
func TestMintVerify(t *testing.T) {
	e := newEnv(t, Chain{From: "orders", To: "inventory"})
	tok := e.mint(t, "orders", alice("reader"))

	h, c := decodePart(t, tok, 0), decodePart(t, tok, 1)
	if h["alg"] != "ES256" || h["typ"] != TokenType || h["kid"] != e.keys.CurrentKeyID() {
		t.Errorf("header = %v", h)
	}
	for _, k := range []string{"iss", "sub", "aud", "iat", "exp", "jti", "kind", "roles", "groups", "decision_id", "policy_revision"} {
		if _, ok := c[k]; !ok {
			t.Errorf("claim %s missing: %v", k, c)
		}
	}
	if c["aud"] != orders || c["iss"] != issuer || c["exp"].(float64)-c["iat"].(float64) != 60 {
		t.Errorf("claims = %v", c)
	}

	for _, hop := range []Hop{{Service: "orders", Peer: edge}, {Service: "inventory", Peer: orders}} {
		a, err := e.ver.Verify(context.Background(), tok, hop)
		if err != nil {
			t.Fatalf("%+v: %v", hop, err)
		}
		if a.Identity.Subject != "alice" || a.Identity.Kind != identity.KindUser || !slices.Equal(a.Identity.Roles, []string{"reader"}) ||
			a.Identity.Issuer != "https://idp.example" || a.Identity.Method != identity.MethodJWKS || a.DecisionID != "d-1" ||
			a.PolicyRevision != "rev-1" || a.Audience != orders || a.Token != tok {
			t.Errorf("%+v: assertion = %+v", hop, a)
		}
		v := a.PolicyValue()
		if v["subject"] != "alice" || v["assertion"].(map[string]any)["audience"] != orders {
			t.Errorf("policy value = %v", v)
		}
	}
}

// TestVerifyRejects: each misuse and each forgery is refused with its reason.
func TestVerifyRejects(t *testing.T) {
	e := newEnv(t, Chain{From: "orders", To: "inventory"})
	good := e.mint(t, "orders", alice("reader"))

	// A key Gatehouse does not publish, same issuer name.
	otherKeys, err := OpenKeySet(filepath.Join(t.TempDir(), "other"), WithKeyClock(e.clk.now), WithRetention(time.Minute), WithKeyLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	rogue, _ := NewMinter(otherKeys, issuer, td, WithMintClock(e.clk.now))
	unknownKey, err := rogue.Mint(Statement{Identity: alice("admin"), Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := NewMinter(e.keys, "https://someone.else", td, WithMintClock(e.clk.now))
	foreignTok, _ := foreign.Mint(Statement{Identity: alice("reader"), Service: "orders"})

	// The payload re-encoded with an extra role, the signature kept.
	parts := strings.Split(good, ".")
	claims := decodePart(t, good, 1)
	claims["roles"] = []string{"reader", "admin"}
	raw, _ := json.Marshal(claims)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(raw) + "." + parts[2]

	tests := []struct {
		name  string
		token string
		hop   Hop
		at    time.Duration // after minting
		want  Reason
	}{
		{"wrong audience", good, Hop{Service: "payments", Peer: orders}, 0, ReasonWrongAudience},
		{"no chain back", e.mint(t, "inventory", alice("reader")), Hop{Service: "orders", Peer: "spiffe://gatehouse.local/sidecar/inventory"}, 0, ReasonWrongAudience},
		{"minted for another peer", good, Hop{Service: "inventory", Peer: "spiffe://gatehouse.local/sidecar/payments"}, 0, ReasonWrongPeer},
		{"direct hop not from an edge", good, Hop{Service: "orders", Peer: "spiffe://gatehouse.local/sidecar/payments"}, 0, ReasonWrongPeer},
		{"edge of another trust domain", good, Hop{Service: "orders", Peer: "spiffe://evil.example/edge/edge"}, 0, ReasonWrongPeer},
		{"no peer", good, Hop{Service: "orders"}, 0, ReasonNoPeer},
		{"no destination", good, Hop{Peer: edge}, 0, ReasonNoDestination},
		{"expired", good, Hop{Service: "orders", Peer: edge}, MaxTTL + DefaultClockSkew, Reason(jwt.ReasonExpired)},
		{"unknown key", unknownKey, Hop{Service: "orders", Peer: edge}, 0, Reason(jwt.ReasonUnknownKID)},
		{"tampered", tampered, Hop{Service: "orders", Peer: edge}, 0, Reason(jwt.ReasonBadSignature)},
		{"other issuer", foreignTok, Hop{Service: "orders", Peer: edge}, 0, Reason(jwt.ReasonUnknownIssuer)},
		{"not a JWS", "x-gatehouse-subject: alice", Hop{Service: "orders", Peer: edge}, 0, Reason(jwt.ReasonMalformed)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.clk.set(e.t0.Add(tt.at))
			defer e.clk.set(e.t0)
			a, err := e.ver.Verify(context.Background(), tt.token, tt.hop)
			if err == nil {
				t.Fatalf("accepted: %+v", a)
			}
			if got := ReasonOf(err); got != tt.want {
				t.Fatalf("reason %q, want %q (%v)", got, tt.want, err)
			}
			var ae *Error
			if !strings.Contains(err.Error(), string(tt.want)) || !errorsAs(err, &ae) {
				t.Errorf("error text %q", err)
			}
			if strings.Contains(err.Error(), tt.token) && len(tt.token) > 20 {
				t.Error("error contains the token")
			}
			misuse := tt.want == ReasonWrongAudience || tt.want == ReasonWrongPeer || tt.want == ReasonNoPeer || tt.want == ReasonNoDestination
			if ae.Misuse() != misuse {
				t.Errorf("Misuse() = %v", ae.Misuse())
			}
		})
	}
}

// TestMintBounds: lifetime at most 60 s and never past the identity's own
// expiry; nothing is minted for nobody.
func TestMintBounds(t *testing.T) {
	e := newEnv(t)
	id := alice("reader")
	id.Expiry = e.t0.Add(10 * time.Second)
	c := decodePart(t, e.mint(t, "orders", id), 1)
	if c["exp"].(float64) != float64(id.Expiry.Unix()) {
		t.Errorf("exp %v, want the identity's %d", c["exp"], id.Expiry.Unix())
	}
	id.Expiry = e.t0
	if _, err := e.minter.Mint(Statement{Identity: id, Service: "orders"}); err == nil {
		t.Error("minted for an expired identity")
	}
	for _, st := range []Statement{{Service: "orders"}, {Identity: &identity.Identity{}, Service: "orders"}, {Identity: alice()}} {
		if _, err := e.minter.Mint(st); err == nil {
			t.Errorf("minted %+v", st)
		}
	}
	for _, ttl := range []time.Duration{0, MaxTTL + time.Second} {
		if _, err := NewMinter(e.keys, issuer, td, WithTTL(ttl)); err == nil {
			t.Errorf("ttl %s accepted", ttl)
		}
	}
}

// TestKeyRotationOverlap: the successor is published before it signs; the
// previous key stays published until the last token it signed has expired
// (plus skew), and is dropped then.
func TestKeyRotationOverlap(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	k1 := e.keys.CurrentKeyID()
	if ids := e.keys.KeyIDs(); !slices.Equal(ids, []string{k1}) {
		t.Fatalf("initial keys %v", ids)
	}
	step := func(d time.Duration) {
		t.Helper()
		e.clk.set(e.t0.Add(d))
		if _, err := e.keys.Maintain(); err != nil {
			t.Fatal(err)
		}
		if err := e.ver.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	hop := Hop{Service: "orders", Peer: edge}

	step(time.Hour - DefaultPrepublish)
	ids := e.keys.KeyIDs()
	if len(ids) != 2 || ids[0] != k1 || e.keys.CurrentKeyID() != k1 {
		t.Fatalf("pre-published: keys %v, current %s", ids, e.keys.CurrentKeyID())
	}
	k2 := ids[1]
	if !strings.Contains(string(e.keys.JWKS()), k2) {
		t.Fatal("successor not in the JWKS before it signs")
	}

	step(time.Hour - time.Second)
	last := e.mint(t, "orders", alice("reader")) // k1's last token, exp = +59s after rotation

	step(time.Hour)
	if e.keys.CurrentKeyID() != k2 {
		t.Fatalf("current %s after rotation, want %s", e.keys.CurrentKeyID(), k2)
	}
	if _, err := e.ver.Verify(ctx, e.mint(t, "orders", alice("reader")), hop); err != nil {
		t.Fatalf("new key's token: %v", err)
	}

	step(time.Hour + 58*time.Second)
	if _, err := e.ver.Verify(ctx, last, hop); err != nil {
		t.Fatalf("previous key's last token during the overlap: %v", err)
	}
	retention := MaxTTL + DefaultClockSkew
	step(time.Hour + retention - time.Second)
	if !slices.Contains(e.keys.KeyIDs(), k1) {
		t.Fatal("previous key dropped before every token it signed has expired")
	}

	step(time.Hour + retention)
	if ids := e.keys.KeyIDs(); !slices.Equal(ids, []string{k2}) {
		t.Fatalf("after the overlap keys are %v, want only %s", ids, k2)
	}
	if strings.Contains(string(e.keys.JWKS()), k1) {
		t.Fatal("retired key still in the JWKS")
	}
	if _, err := e.ver.Verify(ctx, last, hop); ReasonOf(err) != Reason(jwt.ReasonUnknownKID) {
		t.Fatalf("retired key's token: %v, want unknown_kid", err)
	}

	// Rotate (forced) replaces the current key now, previous kept for the overlap.
	if err := e.keys.Rotate(); err != nil {
		t.Fatal(err)
	}
	if ids := e.keys.KeyIDs(); len(ids) != 2 || ids[0] != k2 || e.keys.CurrentKeyID() != ids[1] {
		t.Fatalf("after Rotate: keys %v, current %s", ids, e.keys.CurrentKeyID())
	}
}

// TestKeysPersist: keys survive a restart, stored 0600 in a 0700 directory,
// and a key file others can read is refused.
func TestKeysPersist(t *testing.T) {
	e := newEnv(t)
	want := e.keys.KeyIDs()
	st, err := os.Stat(e.dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, %v", st.Mode(), err)
	}
	path := filepath.Join(e.dir, keysFile)
	st, err = os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode(), err)
	}
	again, err := OpenKeySet(e.dir, WithKeyClock(e.clk.now), WithRotation(time.Hour), WithRetention(time.Minute), WithKeyLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if got := again.KeyIDs(); !slices.Equal(got, want) {
		t.Fatalf("reloaded keys %v, want %v", got, want)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenKeySet(e.dir, WithRetention(time.Minute), WithKeyLogger(quiet)); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Fatalf("world-readable key file: %v", err)
	}
	for _, opts := range [][]KeyOption{{}, {WithRetention(time.Minute), WithRotation(time.Minute)}} {
		if _, err := OpenKeySet(t.TempDir(), opts...); err == nil {
			t.Errorf("options %d accepted", len(opts))
		}
	}
}

func decodePart(t *testing.T, tok string, i int) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[i])
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func errorsAs(err error, target **Error) bool {
	e, ok := err.(*Error)
	if ok {
		*target = e
	}
	return ok
}
