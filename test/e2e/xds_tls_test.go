package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// TestXDSOverMTLS: with xds.tls enabled, ADS requires a client certificate
// from the CA, and a proxy may subscribe only as the node its certificate
// names — a node's resources carry its private keys.
func TestXDSOverMTLS(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfgPath := writeConfig(t, dir, strings.Replace(fmt.Sprintf(meshTemplate, "127.0.0.1:50051", "orders", filepath.Join(dir, "certs")),
		"mesh:\n", "xds:\n  tls:\n    enabled: true\n    dns_names: [localhost]\nmesh:\n", 1))
	_, addrs := start(t, "xds", "--config", cfgPath, "--state-dir", state)
	xdsAddr := strings.Replace(addrs[0], "127.0.0.1", "localhost", 1)

	caDir := filepath.Join(state, "ca")
	issue := func(id string) tls.Certificate {
		prefix := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(id, "spiffe://"), "/", "_"))
		gatehouse(t, "ca", "issue", "--dir", caDir, "--spiffe-id", id, "--out", prefix)
		c, err := tls.LoadX509KeyPair(prefix+".crt", prefix+".key")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	caPEM, err := os.ReadFile(filepath.Join(caDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	orders := issue("spiffe://e2e.test/sidecar/orders")

	// fetch opens an ADS stream as node and returns the first CDS answer.
	fetch := func(t *testing.T, cert *tls.Certificate, node string) error {
		t.Helper()
		cfg := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		s, stop, err := openADS(t, xdsAddr, credentials.NewTLS(cfg))
		if err != nil {
			return err
		}
		defer stop()
		if err := s.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ClusterType}); err != nil {
			return err
		}
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		if len(resp.GetResources()) == 0 {
			return fmt.Errorf("empty CDS answer")
		}
		return nil
	}

	if err := fetch(t, &orders, "orders"); err != nil {
		t.Fatalf("orders with its own certificate: %v", err)
	}
	err = fetch(t, &orders, "edge")
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("orders' certificate subscribing as edge: %v, want PermissionDenied", err)
	}
	if err := fetch(t, nil, "orders"); err == nil {
		t.Fatal("a client without a certificate was served")
	}

	// The bootstrap for the same node carries the TLS settings.
	out := gatehouse(t, "bootstrap", "--config", cfgPath, "--node", "orders", "--xds", xdsAddr,
		"--cert", "/etc/gatehouse/orders.crt", "--key", "/etc/gatehouse/orders.key", "--ca", "/etc/gatehouse/ca.crt")
	for _, want := range []string{"/etc/gatehouse/orders.crt", "spiffe://e2e.test/gatehouse/xds", "envoy.transport_sockets.tls"} {
		if !strings.Contains(out, want) {
			t.Errorf("bootstrap lacks %q:\n%s", want, out)
		}
	}
	bsFile := filepath.Join(dir, "orders-envoy.yaml")
	writeFile(t, bsFile, out)
	if got := gatehouse(t, "bootstrap", "--check", bsFile); !strings.Contains(got, `valid Envoy bootstrap for node "orders"`) {
		t.Errorf("bootstrap --check: %s", got)
	}
}
