package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-proxy/gatehouse/test/testidp"
)

// TestAssertionProcess runs `gatehouse authz` with authz.assertion on and
// walks the two-hop chain the way the edge's and the sidecars' Envoys call
// it: the edge's OK response carries the assertion, the keys are published
// on the admin listener and stored privately in --state-dir, and inventory's
// sidecar decides on orders' certificate plus the user's assertion, fetched
// keys and all, through the process's own JWKS endpoint.
func TestAssertionProcess(t *testing.T) {
	dir := t.TempDir()
	idp := testidp.New(t)
	policyDir, state := filepath.Join(dir, "policies"), filepath.Join(dir, "state")
	copyDir(t, filepath.Join(repoRoot(t), "policies"), policyDir)
	cfg := writeConfig(t, dir, fmt.Sprintf(authzListen+`authz:
  policies:
    dir: %s
`+jwtIssuer+`  assertion:
    enabled: true
    ttl: 30s
    chains: [{from: orders, to: inventory}]
mesh:
  trust_domain: gatehouse.local
  services:
    - {name: orders, endpoints: ["orders:15443"]}
    - {name: inventory, endpoints: ["inventory:15443"]}
`, policyDir, idp.Issuer(), idp.JWKSURI()))
	p, client, admin := startAuthzProc(t, cfg, "--state-dir", state)
	env := &authzEnv{client: client, admin: admin, idp: idp, proc: p}

	// The keys: published as a JWKS, stored 0600 in a 0700 directory.
	code, body := env.get(t, "/.well-known/gatehouse/jwks.json")
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &set) != nil || len(set.Keys) != 1 || set.Keys[0]["alg"] != "ES256" || set.Keys[0]["d"] != nil {
		t.Fatalf("JWKS: %d %s", code, body)
	}
	for path, want := range map[string]os.FileMode{filepath.Join(state, "assertion"): 0o700, filepath.Join(state, "assertion", "keys.json"): 0o600} {
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: mode %v (%v), want %o", path, st.Mode().Perm(), err, want)
		}
	}

	edgeHop := func(roles ...string) string {
		t.Helper()
		req := checkRequest("GET", "/api/orders/1", map[string]string{"authorization": "Bearer " + idp.Token(t, idp.UserClaims("alice", "gatehouse", roles...))})
		req.Attributes.ContextExtensions = map[string]string{"role": "edge", "proxy": "edge", "service": "orders"}
		resp := env.check(t, req)
		if httpStatus(resp) != 200 {
			t.Fatalf("edge: status %d", httpStatus(resp))
		}
		for _, h := range resp.GetOkResponse().GetHeaders() {
			if h.GetHeader().GetKey() == "x-gatehouse-assertion" {
				return h.GetHeader().GetValue()
			}
		}
		t.Fatal("edge: no x-gatehouse-assertion in the OK response")
		return ""
	}
	inventoryHop := func(assertion, peer string) *authv3.CheckResponse {
		t.Helper()
		req := checkRequest("GET", "/api/holds/alice", map[string]string{"x-gatehouse-assertion": assertion})
		req.Attributes.ContextExtensions = map[string]string{"role": "sidecar", "proxy": "inventory", "service": "inventory"}
		req.Attributes.Source.Certificate, req.Attributes.Source.Principal = peerCert(t, peer), peer
		return env.check(t, req)
	}

	const orders = "spiffe://gatehouse.local/sidecar/orders"
	if got := httpStatus(inventoryHop(edgeHop("reader"), orders)); got != 200 {
		t.Fatalf("orders → inventory for a reader: %d\n%s", got, p.logs())
	}
	if got := httpStatus(inventoryHop(edgeHop("writer"), orders)); got != 403 {
		t.Fatalf("orders → inventory for a writer: %d", got)
	}
	if got := httpStatus(inventoryHop(edgeHop("reader"), "spiffe://gatehouse.local/sidecar/payments")); got != 403 {
		t.Fatalf("assertion presented by another peer: %d", got)
	}
	eventually(t, "wrong_peer in the decision log", func() error {
		if !strings.Contains(p.logs(), "assertion rejected: wrong_peer") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
}

// peerCert is a URL-encoded PEM certificate with a SPIFFE URI SAN, as
// Envoy forwards the client certificate it validated.
func peerCert(t *testing.T, spiffeID string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(spiffeID)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "peer"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}
