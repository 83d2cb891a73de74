package certs_test

import (
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/certs/certstest"
)

func TestScenarioLoadRefusesOpenKey(t *testing.T) {
	for _, tc := range []struct {
		perm os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o640, false}, {0o604, false}, {0o644, false}, {0o660, false}, {0o610, false},
	} {
		t.Run(tc.perm.String(), func(t *testing.T) {
			dir, _ := initCA(t)
			if got := mode(t, dir); got != 0o700 {
				t.Fatalf("CA dir mode %o, want 0700", got)
			}
			if got := mode(t, filepath.Join(dir, certs.CAKeyFile)); got != 0o600 {
				t.Fatalf("key mode %o, want 0600", got)
			}
			if err := os.Chmod(filepath.Join(dir, certs.CAKeyFile), tc.perm); err != nil {
				t.Fatal(err)
			}
			_, err := certs.Load(dir, quiet)
			if (err == nil) != tc.ok {
				t.Fatalf("Load with key mode %o: err=%v, want ok=%v", tc.perm, err, tc.ok)
			}
		})
	}
}

func TestScenarioParseSPIFFEIDEdges(t *testing.T) {
	long := "spiffe://td/" + strings.Repeat("a", 2048-len("spiffe://td/"))
	tests := []struct {
		id string
		ok bool
	}{
		{"spiffe://example.org/ns/a", true},
		{"spiffe://Example.org/ns/a", false},
		{"SPIFFE://example.org/ns/a", false},
		{"spiffe://example.org/ns/a/", false},
		{"spiffe://example.org/", false},
		{"spiffe://example.org/ns/%41", false},
		{"spiffe://example.org/ns/../a", false},
		{"spiffe://example.org/ns/./a", false},
		{"spiffe://example.org/ns//a", false},
		{"spiffe://example.org/ns/a?x=1", false},
		{"spiffe://example.org/ns/a#f", false},
		{"spiffe://example.org:443/ns/a", false},
		{"spiffe://u@example.org/ns/a", false},
		{"spiffe:///ns/a", false},
		{"spiffe://", false},
		{"spiffe://example.org/ns/a b", false},
		{"spiffe://example.org/ns/é", false},
		{long, true},
		{long + "a", false},
		{"spiffe://" + strings.Repeat("a", 256) + "/x", false},
		{"spiffe://" + strings.Repeat("a", 255) + "/x", true},
	}
	for _, tc := range tests {
		_, _, err := certs.ParseSPIFFEID(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("ParseSPIFFEID(%.60q): err=%v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}

// A trust domain that ValidateTrustDomain (and so config validation)
// accepts must be one Init can create a CA for, whose leaves verify.
func TestScenarioAcceptedTrustDomainIssuesVerifiableLeaves(t *testing.T) {
	for _, td := range []string{"example.org", "a_b.example", "x-y", "10.0.0.1", "example.org.", "a..b", ".example"} {
		t.Run(td, func(t *testing.T) {
			if err := certs.ValidateTrustDomain(td); err != nil {
				return // refused up front: fine
			}
			dir := filepath.Join(t.TempDir(), "ca")
			ca, err := certs.Init(dir, quiet, certs.WithTrustDomain(td))
			if err != nil {
				t.Fatalf("ValidateTrustDomain accepts %q but Init(%q): %v", td, td, err)
			}
			leaf, err := ca.IssueRole("svc", "a")
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: ca.TrustPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Fatalf("leaf for %q does not verify: %v", td, err)
			}
		})
	}
}

func TestScenarioKeyAlgorithmsVerify(t *testing.T) {
	algs := []certs.KeyAlgorithm{certs.ECDSAP256, certs.ECDSAP384, certs.RSA3072}
	for _, caAlg := range algs {
		for _, leafAlg := range algs {
			t.Run(string(caAlg)+"/"+string(leafAlg), func(t *testing.T) {
				dir, _ := initCA(t, certs.WithKeyAlgorithm(caAlg))
				ca, err := certs.Load(dir, quiet)
				if err != nil {
					t.Fatal(err)
				}
				leaf, err := ca.IssueRole("svc", "a", certs.WithLeafKeyAlgorithm(leafAlg))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: ca.TrustPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
					t.Fatalf("verify: %v", err)
				}
				if _, err := leaf.TLSCertificate(); err != nil {
					t.Fatal(err)
				}
				if len(leaf.Cert.URIs) != 1 || leaf.Cert.URIs[0].String() != leaf.SPIFFEID {
					t.Fatalf("URI SANs %v, want exactly %s", leaf.Cert.URIs, leaf.SPIFFEID)
				}
			})
		}
	}
}

func TestScenarioConcurrentIssueUniqueSerials(t *testing.T) {
	_, ca := initCA(t)
	const n = 64
	var wg sync.WaitGroup
	serials := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := ca.IssueRole("svc", "a")
			errs[i] = err
			if err == nil {
				serials[i] = l.Serial
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seen[serials[i]] {
			t.Fatalf("duplicate serial %s", serials[i])
		}
		seen[serials[i]] = true
	}
	if seen[serialOf(t, ca.Certificate())] {
		t.Fatal("leaf reuses CA serial")
	}
}

func serialOf(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	return c.SerialNumber.Text(16)
}

func TestScenarioRotateOverlapBundle(t *testing.T) {
	clk := certstest.NewClock(t0)
	dir, old := initCA(t, certs.WithClock(clk))
	oldLeaf, err := old.IssueRole("svc", "a", certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	next, err := certs.Rotate(dir, 2*time.Hour, quiet, certs.WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(bundleCerts(t, next.TrustBundle())); got != 2 {
		t.Fatalf("bundle during overlap has %d certs, want 2", got)
	}
	loaded := mustLoad(t, dir, clk)
	if got := len(bundleCerts(t, loaded.TrustBundle())); got != 2 {
		t.Fatalf("reloaded bundle during overlap has %d certs, want 2", got)
	}
	opts := x509.VerifyOptions{Roots: loaded.TrustPool(), CurrentTime: clk.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := oldLeaf.Cert.Verify(opts); err != nil {
		t.Fatalf("old leaf during overlap: %v", err)
	}
	clk.Advance(2*time.Hour + time.Second)
	if got := len(bundleCerts(t, loaded.TrustBundle())); got != 1 {
		t.Fatalf("bundle after overlap has %d certs, want 1", got)
	}
	if got := len(bundleCerts(t, mustLoad(t, dir, clk).TrustBundle())); got != 1 {
		t.Fatalf("reloaded bundle after overlap has %d certs, want 1", got)
	}
	// A second rotation prunes the retired CA files.
	if _, err := certs.Rotate(dir, time.Hour, quiet, certs.WithClock(clk)); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, certs.PreviousDir))
	var crts int
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".crt" {
			crts++
		}
	}
	if crts != 1 {
		t.Fatalf("previous/ holds %d certs after prune, want 1", crts)
	}
	if got := mode(t, filepath.Join(dir, certs.PreviousDir)); got != 0o700 {
		t.Fatalf("previous dir mode %o", got)
	}
}

func TestScenarioLeafClampedToCA(t *testing.T) {
	clk := certstest.NewClock(t0)
	_, ca := initCA(t, certs.WithClock(clk), certs.WithCAValidity(2*time.Hour))
	l, err := ca.IssueRole("svc", "a", certs.WithTTL(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !l.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Fatalf("leaf NotAfter %s, want CA NotAfter %s", l.NotAfter, ca.Certificate().NotAfter)
	}
	if l.Cert.NotBefore.Before(ca.Certificate().NotBefore) {
		t.Fatal("leaf NotBefore precedes CA")
	}
	clk.Advance(2*time.Hour + time.Minute)
	if _, err := ca.IssueRole("svc", "a"); err == nil {
		t.Fatal("Issue from an expired CA succeeded")
	}
}

func TestScenarioInspectGarbage(t *testing.T) {
	_, ca := initCA(t)
	l, err := ca.IssueRole("svc", "a")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"empty", nil, false},
		{"whitespace", []byte("  \n\t"), false},
		{"binary", []byte{0, 1, 2, 0xff}, false},
		{"key only", l.KeyPEM, false},
		{"truncated", l.CertPEM[:len(l.CertPEM)/2], false},
		{"trailing junk", append(append([]byte{}, l.CertPEM...), "junk"...), false},
		{"bad DER", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), false},
		{"cert+key", append(append([]byte{}, l.CertPEM...), l.KeyPEM...), true},
	}
	for _, tc := range tests {
		infos, err := certs.Inspect(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err=%v want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "PRIVATE") && strings.Contains(err.Error(), string(l.KeyPEM[30:60])) {
			t.Errorf("%s: error echoes key material", tc.name)
		}
		if tc.ok && len(infos) != 1 {
			t.Errorf("%s: %d infos", tc.name, len(infos))
		}
	}
}

