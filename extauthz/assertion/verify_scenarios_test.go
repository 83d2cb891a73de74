package assertion

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/jwt"
)

// Behaviour tests: assertions forged, stretched, replayed or shown at the
// wrong hop, signed with Gatehouse's real key where the attack needs it.

// scenarioClaims is what Mint would sign for alice at orders, at now.
func scenarioClaims(now time.Time) map[string]any {
	return map[string]any{
		"iss": issuer, "sub": "alice", "aud": orders, "iat": now.Unix(), "exp": now.Add(30 * time.Second).Unix(),
		"jti": "j-1", "kind": "user", "verified_by": "jwks", "decision_id": "d", "policy_revision": "r",
	}
}

// signWithCurrent signs claims with Gatehouse's current key: a token only a
// buggy or compromised minter could produce, to test what Verify itself
// enforces.
func (e *env) signWithCurrent(t *testing.T, claims map[string]any) string {
	t.Helper()
	kid, priv, err := e.keys.signer()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sign(priv, kid, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestScenarioVerifyEnforcesClaims: Verify itself, not just Mint, holds every
// assertion to the shape Mint produces: one audience, iat present, a
// lifetime of at most MaxTTL, a jti and a known kind; and exp is honoured
// to the skew and not a second beyond, also for a token verified (and
// cached) before.
func TestScenarioVerifyEnforcesClaims(t *testing.T) {
	e := newEnv(t, Chain{From: "orders", To: "inventory"})
	hop := Hop{Service: "orders", Peer: edge}
	mod := func(f func(c map[string]any)) string {
		c := scenarioClaims(e.t0)
		f(c)
		return e.signWithCurrent(t, c)
	}
	tests := []struct {
		name  string
		token string
		want  Reason
	}{
		{"as minted", mod(func(map[string]any) {}), ""},
		{"aud as a one-element array", mod(func(c map[string]any) { c["aud"] = []string{orders} }), ""},
		{"lifetime exactly MaxTTL", mod(func(c map[string]any) { c["exp"] = e.t0.Add(MaxTTL).Unix() }), ""},
		{"lifetime one second over MaxTTL", mod(func(c map[string]any) { c["exp"] = e.t0.Add(MaxTTL + time.Second).Unix() }), ReasonInvalidClaim},
		{"lifetime of a day, iat back-dated", mod(func(c map[string]any) {
			c["iat"] = e.t0.Add(-time.Hour).Unix()
			c["exp"] = e.t0.Add(23 * time.Hour).Unix()
		}), ReasonInvalidClaim},
		{"iat missing", mod(func(c map[string]any) { delete(c, "iat") }), ReasonInvalidClaim},
		{"iat beyond the skew in the future", mod(func(c map[string]any) { c["iat"] = e.t0.Add(DefaultClockSkew + time.Second).Unix() }), Reason(jwt.ReasonIssuedInFuture)},
		{"exp missing", mod(func(c map[string]any) { delete(c, "exp") }), Reason(jwt.ReasonMissingExp)},
		{"jti missing", mod(func(c map[string]any) { delete(c, "jti") }), ReasonInvalidClaim},
		{"jti empty", mod(func(c map[string]any) { c["jti"] = "" }), ReasonInvalidClaim},
		{"kind missing", mod(func(c map[string]any) { delete(c, "kind") }), ReasonInvalidClaim},
		{"kind admin", mod(func(c map[string]any) { c["kind"] = "admin" }), ReasonInvalidClaim},
		{"kind in upper case", mod(func(c map[string]any) { c["kind"] = "USER" }), ReasonInvalidClaim},
		{"two audiences, both services", mod(func(c map[string]any) { c["aud"] = []string{orders, ServiceID(td, "inventory")} }), ReasonInvalidClaim},
		{"aud the edge itself", mod(func(c map[string]any) { c["aud"] = edge }), Reason(jwt.ReasonWrongAudience)},
		{"aud a service of another trust domain", mod(func(c map[string]any) { c["aud"] = ServiceID("evil.example", "orders") }), Reason(jwt.ReasonWrongAudience)},
		{"aud a service not in the mesh", mod(func(c map[string]any) { c["aud"] = ServiceID(td, "shadow") }), Reason(jwt.ReasonWrongAudience)},
		{"aud the bare service name", mod(func(c map[string]any) { c["aud"] = "orders" }), Reason(jwt.ReasonWrongAudience)},
		{"sub missing", mod(func(c map[string]any) { delete(c, "sub") }), Reason(jwt.ReasonMissingSubject)},
		{"iss with trailing slash", mod(func(c map[string]any) { c["iss"] = issuer + "/" }), Reason(jwt.ReasonUnknownIssuer)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.ver.Verify(context.Background(), tc.token, hop)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q, want %q (%v)", got, tc.want, err)
			}
		})
	}

	// Replay: accepted up to exp + skew (exclusive), from the cache too.
	tok := e.mint(t, "orders", alice("reader")) // exp = t0 + 60 s
	for _, tc := range []struct {
		at   time.Duration
		want Reason
	}{
		{0, ""},
		{MaxTTL + DefaultClockSkew - time.Second, ""},
		{MaxTTL + DefaultClockSkew, Reason(jwt.ReasonExpired)},
		{MaxTTL + time.Hour, Reason(jwt.ReasonExpired)},
	} {
		e.clk.set(e.t0.Add(tc.at))
		_, err := e.ver.Verify(context.Background(), tok, hop)
		if got := ReasonOf(err); got != tc.want {
			t.Errorf("replayed %s after minting: reason %q, want %q (%v)", tc.at, got, tc.want, err)
		}
	}
	e.clk.set(e.t0)
}

