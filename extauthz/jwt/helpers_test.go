package jwt

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
)

// RSA key generation is slow on a shared 2-core box: generate a few once.
var testRSAKeys = sync.OnceValue(func() []*rsa.PrivateKey {
	keys := make([]*rsa.PrivateKey, 3)
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys[i] = k
	}
	return keys
})

// testKey is a signing key as the IdP holds it.
type testKey struct {
	kid  string
	alg  string // JWS alg used to sign
	priv crypto.Signer
	// jwkAlg/use/ops override what the JWKS advertises ("" = omit).
	jwkAlg string
	use    string
	ops    []string
}

func (k testKey) pub() crypto.PublicKey { return k.priv.Public() }

func rsaTestKey(kid, alg string, i int) testKey {
	return testKey{kid: kid, alg: alg, priv: testRSAKeys()[i], jwkAlg: alg, use: "sig"}
}

func ecTestKey(t testing.TB, kid, alg string, curve elliptic.Curve) testKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid: kid, alg: alg, priv: k, jwkAlg: alg, use: "sig"}
}

func edTestKey(t testing.TB, kid string) testKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid: kid, alg: "EdDSA", priv: k, jwkAlg: "EdDSA", use: "sig"}
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signRaw builds a compact JWS from raw header and payload bytes, so tests
// can craft exactly the JSON they need (duplicate keys and all).
func signRaw(t testing.TB, hdr, payload []byte, alg string, key crypto.Signer) string {
	t.Helper()
	si := b64u(hdr) + "." + b64u(payload)
	sig, err := jwsbb.Sign(key, alg, []byte(si), rand.Reader)
	if err != nil {
		t.Fatalf("sign %s: %v", alg, err)
	}
	return si + "." + b64u(sig)
}

// token signs claims with k, header {alg, kid} plus extra members.
func (k testKey) token(t testing.TB, claims map[string]any, extraHdr map[string]any) string {
	t.Helper()
	hdr := map[string]any{"alg": k.alg, "typ": "JWT"}
	if k.kid != "" {
		hdr["kid"] = k.kid
	}
	for n, v := range extraHdr {
		if v == nil {
			delete(hdr, n)
			continue
		}
		hdr[n] = v
	}
	return signRaw(t, mustJSON(t, hdr), mustJSON(t, claims), k.alg, k.priv)
}

// jwksJSON publishes the public halves of keys as the IdP would.
func jwksJSON(t testing.TB, keys ...testKey) []byte {
	t.Helper()
	out := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		var m map[string]any
		if rk, ok := k.pub().(*rsa.PublicKey); ok {
			// Built by hand: jwk.Import refuses RSA keys under 2048 bits,
			// and the tests need to publish one.
			m = map[string]any{"kty": "RSA", "n": b64u(rk.N.Bytes()), "e": b64u(big.NewInt(int64(rk.E)).Bytes())}
		} else {
			jk, err := jwk.Import(k.pub())
			if err != nil {
				t.Fatal(err)
			}
			must(t, json.Unmarshal(mustJSON(t, jk), &m))
		}
		m["kid"] = k.kid
		if k.jwkAlg != "" {
			m["alg"] = k.jwkAlg
		}
		if k.use != "" {
			m["use"] = k.use
		}
		if k.ops != nil {
			m["key_ops"] = k.ops
		}
		out = append(out, m)
	}
	return mustJSON(t, map[string]any{"keys": out})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testClock is a settable clock shared by verifier and test.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Now().Truncate(time.Second)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testIdP serves OIDC discovery and a JWKS whose content, status and
// Cache-Control the test can change, and counts the requests it gets.
type testIdP struct {
	srv            *httptest.Server
	jwks           atomic.Pointer[[]byte]
	status         atomic.Int32
	discoveryIss   atomic.Pointer[string]
	jwksHits       atomic.Int32
	discoveryHits  atomic.Int32
	gate           atomic.Pointer[chan struct{}] // when set, JWKS requests wait for it to close
	cacheControlMu sync.Mutex
	cacheControl   string
}

func newTestIdP(t testing.TB, keys ...testKey) *testIdP {
	t.Helper()
	p := &testIdP{}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		p.discoveryHits.Add(1)
		iss := p.srv.URL
		if s := p.discoveryIss.Load(); s != nil {
			iss = *s
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": p.srv.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		p.jwksHits.Add(1)
		if g := p.gate.Load(); g != nil {
			select {
			case <-*g:
			case <-r.Context().Done():
				return
			}
		}
		if st := p.status.Load(); st != 0 && st != http.StatusOK {
			http.Error(w, "down", int(st))
			return
		}
		p.cacheControlMu.Lock()
		if p.cacheControl != "" {
			w.Header().Set("Cache-Control", p.cacheControl)
		}
		p.cacheControlMu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*p.jwks.Load())
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	p.setKeys(t, keys...)
	return p
}