// gateIssuer blocks every Issue after armed until released.
type gateIssuer struct {
	ca      *certs.CA
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func (g *gateIssuer) Issue(id string, opts ...certs.IssueOption) (*certs.Leaf, error) {
	g.mu.Lock()
	armed := g.armed
	g.armed = false
	g.mu.Unlock()
	if armed {
		close(g.entered)
		<-g.release
	}
	return g.ca.Issue(id, opts...)
}

// SetIssuer promises every held leaf is re-issued from the new issuer
// promptly, even if a renewal from the old issuer is in flight.
func TestScenarioSetIssuerDuringInFlightRenewal(t *testing.T) {
	_, caA := initCA(t)
	_, caB := initCA(t)
	a := &gateIssuer{ca: caA, entered: make(chan struct{}), release: make(chan struct{})}
	r := certs.NewRotator(a, certs.WithRotatorLogger(slog.New(slog.DiscardHandler)))
	id := "spiffe://gatehouse.local/svc/a"
	if _, err := r.Get(id); err != nil {
		t.Fatal(err)
	}
	startRotator(t, r)
	a.mu.Lock()
	a.armed = true
	a.mu.Unlock()
	r.RenewAll() // Run starts issuing from A and blocks
	select {
	case <-a.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("renewal did not start")
	}
	r.SetIssuer(caB) // CA rotated while A's renewal is in flight
	close(a.release)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if l, ok := r.Current(id); ok && l.SignedBy(caB.Certificate()) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	l, _ := r.Current(id)
	if l.SignedBy(caA.Certificate()) {
		t.Fatal("SetIssuer during an in-flight renewal was lost: the leaf from the old CA is kept")
	}
	t.Fatal("held leaf signed by neither CA")
}

// Init and Rotate insist on private directories; Load should not trust
// CA certificates from a directory others can write into (anyone able to
// drop a file in previous/ adds a trust anchor without needing a key).
func TestScenarioLoadRefusesWritableCADirs(t *testing.T) {
	for _, tc := range []struct {
		name string
		sub  string
		perm os.FileMode
	}{
		{"ca dir world-writable", "", 0o777},
		{"ca dir group-writable", "", 0o770},
		{"previous dir world-writable", certs.PreviousDir, 0o777},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := certstest.NewClock(t0)
			dir, _ := initCA(t, certs.WithClock(clk))
			if _, err := certs.Rotate(dir, time.Hour, quiet, certs.WithClock(clk)); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, tc.sub)
			if err := os.Chmod(p, tc.perm); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Chmod(p, 0o700) })
			// An outsider drops their own CA (no key needed) into previous/.
			foreign, _ := selfSigned(t, true, t0.Add(24*time.Hour))
			writeFile(t, filepath.Join(dir, certs.PreviousDir, "f00d.crt"), foreign, 0o644)
			writeFile(t, filepath.Join(dir, certs.PreviousDir, "f00d.retire"), []byte(t0.Add(time.Hour).Format(time.RFC3339)), 0o644)
			ca, err := certs.Load(dir, quiet, certs.WithClock(clk))
			if err == nil {
				t.Fatalf("Load accepts %s (mode %o): the bundle has %d certificates, an injected one among them", tc.name, tc.perm, len(bundleCerts(t, ca.TrustBundle())))
			}
			if !strings.Contains(err.Error(), "group or others can add certificates") {
				t.Errorf("refused, but not for the directory's mode: %v", err)
			}
		})
	}
}
