package policy

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestConfigMapVolumeUpdate loads policies from a directory laid out as the
// kubelet mounts a ConfigMap — every file a symlink through "..data" to a
// timestamped directory — and updates it the way `kubectl apply` does: a
// new timestamped directory, "..data_tmp" pointed at it and renamed over
// "..data", the old directory removed. No policy file is ever written.
// The engine must serve the new content and must not load the timestamped
// copies as extra modules.
func TestConfigMapVolumeUpdate(t *testing.T) {
	vol := t.TempDir()
	version := func(ts, allowed string) {
		d := filepath.Join(vol, ts)
		must(t, os.Mkdir(d, 0o755))
		must(t, os.WriteFile(filepath.Join(d, "authz.rego"), []byte("package envoy.authz\n\nallow if input.user == \""+allowed+"\"\n"), 0o644))
	}
	version("..2026_11_23_10_00_00.1", "alice")
	must(t, os.Symlink("..2026_11_23_10_00_00.1", filepath.Join(vol, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "authz.rego"), filepath.Join(vol, "authz.rego")))

	ctx := context.Background()
	e, err := New(ctx, WithDir(vol), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	allows := func(user string) bool {
		t.Helper()
		d, err := e.Evaluate(ctx, ast.NewObject([2]*ast.Term{ast.StringTerm("user"), ast.StringTerm(user)}))
		if err != nil && d.Allowed {
			t.Fatalf("allowed with error %v", err)
		}
		return d.Allowed
	}
	if !allows("alice") || allows("bob") {
		t.Fatal("first version not served")
	}
	if files := e.Status().Files; len(files) != 1 || files[0] != "authz.rego" {
		t.Fatalf("loaded %v, want only authz.rego (the ..data copies are hidden)", files)
	}

	version("..2026_11_23_10_05_00.2", "bob")
	must(t, os.Symlink("..2026_11_23_10_05_00.2", filepath.Join(vol, "..data_tmp")))
	must(t, os.Rename(filepath.Join(vol, "..data_tmp"), filepath.Join(vol, "..data")))
	must(t, os.RemoveAll(filepath.Join(vol, "..2026_11_23_10_00_00.1")))
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if allows("alice") || !allows("bob") {
		t.Fatal("the swapped-in version is not served")
	}
}
