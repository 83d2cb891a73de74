package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

// Behaviour tests: each table tries to make Verify accept what it must refuse
// (or refuse what it must accept) with real keys and certificates. Cases
// already covered by verifier_test.go, x5c_test.go and adversarial_test.go
// are not repeated here.

// issueWith is issueCert for the certificate shapes certOpts cannot express
// (extended key usage, path length, a CA without certSign): mod edits the
// template before it is signed by parent (self-signed when nil).
func issueWith(t *testing.T, parent *testCert, mod func(*x509.Certificate)) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: "scenario"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
	}
	mod(tmpl)
	signerCert, signerKey := tmpl, any(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	must(t, err)
	c, err := x509.ParseCertificate(der)
	must(t, err)
	return &testCert{cert: c, key: key}
}

// scenarioEnv is one issuer with all three strategies enabled (JWKS via
// discovery, x5t from a trust store, x5c under root), on a test clock.
type scenarioEnv struct {
	idp     *testIdP
	clock   *testClock
	v       *Verifier
	jwksKey testKey
	root    *testCert
	inter   *testCert
	leaf    *testCert // under inter
	trusted *testCert // in the trust store
	other   *testCert // also in the trust store
}

func newScenarioEnv(t *testing.T, opts ...Option) *scenarioEnv {
	t.Helper()
	e := &scenarioEnv{jwksKey: ecTestKey(t, "ec", "ES256", elliptic.P256())}
	e.idp = newTestIdP(t, e.jwksKey)
	e.clock = newTestClock()
	e.root = issueCert(t, nil, certOpts{cn: "root", isCA: true})
	e.inter = issueCert(t, e.root, certOpts{cn: "inter", isCA: true})
	e.leaf = issueCert(t, e.inter, certOpts{cn: "leaf"})
	e.trusted = issueCert(t, nil, certOpts{cn: "trusted"})
	e.other = issueCert(t, nil, certOpts{cn: "other"})
	dir := t.TempDir()
	writePEM(t, dir, "trusted.pem", e.trusted, e.other)
	ts, err := NewTrustStore(dir, WithTrustStoreLogger(quietLogger()))
	must(t, err)
	cfg := jwksIssuer(e.idp)
	cfg.X5T, cfg.TrustStore, cfg.TrustedCAs = true, ts, []*x509.Certificate{e.root.cert}
	e.v = newTestVerifier(t, e.clock, []IssuerConfig{cfg}, opts...)
	return e
}

func (e *scenarioEnv) claims() map[string]any { return claimsFor(e.idp.issuer(), e.clock.Now()) }

