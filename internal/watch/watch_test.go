package watch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// harness runs a Watcher and counts callbacks.
type harness struct {
	t     *testing.T
	calls chan struct{}
}

func start(t *testing.T, paths ...string) *harness {
	t.Helper()
	w, err := New(paths, WithDebounce(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, calls: make(chan struct{}, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx, func(context.Context) { h.calls <- struct{}{} })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// expectCall waits for one callback; the deadline is generous because CI
// machines are slow, and it only bounds a failure.
func (h *harness) expectCall(what string) {
	h.t.Helper()
	select {
	case <-h.calls:
	case <-time.After(10 * time.Second):
		h.t.Fatalf("no change reported after %s", what)
	}
	h.drain()
}

// drain swallows trailing callbacks of one burst.
func (h *harness) drain() {
	for {
		select {
		case <-h.calls:
		case <-time.After(100 * time.Millisecond):
			return
		}
	}
}

func (h *harness) expectNone(what string) {
	h.t.Helper()
	select {
	case <-h.calls:
		h.t.Fatalf("unexpected change reported after %s", what)
	case <-time.After(300 * time.Millisecond):
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFileTarget(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gatehouse.yaml")
	write(t, cfg, "a: 1")
	h := start(t, cfg)

	write(t, cfg, "a: 2")
	h.expectCall("in-place write")

	// Editors such as vim write a temp file and rename it over the original.
	tmp := filepath.Join(dir, ".gatehouse.yaml.swp")
	write(t, tmp, "a: 3")
	if err := os.Rename(tmp, cfg); err != nil {
		t.Fatal(err)
	}
	h.expectCall("rename-on-save")

	write(t, filepath.Join(dir, "unrelated.txt"), "x")
	h.expectNone("a write to a sibling file")

	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	h.expectCall("delete")
	write(t, cfg, "a: 4")
	h.expectCall("recreate")
}

func TestDirectoryTree(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "policies")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h := start(t, dir)

	write(t, filepath.Join(dir, "a.rego"), "package a")
	h.expectCall("new file")

	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	h.expectCall("new subdirectory")
	write(t, filepath.Join(sub, "b.rego"), "package b")
	h.expectCall("write in a new subdirectory")

	// The whole directory deleted and created again, as by `rm -rf; cp -r`.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	h.expectCall("directory removed")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h.expectCall("directory recreated")
	write(t, filepath.Join(dir, "c.rego"), "package c")
	h.expectCall("write in the recreated directory")
}

func TestMissingTargetAppears(t *testing.T) {
	root := t.TempDir()
	target := filepath.Join(root, "later", "deeper") + string(filepath.Separator)
	h := start(t, target)
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	h.expectCall("target created")
	write(t, filepath.Join(target, "x.rego"), "package x")
	h.expectCall("write inside the new target")
}

// TestConfigMapSwap reproduces how the kubelet updates a ConfigMap volume:
// files are symlinks through "..data", which is itself a symlink to a
// timestamped directory; an update writes a new timestamped directory,
// points "..data_tmp" at it and renames that over "..data", then deletes the
// old directory. No watched file is ever written.
func TestConfigMapSwap(t *testing.T) {
	vol := t.TempDir()
	mk := func(ts, content string) {
		d := filepath.Join(vol, ts)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(d, "authz.rego"), content)
	}
	mk("..2026_11_23_01", "package v1")
	if err := os.Symlink("..2026_11_23_01", filepath.Join(vol, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "authz.rego"), filepath.Join(vol, "authz.rego")); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{vol, filepath.Join(vol, "authz.rego")} {
		t.Run(filepath.Base(target), func(t *testing.T) {
			h := start(t, target)
			next := "..2026_11_23_02" + filepath.Base(target)
			mk(next, "package v2")
			if err := os.Symlink(next, filepath.Join(vol, "..data_tmp")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(vol, "..data_tmp"), filepath.Join(vol, "..data")); err != nil {
				t.Fatal(err)
			}
			h.expectCall("..data swap")
			got, err := os.ReadFile(filepath.Join(vol, "authz.rego"))
			if err != nil || string(got) != "package v2" {
				t.Fatalf("after swap read %q, %v", got, err)
			}
		})
	}
}
