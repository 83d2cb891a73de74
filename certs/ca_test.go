package certs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/certs/certstest"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

var quiet = certs.WithLogger(slog.New(slog.DiscardHandler))

func initCA(t *testing.T, opts ...certs.Option) (string, *certs.CA) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := certs.Init(dir, append([]certs.Option{quiet}, opts...)...)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return dir, ca
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestInitWritesPrivateFiles(t *testing.T) {
	for _, alg := range []certs.KeyAlgorithm{certs.ECDSAP256, certs.ECDSAP384, certs.RSA3072} {
		t.Run(string(alg), func(t *testing.T) {
			dir, ca := initCA(t, certs.WithTrustDomain("example.org"), certs.WithKeyAlgorithm(alg))
			if got := mode(t, dir); got != 0o700 {
				t.Errorf("dir mode %04o, want 0700", got)
			}
			if got := mode(t, filepath.Join(dir, "ca.key")); got != 0o600 {
				t.Errorf("ca.key mode %04o, want 0600", got)
			}
			if got := mode(t, filepath.Join(dir, "ca.crt")); got != 0o644 {
				t.Errorf("ca.crt mode %04o, want 0644", got)
			}
			keyPEM, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
			if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
				t.Fatalf("ca.key is not PKCS#8 PEM")
			}
			c := ca.Certificate()
			if !c.IsCA || !c.MaxPathLenZero || c.KeyUsage&x509.KeyUsageCertSign == 0 {
				t.Errorf("CA cert: IsCA=%v MaxPathLenZero=%v KeyUsage=%v", c.IsCA, c.MaxPathLenZero, c.KeyUsage)
			}
			if !slices.Equal(c.PermittedURIDomains, []string{"example.org"}) {
				t.Errorf("PermittedURIDomains = %v", c.PermittedURIDomains)
			}
			loaded, err := certs.Load(dir)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if loaded.TrustDomain() != "example.org" || !loaded.Certificate().Equal(c) {
				t.Fatalf("Load returned trust domain %q / different cert", loaded.TrustDomain())
			}
			// The loaded CA signs leaves that verify.
			leaf, err := loaded.IssueRole("svc", "a")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: loaded.TrustPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatalf("verify: %v", err)
			}
		})
	}
}

func TestInitRefusesOverwrite(t *testing.T) {
	dir, first := initCA(t)
	if _, err := certs.Init(dir); !errors.Is(err, certs.ErrCAExists) {
		t.Fatalf("second Init error = %v, want ErrCAExists", err)
	}
	again, err := certs.Load(dir)
	if err != nil || !again.Certificate().Equal(first.Certificate()) {
		t.Fatalf("CA changed by refused Init: %v", err)
	}
	second, err := certs.Init(dir, certs.WithForce())
	if err != nil {
		t.Fatalf("forced Init: %v", err)
	}
	if second.Certificate().Equal(first.Certificate()) {
		t.Fatal("forced Init kept the old CA")
	}
}

func TestInitRejectsOpenDirAndBadTrustDomain(t *testing.T) {
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.Init(open); err == nil || !strings.Contains(err.Error(), "must be private") {
		t.Fatalf("Init in 0755 dir: %v", err)
	}
	if _, err := certs.Init(filepath.Join(t.TempDir(), "x"), certs.WithTrustDomain("Bad.Domain")); err == nil {
		t.Fatal("Init accepted upper-case trust domain")
	}
}

