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
	"strings"
	"testing"
	"time"
)

func selfSigned(t *testing.T, uris ...string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0xbeef),
		Subject:      pkix.Name{CommonName: "orders"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"orders.local"},
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	// Envoy URL-encodes the PEM (newlines become %0A, '+' '/' '=' escaped).
	return url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

func TestParsePeer(t *testing.T) {
	one := selfSigned(t, "spiffe://gatehouse.local/sidecar/orders")
	two := selfSigned(t, "spiffe://gatehouse.local/a", "spiffe://gatehouse.local/b")
	plain := selfSigned(t)
	tests := []struct {
		name      string
		cert      string
		principal string
		wantNil   bool
		wantErr   string
		wantID    string
	}{
		{name: "none", wantNil: true},
		{name: "spiffe", cert: one, principal: "spiffe://gatehouse.local/sidecar/orders", wantID: "spiffe://gatehouse.local/sidecar/orders"},
		{name: "two URI SANs are ambiguous", cert: two, wantID: ""},
		{name: "no URI SAN", cert: plain, wantID: ""},
		{name: "principal only", principal: "spiffe://gatehouse.local/sidecar/x", wantID: "spiffe://gatehouse.local/sidecar/x"},
		{name: "not pem", cert: url.QueryEscape("hello"), wantErr: "no PEM"},
		{name: "bad escape", cert: "%zz", wantErr: "URL-encoded"},
		{name: "oversized", cert: strings.Repeat("A", MaxPeerCertBytes+1), wantErr: "exceeds"},
		{name: "garbage der", cert: url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}))), wantErr: "peer certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePeer(tt.cert, tt.principal)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantNil {
				if p != nil {
					t.Fatalf("got %+v, want nil", p)
				}
				return
			}
			if p.SPIFFEID != tt.wantID {
				t.Errorf("SPIFFEID = %q, want %q", p.SPIFFEID, tt.wantID)
			}
			if tt.cert != "" {
				if len(p.SHA256Fingerprint) != 64 || p.Serial != "beef" || p.Subject != "CN=orders" {
					t.Errorf("peer = %+v", p)
				}
			}
		})
	}
}