// TestScenarioVerifyRefusesForgedSignatures: only ES256 by a published key
// verifies: re-signing with HMAC keyed by the published key, none, another
// curve, a DER-encoded or malleated signature, or the header re-pointed at
// another published key are all refused as failures (401), not misuse.
func TestScenarioVerifyRefusesForgedSignatures(t *testing.T) {
	e := newEnv(t)
	hop := Hop{Service: "orders", Peer: edge}
	good := e.mint(t, "orders", alice("reader"))
	parts := strings.Split(good, ".")
	enc := base64.RawURLEncoding.EncodeToString
	hdr := func(h string) string { return enc([]byte(h)) }
	kid := e.keys.CurrentKeyID()

	// Pre-publish a successor so a second published key exists.
	e.clk.set(e.t0.Add(time.Hour - DefaultPrepublish))
	if _, err := e.keys.Maintain(); err != nil {
		t.Fatal(err)
	}
	if err := e.ver.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.clk.set(e.t0)
	ids := e.keys.KeyIDs()
	if len(ids) != 2 {
		t.Fatalf("keys %v, want the current and a pre-published successor", ids)
	}
	successor := ids[1]

	hs := func(alg string, key []byte) string {
		si := hdr(`{"alg":"`+alg+`","kid":"`+kid+`","typ":"`+TokenType+`"}`) + "." + parts[1]
		m := hmac.New(sha256.New, key)
		m.Write([]byte(si))
		return si + "." + enc(m.Sum(nil))
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	der, _ := asn1.Marshal(struct{ R, S *big.Int }{r, s})
	highS := new(big.Int).Sub(elliptic.P256().Params().N, s)
	malleated := make([]byte, 64)
	r.FillBytes(malleated[:32])
	highS.FillBytes(malleated[32:])
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	es384 := func() string {
		si := hdr(`{"alg":"ES384","kid":"`+kid+`"}`) + "." + parts[1]
		sum := sha256.Sum256([]byte(si))
		rr, ss, _ := ecdsa.Sign(rand.Reader, p384, sum[:])
		out := make([]byte, 96)
		rr.FillBytes(out[:48])
		ss.FillBytes(out[48:])
		return si + "." + enc(out)
	}()

	tests := []struct {
		name  string
		token string
		want  Reason
	}{
		{"HS256 keyed with the published JWKS", hs("HS256", e.keys.JWKS()), Reason(jwt.ReasonAlgNotAllowed)},
		{"HS256 keyed with the kid", hs("HS256", []byte(kid)), Reason(jwt.ReasonAlgNotAllowed)},
		{"alg none, signature dropped", hdr(`{"alg":"none","kid":"`+kid+`"}`) + "." + parts[1] + ".", Reason(jwt.ReasonAlgNotAllowed)},
		{"alg none, signature kept", hdr(`{"alg":"none","kid":"`+kid+`"}`) + "." + parts[1] + "." + parts[2], Reason(jwt.ReasonAlgNotAllowed)},
		{"ES384 by a P-384 key", es384, Reason(jwt.ReasonAlgNotAllowed)},
		{"DER-encoded signature", parts[0] + "." + parts[1] + "." + enc(der), Reason(jwt.ReasonBadSignature)},
		{"kid re-pointed at the pre-published successor", hdr(`{"alg":"ES256","kid":"`+successor+`","typ":"`+TokenType+`"}`) + "." + parts[1] + "." + parts[2], Reason(jwt.ReasonBadSignature)},
		{"kid removed", hdr(`{"alg":"ES256","typ":"`+TokenType+`"}`) + "." + parts[1] + "." + parts[2], Reason(jwt.ReasonMissingKID)},
		{"embedded jwk of an attacker key", hdr(`{"alg":"ES256","kid":"`+kid+`","jwk":{}}`) + "." + parts[1] + "." + parts[2], Reason(jwt.ReasonForbiddenHeader)},
		{"jku to an attacker JWKS", hdr(`{"alg":"ES256","kid":"`+kid+`","jku":"https://evil.example/jwks"}`) + "." + parts[1] + "." + parts[2], Reason(jwt.ReasonForbiddenHeader)},
		{"payload re-encoded with the same claims", parts[0] + "." + enc(mustMarshal(t, decodePart(t, good, 1))) + "." + parts[2], Reason(jwt.ReasonBadSignature)},
		{"JWS JSON serialization", `{"protected":"` + parts[0] + `","payload":"` + parts[1] + `","signature":"` + parts[2] + `"}`, Reason(jwt.ReasonMalformed)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.ver.Verify(context.Background(), tc.token, hop)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q, want %q (%v)", got, tc.want, err)
			}
			var ae *Error
			if errorsAs(err, &ae) && ae.Misuse() {
				t.Error("a forged assertion is reported as misuse (403) instead of a failure (401)")
			}
		})
	}

	// A high-S twin of a valid ECDSA signature also verifies (ECDSA is
	// malleable and JWS does not forbid it); it is the same statement, so
	// this is recorded, not refused: it must carry exactly the same claims.
	twin := parts[0] + "." + parts[1] + "." + enc(malleated)
	a, err := e.ver.Verify(context.Background(), twin, hop)
	t.Logf("high-S twin of a valid signature: err = %v", err)
	if err == nil && (a.Identity.Subject != "alice" || a.Audience != orders) {
		t.Errorf("malleated signature verified with other claims: %+v", a)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	// Differ from Mint's bytes while meaning the same: a space after '{'.
	return append([]byte("{ "), b[1:]...)
}

