package certs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/certs"
)

// fuzzCA is a real CA and one leaf issued by it, for seeds.
func fuzzCA(f *testing.F) (*certs.CA, *certs.Leaf) {
	f.Helper()
	ca, err := certs.Init(filepath.Join(f.TempDir(), "ca"), quiet)
	if err != nil {
		f.Fatal(err)
	}
	leaf, err := ca.IssueRole("svc", "edge", certs.WithDNSNames("edge.example"))
	if err != nil {
		f.Fatal(err)
	}
	return ca, leaf
}

// FuzzInspect: any bytes handed to `gatehouse ca inspect` give a summary or
// an error, never a panic, and a summary never echoes a private key.
func FuzzInspect(f *testing.F) {
	ca, leaf := fuzzCA(f)
	for _, s := range [][]byte{
		nil, []byte("hello"), ca.CertPEM(), leaf.ChainPEM, leaf.KeyPEM,
		append(append([]byte{}, leaf.ChainPEM...), leaf.KeyPEM...),
		leaf.ChainPEM[:len(leaf.ChainPEM)/2],
		[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
		[]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\ntrailing"),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		infos, err := certs.Inspect(data)
		if err != nil {
			return
		}
		var out bytes.Buffer
		for _, in := range infos {
			if in.SHA256 == "" || in.Serial == "" {
				t.Fatalf("incomplete summary %+v", in)
			}
			if err := in.WriteText(&out, in.NotBefore); err != nil {
				t.Fatal(err)
			}
		}
		if bytes.Contains(out.Bytes(), []byte("PRIVATE KEY")) {
			t.Fatal("summary echoes a private key")
		}
	})
}

// FuzzLoadPair: an operator's certificate and key files, whatever they
// hold, either load as a pair that chains to the CA and whose key matches,
// or fail — never a panic, never a pair from a foreign or broken chain.
func FuzzLoadPair(f *testing.F) {
	ca, leaf := fuzzCA(f)
	f.Add(leaf.ChainPEM, leaf.KeyPEM)
	f.Add(leaf.ChainPEM, leaf.ChainPEM)
	f.Add(leaf.KeyPEM, leaf.KeyPEM)
	f.Add(ca.CertPEM(), leaf.KeyPEM)
	f.Add(leaf.ChainPEM[:len(leaf.ChainPEM)-30], leaf.KeyPEM)
	f.Add(leaf.ChainPEM, leaf.KeyPEM[:len(leaf.KeyPEM)/2])
	f.Add([]byte{}, []byte{})
	dir := f.TempDir()
	certFile, keyFile := filepath.Join(dir, "edge.crt"), filepath.Join(dir, "edge.key")
	roots := ca.TrustPool()
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := certs.LoadPair(certFile, keyFile, roots)
		if err != nil {
			if l != nil {
				t.Fatal("leaf returned with an error")
			}
			return
		}
		if !bytes.Equal(l.Cert.Raw, leaf.Cert.Raw) {
			// Only the CA can issue a leaf that verifies; the fuzzer
			// cannot, so the only pair that loads is the seed's.
			t.Fatalf("loaded a certificate the CA never issued: serial %s", l.Serial)
		}
		if _, err := l.TLSCertificate(); err != nil {
			t.Fatalf("loaded pair is not a usable TLS certificate: %v", err)
		}
	})
}
