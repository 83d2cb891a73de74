package jwt

import (
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
	jwxjwt "github.com/lestrrat-go/jwx/v3/jwt"
)

func allAlgs() []string {
	return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
}

func TestVerifyJWKSAcceptsEachAlgorithm(t *testing.T) {
	keys := []testKey{
		rsaTestKey("rs256", "RS256", 0),
		rsaTestKey("rs512", "RS512", 0),
		rsaTestKey("ps256", "PS256", 1),
		rsaTestKey("ps384", "PS384", 1),
		ecTestKey(t, "es256", "ES256", elliptic.P256()),
		ecTestKey(t, "es384", "ES384", elliptic.P384()),
		ecTestKey(t, "es512", "ES512", elliptic.P521()),
		edTestKey(t, "ed"),
	}
	idp := newTestIdP(t, keys...)
	clock := newTestClock()
	v := newTestVerifier(t, clock, []IssuerConfig{{
		Issuer: idp.issuer(), Audiences: []string{"api"}, DiscoveryURL: idp.issuer(), Algorithms: allAlgs(),
	}})
	for _, k := range keys {
		t.Run(k.alg, func(t *testing.T) {
			res, err := v.Verify(context.Background(), k.token(t, claimsFor(idp.issuer(), clock.Now()), nil))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if res.Method != identity.MethodJWKS || res.KeyID != k.kid || res.Algorithm != k.alg {
				t.Errorf("method/kid/alg = %s/%s/%s, want jwks/%s/%s", res.Method, res.KeyID, res.Algorithm, k.kid, k.alg)
			}
			if res.Subject != "alice" || res.Issuer != idp.issuer() || res.Email != "alice@example.com" {
				t.Errorf("subject/issuer/email = %q/%q/%q", res.Subject, res.Issuer, res.Email)
			}
			if !slices.Equal(res.Roles, []string{"admin", "dev"}) || !slices.Equal(res.Groups, []string{"eng", "ops"}) {
				t.Errorf("roles/groups = %v/%v", res.Roles, res.Groups)
			}
			if !res.Expiry.Equal(clock.Now().Add(time.Hour)) || !res.IssuedAt.Equal(clock.Now()) {
				t.Errorf("expiry/iat = %v/%v", res.Expiry, res.IssuedAt)
			}
			if id := res.Identity(); id.Kind != identity.KindUser || id.Subject != "alice" || id.Method != identity.MethodJWKS {
				t.Errorf("Identity() = %+v", id)
			}
		})
	}
	if got := idp.discoveryHits.Load(); got != 1 {
		t.Errorf("discovery fetched %d times, want 1 (startup)", got)
	}
}

// A token produced by jwx's own high-level signer must verify: guards
// against our strict parser rejecting ordinary tokens.
func TestVerifyAcceptsJWXSignedToken(t *testing.T) {
	k := rsaTestKey("k1", "RS256", 0)
	idp := newTestIdP(t, k)
	clock := newTestClock()
	v := newTestVerifier(t, clock, []IssuerConfig{{
		Issuer: idp.issuer(), Audiences: []string{"api"}, JWKSURI: idp.issuer() + "/jwks",
		RolesClaim: "realm_access.roles", Kind: identity.KindService,
	}})
	tok, err := jwxjwt.NewBuilder().
		Issuer(idp.issuer()).Subject("svc-a").Audience([]string{"api"}).
		IssuedAt(clock.Now()).Expiration(clock.Now().Add(time.Minute)).
		Claim("realm_access", map[string]any{"roles": []string{"reader"}}).
		Build()
	must(t, err)
	hdrs := jws.NewHeaders()
	must(t, hdrs.Set(jws.KeyIDKey, "k1"))
	signed, err := jwxjwt.Sign(tok, jwxjwt.WithKey(jwa.RS256(), k.priv, jws.WithProtectedHeaders(hdrs)))
	must(t, err)
	res, err := v.Verify(context.Background(), string(signed))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if res.Kind != identity.KindService || !slices.Equal(res.Roles, []string{"reader"}) {
		t.Errorf("kind/roles = %s/%v", res.Kind, res.Roles)
	}
}