// TestScenarioHopBinding: an assertion minted for S is accepted at S from an
// edge and at T only from S itself under a chain rule S → T; rules are
// neither transitive nor reversible, and edge status is an exact path
// prefix in Gatehouse's own trust domain.
func TestScenarioHopBinding(t *testing.T) {
	e := newEnv(t, Chain{From: "orders", To: "inventory"}, Chain{From: "inventory", To: "payments"})
	inventory, payments := ServiceID(td, "inventory"), ServiceID(td, "payments")
	forOrders := e.mint(t, "orders", alice("reader"))
	forInventory := e.mint(t, "inventory", alice("reader"))
	tests := []struct {
		name  string
		token string
		hop   Hop
		want  Reason
	}{
		{"orders from an edge", forOrders, Hop{Service: "orders", Peer: edge}, ""},
		{"orders from another edge proxy", forOrders, Hop{Service: "orders", Peer: "spiffe://" + td + "/edge/eu-west"}, ""},
		{"orders → inventory by orders", forOrders, Hop{Service: "inventory", Peer: orders}, ""},
		{"inventory → payments by inventory", forInventory, Hop{Service: "payments", Peer: inventory}, ""},

		{"not transitive: orders' assertion at payments by inventory", forOrders, Hop{Service: "payments", Peer: inventory}, ReasonWrongAudience},
		{"not transitive: orders' assertion at payments by orders", forOrders, Hop{Service: "payments", Peer: orders}, ReasonWrongAudience},
		{"not reversible: inventory's assertion at orders by inventory", forInventory, Hop{Service: "orders", Peer: inventory}, ReasonWrongAudience},
		{"chain hop presented by an edge", forOrders, Hop{Service: "inventory", Peer: edge}, ReasonWrongPeer},
		{"chain hop presented by the destination itself", forOrders, Hop{Service: "inventory", Peer: inventory}, ReasonWrongPeer},
		{"chain hop by orders of another trust domain", forOrders, Hop{Service: "inventory", Peer: "spiffe://evil.example/sidecar/orders"}, ReasonWrongPeer},
		{"chain hop by orders with a trailing slash", forOrders, Hop{Service: "inventory", Peer: orders + "/"}, ReasonWrongPeer},
		{"direct hop by the audience itself", forOrders, Hop{Service: "orders", Peer: orders}, ReasonWrongPeer},
		{"direct hop by payments", forOrders, Hop{Service: "orders", Peer: payments}, ReasonWrongPeer},
		{"edge prefix without a name", forOrders, Hop{Service: "orders", Peer: "spiffe://" + td + "/edge/"}, ReasonWrongPeer},
		{"edge without the slash", forOrders, Hop{Service: "orders", Peer: "spiffe://" + td + "/edge"}, ReasonWrongPeer},
		{"edge-like role name", forOrders, Hop{Service: "orders", Peer: "spiffe://" + td + "/edgeproxy/x"}, ReasonWrongPeer},
		{"edge of a trust domain with our name as prefix", forOrders, Hop{Service: "orders", Peer: "spiffe://" + td + ".evil/edge/edge"}, ReasonWrongPeer},
		{"edge in upper case", forOrders, Hop{Service: "orders", Peer: "spiffe://" + td + "/EDGE/edge"}, ReasonWrongPeer},
		{"destination named with a path", forOrders, Hop{Service: "sidecar/orders", Peer: edge}, ReasonWrongAudience},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.ver.Verify(context.Background(), tc.token, tc.hop)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q, want %q (%v)", got, tc.want, err)
			}
		})
	}
}

