package certs_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/certs/certstest"
)

type dirFixture struct {
	ca          *certs.CA
	good, good2 *certs.Leaf // valid at t0 from ca
	expired     *certs.Leaf // from ca, expired before t0
	foreign     *certs.Leaf // valid, but from another CA
	srcClock    *certstest.Clock
	dir         string
	changes     []string
	source      *certs.DirSource
}

func newDirFixture(t *testing.T) *dirFixture {
	t.Helper()
	caClock := certstest.NewClock(t0.Add(-72 * time.Hour))
	_, ca := initCA(t, certs.WithClock(caClock))
	f := &dirFixture{ca: ca, srcClock: certstest.NewClock(t0), dir: t.TempDir()}
	var err error
	if f.expired, err = ca.IssueRole("svc", "old", certs.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	caClock.Set(t0)
	if f.good, err = ca.IssueRole("svc", "edge", certs.WithDNSNames("edge.example")); err != nil {
		t.Fatal(err)
	}
	if f.good2, err = ca.IssueRole("svc", "edge"); err != nil {
		t.Fatal(err)
	}
	_, other := initCA(t, certs.WithClock(caClock))
	if f.foreign, err = other.IssueRole("svc", "edge"); err != nil {
		t.Fatal(err)
	}
	f.source = certs.NewDirSource(f.dir, ca.TrustPool(), certs.WithSourceClock(f.srcClock),
		certs.WithSourceLogger(slog.New(slog.DiscardHandler)))
	f.source.OnChange(func(name string, l *certs.Leaf) {
		s := "-"
		if l != nil {
			s = l.Serial
		}
		f.changes = append(f.changes, name+"="+s)
	})
	return f
}

func (f *dirFixture) write(t *testing.T, name string, l *certs.Leaf) {
	t.Helper()
	if err := certs.WriteLeaf(filepath.Join(f.dir, name), l); err != nil {
		t.Fatal(err)
	}
}

func TestDirSourceLoadsAndReplaces(t *testing.T) {
	f := newDirFixture(t)
	f.write(t, "edge", f.good)
	writeFile(t, filepath.Join(f.dir, "README.md"), []byte("not a cert"), 0o644)
	writeFile(t, filepath.Join(f.dir, ".hidden.crt"), []byte("garbage"), 0o644)
	if err := f.source.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	got, ok := f.source.Get("edge")
	if !ok || got.Serial != f.good.Serial || got.SPIFFEID != "spiffe://gatehouse.local/svc/edge" {
		t.Fatalf("Get(edge) = %v, %v", got, ok)
	}
	if names := f.source.Names(); len(names) != 1 {
		t.Fatalf("Names = %v, want only edge", names)
	}
	if got, _ := os.Stat(filepath.Join(f.dir, "edge.key")); got.Mode().Perm() != 0o600 {
		t.Errorf("WriteLeaf key mode %04o", got.Mode().Perm())
	}
	// Unchanged files: no change event.
	if err := f.source.Reload(); err != nil {
		t.Fatal(err)
	}
	f.write(t, "edge", f.good2)
	if err := f.source.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.source.Get("edge"); got.Serial != f.good2.Serial {
		t.Fatal("new good pair not taken")
	}
	os.Remove(filepath.Join(f.dir, "edge.crt"))
	os.Remove(filepath.Join(f.dir, "edge.key"))
	if err := f.source.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.source.Get("edge"); ok {
		t.Fatal("removed pair still served")
	}
	want := []string{"edge=" + f.good.Serial, "edge=" + f.good2.Serial, "edge=-"}
	if strings.Join(f.changes, " ") != strings.Join(want, " ") {
		t.Fatalf("changes %v, want %v", f.changes, want)
	}
}

func TestDirSourceKeepsLastGood(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(t *testing.T, f *dirFixture)
		wantErr string
		file    string
	}{
		{name: "mismatched pair", file: "edge.key", wantErr: "does not match",
			mutate: func(t *testing.T, f *dirFixture) {
				writeFile(t, filepath.Join(f.dir, "edge.crt"), f.good2.ChainPEM, 0o644)
			}},
		{name: "expired", file: "edge.crt", wantErr: "expired",
			mutate: func(t *testing.T, f *dirFixture) { f.write(t, "edge", f.expired) }},
		{name: "not rooted in CA", file: "edge.crt", wantErr: "does not verify",
			mutate: func(t *testing.T, f *dirFixture) { f.write(t, "edge", f.foreign) }},
		{name: "truncated cert", file: "edge.crt", wantErr: "truncated",
			mutate: func(t *testing.T, f *dirFixture) {
				f.write(t, "edge", f.good2)
				pem := f.good2.ChainPEM
				writeFile(t, filepath.Join(f.dir, "edge.crt"), pem[:len(pem)-40], 0o644)
			}},
		{name: "complete block then half-written one", file: "edge.crt", wantErr: "truncated",
			mutate: func(t *testing.T, f *dirFixture) {
				f.write(t, "edge", f.good2)
				pem := f.good2.ChainPEM
				writeFile(t, filepath.Join(f.dir, "edge.crt"), append(append([]byte{}, pem...), pem[:100]...), 0o644)
			}},
		{name: "truncated key", file: "edge.key", wantErr: "truncated",
			mutate: func(t *testing.T, f *dirFixture) {
				f.write(t, "edge", f.good2)
				k := f.good2.KeyPEM
				writeFile(t, filepath.Join(f.dir, "edge.key"), k[:len(k)/2], 0o600)
			}},
		{name: "empty cert", file: "edge.crt", wantErr: "empty",
			mutate: func(t *testing.T, f *dirFixture) { writeFile(t, filepath.Join(f.dir, "edge.crt"), nil, 0o644) }},
		{name: "key missing", file: "edge.key", wantErr: "missing",
			mutate: func(t *testing.T, f *dirFixture) { os.Remove(filepath.Join(f.dir, "edge.key")) }},
		{name: "cert is a key", file: "edge.crt", wantErr: "want CERTIFICATE",
			mutate: func(t *testing.T, f *dirFixture) {
				writeFile(t, filepath.Join(f.dir, "edge.crt"), f.good.KeyPEM, 0o644)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newDirFixture(t)
			f.write(t, "edge", f.good)
			f.write(t, "other", f.good2)
			if err := f.source.Reload(); err != nil {
				t.Fatal(err)
			}
			f.changes = nil
			tt.mutate(t, f)
			err := f.source.Reload()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), filepath.Join(f.dir, tt.file)) {
				t.Fatalf("Reload error = %v, want %q naming %s", err, tt.wantErr, tt.file)
			}
			if got, ok := f.source.Get("edge"); !ok || got.Serial != f.good.Serial {
				t.Fatalf("Get(edge) = %v, %v; want the last good leaf %s", got, ok, f.good.Serial)
			}
			if got, ok := f.source.Get("other"); !ok || got.Serial != f.good2.Serial {
				t.Fatal("an unrelated good pair was lost")
			}
			if f.source.Err("edge") == nil || f.source.Err("other") != nil {
				t.Errorf("Err(edge)=%v Err(other)=%v", f.source.Err("edge"), f.source.Err("other"))
			}
			if len(f.changes) != 0 {
				t.Errorf("bad files produced change events %v", f.changes)
			}
			// Fixing the files recovers.
			f.write(t, "edge", f.good2)
			if err := f.source.Reload(); err != nil {
				t.Fatalf("Reload after fix: %v", err)
			}
			if got, _ := f.source.Get("edge"); got.Serial != f.good2.Serial || f.source.Err("edge") != nil {
				t.Fatal("fixed pair not taken")
			}
		})
	}
}