func TestVerifyRejects(t *testing.T) {
	rsaK := rsaTestKey("rsa", "RS256", 0)
	ecK := ecTestKey(t, "ec", "ES256", elliptic.P256())
	psOnly := rsaTestKey("ps-only", "PS256", 1) // JWK alg PS256
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	must(t, err)
	weakK := testKey{kid: "weak", alg: "RS256", priv: weak, jwkAlg: "RS256", use: "sig"}
	encK := testKey{kid: "enc", alg: "RS256", priv: testRSAKeys()[2], use: "enc"}
	other := rsaTestKey("rsa", "RS256", 2) // same kid as rsaK, different key
	idp := newTestIdP(t, rsaK, ecK, psOnly, weakK, encK)

	clock := newTestClock()
	now := clock.Now()
	iss := idp.issuer()
	v := newTestVerifier(t, clock, []IssuerConfig{
		{Issuer: iss, Audiences: []string{"api"}, DiscoveryURL: iss, Algorithms: []string{"RS256", "ES256", "PS256"}, MaxTokenBytes: 4096},
		{Issuer: "https://x5t-only.example", Audiences: []string{"api"}, X5T: true, TrustStore: emptyTrustStore(t)},
	})
	good := func(mod func(map[string]any)) map[string]any {
		c := claimsFor(iss, now)
		if mod != nil {
			mod(c)
		}
		return c
	}
	valid := rsaK.token(t, good(nil), nil)
	parts := strings.Split(valid, ".")
	hdrRS := mustJSON(t, map[string]any{"alg": "RS256", "kid": "rsa"})
	claimsJSON := mustJSON(t, good(nil))

	tests := []struct {
		name  string
		token string
		want  Reason
	}{
		// Compact-form syntax.
		{"empty", "", ReasonMalformed},
		{"two parts", parts[0] + "." + parts[1], ReasonMalformed},
		{"four parts", valid + ".e30", ReasonMalformed},
		{"JWE five parts", parts[0] + ".a.b.c.d", ReasonMalformed},
		{"JSON serialization", `{"payload":"` + parts[1] + `","signatures":[{"protected":"` + parts[0] + `","signature":"` + parts[2] + `"}]}`, ReasonMalformed},
		{"flattened JSON serialization", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, ReasonMalformed},
		{"leading space", " " + valid, ReasonMalformed},
		{"newline inside", parts[0] + ".\n" + parts[1] + "." + parts[2], ReasonMalformed},
		{"padding", parts[0] + "=." + parts[1] + "." + parts[2], ReasonMalformed},
		{"std base64 char", parts[0] + "." + parts[1] + "." + strings.Replace(parts[2], parts[2][:1], "+", 1), ReasonMalformed},
		{"non-canonical base64 trailing bits", parts[0] + "." + parts[1] + "." + flipLastBits(parts[2]), ReasonMalformed},
		{"empty signature", parts[0] + "." + parts[1] + ".", ReasonMalformed},
		{"header not JSON", b64u([]byte("nope")) + "." + parts[1] + "." + parts[2], ReasonMalformed},
		{"header is array", b64u([]byte(`["alg"]`)) + "." + parts[1] + "." + parts[2], ReasonMalformed},
		{"header trailing data", b64u(append(slices.Clone(hdrRS), []byte(`{}`)...)) + "." + parts[1] + "." + parts[2], ReasonMalformed},
		{"claims not an object", signRaw(t, hdrRS, []byte(`"x"`), "RS256", rsaK.priv), ReasonMalformed},
		{"claims invalid UTF-8", signRaw(t, hdrRS, []byte("{\"iss\":\""+iss+"\",\"x\":\"\xff\"}"), "RS256", rsaK.priv), ReasonMalformed},
		{"too large", rsaK.token(t, good(func(c map[string]any) { c["pad"] = strings.Repeat("a", 5000) }), nil), ReasonTooLarge},

		// Algorithms.
		{"alg none", signNone(t, `{"alg":"none","kid":"rsa"}`, claimsJSON), ReasonAlgNotAllowed},
		{"alg NONE", signNone(t, `{"alg":"NONE","kid":"rsa"}`, claimsJSON), ReasonAlgNotAllowed},
		{"alg None with signature", b64u([]byte(`{"alg":"None","kid":"rsa"}`)) + "." + parts[1] + "." + parts[2], ReasonAlgNotAllowed},
		{"alg HS256", hmacToken(t, `{"alg":"HS256","kid":"rsa"}`, claimsJSON), ReasonAlgNotAllowed},
		{"alg unknown", b64u([]byte(`{"alg":"RS1","kid":"rsa"}`)) + "." + parts[1] + "." + parts[2], ReasonAlgNotAllowed},
		{"alg missing", b64u([]byte(`{"kid":"rsa"}`)) + "." + parts[1] + "." + parts[2], ReasonMalformed},
		{"alg not in issuer allow-list", testKey{kid: "rsa", alg: "RS512", priv: rsaK.priv}.token(t, good(nil), nil), ReasonAlgNotAllowed},
		{"ES256 header with RSA kid", testKey{kid: "rsa", alg: "ES256", priv: ecK.priv}.token(t, good(nil), nil), ReasonKeyMismatch},
		{"PS256 with RS256-only JWK", testKey{kid: "rsa", alg: "PS256", priv: rsaK.priv}.token(t, good(nil), nil), ReasonKeyMismatch},
		{"RS256 with PS256-only JWK", testKey{kid: "ps-only", alg: "RS256", priv: psOnly.priv}.token(t, good(nil), nil), ReasonKeyMismatch},
		{"JWK use enc", encK.token(t, good(nil), nil), ReasonKeyMismatch},
		{"RSA 1024 key", weakK.token(t, good(nil), nil), ReasonInvalidKey},

		// Header members.
		{"jku header", rsaK.token(t, good(nil), map[string]any{"jku": "https://evil.example/jwks"}), ReasonForbiddenHeader},
		{"x5u header", rsaK.token(t, good(nil), map[string]any{"x5u": "https://evil.example/cert"}), ReasonForbiddenHeader},
		{"embedded jwk header", rsaK.token(t, good(nil), map[string]any{"jwk": json.RawMessage(jwkOf(t, other))}), ReasonForbiddenHeader},
		{"b64 header", rsaK.token(t, good(nil), map[string]any{"b64": true}), ReasonForbiddenHeader},
		{"crit header", rsaK.token(t, good(nil), map[string]any{"crit": []string{"exp"}, "exp": 1}), ReasonUnsupportedCrit},
		{"kid not a string", rsaK.token(t, good(nil), map[string]any{"kid": 7}), ReasonMalformed},
		{"no key hint", rsaK.token(t, good(nil), map[string]any{"kid": nil}), ReasonMissingKID},
		{"unknown kid", testKey{kid: "nope", alg: "RS256", priv: rsaK.priv}.token(t, good(nil), nil), ReasonUnknownKID},
		{"x5t for JWKS-only issuer", rsaK.token(t, good(nil), map[string]any{"x5t#S256": b64u(make([]byte, 32))}), ReasonStrategyDisabled},
		{"kid for x5t-only issuer", rsaK.token(t, good(func(c map[string]any) { c["iss"] = "https://x5t-only.example" }), nil), ReasonStrategyDisabled},
		{"x5t wrong length", rsaK.token(t, good(nil), map[string]any{"x5t": b64u(make([]byte, 19))}), ReasonMalformed},

		// Duplicate JSON members (parser differentials).
		{"duplicate alg in header", signRaw(t, []byte(`{"alg":"RS256","kid":"rsa","alg":"RS256"}`), claimsJSON, "RS256", rsaK.priv), ReasonDuplicateKey},
		{"duplicate sub in claims", signRaw(t, hdrRS, dupClaim(claimsJSON, `"sub":"mallory"`), "RS256", rsaK.priv), ReasonDuplicateKey},
		{"duplicate iss in claims", signRaw(t, hdrRS, dupClaim(claimsJSON, `"iss":"`+iss+`"`), "RS256", rsaK.priv), ReasonDuplicateKey},
		{"duplicate key nested", signRaw(t, hdrRS, dupClaim(claimsJSON, `"n":{"a":1,"a":2}`), "RS256", rsaK.priv), ReasonDuplicateKey},
		{"escaped duplicate", signRaw(t, hdrRS, dupClaim(claimsJSON, `"s\u0075b":"mallory"`), "RS256", rsaK.priv), ReasonDuplicateKey},
		{"deep nesting", signRaw(t, hdrRS, dupClaim(claimsJSON, `"n":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)), "RS256", rsaK.priv), ReasonMalformed},

		// Signature.
		{"tampered payload", parts[0] + "." + b64u(mustJSON(t, good(func(c map[string]any) { c["sub"] = "mallory" }))) + "." + parts[2], ReasonBadSignature},
		{"signature from other key same kid", other.token(t, good(nil), nil), ReasonBadSignature},
		{"ECDSA r=s=0", ecZeroSig(t, ecK, good(nil)), ReasonBadSignature},
		{"truncated signature", parts[0] + "." + parts[1] + "." + b64u(mustB64(t, parts[2])[:255]), ReasonBadSignature},
		{"signature with leading zero byte", parts[0] + "." + parts[1] + "." + b64u(append([]byte{0}, mustB64(t, parts[2])...)), ReasonBadSignature},

		// Claims.
		{"unknown issuer", rsaK.token(t, good(func(c map[string]any) { c["iss"] = "https://evil.example" }), nil), ReasonUnknownIssuer},
		{"issuer differs by trailing slash", rsaK.token(t, good(func(c map[string]any) { c["iss"] = iss + "/" }), nil), ReasonUnknownIssuer},
		{"missing iss", rsaK.token(t, good(func(c map[string]any) { delete(c, "iss") }), nil), ReasonUnknownIssuer},
		{"wrong audience", rsaK.token(t, good(func(c map[string]any) { c["aud"] = "web" }), nil), ReasonWrongAudience},
		{"missing audience", rsaK.token(t, good(func(c map[string]any) { delete(c, "aud") }), nil), ReasonWrongAudience},
		{"audience wrong type", rsaK.token(t, good(func(c map[string]any) { c["aud"] = 5 }), nil), ReasonInvalidClaim},
		{"missing exp", rsaK.token(t, good(func(c map[string]any) { delete(c, "exp") }), nil), ReasonMissingExp},
		{"exp zero", rsaK.token(t, good(func(c map[string]any) { c["exp"] = 0 }), nil), ReasonMissingExp},
		{"exp string", rsaK.token(t, good(func(c map[string]any) { c["exp"] = "9999999999" }), nil), ReasonInvalidClaim},
		{"exp beyond year 9999", rsaK.token(t, good(func(c map[string]any) { c["exp"] = 1e20 }), nil), ReasonInvalidClaim},
		{"expired beyond skew", rsaK.token(t, good(func(c map[string]any) { c["exp"] = now.Add(-61 * time.Second).Unix() }), nil), ReasonExpired},
		{"nbf beyond skew", rsaK.token(t, good(func(c map[string]any) { c["nbf"] = now.Add(2 * time.Minute).Unix() }), nil), ReasonNotYetValid},
		{"iat far in future", rsaK.token(t, good(func(c map[string]any) { c["iat"] = now.Add(24 * time.Hour).Unix() }), nil), ReasonIssuedInFuture},
		{"iat wrong type", rsaK.token(t, good(func(c map[string]any) { c["iat"] = true }), nil), ReasonInvalidClaim},
		{"missing sub", rsaK.token(t, good(func(c map[string]any) { delete(c, "sub") }), nil), ReasonMissingSubject},
		{"empty sub", rsaK.token(t, good(func(c map[string]any) { c["sub"] = "" }), nil), ReasonMissingSubject},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := v.Verify(context.Background(), tc.token)
			if err == nil {
				t.Fatalf("Verify accepted the token: %+v", res)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			if e.Reason != tc.want {
				t.Errorf("reason = %q, want %q (error: %v)", e.Reason, tc.want, err)
			}
			if !errors.Is(err, &Error{Reason: tc.want}) {
				t.Errorf("errors.Is(err, &Error{Reason: %q}) = false", tc.want)
			}
			assertNoTokenLeak(t, err, tc.token)
		})
	}

	// Sanity: the untampered token verifies, so the rejections above are
	// caused by the modifications, not by a broken fixture.
	if _, err := v.Verify(context.Background(), valid); err != nil {
		t.Fatalf("valid token rejected: %v", err)
	}
}

func TestVerifyClockSkewBoundaries(t *testing.T) {
	k := rsaTestKey("k", "RS256", 0)
	idp := newTestIdP(t, k)
	clock := newTestClock()
	now := clock.Now()
	v := newTestVerifier(t, clock, []IssuerConfig{{
		Issuer: idp.issuer(), Audiences: []string{"api"}, JWKSURI: idp.issuer() + "/jwks", ClockSkew: 30 * time.Second,
	}}, WithCache(0, 0))
	tests := []struct {
		name string
		mod  func(map[string]any)
		want Reason // "" = accepted
	}{
		{"exp just passed, within skew", func(c map[string]any) { c["exp"] = now.Add(-29 * time.Second).Unix() }, ""},
		{"exp at skew edge", func(c map[string]any) { c["exp"] = now.Add(-30 * time.Second).Unix() }, ReasonExpired},
		{"nbf within skew", func(c map[string]any) { c["nbf"] = now.Add(30 * time.Second).Unix() }, ""},
		{"nbf beyond skew", func(c map[string]any) { c["nbf"] = now.Add(31 * time.Second).Unix() }, ReasonNotYetValid},
		{"iat within skew", func(c map[string]any) { c["iat"] = now.Add(30 * time.Second).Unix() }, ""},
		{"iat beyond skew", func(c map[string]any) { c["iat"] = now.Add(31 * time.Second).Unix() }, ReasonIssuedInFuture},
		{"fractional exp", func(c map[string]any) { c["exp"] = float64(now.Unix()) + 0.5 }, ""},
		{"no nbf no iat", func(c map[string]any) { delete(c, "nbf"); delete(c, "iat") }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := claimsFor(idp.issuer(), now)
			tc.mod(c)
			_, err := v.Verify(context.Background(), k.token(t, c, nil))
			if got := ReasonOf(err); got != tc.want {
				t.Errorf("reason = %q, want %q (err %v)", got, tc.want, err)
			}
		})
	}
}

func TestNewVerifierRejectsBadConfig(t *testing.T) {
	ts := emptyTrustStore(t)
	ca := issueCert(t, nil, certOpts{cn: "ca", isCA: true})
	leaf := issueCert(t, ca, certOpts{cn: "leaf"})
	base := func(mod func(*IssuerConfig)) []IssuerConfig {
		c := IssuerConfig{Issuer: "https://idp.example", Audiences: []string{"api"}, JWKSURI: "https://idp.example/jwks"}
		mod(&c)
		return []IssuerConfig{c}
	}
	tests := []struct {
		name    string
		issuers []IssuerConfig
		want    string
	}{
		{"no issuers", nil, "no issuers"},
		{"empty issuer", base(func(c *IssuerConfig) { c.Issuer = "" }), "Issuer is required"},
		{"no audience", base(func(c *IssuerConfig) { c.Audiences = nil }), "Audiences"},
		{"empty audience", base(func(c *IssuerConfig) { c.Audiences = []string{""} }), "Audiences"},
		{"HS256 allowed", base(func(c *IssuerConfig) { c.Algorithms = []string{"HS256"} }), `"HS256"`},
		{"none allowed", base(func(c *IssuerConfig) { c.Algorithms = []string{"none"} }), `"none"`},
		{"no key source", base(func(c *IssuerConfig) { c.JWKSURI = "" }), "no key source"},
		{"plain http remote", base(func(c *IssuerConfig) { c.JWKSURI = "http://idp.example/jwks" }), "https"},
		{"both URIs", base(func(c *IssuerConfig) { c.DiscoveryURL = "https://idp.example" }), "either"},
		{"x5t without store", base(func(c *IssuerConfig) { c.JWKSURI = ""; c.X5T = true }), "TrustStore"},
		{"non-CA trusted", base(func(c *IssuerConfig) { c.TrustedCAs = []*x509.Certificate{leaf.cert} }), "TrustedCAs[0]"},
		{"negative skew", base(func(c *IssuerConfig) { c.ClockSkew = -time.Second }), "ClockSkew"},
		{"huge skew", base(func(c *IssuerConfig) { c.ClockSkew = time.Hour }), "ClockSkew"},
		{"bad kind", base(func(c *IssuerConfig) { c.Kind = "robot" }), "Kind"},
		{"duplicate issuer", append(base(func(*IssuerConfig) {}), base(func(c *IssuerConfig) { c.X5T = true; c.TrustStore = ts })...), "configured twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(context.Background(), tc.issuers, WithLogger(quietLogger()), WithoutPrefetch())
			if err == nil {
				_ = v.Close()
				t.Fatal("NewVerifier accepted the configuration")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestVerifyAfterClose(t *testing.T) {
	k := rsaTestKey("k", "RS256", 0)
	idp := newTestIdP(t, k)
	clock := newTestClock()
	v := newTestVerifier(t, clock, []IssuerConfig{{Issuer: idp.issuer(), Audiences: []string{"api"}, DiscoveryURL: idp.issuer()}})
	tok := k.token(t, claimsFor(idp.issuer(), clock.Now()), nil)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	must(t, v.Close())
	if _, err := v.Verify(context.Background(), tok); ReasonOf(err) != ReasonVerifierClosed {
		t.Errorf("after Close: %v, want %s", err, ReasonVerifierClosed)
	}
	must(t, v.Close()) // idempotent
}

// --- helpers for crafted tokens ---------------------------------------------

func assertNoTokenLeak(t *testing.T, err error, token string) {
	t.Helper()
	msg := err.Error()
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(msg, part) {
			t.Errorf("error message contains part of the token: %q", msg)
		}
	}
}

func signNone(t *testing.T, hdr string, claims []byte) string {
	t.Helper()
	return b64u([]byte(hdr)) + "." + b64u(claims) + "."
}

func hmacToken(t *testing.T, hdr string, claims []byte) string {
	t.Helper()
	si := b64u([]byte(hdr)) + "." + b64u(claims)
	sig, err := jwsbb.Sign([]byte("0123456789abcdef0123456789abcdef"), "HS256", []byte(si), nil)
	must(t, err)
	return si + "." + b64u(sig)
}

// dupClaim appends member (raw JSON) to an encoded object.
func dupClaim(obj []byte, member string) []byte {
	s := string(obj)
	return []byte(s[:len(s)-1] + "," + member + "}")
}

// flipLastBits changes the unused low bits of the last base64url character,
// which a lax decoder ignores.
func flipLastBits(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[last^1])
}

func jwkOf(t *testing.T, k testKey) []byte {
	t.Helper()
	jk, err := jwk.Import(k.pub())
	must(t, err)
	return mustJSON(t, jk)
}

// ecZeroSig is an ES256 token whose signature is r = s = 0 (the "psychic
// signatures" bug, CVE-2022-21449).
func ecZeroSig(t *testing.T, k testKey, claims map[string]any) string {
	t.Helper()
	hdr := mustJSON(t, map[string]any{"alg": "ES256", "kid": k.kid})
	return b64u(hdr) + "." + b64u(mustJSON(t, claims)) + "." + b64u(make([]byte, 64))
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	must(t, err)
	return b
}

// An address the provider says it did not verify is not the identity's
// email (policies match on it); the claim itself stays visible.
func TestEmailVerified(t *testing.T) {
	a := ecTestKey(t, "a", "ES256", elliptic.P256())
	j := newJWKSTest(t, []testKey{a}, WithCache(0, 0))
	for _, tc := range []struct {
		name     string
		verified any // nil: claim absent
		want     string
	}{
		{"absent", nil, "alice@example.com"},
		{"true", true, "alice@example.com"},
		{"string true", "true", "alice@example.com"},
		{"false", false, ""},
		{"string false", "false", ""},
		{"malformed", 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := j.claims()
			if tc.verified != nil {
				c["email_verified"] = tc.verified
			}
			res, err := j.verify(a.token(t, c, nil))
			if err != nil {
				t.Fatal(err)
			}
			if res.Email != tc.want || res.Identity().Email != tc.want {
				t.Fatalf("email %q, want %q", res.Email, tc.want)
			}
			if res.Claims["email"] != "alice@example.com" {
				t.Fatalf("email claim %v dropped from the claims", res.Claims["email"])
			}
		})
	}
}

// An issuer with a Type accepts only tokens whose typ names it (RFC 8725
// §3.11), so a token its keys signed for another purpose is refused.
func TestExplicitType(t *testing.T) {
	a := ecTestKey(t, "a", "ES256", elliptic.P256())
	idp := newTestIdP(t, a)
	typed := jwksIssuer(idp)
	typed.Type = "example-assertion+jwt"
	for _, tc := range []struct {
		name  string
		typ   any // nil: no typ header
		typed bool
		want  Reason
	}{
		{"exact", "example-assertion+jwt", true, ""},
		{"case and application/ prefix", "Application/Example-Assertion+JWT", true, ""},
		{"plain JWT", "JWT", true, ReasonWrongType},
		{"absent", nil, true, ReasonWrongType},
		{"prefix only", "application/", true, ReasonWrongType},
		{"not a string", 1, true, ReasonMalformed},
		{"untyped issuer takes any typ", "example-assertion+jwt", false, ""},
		{"untyped issuer, no typ", nil, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := jwksIssuer(idp)
			if tc.typed {
				cfg = typed
			}
			j := jwksTestWith(t, idp, []IssuerConfig{cfg}, WithCache(0, 0))
			_, err := j.verify(a.token(t, j.claims(), map[string]any{"typ": tc.typ}))
			if ReasonOf(err) != tc.want {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