func writeFile(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

// selfSigned makes a certificate with its key, CA or not.
func selfSigned(t *testing.T, isCA bool, notAfter time.Time) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		Subject:               pkix.Name{CommonName: "test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: "gatehouse.local"}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func TestLoadErrors(t *testing.T) {
	otherDir, _ := initCA(t)
	otherKey, _ := os.ReadFile(filepath.Join(otherDir, "ca.key"))
	leafCert, leafKey := selfSigned(t, false, time.Now().Add(time.Hour))
	oldCert, oldKey := selfSigned(t, true, time.Now().Add(-time.Minute))

	tests := []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		wantErr string // substring; the file name is checked separately
		file    string
	}{
		{name: "mismatched key", file: "ca.key", wantErr: "does not match",
			mutate: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "ca.key"), otherKey, 0o600) }},
		{name: "not a CA", file: "ca.crt", wantErr: "not a CA",
			mutate: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "ca.crt"), leafCert, 0o644)
				writeFile(t, filepath.Join(dir, "ca.key"), leafKey, 0o600)
			}},
		{name: "expired", file: "ca.crt", wantErr: "expired",
			mutate: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "ca.crt"), oldCert, 0o644)
				writeFile(t, filepath.Join(dir, "ca.key"), oldKey, 0o600)
			}},
		{name: "garbage cert", file: "ca.crt", wantErr: "no complete PEM block",
			mutate: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "ca.crt"), []byte("hello\n"), 0o644) }},
		{name: "truncated cert", file: "ca.crt", wantErr: "truncated",
			mutate: func(t *testing.T, dir string) {
				data, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
				writeFile(t, filepath.Join(dir, "ca.crt"), data[:len(data)/2], 0o644)
			}},
		{name: "garbage key", file: "ca.key", wantErr: "parse PRIVATE KEY",
			mutate: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "ca.key"), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
			}},
		{name: "key readable by others", file: "ca.key", wantErr: "0644",
			mutate: func(t *testing.T, dir string) { os.Chmod(filepath.Join(dir, "ca.key"), 0o644) }},
		{name: "missing key", file: "ca.key", wantErr: "no such file",
			mutate: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "ca.key")) }},
		{name: "wrong trust domain asserted", file: "ca.crt", wantErr: "configured",
			mutate: func(t *testing.T, dir string) {}},
		{name: "previous without retire", file: "previous", wantErr: ".retire",
			mutate: func(t *testing.T, dir string) {
				os.Mkdir(filepath.Join(dir, "previous"), 0o700)
				writeFile(t, filepath.Join(dir, "previous", "abc.crt"), oldCert, 0o644)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := initCA(t)
			tt.mutate(t, dir)
			var opts []certs.Option
			if tt.name == "wrong trust domain asserted" {
				opts = append(opts, certs.WithTrustDomain("other.local"))
			}
			_, err := certs.Load(dir, opts...)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), filepath.Join(dir, tt.file)) {
				t.Fatalf("Load error = %q, want mention of %q and %s", err, tt.wantErr, tt.file)
			}
		})
	}
}

func TestIssueLeaf(t *testing.T) {
	clk := certstest.NewClock(t0)
	_, ca := initCA(t, certs.WithClock(clk))
	leaf, err := ca.Issue("spiffe://gatehouse.local/proxy/edge", certs.WithDNSNames("edge.internal", "*.edge.internal"), certs.WithTTL(6*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c := leaf.Cert
	if _, err := c.Verify(x509.VerifyOptions{
		Roots:       ca.TrustPool(),
		CurrentTime: t0,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSName:     "edge.internal",
	}); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://gatehouse.local/proxy/edge" || leaf.SPIFFEID != c.URIs[0].String() {
		t.Errorf("URIs = %v, SPIFFEID = %q", c.URIs, leaf.SPIFFEID)
	}
	if !slices.Equal(c.DNSNames, []string{"edge.internal", "*.edge.internal"}) {
		t.Errorf("DNSNames = %v", c.DNSNames)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want DigitalSignature only", c.KeyUsage)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage = %v", c.ExtKeyUsage)
	}
	if c.IsCA {
		t.Error("leaf is a CA")
	}
	if !c.NotBefore.Equal(t0.Add(-certs.ClockSkew)) || !c.NotAfter.Equal(t0.Add(6*time.Hour)) || !leaf.NotAfter.Equal(c.NotAfter) {
		t.Errorf("validity %s..%s, want %s..%s", c.NotBefore, c.NotAfter, t0.Add(-time.Minute), t0.Add(6*time.Hour))
	}
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("leaf key %T, want ECDSA P-256", c.PublicKey)
	}
	if c.SerialNumber.BitLen() < 64 || leaf.Serial != c.SerialNumber.Text(16) {
		t.Errorf("serial %s (%d bits), Serial field %q", c.SerialNumber, c.SerialNumber.BitLen(), leaf.Serial)
	}
	if _, err := leaf.TLSCertificate(); err != nil {
		t.Errorf("TLSCertificate: %v", err)
	}
	if s := leaf.String(); strings.Contains(s, "PRIVATE") {
		t.Errorf("String leaks key: %s", s)
	}
	// Default TTL is 24h; two leaves never share a key or serial.
	other, err := ca.IssueRole("proxy", "edge")
	if err != nil {
		t.Fatal(err)
	}
	if got := other.NotAfter.Sub(t0); got != 24*time.Hour {
		t.Errorf("default TTL %s", got)
	}
	if other.Serial == leaf.Serial || string(other.KeyPEM) == string(leaf.KeyPEM) {
		t.Error("second leaf reused serial or key")
	}
}