// TestScenarioKeyHintPrecedence: a token's key hints are judged by the most
// specific one (x5c, then x5t/x5t#S256, then kid) and a failed hint never
// falls back to a weaker one; every hint that is present must agree.
func TestScenarioKeyHintPrecedence(t *testing.T) {
	e := newScenarioEnv(t)
	c := e.claims()
	untrusted := issueCert(t, nil, certOpts{cn: "untrusted"})
	jwksSigned := func(hdr map[string]any) string { return e.jwksKey.token(t, c, hdr) }

	// A JWKS-only issuer on the same IdP: x5c/x5t in its tokens must not be
	// skipped in favour of the kid.
	jwksOnly := newTestVerifier(t, e.clock, []IssuerConfig{jwksIssuer(e.idp)})

	tests := []struct {
		name   string
		v      *Verifier
		token  string
		want   Reason // "" = accepted
		method identity.Method
	}{
		{"kid alone", e.v, jwksSigned(nil), "", identity.MethodJWKS},
		{"x5c alone", e.v, certToken(t, e.leaf, c, map[string]any{"x5c": x5cChain(e.leaf, e.inter)}), "", identity.MethodX5C},
		{"x5t#S256 alone", e.v, certToken(t, e.trusted, c, map[string]any{"x5t#S256": x5tS256(e.trusted)}), "", identity.MethodX5T},
		{"x5t alone", e.v, certToken(t, e.trusted, c, map[string]any{"x5t": x5t(e.trusted)}), "", identity.MethodX5T},
		{"both thumbprints of the same cert", e.v, certToken(t, e.trusted, c, map[string]any{"x5t": x5t(e.trusted), "x5t#S256": x5tS256(e.trusted)}), "", identity.MethodX5T},

		{"untrusted x5c does not fall back to a valid kid", e.v, jwksSigned(map[string]any{"x5c": x5cChain(untrusted)}), ReasonUntrustedCert, ""},
		{"valid x5c wins over kid: JWKS key signature refused", e.v, jwksSigned(map[string]any{"x5c": x5cChain(e.leaf, e.inter)}), ReasonBadSignature, ""},
		{"unknown x5t does not fall back to a valid kid", e.v, jwksSigned(map[string]any{"x5t#S256": x5tS256(untrusted)}), ReasonUntrustedCert, ""},
		{"trusted x5t wins over kid: JWKS key signature refused", e.v, jwksSigned(map[string]any{"x5t#S256": x5tS256(e.trusted)}), ReasonBadSignature, ""},
		{"x5t and x5t#S256 name two different trusted certs", e.v, certToken(t, e.trusted, c, map[string]any{"x5t#S256": x5tS256(e.trusted), "x5t": x5t(e.other)}), ReasonUntrustedCert, ""},
		{"unknown x5t#S256 with a trusted x5t", e.v, certToken(t, e.trusted, c, map[string]any{"x5t#S256": x5tS256(untrusted), "x5t": x5t(e.trusted)}), ReasonUntrustedCert, ""},
		{"trusted x5t#S256, token signed by the other trusted cert", e.v, certToken(t, e.other, c, map[string]any{"x5t#S256": x5tS256(e.trusted)}), ReasonBadSignature, ""},
		{"valid x5c with x5t#S256 of the intermediate", e.v, certToken(t, e.leaf, c, map[string]any{"x5c": x5cChain(e.leaf, e.inter), "x5t#S256": x5tS256(e.inter)}), ReasonUntrustedCert, ""},
		{"valid x5c with x5t#S256 of a trust-store cert", e.v, certToken(t, e.leaf, c, map[string]any{"x5c": x5cChain(e.leaf, e.inter), "x5t#S256": x5tS256(e.trusted)}), ReasonUntrustedCert, ""},
		{"x5c with a trust-store cert as leaf (x5c needs the CA)", e.v, certToken(t, e.trusted, c, map[string]any{"x5c": x5cChain(e.trusted)}), ReasonUntrustedCert, ""},
		{"JWKS-only issuer: x5c with a valid kid", jwksOnly, jwksSigned(map[string]any{"x5c": x5cChain(e.leaf, e.inter)}), ReasonStrategyDisabled, ""},
		{"JWKS-only issuer: x5t with a valid kid", jwksOnly, jwksSigned(map[string]any{"x5t": x5t(e.trusted)}), ReasonStrategyDisabled, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tc.v.Verify(context.Background(), tc.token)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.want, err)
			}
			if tc.want == "" && res.Method != tc.method {
				t.Errorf("method %q, want %q", res.Method, tc.method)
			}
		})
	}
}

