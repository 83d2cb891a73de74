package jwt

import (
	"crypto/x509"
	"time"
)

// verifyX5C validates an embedded x5c chain (leaf first) against the
// issuer's configured CAs only — never the system roots — and returns the
// leaf, whose key then verifies the token, and the time the longest-lived
// verified chain stops being valid: a result cached past it would accept a
// token whose certificate has expired.
//
// Time: the chain must be valid now AND at the token's iat (when present), so
// neither a token minted before its certificate existed nor one whose
// certificate has since expired is accepted. Leaf rules: not a CA, and if it
// restricts key usage, digitalSignature must be allowed. Any extended key
// usage is accepted: there is no standard EKU for JWT signing.
func verifyX5C(chain [][]byte, roots *x509.CertPool, now, iat time.Time) (leaf *x509.Certificate, validUntil time.Time, err error) {
	if roots == nil {
		return nil, time.Time{}, fail(ReasonStrategyDisabled, "x5c is not enabled for this issuer")
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, time.Time{}, fail(ReasonMalformed, "x5c[%d] is not a certificate: %w", i, err)
		}
		certs[i] = c
	}
	leaf = certs[0]
	if leaf.IsCA {
		return nil, time.Time{}, fail(ReasonUntrustedCert, "x5c leaf is a CA certificate")
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, time.Time{}, fail(ReasonUntrustedCert, "x5c leaf does not allow digital signatures")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		return nil, time.Time{}, failWrap(ReasonUntrustedCert, err)
	}
	for _, ch := range chains {
		until := ch[0].NotAfter
		for _, c := range ch[1:] {
			if c.NotAfter.Before(until) {
				until = c.NotAfter
			}
		}
		if until.After(validUntil) {
			validUntil = until
		}
	}
	if !iat.IsZero() && !iat.Equal(now) {
		opts.CurrentTime = iat
		if _, err := leaf.Verify(opts); err != nil {
			return nil, time.Time{}, fail(ReasonUntrustedCert, "x5c chain not valid at the token's iat: %w", err)
		}
	}
	if err := validatePublicKey(leaf.PublicKey); err != nil {
		return nil, time.Time{}, err
	}
	return leaf, validUntil, nil
}