func TestIssueRejects(t *testing.T) {
	_, ca := initCA(t)
	tests := []struct {
		name string
		id   string
		opts []certs.IssueOption
	}{
		{"foreign trust domain", "spiffe://evil.local/proxy/edge", nil},
		{"no path", "spiffe://gatehouse.local", nil},
		{"bad id", "spiffe://gatehouse.local/../x", nil},
		{"ttl too short", "spiffe://gatehouse.local/a", []certs.IssueOption{certs.WithTTL(time.Second)}},
		{"ttl too long", "spiffe://gatehouse.local/a", []certs.IssueOption{certs.WithTTL(2 * certs.MaxLeafTTL)}},
		{"bad dns", "spiffe://gatehouse.local/a", []certs.IssueOption{certs.WithDNSNames("bad name")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if l, err := ca.Issue(tt.id, tt.opts...); err == nil {
				t.Fatalf("Issue succeeded: %v", l)
			}
		})
	}
}

func TestIssueCappedAtCAExpiry(t *testing.T) {
	clk := certstest.NewClock(t0)
	_, ca := initCA(t, certs.WithClock(clk), certs.WithCAValidity(48*time.Hour))
	clk.Advance(40 * time.Hour)
	leaf, err := ca.IssueRole("a", "b", certs.WithTTL(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Fatalf("leaf NotAfter %s, want capped at CA %s", leaf.NotAfter, ca.Certificate().NotAfter)
	}
	clk.Advance(9 * time.Hour)
	if _, err := ca.IssueRole("a", "b"); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("issue from expired CA: %v", err)
	}
}

func TestRSALeafHasKeyEncipherment(t *testing.T) {
	_, ca := initCA(t)
	leaf, err := ca.IssueRole("a", "rsa", certs.WithLeafKeyAlgorithm(certs.RSA3072))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := leaf.Cert.PublicKey.(*rsa.PublicKey); !ok {
		t.Fatalf("key %T", leaf.Cert.PublicKey)
	}
	if leaf.Cert.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Fatalf("KeyUsage %v", leaf.Cert.KeyUsage)
	}
}

