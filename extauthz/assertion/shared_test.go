package assertion

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSharedDir: replicas opening one shared key directory sign with the
// same key and never write, generate or rotate; a replaced keys.json is
// picked up, and bad directories are refused.
func TestSharedDir(t *testing.T) {
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	opts := []KeyOption{WithKeyClock(c.now), WithRetention(35 * time.Second), WithKeyLogger(quiet), WithRotation(time.Hour)}

	// The operator's file: made here by a self-managed set, then copied.
	src := t.TempDir()
	own, err := OpenKeySet(filepath.Join(src, "a"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(t.TempDir(), "secret")
	if err := os.Mkdir(shared, 0o755); err != nil { // a Secret mount is not 0700
		t.Fatal(err)
	}
	copyKeys := func() {
		t.Helper()
		raw, err := os.ReadFile(filepath.Join(src, "a", keysFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shared, keysFile), raw, 0o440); err != nil {
			t.Fatal(err)
		}
	}
	copyKeys()

	sharedOpts := append(slices.Clone(opts), WithSharedDir())
	r1, err := OpenKeySet(shared, sharedOpts...)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := OpenKeySet(shared, sharedOpts...)
	if err != nil {
		t.Fatal(err)
	}
	if r1.CurrentKeyID() != own.CurrentKeyID() || r2.CurrentKeyID() != own.CurrentKeyID() {
		t.Fatalf("replicas sign with %s and %s, want the file's %s", r1.CurrentKeyID(), r2.CurrentKeyID(), own.CurrentKeyID())
	}
	if string(r1.JWKS()) != string(r2.JWKS()) {
		t.Error("replicas publish different JWKS")
	}

	// Past the rotation time a shared set warns but never makes a key.
	c.set(c.now().Add(3 * time.Hour))
	if _, err := r1.Maintain(); err != nil {
		t.Fatal(err)
	}
	if ids := r1.KeyIDs(); len(ids) != 1 || ids[0] != own.CurrentKeyID() {
		t.Errorf("shared set generated keys: %v", ids)
	}
	if err := r1.Rotate(); err == nil {
		t.Error("Rotate on a shared directory succeeded")
	}
	entries, _ := os.ReadDir(shared)
	if len(entries) != 1 {
		t.Errorf("the shared directory was written to: %v", entries)
	}

	// The operator rotates by replacing the file: picked up by Maintain.
	if err := own.Rotate(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(shared, keysFile), 0o640); err != nil {
		t.Fatal(err)
	}
	copyKeys()
	if changed, err := r2.Maintain(); err != nil || !changed {
		t.Fatalf("Maintain after the file changed: changed %v err %v", changed, err)
	}
	if r2.CurrentKeyID() != own.CurrentKeyID() || len(r2.KeyIDs()) != 2 {
		t.Errorf("after replacement: current %s keys %v, want %s and the old key kept for the overlap", r2.CurrentKeyID(), r2.KeyIDs(), own.CurrentKeyID())
	}
	// Past the retention the superseded key leaves the JWKS.
	c.set(c.now().Add(time.Minute))
	if _, err := r2.Maintain(); err != nil {
		t.Fatal(err)
	}
	if ids := r2.KeyIDs(); len(ids) != 1 || ids[0] != own.CurrentKeyID() {
		t.Errorf("after retention: keys %v", ids)
	}

	for _, tc := range []struct {
		name  string
		setup func(dir string)
		want  string
	}{
		{"missing file", func(string) {}, "no such file"},
		{"readable by others", func(dir string) {
			raw, _ := os.ReadFile(filepath.Join(src, "a", keysFile))
			_ = os.WriteFile(filepath.Join(dir, keysFile), raw, 0o644)
		}, "must not be accessible"},
		{"no key active yet", func(dir string) {
			_ = os.WriteFile(filepath.Join(dir, keysFile), []byte(`{"version":1,"keys":[]}`), 0o600)
		}, "no key is active"},
		{"garbage", func(dir string) {
			_ = os.WriteFile(filepath.Join(dir, keysFile), []byte(`{`), 0o600)
		}, "unexpected end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(dir)
			_, err := OpenKeySet(dir, sharedOpts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
			if _, statErr := os.Stat(filepath.Join(dir, keysFile)); tc.name == "missing file" && statErr == nil {
				t.Error("a key file was created in the shared directory")
			}
		})
	}
}
