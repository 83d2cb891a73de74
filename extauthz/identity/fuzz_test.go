package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzParsePeer: whatever arrives in attributes.source.certificate and
// .principal, ParsePeer returns a peer or an error, never panics, and a
// SPIFFE id it reports comes from exactly one spiffe:// URI SAN of the
// certificate (or, without a certificate, from the principal).
func FuzzParsePeer(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	id, _ := url.Parse("spiffe://gatehouse.local/sidecar/orders")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "orders"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{id},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		f.Fatal(err)
	}
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	f.Add(url.QueryEscape(certPEM), "spiffe://gatehouse.local/sidecar/orders")
	f.Add(certPEM, "")
	f.Add(url.QueryEscape(certPEM[:len(certPEM)/2]), "")
	f.Add("", "spiffe://gatehouse.local/sidecar/x")
	f.Add("", "")
	f.Add("%zz", "")
	f.Add(url.QueryEscape("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "CN=x")
	f.Fuzz(func(t *testing.T, cert, principal string) {
		p, err := ParsePeer(cert, principal)
		if err != nil {
			if p != nil {
				t.Fatal("peer returned with an error")
			}
			return
		}
		if p == nil {
			if cert != "" || principal != "" {
				t.Fatal("nil peer for a non-empty certificate or principal")
			}
			return
		}
		if p.SPIFFEID == "" {
			return
		}
		if !strings.HasPrefix(p.SPIFFEID, "spiffe://") {
			t.Fatalf("SPIFFE id %q", p.SPIFFEID)
		}
		if cert != "" && !slices.Contains(p.URISANs, p.SPIFFEID) {
			t.Fatalf("SPIFFE id %q is not a URI SAN of the certificate %v", p.SPIFFEID, p.URISANs)
		}
	})
}
