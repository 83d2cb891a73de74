package jwt

// Wycheproof vectors (testdata/wycheproof, see SOURCE and LICENSE there) run
// through the same functions Verify uses:
//
//   - JWS / JWK vectors: parseCompact (strict compact form and header rules)
//     → parseJWKS (the JWKS loader, fed the group's key or key set)
//     → keySet.lookup(kid) → jwkEntry.usableFor(alg) → verifySignature.
//     Claims are not checked: the payloads are not JWTs.
//   - Raw signature vectors (ECDSA P1363, RSASSA-PKCS1-v1_5, RSASSA-PSS,
//     Ed25519): their messages are arbitrary bytes, not a JWS signing input
//     we could re-encode, so they call validatePublicKey (the load-time key
//     policy) and verifySignature (keyFitsAlg + jwx's jwsbb.Verify) directly
//     with msg as the signing input. That is the exact primitive the verifier
//     runs on "header.payload".
//
// Every "invalid" vector must be rejected. Every "valid" vector must be
// accepted unless its tcId is in the divergence table below, in which case it
// must be rejected (so a stale entry fails the test). "acceptable" vectors
// may go either way; the outcome is logged.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

type wpFile struct {
	Algorithm     string            `json:"algorithm"`
	NumberOfTests int               `json:"numberOfTests"`
	TestGroups    []json.RawMessage `json:"testGroups"`
}

type wpTest struct {
	TcID    int      `json:"tcId"`
	Comment string   `json:"comment"`
	Flags   []string `json:"flags"`
	Result  string   `json:"result"`
	// JWS vectors
	JWS string `json:"jws"`
	// raw signature vectors
	Msg string `json:"msg"`
	Sig string `json:"sig"`
}

// divergences lists "valid" vectors this package rejects on purpose, per
// file, keyed by tcId.
func divergences() map[string]map[int]string {
	const hmac = "HMAC (HS256/384/512) is never accepted: asymmetric algorithms only"
	jws := map[int]string{}
	for _, id := range []int{1, 348, 352, 357, 358, 359, 372, 373, 376, 377} {
		jws[id] = hmac
	}
	jws[347] = `JWK alg "ES521" is not a JWS algorithm; a JWK's alg must equal the header alg (ES512) exactly`
	jws[351] = jws[347]
	jwkVectors := map[int]string{}
	for _, id := range []int{2, 13, 14, 15} {
		jwkVectors[id] = hmac
	}
	jws[346] = `JWK alg "PS256" but the token (RFC 7520 Figure 20) uses PS384; a JWK's alg must equal the header alg exactly`
	jws[350] = jws[346]
	// The "SmallPublicKey" groups use RSA public exponent e = 3.
	const smallE = "RSA public exponent 3: policy requires an odd exponent >= 65537 (FIPS 186-5)"
	return map[string]map[int]string{
		"json_web_signature_test.json":        jws,
		"json_web_key_test.json":              jwkVectors,
		"rsa_signature_2048_sha256_test.json": {258: smallE, 259: smallE},
		"rsa_signature_3072_sha256_test.json": {259: smallE},
	}
}

func loadWycheproof(t *testing.T, name string) wpFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "wycheproof", name))
	must(t, err)
	var f wpFile
	must(t, json.Unmarshal(b, &f))
	return f
}

// checkVector applies the assertion policy described at the top of the file.
func checkVector(t *testing.T, file string, tc wpTest, err error, counts map[string]int) {
	t.Helper()
	div, diverges := divergences()[file][tc.TcID]
	switch tc.Result {
	case "invalid":
		if err == nil {
			t.Errorf("%s tcId %d (%s, flags %v): invalid vector accepted", file, tc.TcID, tc.Comment, tc.Flags)
		}
		counts["invalid rejected"]++
	case "valid":
		switch {
		case diverges && err == nil:
			t.Errorf("%s tcId %d: listed as divergence (%s) but accepted; remove the entry", file, tc.TcID, div)
		case diverges:
			counts["valid rejected by policy"]++
		case err != nil:
			t.Errorf("%s tcId %d (%s, flags %v): valid vector rejected: %v", file, tc.TcID, tc.Comment, tc.Flags, err)
		default:
			counts["valid accepted"]++
		}
	case "acceptable":
		t.Logf("%s tcId %d (%s, flags %v): acceptable vector, rejected=%v", file, tc.TcID, tc.Comment, tc.Flags, err != nil)
		counts["acceptable"]++
	default:
		t.Fatalf("%s tcId %d: unknown result %q", file, tc.TcID, tc.Result)
	}
}

func TestWycheproofJWS(t *testing.T) {
	for _, file := range []string{"json_web_signature_test.json", "json_web_key_test.json"} {
		t.Run(file, func(t *testing.T) {
			f := loadWycheproof(t, file)
			counts := map[string]int{}
			total := 0
			for _, raw := range f.TestGroups {
				var g struct {
					Public  json.RawMessage `json:"public"`
					Private json.RawMessage `json:"private"`
					Tests   []wpTest        `json:"tests"`
				}
				must(t, json.Unmarshal(raw, &g))
				ks := wycheproofKeySet(t, g.Public, g.Private)
				for _, tc := range g.Tests {
					total++
					checkVector(t, file, tc, verifyJWSVector(tc.JWS, ks), counts)
				}
			}
			if total != f.NumberOfTests {
				t.Errorf("ran %d vectors, file declares %d", total, f.NumberOfTests)
			}
			t.Logf("%s: %v", file, counts)
		})
	}
}

