package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
)

// Without --xds, `gatehouse bootstrap` for a gRPC client dials
// dialAddress(listen.xds): the default ":18000" must not become
// "127.0.0.1:18000" when xds.tls is on. With xds.tls the
// ADS server's certificate carries only xds.tls.dns_names (default
// [localhost], no IP SAN: cmd/gatehouse/xds.go adsTLS). Envoy matches the
// URI SAN only, but a gRPC client's bootstrap (RenderGRPC, "tls" channel
// creds) verifies the server name taken from server_uri, here the IP
// 127.0.0.1 (grpc internal/xds/bootstrap/tlscreds: credentials.NewTLS with
// RootCAs and the dialled authority), which the default certificate does not
// name: the handshake fails.
func TestDialAddressTLSServerName(t *testing.T) {
	cfg := &config.Config{}
	cfg.XDS.TLS.Enabled = true
	cfg.Defaults()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "xds"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: cfg.XDS.TLS.DNSNames}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(dialAddress(cfg.Listen.XDS, tlsLoopbackName(cfg.XDS.TLS.DNSNames)))
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname(host); err != nil {
		t.Fatalf("bootstrap dials %s (from listen.xds %q); the ADS certificate (dns_names %v) does not match it: %v",
			host, cfg.Listen.XDS, cfg.XDS.TLS.DNSNames, err)
	}
}