// TestScenarioX5CChainShapes: only a chain that x509 path validation builds to a
// configured CA, with a non-CA leaf allowed to sign, verifies; the leaf is
// always x5c[0], whatever order the rest comes in. Extended key usage is
// deliberately unconstrained (x5c.go: there is no standard JWT-signing EKU).
func TestScenarioX5CChainShapes(t *testing.T) {
	e := newScenarioEnv(t)
	c := e.claims()
	now := e.clock.Now()
	x5c := func(signer *testCert, chain ...*testCert) string {
		return certToken(t, signer, c, map[string]any{"x5c": x5cChain(chain...)})
	}

	notCA := issueCert(t, e.root, certOpts{cn: "not-a-ca"}) // a leaf used as an intermediate
	underNotCA := issueCert(t, notCA, certOpts{cn: "under-leaf"})
	noCertSign := issueWith(t, e.root, func(c *x509.Certificate) { c.IsCA, c.KeyUsage = true, x509.KeyUsageDigitalSignature })
	underNoCertSign := issueCert(t, noCertSign, certOpts{cn: "under-no-certsign"})
	pathLen0 := issueWith(t, e.root, func(c *x509.Certificate) {
		c.IsCA, c.KeyUsage, c.MaxPathLen, c.MaxPathLenZero = true, x509.KeyUsageCertSign, 0, true
	})
	interUnderPL0 := issueCert(t, pathLen0, certOpts{cn: "inter2", isCA: true})
	leafTooDeep := issueCert(t, interUnderPL0, certOpts{cn: "too-deep"})
	notYet := issueCert(t, e.inter, certOpts{cn: "not-yet", notBefore: now.Add(time.Hour), notAfter: now.Add(48 * time.Hour)})
	interNotYet := issueCert(t, e.root, certOpts{cn: "inter-not-yet", isCA: true, notBefore: now.Add(time.Hour), notAfter: now.Add(48 * time.Hour)})
	underInterNotYet := issueCert(t, interNotYet, certOpts{cn: "under-inter-not-yet"})
	serverAuthLeaf := issueWith(t, e.inter, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
	noKULeaf := issueWith(t, e.inter, func(c *x509.Certificate) { c.KeyUsage = 0 })
	certSignOnlyLeaf := issueWith(t, e.inter, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCertSign })
	noBCLeaf := issueWith(t, e.inter, func(c *x509.Certificate) { c.BasicConstraintsValid = false })

	tests := []struct {
		name  string
		token string
		want  Reason
	}{
		{"leaf with serverAuth EKU (EKU not constrained)", x5c(serverAuthLeaf, serverAuthLeaf, e.inter), ""},
		{"leaf without key usage extension", x5c(noKULeaf, noKULeaf, e.inter), ""},
		{"leaf without basic constraints", x5c(noBCLeaf, noBCLeaf, e.inter), ""},
		{"chain with extra unrelated certificates", x5c(e.leaf, e.leaf, e.trusted, e.inter, e.other), ""},

		{"intermediate is not a CA", x5c(underNotCA, underNotCA, notCA), ReasonUntrustedCert},
		{"intermediate CA without certSign", x5c(underNoCertSign, underNoCertSign, noCertSign), ReasonUntrustedCert},
		{"path length constraint exceeded", x5c(leafTooDeep, leafTooDeep, interUnderPL0, pathLen0), ReasonUntrustedCert},
		{"leaf not yet valid", x5c(notYet, notYet, e.inter), ReasonUntrustedCert},
		{"intermediate not yet valid", x5c(underInterNotYet, underInterNotYet, interNotYet), ReasonUntrustedCert},
		{"leaf only allows certSign", x5c(certSignOnlyLeaf, certSignOnlyLeaf, e.inter), ReasonUntrustedCert},
		{"chain reversed: intermediate first, signed by its key", x5c(e.inter, e.inter, e.leaf), ReasonUntrustedCert},
		{"chain reversed: intermediate first, signed by the leaf key", x5c(e.leaf, e.inter, e.leaf), ReasonUntrustedCert},
		{"leaf signs, chain names only the intermediate and root", x5c(e.leaf, e.inter, e.root), ReasonUntrustedCert},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.v.Verify(context.Background(), tc.token)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.want, err)
			}
		})
	}
}

