package jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
)

func TestKeyFitsAlg(t *testing.T) {
	rsaPub := &testRSAKeys()[0].PublicKey
	p256 := &mustECKey(t, elliptic.P256()).PublicKey
	p384 := &mustECKey(t, elliptic.P384()).PublicKey
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	tests := []struct {
		alg  string
		key  crypto.PublicKey
		want Reason
	}{
		{"RS256", rsaPub, ""},
		{"PS512", rsaPub, ""},
		{"ES256", p256, ""},
		{"ES384", p384, ""},
		{"EdDSA", edPub, ""},
		{"Ed25519", edPub, ""},
		{"ES256", p384, ReasonKeyMismatch},
		{"ES512", p256, ReasonKeyMismatch},
		{"ES256", rsaPub, ReasonKeyMismatch},
		{"RS256", p256, ReasonKeyMismatch},
		{"RS256", edPub, ReasonKeyMismatch},
		{"EdDSA", rsaPub, ReasonKeyMismatch},
		{"EdDSA", ed25519.PublicKey(edPub[:31]), ReasonKeyMismatch},
		{"RS256", &rsa.PublicKey{N: big.NewInt(3233), E: 65537}, ReasonWeakKey},
		{"RS256", []byte("secret"), ReasonKeyMismatch},
		{"HS256", []byte("secret"), ReasonAlgNotAllowed},
		{"none", rsaPub, ReasonAlgNotAllowed},
	}
	for _, tc := range tests {
		if got := ReasonOf(keyFitsAlg(tc.alg, tc.key)); got != tc.want {
			t.Errorf("keyFitsAlg(%s, %T) = %q, want %q", tc.alg, tc.key, got, tc.want)
		}
	}
}

func TestValidatePublicKey(t *testing.T) {
	good := &testRSAKeys()[0].PublicKey
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	must(t, err)
	even := &rsa.PublicKey{N: new(big.Int).Lsh(good.N, 1), E: 65537}
	offCurve := &ecdsa.PublicKey{Curve: elliptic.P256(), X: big.NewInt(1), Y: big.NewInt(1)}
	tests := []struct {
		name string
		key  crypto.PublicKey
		want Reason
	}{
		{"RSA 2048", good, ""},
		{"RSA 1024", &small.PublicKey, ReasonWeakKey},
		{"RSA e=3", &rsa.PublicKey{N: good.N, E: 3}, ReasonWeakKey},
		{"RSA even e", &rsa.PublicKey{N: good.N, E: 65538}, ReasonWeakKey},
		{"RSA even modulus", even, ReasonWeakKey},
		{"RSA too large", &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 9000), E: 65537}, ReasonWeakKey},
		{"P-256", &mustECKey(t, elliptic.P256()).PublicKey, ""},
		{"P-224", &mustECKey(t, elliptic.P224()).PublicKey, ReasonWeakKey},
		{"point off curve", offCurve, ReasonWeakKey},
		{"Ed25519 short", ed25519.PublicKey(make([]byte, 31)), ReasonWeakKey},
		{"symmetric", []byte("k"), ReasonKeyMismatch},
	}
	for _, tc := range tests {
		if got := ReasonOf(validatePublicKey(tc.key)); got != tc.want {
			t.Errorf("%s: reason %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The Wycheproof ROCA key must be refused for its fingerprint specifically,
// and freshly generated keys must not trip the detector.
func TestROCAFingerprint(t *testing.T) {
	f := loadWycheproof(t, "json_web_key_test.json")
	found := false
	for _, raw := range f.TestGroups {
		var g struct {
			Comment string          `json:"comment"`
			Public  json.RawMessage `json:"public"`
		}
		must(t, json.Unmarshal(raw, &g))
		if g.Comment != "jws_rsa_roca_key" {
			continue
		}
		found = true
		var set struct {
			Keys []json.RawMessage `json:"keys"`
		}
		must(t, json.Unmarshal(g.Public, &set))
		e, err := parseJWK(set.Keys[0])
		must(t, err)
		if ReasonOf(e.err) != ReasonWeakKey || !strings.Contains(e.err.Error(), "ROCA") {
			t.Errorf("ROCA key: err = %v, want weak_key mentioning ROCA", e.err)
		}
	}
	if !found {
		t.Fatal("ROCA group not found in json_web_key_test.json")
	}
	for i, k := range testRSAKeys() {
		if hasROCAFingerprint(k.N) {
			t.Errorf("generated key %d flagged as ROCA", i)
		}
	}
}
