package certs

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParseLeaf rebuilds a Leaf from the PEM a Leaf carries (chain with the leaf
// first, and its private key), as when replicas share issued leaves through
// a store. It checks the PEM strictly and that the key matches the leaf; it
// does not verify the chain or the validity period, which the caller judges
// (it knows the CA in force and the time).
func ParseLeaf(chainPEM, keyPEM []byte) (*Leaf, error) {
	chain, err := parseCertsPEM(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("parse leaf: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		// The key itself is never part of the error.
		return nil, fmt.Errorf("parse leaf key: %w", err)
	}
	cert := chain[0]
	if cert.IsCA {
		return nil, errors.New("parse leaf: first certificate is a CA")
	}
	if !keyMatches(key, cert) {
		return nil, errors.New("parse leaf: private key does not match the certificate")
	}
	blocks, err := decodePEMStrict(chainPEM)
	if err != nil { // unreachable after parseCertsPEM
		return nil, fmt.Errorf("parse leaf: %w", err)
	}
	certPEM := pem.EncodeToMemory(blocks[0])
	return &Leaf{
		CertPEM:  certPEM,
		KeyPEM:   append([]byte(nil), keyPEM...),
		ChainPEM: append([]byte(nil), chainPEM...),
		Cert:     cert,
		Serial:   serialHex(cert),
		NotAfter: cert.NotAfter,
		SPIFFEID: spiffeIDOf(cert),
	}, nil
}

// spiffeIDOf is the certificate's first spiffe:// URI SAN, or "".
func spiffeIDOf(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	return ""
}

// SignedBy reports whether l's certificate was signed by ca's key.
func (l *Leaf) SignedBy(ca *x509.Certificate) bool {
	return l.Cert.CheckSignatureFrom(ca) == nil
}

// DeriveKey derives a 32-byte secret for purpose from the CA's private key
// (HKDF-SHA256 over its PKCS#8 encoding, the CA certificate's hash as salt,
// the purpose as info). Replicas that mount the same CA derive the same
// key without another secret to distribute, and nobody without the CA key
// can: it is how leaves shared through a store are sealed. The key changes
// with the CA: after a rotation, keep the previous CA's key to open values
// sealed before it.
func (ca *CA) DeriveKey(purpose string) ([]byte, error) {
	if purpose == "" {
		return nil, errors.New("derive key: empty purpose")
	}
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("derive key: %w", err)
	}
	salt := sha256.Sum256(ca.cert.Raw)
	k, err := hkdf.Key(sha256.New, der, salt[:], "gatehouse/ca-derived/"+purpose, 32)
	if err != nil {
		return nil, fmt.Errorf("derive key: %w", err)
	}
	return k, nil
}
