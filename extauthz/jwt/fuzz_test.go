package jwt

import (
	"context"
	"crypto/elliptic"
	"strings"
	"testing"
)

// fuzzSeeds are syntactically interesting starting points for the token
// fuzzers: the compact form's edge cases and the shapes attackers try.
func fuzzSeeds() []string {
	return []string{
		"",
		".",
		"..",
		"....",
		"a.b.c",
		"eyJhbGciOiJub25lIn0.e30.",
		"eyJhbGciOiJSUzI1NiJ9.e30.AA",
		"eyJhbGciOiJSUzI1NiIsImNyaXQiOlsiYjY0Il19.e30.AA",
		"eyJhbGciOiJFUzI1NiIsIngnYyI6WyIhIl19.e30.AAAA",
		`{"payload":"e30","signatures":[]}`,
		"eyJhbGciOiJSUzI1NiJ9=.e30.AA",
		"eyJhbGciOiJSUzI1NiJ9.e30.AA\n",
		strings.Repeat("eyJ", 100) + ".e30.AA",
	}
}

// FuzzParseCompact: the strict parser never panics, and whatever it accepts
// really is a three-part base64url token whose header names an asymmetric
// alg and carries a non-empty signature.
func FuzzParseCompact(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	k := rsaTestKey("k", "RS256", 0)
	f.Add(k.token(f, map[string]any{"iss": "x", "exp": 1}, nil))
	f.Fuzz(func(t *testing.T, token string) {
		c, err := parseCompact(token, DefaultMaxTokenBytes)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			if c != nil {
				t.Fatal("result returned with an error")
			}
			return
		}
		if strings.Count(token, ".") != 2 || strings.ContainsAny(token, "=+/ \t\r\n{") {
			t.Fatalf("accepted a token that is not strict compact: %q", token)
		}
		if _, ok := algorithmSpec(c.Header.Alg); !ok {
			t.Fatalf("accepted alg %q", c.Header.Alg)
		}
		if len(c.Signature) == 0 {
			t.Fatal("accepted an empty signature")
		}
		if !strings.HasPrefix(token, string(c.SigningInput)+".") {
			t.Fatal("signing input is not the token's first two parts")
		}
	})
}

// FuzzVerify drives Verify with a fixed verifier (one JWKS issuer, cache
// off). It must never panic, every error must carry a reason and never the
// token, and nothing but the exact tokens the test signed is ever accepted.
func FuzzVerify(f *testing.F) {
	rsaK := rsaTestKey("rsa", "RS256", 0)
	ecK := ecTestKey(f, "ec", "ES256", elliptic.P256())
	idp := newTestIdP(f, rsaK, ecK)
	clock := newTestClock()
	v := newTestVerifier(f, clock, []IssuerConfig{jwksIssuer(idp)}, WithCache(0, 0))
	valid := map[string]bool{}
	for _, k := range []testKey{rsaK, ecK} {
		tok := k.token(f, claimsFor(idp.issuer(), clock.Now()), nil)
		valid[tok] = true
		f.Add(tok)
		p := strings.Split(tok, ".")
		f.Add(p[0] + "." + p[1] + ".")
		f.Add(b64u([]byte(`{"alg":"none","kid":"`+k.kid+`"}`)) + "." + p[1] + ".")
		f.Add(b64u([]byte(`{"alg":"HS256","kid":"`+k.kid+`"}`)) + "." + p[1] + "." + p[2])
	}
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		res, err := v.Verify(context.Background(), token)
		if err == nil {
			if !valid[token] {
				t.Fatalf("accepted a token the test never signed: %q (subject %q)", token, res.Subject)
			}
			return
		}
		if ReasonOf(err) == "" {
			t.Fatalf("error without a reason: %v", err)
		}
		assertNoTokenLeak(t, err, token)
	})
}