// TestScenarioEdgeMustBeCanonical: an "edge" is a canonical SPIFFE id under
// spiffe://<td>/edge/; a dot-segment or percent-encoded id that only starts
// with that string names something else and is not an edge.
func TestScenarioEdgeMustBeCanonical(t *testing.T) {
	e := newEnv(t)
	tok := e.mint(t, "orders", alice("reader"))
	for _, peer := range []string{
		"spiffe://" + td + "/edge/../sidecar/payments",
		"spiffe://" + td + "/edge/%2e%2e/sidecar/payments",
		"spiffe://" + td + "/edge//",
		"spiffe://" + td + "/edge/x?y=1",
	} {
		if _, err := e.ver.Verify(context.Background(), tok, Hop{Service: "orders", Peer: peer}); ReasonOf(err) != ReasonWrongPeer {
			t.Errorf("peer %q: err %v, want %s", peer, err, ReasonWrongPeer)
		}
	}
}

// TestScenarioFailuresBeforeMisuse: an assertion that does not verify is a
// failure (401) wherever it is presented: a missing peer or destination
// must not turn a forged or expired token into "misuse" (403), which the
// package reserves for a verified assertion (Error.Misuse, README).
func TestScenarioFailuresBeforeMisuse(t *testing.T) {
	e := newEnv(t)
	good := e.mint(t, "orders", alice("reader"))
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"root"}`)) + "." + parts[2]
	for _, hop := range []Hop{{Service: "orders"}, {Peer: edge}} {
		for name, tok := range map[string]string{"garbage": "not-a-jws", "tampered": tampered} {
			_, err := e.ver.Verify(context.Background(), tok, hop)
			var ae *Error
			if !errorsAs(err, &ae) || ae.Misuse() {
				t.Errorf("%s at %+v: %v reported as misuse", name, hop, err)
			}
		}
	}
}

// A token the assertion keys signed without the assertion's typ (RFC 8725
// explicit typing) is not an assertion: refused as invalid (401), never as
// misuse.
func TestScenarioVerifyRequiresAssertionType(t *testing.T) {
	e := newEnv(t)
	good := e.mint(t, "orders", alice("reader"))
	payload := strings.Split(good, ".")[1]
	kid, priv, err := e.keys.signer()
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"JWT", "at+jwt", ""} {
		h := map[string]string{"alg": "ES256", "kid": kid}
		if typ != "" {
			h["typ"] = typ
		}
		si := base64.RawURLEncoding.EncodeToString(mustMarshal(t, h)) + "." + payload
		sum := sha256.Sum256([]byte(si))
		r, s, err := ecdsa.Sign(rand.Reader, priv, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		_, err = e.ver.Verify(context.Background(), si+"."+base64.RawURLEncoding.EncodeToString(sig), Hop{Service: "orders", Peer: edge})
		var ae *Error
		if !errors.As(err, &ae) || ae.Reason != Reason(jwt.ReasonWrongType) || ae.Misuse() {
			t.Errorf("typ %q: err %v, want %s (not misuse)", typ, err, jwt.ReasonWrongType)
		}
	}
}
