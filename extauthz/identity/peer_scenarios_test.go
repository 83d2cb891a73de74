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

	"github.com/gatehouse-proxy/gatehouse/certs"
)

// Behaviour tests for ParsePeer: what Envoy forwards in
// attributes.source.certificate (URL-encoded PEM of the validated leaf) and
// attributes.source.principal.

const scenTD = "gatehouse.local"

// TestScenarioParsePeerRequiresOneSPIFFEURI: the peer's SPIFFE id is the single
// spiffe:// URI SAN of the certificate, never the principal when a
// certificate is present, never a non-spiffe URI, and none at all when the
// certificate names two.
func TestScenarioParsePeerRequiresOneSPIFFEURI(t *testing.T) {
	orders := "spiffe://" + scenTD + "/sidecar/orders"
	edge := "spiffe://" + scenTD + "/edge/edge"
	tests := []struct {
		name      string
		uris      []string
		principal string
		want      string
	}{
		{"one spiffe URI", []string{orders}, "", orders},
		{"principal does not override the certificate", []string{orders}, edge, orders},
		{"principal does not fill a certificate without spiffe URI", nil, edge, ""},
		{"https URI only", []string{"https://" + scenTD + "/sidecar/orders"}, "", ""},
		{"spiffe-looking URN", []string{"urn:spiffe:" + scenTD + ":edge"}, "", ""},
		{"two spiffe URIs, same trust domain", []string{orders, edge}, edge, ""},
		{"two spiffe URIs, identical", []string{orders, orders}, "", ""},
		{"two spiffe URIs, foreign first", []string{"spiffe://evil.example/edge/edge", orders}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePeer(selfSigned(t, tc.uris...), tc.principal)
			if err != nil {
				t.Fatal(err)
			}
			if p.SPIFFEID != tc.want {
				t.Errorf("SPIFFEID %q, want %q", p.SPIFFEID, tc.want)
			}
			if p.Principal != tc.principal {
				t.Errorf("Principal %q, want it reported as sent (%q)", p.Principal, tc.principal)
			}
		})
	}
}

// invalidSPIFFEIDs are URIs with the spiffe scheme that the SPIFFE-ID
// specification (and certs.ValidateWorkloadID) refuses as a workload id.
var invalidSPIFFEIDs = []string{
	"spiffe://" + scenTD + "/edge/../sidecar/payments",
	"spiffe://" + scenTD + "/sidecar/./orders",
	"spiffe://" + scenTD + "/edge/%2e%2e/sidecar/payments",
	"spiffe://" + scenTD + "/sidecar/orders%2Fadmin",
	"spiffe://" + scenTD + "/sidecar//orders",
	"spiffe://" + scenTD + "/sidecar/orders/",
	"spiffe://" + scenTD + "/sidecar/orders?x=1",
	"spiffe://" + scenTD + "/sidecar/orders#frag",
	"spiffe://" + scenTD + ":8443/sidecar/orders",
	"spiffe://admin@" + scenTD + "/sidecar/orders",
	"spiffe://Gatehouse.Local/sidecar/orders",
	"spiffe://" + scenTD,
	"spiffe://" + scenTD + "/",
}

// TestScenarioParsePeerSPIFFEIDSyntax: a URI SAN that is not a valid SPIFFE
// workload id is not reported as the peer's SPIFFE id. Downstream code
// compares SPIFFE ids as strings (assertion.Verify treats any peer starting
// with spiffe://<td>/edge/ as an edge), so a non-canonical id such as
// spiffe://<td>/edge/../sidecar/payments must never get that far.
func TestScenarioParsePeerSPIFFEIDSyntax(t *testing.T) {
	for _, id := range invalidSPIFFEIDs {
		if certs.ValidateWorkloadID(id, "") == nil {
			t.Fatalf("test table: %q is a valid workload id", id)
		}
		t.Run(id, func(t *testing.T) {
			for _, in := range [][2]string{{selfSigned(t, id), ""}, {"", id}} {
				p, err := ParsePeer(in[0], in[1])
				if err == nil && p != nil && p.SPIFFEID != "" {
					t.Errorf("ParsePeer(cert=%v, principal=%q): SPIFFEID %q", in[0] != "", in[1], p.SPIFFEID)
				}
			}
		})
	}
}

