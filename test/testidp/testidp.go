// Package testidp is a minimal token issuer for tests: a real HTTP JWKS
// endpoint (and OIDC discovery document) backed by a fresh RSA key, and
// RS256 tokens signed with it. Tests that need a full OIDC provider use the
// Dex harness in test/dex instead.
package testidp

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// IDP serves /jwks and /.well-known/openid-configuration on loopback.
type IDP struct {
	Key    *rsa.PrivateKey
	KeyID  string
	server *httptest.Server
}

// New starts an IDP that stops when the test ends.
func New(t testing.TB) *IDP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &IDP{Key: key, KeyID: "k1"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{map[string]string{
			"kty": "RSA", "kid": p.KeyID, "use": "sig", "alg": "RS256",
			"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
		}}})
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": p.Issuer(), "jwks_uri": p.JWKSURI()})
	})
	p.server = httptest.NewServer(mux)
	t.Cleanup(p.server.Close)
	return p
}

// Issuer is the issuer URL (also the discovery base).
func (p *IDP) Issuer() string { return p.server.URL }

// JWKSURI is the key set's URL.
func (p *IDP) JWKSURI() string { return p.server.URL + "/jwks" }

// Token signs claims as a compact RS256 JWS with the IDP's key id.
func (p *IDP) Token(t testing.TB, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": p.KeyID, "typ": "JWT"})
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := b64(h) + "." + b64(c)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, p.Key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64(sig)
}

// UserClaims are valid claims for subject with roles, issued now by p for
// audience, expiring in an hour.
func (p *IDP) UserClaims(subject, audience string, roles ...string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": p.Issuer(), "sub": subject, "aud": audience, "email": subject + "@example.com",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "roles": roles,
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