// wycheproofKeySet loads the group's verification key(s) through parseJWKS.
// Groups without a public key (HMAC) offer their private key, which the
// loader must refuse to use (symmetric or private material).
func wycheproofKeySet(t *testing.T, public, private json.RawMessage) *keySet {
	t.Helper()
	src := public
	if len(src) == 0 {
		src = private
	}
	var probe struct {
		Keys json.RawMessage `json:"keys"`
	}
	must(t, json.Unmarshal(src, &probe))
	doc := src
	if probe.Keys == nil {
		doc = []byte(`{"keys":[` + string(src) + `]}`)
	}
	ks, err := parseJWKS(doc, quietLogger())
	if err != nil {
		// No usable key at all: an empty set, so every vector is rejected.
		return &keySet{byKID: map[string]*jwkEntry{}}
	}
	return ks
}

// verifyJWSVector is Verify's key-and-signature path without claims.
func verifyJWSVector(token string, ks *keySet) error {
	c, err := parseCompact(token, DefaultMaxTokenBytes)
	if err != nil {
		return err
	}
	e, err := ks.lookup(c.Header.Kid)
	if err != nil {
		return err
	}
	if err := e.usableFor(c.Header.Alg); err != nil {
		return err
	}
	return verifySignature(c.Header.Alg, e.key, c.SigningInput, c.Signature)
}

func TestWycheproofRaw(t *testing.T) {
	files := []struct {
		file string
		alg  string
		key  func(t *testing.T, group json.RawMessage) crypto.PublicKey
	}{
		{"ecdsa_secp256r1_sha256_p1363_test.json", "ES256", ecKeyFromGroup(elliptic.P256())},
		{"ecdsa_secp384r1_sha384_p1363_test.json", "ES384", ecKeyFromGroup(elliptic.P384())},
		{"ecdsa_secp521r1_sha512_p1363_test.json", "ES512", ecKeyFromGroup(elliptic.P521())},
		{"rsa_signature_2048_sha256_test.json", "RS256", derKeyFromGroup},
		{"rsa_signature_3072_sha256_test.json", "RS256", derKeyFromGroup},
		{"rsa_pss_2048_sha256_mgf1_32_test.json", "PS256", derKeyFromGroup},
		{"rsa_pss_3072_sha256_mgf1_32_test.json", "PS256", derKeyFromGroup},
		{"ed25519_test.json", "EdDSA", edKeyFromGroup},
	}
	for _, fc := range files {
		t.Run(fc.file, func(t *testing.T) {
			f := loadWycheproof(t, fc.file)
			counts := map[string]int{}
			total := 0
			for _, raw := range f.TestGroups {
				var g struct {
					Tests []wpTest `json:"tests"`
				}
				must(t, json.Unmarshal(raw, &g))
				key := fc.key(t, raw)
				keyErr := validatePublicKey(key)
				for _, tc := range g.Tests {
					total++
					msg, err := hex.DecodeString(tc.Msg)
					must(t, err)
					sig, err := hex.DecodeString(tc.Sig)
					must(t, err)
					err = keyErr
					if err == nil {
						err = verifySignature(fc.alg, key, msg, sig)
					}
					checkVector(t, fc.file, tc, err, counts)
				}
			}
			if total != f.NumberOfTests {
				t.Errorf("ran %d vectors, file declares %d", total, f.NumberOfTests)
			}
			t.Logf("%s: %v", fc.file, counts)
		})
	}
}

func ecKeyFromGroup(curve elliptic.Curve) func(*testing.T, json.RawMessage) crypto.PublicKey {
	return func(t *testing.T, raw json.RawMessage) crypto.PublicKey {
		t.Helper()
		var g struct {
			PublicKey struct {
				Uncompressed string `json:"uncompressed"`
			} `json:"publicKey"`
		}
		must(t, json.Unmarshal(raw, &g))
		b, err := hex.DecodeString(g.PublicKey.Uncompressed)
		must(t, err)
		k, err := ecdsa.ParseUncompressedPublicKey(curve, b)
		must(t, err)
		return k
	}
}

func derKeyFromGroup(t *testing.T, raw json.RawMessage) crypto.PublicKey {
	t.Helper()
	var g struct {
		PublicKeyDer string `json:"publicKeyDer"`
	}
	must(t, json.Unmarshal(raw, &g))
	der, err := hex.DecodeString(g.PublicKeyDer)
	must(t, err)
	k, err := x509.ParsePKIXPublicKey(der)
	must(t, err)
	return k
}

func edKeyFromGroup(t *testing.T, raw json.RawMessage) crypto.PublicKey {
	t.Helper()
	var g struct {
		PublicKey struct {
			PK string `json:"pk"`
		} `json:"publicKey"`
	}
	must(t, json.Unmarshal(raw, &g))
	b, err := hex.DecodeString(g.PublicKey.PK)
	must(t, err)
	return ed25519.PublicKey(b)
}