// TestScenarioParsePeerEncoding: only a URL-encoded PEM whose first block is a
// certificate is read; anything else is an error (fail closed), never an
// empty peer. A bundle is read as its first (leaf) certificate.
func TestScenarioParsePeerEncoding(t *testing.T) {
	leafEnc := selfSigned(t, "spiffe://"+scenTD+"/sidecar/orders")
	otherEnc := selfSigned(t, "spiffe://"+scenTD+"/edge/edge")
	leafPEM, _ := url.QueryUnescape(leafEnc)
	otherPEM, _ := url.QueryUnescape(otherEnc)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	expired := expiredPeer(t)

	tests := []struct {
		name    string
		cert    string
		wantErr bool
		wantID  string
	}{
		{"leaf then another certificate", url.QueryEscape(leafPEM + otherPEM), false, "spiffe://" + scenTD + "/sidecar/orders"},
		{"private key block first", url.QueryEscape(keyPEM + leafPEM), true, ""},
		{"double URL-encoded", url.QueryEscape(leafEnc), true, ""},
		{"PEM truncated in the base64", url.QueryEscape(leafPEM[:len(leafPEM)/2] + "\n-----END CERTIFICATE-----\n"), true, ""},
		{"END line missing", url.QueryEscape(strings.TrimSuffix(leafPEM, "-----END CERTIFICATE-----\n")), true, ""},
		{"trailing DER garbage in the block", url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: append(pemBytes(t, leafPEM), 0)}))), true, ""},
		{"certificate block of another type name", url.QueryEscape(strings.ReplaceAll(leafPEM, "CERTIFICATE", "X509 CERTIFICATE")), true, ""},
		{"lone percent", leafEnc + "%", true, ""},
		{"expired certificate is parsed (Envoy validated it)", expired, false, "spiffe://" + scenTD + "/sidecar/old"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePeer(tc.cert, "")
			if tc.wantErr {
				if err == nil {
					t.Fatalf("accepted: %+v", p)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.SPIFFEID != tc.wantID {
				t.Errorf("SPIFFEID %q, want %q", p.SPIFFEID, tc.wantID)
			}
		})
	}

	// The expired certificate's NotAfter reaches the peer, so identity expiry
	// (and assertion minting, which refuses an expired identity) can see it.
	p, err := ParsePeer(expired, "")
	if err != nil {
		t.Fatal(err)
	}
	if !p.NotAfter.Before(time.Now()) {
		t.Errorf("NotAfter %s of an expired certificate is not in the past", p.NotAfter)
	}
}

func pemBytes(t *testing.T, s string) []byte {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatal("no PEM")
	}
	return b.Bytes
}

func expiredPeer(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://" + scenTD + "/sidecar/old")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "old"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

// TestScenarioPeerCacheKeysOnPrincipal: the cache never answers one input with
// the peer parsed for another: the same certificate with another principal,
// or another certificate, is parsed afresh, and errors are not remembered.
func TestScenarioPeerCacheKeysOnPrincipal(t *testing.T) {
	c := NewPeerCache(8)
	a := selfSigned(t, "spiffe://"+scenTD+"/sidecar/orders")
	b := selfSigned(t, "spiffe://"+scenTD+"/edge/edge")
	pa1, err := c.Parse(a, "p1")
	if err != nil {
		t.Fatal(err)
	}
	pa2, err := c.Parse(a, "p2")
	if err != nil {
		t.Fatal(err)
	}
	pb, err := c.Parse(b, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if pa1.Principal != "p1" || pa2.Principal != "p2" || pb.SPIFFEID != "spiffe://"+scenTD+"/edge/edge" || pa1.SPIFFEID != "spiffe://"+scenTD+"/sidecar/orders" {
		t.Errorf("cache mixed inputs: %+v / %+v / %+v", pa1, pa2, pb)
	}
	if again, _ := c.Parse(a, "p1"); again != pa1 {
		t.Error("equal input was parsed again instead of reused")
	}
	bad := url.QueryEscape("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	for range 2 {
		if p, err := c.Parse(bad, ""); err == nil {
			t.Fatalf("bad certificate accepted: %+v", p)
		}
	}
	if c.Len() != 3 {
		t.Errorf("Len %d, want 3 (errors not cached)", c.Len())
	}
}

// ScenarioSelfSigned exports selfSigned to the external check_scenarios_test.go,
// which needs package extauthz and so cannot be an internal test.
var ScenarioSelfSigned = selfSigned