// TestScenarioCacheRespectsSigningCertificateValidity: a cached x5c or x5t
// result is not served once the signing certificate has expired; fresh
// verification refuses such a token (the control below), and the cache
// must not accept what verification would refuse (cache.go, get).
func TestScenarioCacheRespectsSigningCertificateValidity(t *testing.T) {
	for _, cached := range []bool{false, true} {
		var opts []Option
		if !cached {
			opts = append(opts, WithCache(0, 0))
		}
		e := newScenarioEnv(t, opts...)
		now := e.clock.Now()
		shortLeaf := issueCert(t, e.inter, certOpts{cn: "short", notBefore: now.Add(-time.Hour), notAfter: now.Add(time.Minute)})
		x5cTok := certToken(t, shortLeaf, e.claims(), map[string]any{"x5c": x5cChain(shortLeaf, e.inter)})

		shortTrusted := issueCert(t, nil, certOpts{cn: "short-trusted", notBefore: now.Add(-time.Hour), notAfter: now.Add(time.Minute)})
		dir := t.TempDir()
		writePEM(t, dir, "short.pem", shortTrusted)
		ts, err := NewTrustStore(dir, WithTrustStoreLogger(quietLogger()))
		must(t, err)
		cfg := IssuerConfig{Issuer: "https://x5t.scenario.example", Audiences: []string{"api"}, X5T: true, TrustStore: ts}
		v := newTestVerifier(t, e.clock, []IssuerConfig{cfg}, opts...)
		x5tTok := certToken(t, shortTrusted, claimsFor(cfg.Issuer, now), map[string]any{"x5t#S256": x5tS256(shortTrusted)})

		for _, tc := range []struct {
			name string
			v    *Verifier
			tok  string
		}{{"x5c", e.v, x5cTok}, {"x5t", v, x5tTok}} {
			if _, err := tc.v.Verify(context.Background(), tc.tok); err != nil {
				t.Fatalf("%s (cache %v): first verify: %v", tc.name, cached, err)
			}
		}
		e.clock.Advance(2 * time.Minute) // certificate expired; token exp and cache TTL not reached
		for _, tc := range []struct {
			name string
			v    *Verifier
			tok  string
		}{{"x5c", e.v, x5cTok}, {"x5t", v, x5tTok}} {
			if _, err := tc.v.Verify(context.Background(), tc.tok); ReasonOf(err) != ReasonUntrustedCert {
				t.Errorf("%s (cache %v): after the certificate expired: err %v, want %s", tc.name, cached, err, ReasonUntrustedCert)
			}
		}
	}
}

// TestScenarioClaimTypes: registered claims of the wrong JSON type or shape are
// refused, never coerced; iss matches byte for byte; aud accepts a string or
// an array of strings containing a configured audience, nothing else.
func TestScenarioClaimTypes(t *testing.T) {
	e := newScenarioEnv(t, WithCache(0, 0))
	iss := e.idp.issuer()
	tests := []struct {
		name string
		mod  func(map[string]any)
		want Reason
	}{
		{"aud string", func(c map[string]any) { c["aud"] = "api" }, ""},
		{"aud array with api last", func(c map[string]any) { c["aud"] = []string{"x", "y", "api"} }, ""},
		{"aud empty array", func(c map[string]any) { c["aud"] = []string{} }, ReasonWrongAudience},
		{"aud empty string", func(c map[string]any) { c["aud"] = "" }, ReasonWrongAudience},
		{"aud null", func(c map[string]any) { c["aud"] = nil }, ReasonWrongAudience},
		{"aud differs in case", func(c map[string]any) { c["aud"] = "API" }, ReasonWrongAudience},
		{"aud with trailing space", func(c map[string]any) { c["aud"] = "api " }, ReasonWrongAudience},
		{"aud space-separated list", func(c map[string]any) { c["aud"] = "web api" }, ReasonWrongAudience},
		{"aud nested array", func(c map[string]any) { c["aud"] = [][]string{{"api"}} }, ReasonInvalidClaim},
		{"aud object", func(c map[string]any) { c["aud"] = map[string]bool{"api": true} }, ReasonInvalidClaim},
		{"aud array with a number", func(c map[string]any) { c["aud"] = []any{"api", 1} }, ReasonInvalidClaim},
		{"iss upper-case scheme", func(c map[string]any) { c["iss"] = strings.Replace(iss, "http", "HTTP", 1) }, ReasonUnknownIssuer},
		{"iss with fragment", func(c map[string]any) { c["iss"] = iss + "#" }, ReasonUnknownIssuer},
		{"iss with trailing space", func(c map[string]any) { c["iss"] = iss + " " }, ReasonUnknownIssuer},
		{"iss as array", func(c map[string]any) { c["iss"] = []string{iss} }, ReasonUnknownIssuer},
		{"exp as numeric string", func(c map[string]any) { c["exp"] = "99999999999" }, ReasonInvalidClaim},
		{"exp as bool", func(c map[string]any) { c["exp"] = true }, ReasonInvalidClaim},
		{"exp null", func(c map[string]any) { c["exp"] = nil }, ReasonInvalidClaim},
		{"exp beyond year 9999", func(c map[string]any) { c["exp"] = json.Number("1e12") }, ReasonInvalidClaim},
		{"exp in exponent form", func(c map[string]any) { c["exp"] = json.Number("1e10") }, ""},
		{"exp negative zero", func(c map[string]any) { c["exp"] = json.Number("-0") }, ReasonMissingExp},
		{"exp fraction below one", func(c map[string]any) { c["exp"] = json.Number("0.5") }, ReasonMissingExp},
		{"nbf as string", func(c map[string]any) { c["nbf"] = "0" }, ReasonInvalidClaim},
		{"nbf far future", func(c map[string]any) { c["nbf"] = json.Number("253402300799") }, ReasonNotYetValid},
		{"iat negative", func(c map[string]any) { c["iat"] = -1 }, ReasonInvalidClaim},
		{"iat as string", func(c map[string]any) { c["iat"] = "1" }, ReasonInvalidClaim},
		{"sub number", func(c map[string]any) { c["sub"] = 7 }, ReasonInvalidClaim},
		{"sub null", func(c map[string]any) { c["sub"] = nil }, ReasonMissingSubject},
		{"sub empty", func(c map[string]any) { c["sub"] = "" }, ReasonMissingSubject},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.claims()
			tc.mod(c)
			_, err := e.v.Verify(context.Background(), e.jwksKey.token(t, c, nil))
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.want, err)
			}
		})
	}
}