func (p *testIdP) issuer() string { return p.srv.URL }

func (p *testIdP) setKeys(t testing.TB, keys ...testKey) {
	b := jwksJSON(t, keys...)
	p.jwks.Store(&b)
}

func (p *testIdP) setBody(b []byte) { p.jwks.Store(&b) }

// claimsFor returns a valid claim set for iss at now.
func claimsFor(iss string, now time.Time) map[string]any {
	return map[string]any{
		"iss":    iss,
		"sub":    "alice",
		"aud":    []string{"api", "other"},
		"exp":    now.Add(time.Hour).Unix(),
		"iat":    now.Unix(),
		"nbf":    now.Unix(),
		"roles":  []string{"admin", "dev"},
		"groups": "eng ops",
		"email":  "alice@example.com",
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestVerifier builds a verifier with a test clock and quiet logger and
// closes it at the end of the test.
func newTestVerifier(t testing.TB, clock *testClock, issuers []IssuerConfig, opts ...Option) *Verifier {
	t.Helper()
	opts = append([]Option{WithClock(clock.Now), WithLogger(quietLogger())}, opts...)
	v, err := NewVerifier(context.Background(), issuers, opts...)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// jwksTest is the start of most JWKS and cache tests: an IdP publishing a
// key set and a verifier of it on a test clock.
type jwksTest struct {
	idp   *testIdP
	clock *testClock
	v     *Verifier
}

// newJWKSTest starts an IdP publishing keys and a verifier of jwksIssuer.
func newJWKSTest(t testing.TB, keys []testKey, opts ...Option) *jwksTest {
	t.Helper()
	return jwksTestFor(t, newTestIdP(t, keys...), opts...)
}

// jwksTestFor is newJWKSTest for an IdP the test has set up already.
func jwksTestFor(t testing.TB, idp *testIdP, opts ...Option) *jwksTest {
	t.Helper()
	return jwksTestWith(t, idp, []IssuerConfig{jwksIssuer(idp)}, opts...)
}

// jwksTestWith is jwksTestFor with a verifier of issuers.
func jwksTestWith(t testing.TB, idp *testIdP, issuers []IssuerConfig, opts ...Option) *jwksTest {
	t.Helper()
	clock := newTestClock()
	return &jwksTest{idp: idp, clock: clock, v: newTestVerifier(t, clock, issuers, opts...)}
}

// claims is a valid claim set of the IdP's issuer at the clock's now.
func (j *jwksTest) claims() map[string]any { return claimsFor(j.idp.issuer(), j.clock.Now()) }

// token is a valid token of the IdP's issuer at the clock's now, signed by k.
func (j *jwksTest) token(t testing.TB, k testKey) string {
	t.Helper()
	return k.token(t, j.claims(), nil)
}

// verify verifies tok with a background context.
func (j *jwksTest) verify(tok string) (*Result, error) { return j.v.Verify(context.Background(), tok) }

// --- certificates -----------------------------------------------------------

type testCert struct {
	cert *x509.Certificate
	key  crypto.Signer
}

type certOpts struct {
	cn        string
	isCA      bool
	notBefore time.Time
	notAfter  time.Time
	keyUsage  x509.KeyUsage
	key       crypto.Signer // default: fresh P-256
}

var serial atomic.Int64

// issueCert creates a certificate signed by parent (self-signed when nil).
func issueCert(t testing.TB, parent *testCert, o certOpts) *testCert {
	t.Helper()
	key := o.key
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key = k
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(24 * time.Hour)
	}
	if o.keyUsage == 0 {
		if o.isCA {
			o.keyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		} else {
			o.keyUsage = x509.KeyUsageDigitalSignature
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: o.cn},
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		KeyUsage:              o.keyUsage,
		BasicConstraintsValid: true,
		IsCA:                  o.isCA,
	}
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{cert: c, key: key}
}

func certAlg(key crypto.Signer) string {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return "RS256"
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P384():
			return "ES384"
		case elliptic.P521():
			return "ES512"
		}
		return "ES256"
	case ed25519.PrivateKey:
		return "EdDSA"
	}
	return ""
}

func x5cChain(certs ...*testCert) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = base64.StdEncoding.EncodeToString(c.cert.Raw)
	}
	return out
}

// emptyTrustStore is a store over an empty directory.
func emptyTrustStore(t testing.TB) *TrustStore {
	t.Helper()
	ts, err := NewTrustStore(t.TempDir(), WithTrustStoreLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	return ts
}