// A leaf for another trust domain signed with the CA key (as a thief could)
// must fail verification because of the CA's name constraint.
func TestNameConstraintBlocksForeignDomain(t *testing.T) {
	dir, ca := initCA(t)
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	b, _ := pem.Decode(keyPEM)
	caKey, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		uri    string
		wantOK bool
	}{{"spiffe://gatehouse.local/x", true}, {"spiffe://evil.local/x", false}} {
		u, _ := url.Parse(tc.uri)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			URIs: []*url.URL{u}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, ca.Certificate(), leafKey.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		_, err = c.Verify(x509.VerifyOptions{Roots: ca.TrustPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if (err == nil) != tc.wantOK {
			t.Errorf("%s: verify err = %v, want ok=%v", tc.uri, err, tc.wantOK)
		}
	}
}

func bundleCerts(t *testing.T, bundle []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func poolOf(cs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}

func TestRotateOverlap(t *testing.T) {
	clk := certstest.NewClock(t0)
	dir, oldCA := initCA(t, certs.WithClock(clk), certs.WithKeyAlgorithm(certs.ECDSAP384))
	oldLeaf, err := oldCA.IssueRole("proxy", "edge")
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	newCA, err := certs.Rotate(dir, 24*time.Hour, certs.WithClock(clk), quiet)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if newCA.Certificate().Subject.String() == oldCA.Certificate().Subject.String() {
		t.Errorf("old and new CA share the subject %s", newCA.Certificate().Subject)
	}
	if newCA.Certificate().Equal(oldCA.Certificate()) || newCA.TrustDomain() != oldCA.TrustDomain() {
		t.Fatal("Rotate did not make a new CA in the same trust domain")
	}
	if k, ok := newCA.Certificate().PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P384() {
		t.Errorf("rotated CA key %T, want the old CA's P-384", newCA.Certificate().PublicKey)
	}
	serial := oldCA.Certificate().SerialNumber.Text(16)
	if got := mode(t, filepath.Join(dir, "previous")); got != 0o700 {
		t.Errorf("previous/ mode %04o", got)
	}
	retire, err := os.ReadFile(filepath.Join(dir, "previous", serial+".retire"))
	if err != nil || strings.TrimSpace(string(retire)) != t0.Add(25*time.Hour).Format(time.RFC3339) {
		t.Fatalf("retire file %q, %v", retire, err)
	}
	if got := mode(t, filepath.Join(dir, "ca.key")); got != 0o600 {
		t.Errorf("new ca.key mode %04o", got)
	}

	newLeaf, err := newCA.IssueRole("proxy", "edge")
	if err != nil {
		t.Fatal(err)
	}
	if err := newLeaf.Cert.CheckSignatureFrom(newCA.Certificate()); err != nil {
		t.Fatalf("new leaf not signed by the new CA: %v", err)
	}
	if err := newLeaf.Cert.CheckSignatureFrom(oldCA.Certificate()); err == nil {
		t.Fatal("new leaf signed by the old CA")
	}

	verify := func(c *x509.Certificate, pool *x509.CertPool) error {
		_, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: clk.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	// Reload as a restarted process would; both are trusted during overlap.
	for _, ca := range []*certs.CA{newCA, mustLoad(t, dir, clk)} {
		bundle := bundleCerts(t, ca.TrustBundle())
		if len(bundle) != 2 || !bundle[0].Equal(newCA.Certificate()) || !bundle[1].Equal(oldCA.Certificate()) {
			t.Fatalf("bundle during overlap has %d certs, want new then old", len(bundle))
		}
		if err := verify(newLeaf.Cert, poolOf(bundle)); err != nil {
			t.Errorf("new leaf vs bundle: %v", err)
		}
		if err := verify(oldLeaf.Cert, poolOf(bundle)); err != nil {
			t.Errorf("old leaf vs bundle during overlap: %v", err)
		}
	}

	clk.Advance(24 * time.Hour) // overlap ends at t0+25h
	for _, ca := range []*certs.CA{newCA, mustLoad(t, dir, clk)} {
		bundle := bundleCerts(t, ca.TrustBundle())
		if len(bundle) != 1 || !bundle[0].Equal(newCA.Certificate()) {
			t.Fatalf("bundle after overlap has %d certs, want only the new CA", len(bundle))
		}
		if err := verify(oldLeaf.Cert, ca.TrustPool()); err == nil {
			t.Error("old leaf still verifies after overlap")
		}
	}

	// The next rotation prunes the retired CA from disk.
	if _, err := certs.Rotate(dir, time.Hour, certs.WithClock(clk), quiet); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "previous", serial+".crt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("retired CA not pruned: %v", err)
	}
	if _, err := certs.Rotate(dir, -time.Hour); err == nil {
		t.Error("negative overlap accepted")
	}
}

func mustLoad(t *testing.T, dir string, clk certs.Clock) *certs.CA {
	t.Helper()
	ca, err := certs.Load(dir, certs.WithClock(clk))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return ca
}

func TestRenewAt(t *testing.T) {
	tests := []struct {
		life time.Duration
		want time.Duration
	}{
		{24 * time.Hour, 16 * time.Hour},
		{3 * time.Hour, 2 * time.Hour},
		{90 * time.Minute, time.Hour},
	}
	for _, tt := range tests {
		c := &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(tt.life)}
		if got := certs.RenewAt(c); !got.Equal(t0.Add(tt.want)) {
			t.Errorf("RenewAt(life %s) = %s, want NotBefore+%s", tt.life, got, tt.want)
		}
	}
}

func TestLeafSatisfies(t *testing.T) {
	_, ca := initCA(t, certs.WithTrustDomain("example.org"))
	const id = "spiffe://example.org/edge/web"
	leaf, err := ca.Issue(id, certs.WithDNSNames("a.example", "b.example"))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := ca.Issue(id)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		leaf *certs.Leaf
		opts []certs.IssueOption
		want bool
	}{
		{"same names", leaf, []certs.IssueOption{certs.WithDNSNames("a.example", "b.example")}, true},
		{"other order, repeated", leaf, []certs.IssueOption{certs.WithDNSNames("b.example"), certs.WithDNSNames("a.example", "b.example")}, true},
		{"TTL and key type do not count", leaf, []certs.IssueOption{certs.WithTTL(time.Hour), certs.WithLeafKeyAlgorithm(certs.RSA3072), certs.WithDNSNames("a.example", "b.example")}, true},
		{"one name fewer", leaf, []certs.IssueOption{certs.WithDNSNames("a.example")}, false},
		{"one name more", leaf, []certs.IssueOption{certs.WithDNSNames("a.example", "b.example", "c.example")}, false},
		{"no names asked of a leaf with names", leaf, nil, false},
		{"no names, none held", plain, []certs.IssueOption{certs.WithTTL(time.Hour)}, true},
		{"names asked of a leaf without", plain, []certs.IssueOption{certs.WithDNSNames("a.example")}, false},
	}
	for _, tt := range tests {
		if got := tt.leaf.Satisfies(tt.opts...); got != tt.want {
			t.Errorf("%s: Satisfies = %v, want %v", tt.name, got, tt.want)
		}
	}
}