// TestScenarioHeaderKeySourcesNeverFetched: jku, x5u and jwk name a key the
// token chooses; they are refused (also when their member names are spelled
// with JSON escapes) and the URLs they carry are never requested. Header
// names are case-sensitive (RFC 7515 §4), so "JKU" is an unknown parameter:
// ignored, and not fetched either.
func TestScenarioHeaderKeySourcesNeverFetched(t *testing.T) {
	var hits atomic.Int32
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write(jwksJSON(t, ecTestKey(t, "ec", "ES256", elliptic.P256())))
	}))
	defer evil.Close()
	e := newScenarioEnv(t, WithCache(0, 0))
	claims := mustJSON(t, e.claims())
	sign := func(hdr string) string { return signRaw(t, []byte(hdr), claims, "ES256", e.jwksKey.priv) }
	u := evil.URL + "/jwks"

	tests := []struct {
		name  string
		token string
		want  Reason
	}{
		{"jku", sign(`{"alg":"ES256","kid":"ec","jku":"` + u + `"}`), ReasonForbiddenHeader},
		{"jku escaped name", sign(`{"alg":"ES256","kid":"ec","j\u006bu":"` + u + `"}`), ReasonForbiddenHeader},
		{"x5u", sign(`{"alg":"ES256","kid":"ec","x5u":"` + u + `"}`), ReasonForbiddenHeader},
		{"x5u escaped name", sign(`{"alg":"ES256","kid":"ec","\u00785u":"` + u + `"}`), ReasonForbiddenHeader},
		{"jwk null", sign(`{"alg":"ES256","kid":"ec","jwk":null}`), ReasonForbiddenHeader},
		{"crit escaped name", sign(`{"alg":"ES256","kid":"ec","\u0063rit":["exp"]}`), ReasonUnsupportedCrit},
		{"crit null", sign(`{"alg":"ES256","kid":"ec","crit":null}`), ReasonUnsupportedCrit},
		{"crit naming a registered header", sign(`{"alg":"ES256","kid":"ec","crit":["kid"]}`), ReasonUnsupportedCrit},
		{"JKU upper case is an ignored unknown parameter", sign(`{"alg":"ES256","kid":"ec","JKU":"` + u + `"}`), ""},
		{"KID upper case is not a kid", signRaw(t, []byte(`{"alg":"ES256","KID":"ec"}`), claims, "ES256", e.jwksKey.priv), ReasonMissingKID},
		{"ALG upper case is not an alg", sign(`{"ALG":"ES256","kid":"ec"}`), ReasonMalformed},
		{"alg escaped name", sign(`{"\u0061lg":"ES256","kid":"ec"}`), ""},
		{"alg escaped value none", sign(`{"alg":"\u006eone","kid":"ec"}`), ReasonAlgNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.v.Verify(context.Background(), tc.token)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.want, err)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the URL in a token header was fetched %d times", n)
	}
}

