package policy

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/watch"
)

// These scenarios wire an Engine to a real watch.Watcher the way
// cmd/gatehouse does (the policy directory watched as a tree, Reload on each
// callback) and change the directory the ways it changes in production. They
// check who the engine then allows: the newest valid policy must serve, and
// nothing that failed to load may. A scenario that exposes a bug is skipped
// with "BUG:"; GATEHOUSE_RUN_BUGS=1 runs it anyway.

const liveDeadline = 10 * time.Second

var users = []string{"alice", "bob", "carol", "mallory"}

// only is the policy allowing exactly user.
func only(user string) string {
	return "package envoy.authz\n\ndefault allow := false\n\nallow if input.user == \"" + user + "\"\n"
}

var runBugs = os.Getenv("GATEHOUSE_RUN_BUGS") != ""

// live is an engine reloaded by a watcher on its directory.
type live struct {
	t   *testing.T
	e   *Engine
	dir string
	// reloads counts watcher-driven reloads, failed ones included.
	reloads atomic.Int64
}

func startLive(t *testing.T, dir string, debounce time.Duration) *live {
	t.Helper()
	e, err := New(t.Context(), WithDir(dir), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	l := &live{t: t, e: e, dir: dir}
	w, err := watch.New([]string{dir + string(filepath.Separator)}, watch.WithDebounce(debounce), watch.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	// t.Context is cancelled before cleanups run, so Run has returned by
	// the time the temporary directory is removed.
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(t.Context(), l.reload) }()
	t.Cleanup(func() { <-stopped })
	return l
}

// reload is the watcher's callback, as cmd/gatehouse wires it.
func (l *live) reload(ctx context.Context) {
	_ = l.e.Reload(ctx)
	l.reloads.Add(1)
}

func (l *live) reloadCount() int64 { return l.reloads.Load() }

// allowed lists which of users the serving revision allows.
func (l *live) allowed() string {
	l.t.Helper()
	var out []string
	for _, u := range users {
		d, err := l.e.Evaluate(l.t.Context(), mustJSONValue(l.t, `{"user": "`+u+`"}`))
		if err != nil && d.Allowed {
			l.t.Fatalf("%s allowed with error %v", u, err)
		}
		if d.Allowed {
			out = append(out, u)
		}
	}
	return strings.Join(out, ",")
}

// waitServing polls until exactly want (comma-separated) is allowed.
func (l *live) waitServing(what, want string) {
	l.t.Helper()
	deadline := time.Now().Add(liveDeadline)
	for {
		got := l.allowed()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: serving %q, want %q (status %+v)", what, got, want, l.e.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitRejected waits until a reload after the first n failed, then checks
// the last good policy still serves.
func (l *live) waitRejected(what string, n int64, serving string) {
	l.t.Helper()
	deadline := time.Now().Add(liveDeadline)
	for l.reloadCount() <= n || l.e.Status().LastError == "" {
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: no failed reload after %d reloads (status %+v)", what, l.reloadCount(), l.e.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := l.allowed(); got != serving {
		l.t.Fatalf("%s: a rejected reload changed what serves: %q, want %q", what, got, serving)
	}
}

func (l *live) write(name, content string) {
	l.t.Helper()
	writeFiles(l.t, l.dir, map[string]string{name: content})
}

// TestWatchedReloadScenarios starts serving "alice", changes the directory
// one way, checks what then serves, and checks that a later in-place edit
// (to "carol") is still picked up.
func TestWatchedReloadScenarios(t *testing.T) {
	const debounce = 80 * time.Millisecond
	for _, tc := range []struct {
		name string
		// change alters the directory and waits for its effect.
		change func(t *testing.T, l *live)
		bug    string
	}{{
		name: "editor renames a temp file over the policy",
		change: func(t *testing.T, l *live) {
			tmp := filepath.Join(l.dir, ".authz.rego.swp")
			must(t, os.WriteFile(tmp, []byte(only("bob")), 0o644))
			must(t, os.Rename(tmp, filepath.Join(l.dir, "authz.rego")))
			l.waitServing("rename over", "bob")
		},
	}, {
		name: "cp over the policy (truncate, then write)",
		change: func(t *testing.T, l *live) {
			f, err := os.OpenFile(filepath.Join(l.dir, "authz.rego"), os.O_WRONLY|os.O_TRUNC, 0)
			must(t, err)
			p := only("bob")
			_, err = f.WriteString(p[:len(p)/2])
			must(t, err)
			_, err = f.WriteString(p[len(p)/2:])
			must(t, err)
			must(t, f.Close())
			l.waitServing("cp", "bob")
		},
	}, {
		name: "syntax error saved, then fixed",
		change: func(t *testing.T, l *live) {
			n := l.reloadCount()
			l.write("authz.rego", syntaxError)
			l.waitRejected("syntax error", n, "alice")
			l.write("authz.rego", only("bob"))
			l.waitServing("fixed", "bob")
		},
	}, {
		name: "truncated to zero bytes, then written",
		change: func(t *testing.T, l *live) {
			n := l.reloadCount()
			must(t, os.Truncate(filepath.Join(l.dir, "authz.rego"), 0))
			l.waitRejected("empty file", n, "alice")
			l.write("authz.rego", only("bob"))
			l.waitServing("written", "bob")
		},
	}, {
		name: "policy deleted and created again at once",
		change: func(t *testing.T, l *live) {
			must(t, os.Remove(filepath.Join(l.dir, "authz.rego")))
			l.write("authz.rego", only("bob"))
			l.waitServing("recreate", "bob")
		},
	}, {
		name: "a second policy file in a new subdirectory",
		change: func(t *testing.T, l *live) {
			l.write("extra/bob.rego", "package envoy.authz\n\nallow if input.user == \"bob\"\n")
			l.waitServing("new subdirectory", "alice,bob")
			l.write("extra/bob.rego", "package envoy.authz\n\nallow if input.user == \"mallory\"\n")
			l.waitServing("edit in the new subdirectory", "alice,mallory")
			must(t, os.RemoveAll(filepath.Join(l.dir, "extra")))
			l.waitServing("subdirectory removed", "alice")
		},
	}, {
		name: "directory deleted, recreated after a quiet period",
		change: func(t *testing.T, l *live) {
			n := l.reloadCount()
			must(t, os.RemoveAll(l.dir))
			l.waitRejected("directory deleted", n, "alice")
			l.write("authz.rego", only("bob"))
			l.waitServing("directory recreated", "bob")
		},
	}, {
		name: "directory deleted and recreated at once (rm -rf; cp -r)",
		change: func(t *testing.T, l *live) {
			must(t, os.RemoveAll(l.dir))
			l.write("authz.rego", only("bob"))
			l.waitServing("directory replaced", "bob")
		},
	}, {
		name: "directory swapped by rename (mv new into place)",
		change: func(t *testing.T, l *live) {
			next := l.dir + ".next"
			writeFiles(t, next, map[string]string{"authz.rego": only("bob")})
			must(t, os.Rename(l.dir, l.dir+".old"))
			must(t, os.Rename(next, l.dir))
			l.waitServing("directory swapped", "bob")
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.bug != "" && !runBugs {
				t.Skip("BUG: " + tc.bug)
			}
			dir := filepath.Join(t.TempDir(), "policies")
			writeFiles(t, dir, map[string]string{"authz.rego": only("alice")})
			l := startLive(t, dir, debounce)
			if got := l.allowed(); got != "alice" {
				t.Fatalf("first load serves %q", got)
			}
			tc.change(t, l)
			time.Sleep(3 * debounce) // let the change's burst end (not an assertion)
			l.write("authz.rego", only("carol"))
			l.waitServing("a later in-place edit", "carol")
			if st := l.e.Status(); st.LastError != "" {
				t.Fatalf("last reload failed: %s", st.LastError)
			}
		})
	}
}

// TestWatchedConfigMapUpdates updates a ConfigMap-mounted policy directory
// several times the way the kubelet does, with the watcher driving reloads:
// each version must serve in turn, and the timestamped copies must never be
// loaded as modules of their own.
func TestWatchedConfigMapUpdates(t *testing.T) {
	vol := filepath.Join(t.TempDir(), "policies")
	must(t, os.Mkdir(vol, 0o755))
	version := 0
	publish := func(user string) {
		version++
		ts := filepath.Join(vol, "..2026_11_23_10_0"+string(rune('0'+version))+"_00.1")
		writeFiles(t, ts, map[string]string{"authz.rego": only(user), "data.json": `{"v": ` + string(rune('0'+version)) + `}`})
		link := filepath.Join(vol, "..data")
		old, _ := os.Readlink(link)
		must(t, os.Symlink(filepath.Base(ts), link+"_tmp"))
		must(t, os.Rename(link+"_tmp", link))
		if old != "" {
			must(t, os.RemoveAll(filepath.Join(vol, old)))
		}
	}
	publish("alice")
	for _, f := range []string{"authz.rego", "data.json"} {
		must(t, os.Symlink(filepath.Join("..data", f), filepath.Join(vol, f)))
	}
	l := startLive(t, vol, 50*time.Millisecond)
	for _, u := range []string{"bob", "carol", "alice", "mallory"} {
		publish(u)
		l.waitServing("ConfigMap version "+u, u)
		if st := l.e.Status(); !slices.Equal(st.Files, []string{"authz.rego", "data.json"}) || st.LastError != "" {
			t.Fatalf("after version %s: files %v, last error %q", u, st.Files, st.LastError)
		}
	}
}

// TestWatchedRapidSavesLastWins saves many versions, valid and broken,
// faster than the debounce: the engine must end on the last one, and no
// broken version may ever have been recorded as serving.
func TestWatchedRapidSavesLastWins(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policies")
	writeFiles(t, dir, map[string]string{"authz.rego": only("alice")})
	l := startLive(t, dir, 80*time.Millisecond)
	for i := range 60 {
		content := only(users[i%len(users)])
		if i%3 == 1 {
			content = syntaxError
		}
		l.write("authz.rego", content)
	}
	l.write("authz.rego", only("carol"))
	l.waitServing("after the burst", "carol")
	if st := l.e.Status(); st.LastError != "" {
		t.Fatalf("the last reload failed: %s", st.LastError)
	}
	if n := l.reloadCount(); n > 20 {
		t.Fatalf("61 saves gave %d reloads; the debounce should coalesce them", n)
	}
}

// TestSymlinkedPolicyDir points the policy directory at another through a
// symlink, as a release layout (policies -> releases/v2) does.
func TestSymlinkedPolicyDir(t *testing.T) {
	root := t.TempDir()
	real := filepath.Join(root, "releases", "v1")
	writeFiles(t, real, map[string]string{"authz.rego": only("alice")})
	link := filepath.Join(root, "policies")
	must(t, os.Symlink(filepath.Join("releases", "v1"), link))
	e, err := New(t.Context(), WithDir(link), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if st := e.Status(); !slices.Equal(st.Files, []string{"authz.rego"}) {
		t.Fatalf("loaded %v from %s -> %s, want [authz.rego]", st.Files, link, real)
	}
	d, err := e.Evaluate(t.Context(), mustJSONValue(t, `{"user": "alice"}`))
	if err != nil || !d.Allowed {
		t.Fatalf("alice denied (%v): the symlinked policy is not served", err)
	}
	if errs := Check(link); len(errs) != 0 {
		t.Fatalf("Check: %v", errs)
	}
}

// TestWatchedHalfWrittenPolicy stalls a save half-way for longer than the
// debounce. The half written so far is a valid policy that allows more than
// either the old or the new one: the deny rule it relies on is in the half
// not yet written. It must not serve, even briefly.
func TestWatchedHalfWrittenPolicy(t *testing.T) {
	if !runBugs {
		t.Skip("BUG: " + "a save stalled longer than the watch debounce is reloaded half-written; when the prefix compiles (here: allow if not deny, deny not yet written) it serves and allows everyone")
	}
	const (
		debounce = 50 * time.Millisecond
		head     = "package envoy.authz\n\ndefault allow := false\n\nallow if not data.envoy.authz.deny\n\n"
		tail     = "deny if input.user == \"mallory\"\n"
	)
	dir := filepath.Join(t.TempDir(), "policies")
	writeFiles(t, dir, map[string]string{"authz.rego": only("alice")})
	l := startLive(t, dir, debounce)
	f, err := os.OpenFile(filepath.Join(dir, "authz.rego"), os.O_WRONLY|os.O_TRUNC, 0)
	must(t, err)
	defer f.Close()
	_, err = f.WriteString(head)
	must(t, err)
	// Observe for a while with the save stalled, as a slow disk or network
	// volume stalls it.
	for end := time.Now().Add(10 * debounce); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(l.allowed(), "mallory") {
			t.Fatalf("a half-written policy serves and allows mallory (status %+v)", l.e.Status())
		}
	}
	_, err = f.WriteString(tail)
	must(t, err)
	must(t, f.Close())
	l.waitServing("save completed", "alice,bob,carol")
}