func TestLoadPairRequiresRootsAndValidity(t *testing.T) {
	f := newDirFixture(t)
	f.write(t, "edge", f.good)
	crt, key := filepath.Join(f.dir, "edge.crt"), filepath.Join(f.dir, "edge.key")
	if _, err := certs.LoadPair(crt, key, nil); err == nil {
		t.Fatal("LoadPair with nil roots succeeded")
	}
	leaf, err := certs.LoadPair(crt, key, f.ca.TrustPool(), certs.WithSourceClock(f.srcClock))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.TLSCertificate(); err != nil {
		t.Fatalf("TLSCertificate: %v", err)
	}
	before := certstest.NewClock(f.good.Cert.NotBefore.Add(-time.Hour))
	if _, err := certs.LoadPair(crt, key, f.ca.TrustPool(), certs.WithSourceClock(before)); err == nil || !strings.Contains(err.Error(), "not valid until") {
		t.Fatalf("not-yet-valid: %v", err)
	}
}

func TestDirSourceMissingDirKeepsPairs(t *testing.T) {
	f := newDirFixture(t)
	f.write(t, "edge", f.good)
	if err := f.source.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(f.dir); err != nil {
		t.Fatal(err)
	}
	if err := f.source.Reload(); err == nil || !strings.Contains(err.Error(), f.dir) {
		t.Fatalf("Reload of a missing directory: %v", err)
	}
	if _, ok := f.source.Get("edge"); !ok {
		t.Fatal("pair dropped when the directory became unreadable")
	}
}

// TestDirSourceDropsExpiredLeaves: Run drops each operator leaf when it
// expires and says so (leaf nil), so an expired certificate is never
// served; a Reload re-plans the wait for a leaf that expires sooner.
func TestDirSourceDropsExpiredLeaves(t *testing.T) {
	f := newDirFixture(t)
	short, err := f.ca.IssueRole("svc", "short", certs.WithTTL(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	f.write(t, "edge", f.good) // 24h
	if err := f.source.Reload(); err != nil {
		t.Fatal(err)
	}
	gone := make(chan string, 4)
	f.source.OnChange(func(name string, l *certs.Leaf) {
		if l == nil {
			gone <- name
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	done := make(chan error, 1)
	go func() { done <- f.source.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if err := f.srcClock.WaitForDeadline(ctx, f.good.NotAfter); err != nil {
		t.Fatal(err)
	}
	// A pair that expires sooner arrives: Run must wake for it first.
	f.write(t, "short", short)
	if err := f.source.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		leaf *certs.Leaf
		name string
		kept string
	}{
		{short, "short", "edge"},
		{f.good, "edge", ""},
	} {
		if err := f.srcClock.WaitForDeadline(ctx, tc.leaf.NotAfter); err != nil {
			t.Fatal(err)
		}
		f.srcClock.Set(tc.leaf.NotAfter)
		select {
		case name := <-gone:
			if name != tc.name {
				t.Fatalf("%s dropped at %s's expiry", name, tc.name)
			}
		case <-ctx.Done():
			t.Fatalf("%s not dropped at its expiry", tc.name)
		}
		if _, ok := f.source.Get(tc.name); ok {
			t.Errorf("expired %s still served", tc.name)
		}
		if tc.kept != "" {
			if _, ok := f.source.Get(tc.kept); !ok {
				t.Errorf("%s dropped with %s", tc.kept, tc.name)
			}
		}
	}
	if names := f.source.Names(); len(names) != 0 {
		t.Errorf("Names after every expiry = %v", names)
	}
}