// TestScenarioJWKSKeySelection: a kid selects exactly one usable key of the
// right type, curve and JWK alg; duplicates, symmetric keys and keys for
// other algorithms never verify.
func TestScenarioJWKSKeySelection(t *testing.T) {
	ec256 := ecTestKey(t, "ec", "ES256", elliptic.P256())
	ec384 := ecTestKey(t, "ec384", "ES384", elliptic.P384())
	rsaNoAlg := rsaTestKey("rsa-any", "PS256", 0)
	rsaNoAlg.jwkAlg = ""
	dupA, dupB, dupC := ecTestKey(t, "dup", "ES256", elliptic.P256()), ecTestKey(t, "dup", "ES256", elliptic.P256()), ecTestKey(t, "dup", "ES256", elliptic.P256())
	mixedRSA, mixedEC := rsaTestKey("mixed", "RS256", 1), ecTestKey(t, "mixed", "ES256", elliptic.P256())
	signOnly := ecTestKey(t, "sign-only", "ES256", elliptic.P256())
	signOnly.ops = []string{"sign"}
	hsLabelled := rsaTestKey("hs-labelled", "RS256", 2)
	hsLabelled.jwkAlg = "HS256"

	idp := newTestIdP(t, ec256, ec384, rsaNoAlg, dupA, dupB, dupC, mixedRSA, mixedEC, signOnly, hsLabelled)
	// Add a symmetric key by hand: jwksJSON only publishes asymmetric ones.
	var doc map[string][]map[string]any
	must(t, json.Unmarshal(*idp.jwks.Load(), &doc))
	doc["keys"] = append(doc["keys"], map[string]any{"kty": "oct", "kid": "oct", "k": b64u([]byte("0123456789abcdef0123456789abcdef")), "alg": "HS256"})
	idp.setBody(mustJSON(t, doc))

	cfg := jwksIssuer(idp)
	cfg.Algorithms = []string{"RS256", "PS256", "ES256", "ES384"}
	j := jwksTestWith(t, idp, []IssuerConfig{cfg}, WithCache(0, 0))
	c := j.claims()
	as := func(k testKey, kid, alg string) string {
		return testKey{kid: kid, alg: alg, priv: k.priv}.token(t, c, nil)
	}

	tests := []struct {
		name  string
		token string
		want  Reason
	}{
		{"ES256 key", as(ec256, "ec", "ES256"), ""},
		{"ES384 key", as(ec384, "ec384", "ES384"), ""},
		{"RSA JWK without alg verifies PS256", as(rsaNoAlg, "rsa-any", "PS256"), ""},
		{"RSA JWK without alg verifies RS256", as(rsaNoAlg, "rsa-any", "RS256"), ""},
		{"P-384 key under ES256 kid", as(ec384, "ec", "ES256"), ReasonBadSignature},
		{"ES384 header naming the P-256 kid", as(ec384, "ec", "ES384"), ReasonKeyMismatch},
		{"ES256 header naming the P-384 kid", as(ec256, "ec384", "ES256"), ReasonKeyMismatch},
		{"RS256 header naming an EC kid", as(rsaNoAlg, "ec", "RS256"), ReasonKeyMismatch},
		{"kid listed three times", as(dupA, "dup", "ES256"), ReasonAmbiguousKID},
		{"kid listed three times, third key", as(dupC, "dup", "ES256"), ReasonAmbiguousKID},
		{"kid shared by an RSA and an EC key", as(mixedEC, "mixed", "ES256"), ReasonAmbiguousKID},
		{"JWK key_ops without verify", as(signOnly, "sign-only", "ES256"), ReasonKeyMismatch},
		{"RSA JWK labelled HS256", as(hsLabelled, "hs-labelled", "RS256"), ReasonKeyMismatch},
		{"symmetric JWK is never a key", as(ec256, "oct", "ES256"), ReasonUnknownKID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := j.verify(tc.token)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q, want %q (err %v)", got, tc.want, err)
			}
		})
	}
}
