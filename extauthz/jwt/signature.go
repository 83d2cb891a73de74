package jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"math/big"

	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
)

// RSA key policy. 2048 bits is the RFC 7518 §3.3 minimum; the upper bound
// keeps a hostile JWKS from making every verification slow. The exponent
// floor follows FIPS 186-5 (e > 2^16).
const (
	minRSABits     = 2048
	maxRSABits     = 8192
	minRSAExponent = 65537
)

type keyFamily int

const (
	familyRSA keyFamily = iota + 1
	familyEC
	familyEd25519
)

type algSpec struct {
	family keyFamily
	curve  elliptic.Curve // ECDSA only
}

// algorithmSpec describes the complete set of JWS algorithms this package
// will ever verify: asymmetric only. "none" and the HMAC family are absent on
// purpose, so no configuration can enable them (a shared secret would also let
// every relying party mint tokens).
func algorithmSpec(alg string) (algSpec, bool) {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return algSpec{family: familyRSA}, true
	case "ES256":
		return algSpec{family: familyEC, curve: elliptic.P256()}, true
	case "ES384":
		return algSpec{family: familyEC, curve: elliptic.P384()}, true
	case "ES512":
		return algSpec{family: familyEC, curve: elliptic.P521()}, true
	case "EdDSA", "Ed25519": // Ed25519 is the RFC 9864 fully-specified name
		return algSpec{family: familyEd25519}, true
	}
	return algSpec{}, false
}

// verifySignature is the single signature check every strategy goes through
// (and that the Wycheproof vectors exercise): the key must fit alg exactly —
// type, curve, RSA size — and then jwx's jwsbb.Verify checks the signature
// over signingInput (RSASSA-PKCS1-v1_5, RSASSA-PSS with salt = hash length,
// ECDSA in the fixed-length R||S form, or Ed25519).
func verifySignature(alg string, key crypto.PublicKey, signingInput, sig []byte) error {
	if err := keyFitsAlg(alg, key); err != nil {
		return err
	}
	if err := jwsbb.Verify(key, alg, signingInput, sig); err != nil {
		return failWrap(ReasonBadSignature, err)
	}
	return nil
}

// keyFitsAlg rejects alg/key confusion: an RSA key for ES256, a P-384 key
// for ES256, an Ed25519 key for RS256 and so on.
func keyFitsAlg(alg string, key crypto.PublicKey) error {
	spec, ok := algorithmSpec(alg)
	if !ok {
		return fail(ReasonAlgNotAllowed, "alg is not a supported asymmetric signature algorithm")
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if spec.family != familyRSA {
			return fail(ReasonKeyMismatch, "RSA key cannot verify %s", alg)
		}
		if k.N == nil || k.N.BitLen() < minRSABits {
			return fail(ReasonWeakKey, "RSA key shorter than %d bits", minRSABits)
		}
	case *ecdsa.PublicKey:
		if spec.family != familyEC {
			return fail(ReasonKeyMismatch, "ECDSA key cannot verify %s", alg)
		}
		if k.Curve != spec.curve {
			return fail(ReasonKeyMismatch, "%s needs curve %s", alg, spec.curve.Params().Name)
		}
	case ed25519.PublicKey:
		if spec.family != familyEd25519 {
			return fail(ReasonKeyMismatch, "Ed25519 key cannot verify %s", alg)
		}
		if len(k) != ed25519.PublicKeySize {
			return fail(ReasonKeyMismatch, "Ed25519 key has wrong length")
		}
	default:
		return fail(ReasonKeyMismatch, "unsupported key type %T", key)
	}
	return nil
}

// validatePublicKey is the load-time key policy, run once when a key enters
// a JWKS snapshot or the trust store, and for each x5c leaf: RSA 2048..8192
// bits with an odd exponent of at least 65537 and no ROCA fingerprint; ECDSA
// on P-256/P-384/P-521 with a point on the curve; Ed25519 of the right size.
func validatePublicKey(key crypto.PublicKey) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N == nil || k.N.Sign() <= 0 {
			return fail(ReasonWeakKey, "RSA modulus missing")
		}
		bits := k.N.BitLen()
		if bits < minRSABits {
			return fail(ReasonWeakKey, "RSA key has %d bits, minimum %d", bits, minRSABits)
		}
		if bits > maxRSABits {
			return fail(ReasonWeakKey, "RSA key has %d bits, maximum %d", bits, maxRSABits)
		}
		if k.E < minRSAExponent || k.E%2 == 0 {
			return fail(ReasonWeakKey, "RSA public exponent must be odd and at least %d", minRSAExponent)
		}
		if k.N.Bit(0) == 0 {
			return fail(ReasonWeakKey, "RSA modulus is even")
		}
		if hasROCAFingerprint(k.N) {
			return fail(ReasonWeakKey, "RSA modulus has the ROCA (CVE-2017-15361) fingerprint")
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return fail(ReasonWeakKey, "unsupported ECDSA curve")
		}
		// ECDH() re-encodes the point through crypto/ecdh, which rejects
		// points not on the curve and the point at infinity.
		if _, err := k.ECDH(); err != nil {
			return fail(ReasonWeakKey, "invalid ECDSA public key: %w", err)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fail(ReasonWeakKey, "Ed25519 key has wrong length")
		}
	default:
		return fail(ReasonKeyMismatch, "unsupported key type %T", key)
	}
	return nil
}

// hasROCAFingerprint applies the test published with the ROCA paper (Nemec
// et al., CCS 2017): an Infineon-generated modulus is, for every one of these
// primes p, a power of 65537 modulo p. A random modulus passes all 38 tests
// with negligible probability.
func hasROCAFingerprint(n *big.Int) bool {
	rocaPrimes := [...]int64{3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67,
		71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167}
	var r, p big.Int
	for _, prime := range rocaPrimes {
		p.SetInt64(prime)
		residue := r.Mod(n, &p).Int64()
		if !inSubgroup(residue, 65537%prime, prime) {
			return false
		}
	}
	return true
}

// inSubgroup reports whether x is a power of g modulo p (p a small prime).
func inSubgroup(x, g, p int64) bool {
	v := int64(1)
	for range p {
		if v == x {
			return true
		}
		v = v * g % p
		if v == 1 {
			break
		}
	}
	return false
}
