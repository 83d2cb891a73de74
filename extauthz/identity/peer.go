package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"

	"github.com/gatehouse-proxy/gatehouse/certs"
)

// MaxPeerCertBytes bounds the URL-encoded PEM Envoy forwards; real workload
// certificates are ~1 KiB, so anything near this is not one.
const MaxPeerCertBytes = 16 << 10

// ParsePeer builds a Peer from what Envoy sends with include_peer_certificate:
// attributes.source.certificate (the URL-encoded PEM of the client's leaf)
// and attributes.source.principal (the URI SAN or subject Envoy chose).
// Envoy only forwards a certificate it has already validated against the
// listener's validation context, so this parses, it does not verify.
// Both empty means no peer and returns (nil, nil).
func ParsePeer(urlEncodedPEM, principal string) (*Peer, error) {
	if urlEncodedPEM == "" {
		if principal == "" {
			return nil, nil
		}
		return &Peer{Principal: principal, SPIFFEID: spiffeFrom([]string{principal})}, nil
	}
	if len(urlEncodedPEM) > MaxPeerCertBytes {
		return nil, fmt.Errorf("peer certificate: %d bytes exceeds %d", len(urlEncodedPEM), MaxPeerCertBytes)
	}
	raw, err := url.QueryUnescape(urlEncodedPEM)
	if err != nil {
		return nil, fmt.Errorf("peer certificate: not URL-encoded: %w", err)
	}
	block, _ := pem.Decode([]byte(raw))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("peer certificate: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("peer certificate: %w", err)
	}
	p := &Peer{
		Principal: principal,
		Subject:   cert.Subject.String(),
		Issuer:    cert.Issuer.String(),
		DNSSANs:   cert.DNSNames,
		Serial:    cert.SerialNumber.Text(16),
		NotAfter:  cert.NotAfter.UTC(),
	}
	sum := sha256.Sum256(cert.Raw)
	p.SHA256Fingerprint = hex.EncodeToString(sum[:])
	for _, u := range cert.URIs {
		p.URISANs = append(p.URISANs, u.String())
	}
	p.SPIFFEID = spiffeFrom(p.URISANs)
	return p, nil
}

// spiffeFrom returns the SPIFFE id the URIs name, or "". An X.509-SVID
// carries exactly one URI SAN, and it must be a well-formed workload id:
// "..", percent-escapes, a trailing slash or an upper-case trust domain
// would let one workload's id pass a prefix or equality test meant for
// another (policy and the assertion's edge check compare ids as strings).
func spiffeFrom(uris []string) string {
	if len(uris) != 1 || certs.ValidateWorkloadID(uris[0], "") != nil {
		return ""
	}
	return uris[0]
}
