// Package watch turns file-system events under a set of files and directories
// into debounced "something changed" callbacks.
//
// It watches directories, never single inodes, so that the ways files really
// change on disk all arrive: editors that write a temp file and rename it over
// the original, directories deleted and created again, and Kubernetes'
// ConfigMap volumes, which swap a "..data" symlink atomically instead of
// writing files. The callback is expected to re-read and validate whatever it
// owns; the watcher only says when.
package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is long enough to swallow the burst of events one save
// produces (write, chmod, rename) and short enough to feel live.
const DefaultDebounce = 150 * time.Millisecond

// maxWatchedDirs bounds how many directories one Watcher registers, so a
// mistaken path such as "/" cannot exhaust inotify watches.
const maxWatchedDirs = 4096

// Watcher reports changes under its targets. Create it with New and start
// it with Run.
type Watcher struct {
	targets  []target
	debounce time.Duration
	log      *slog.Logger
	fsw      *fsnotify.Watcher
	watched  map[string]bool
}

type target struct {
	path  string // cleaned absolute path
	isDir bool   // a directory tree is watched recursively
	// resolved is where a file target that is a symlink points, as of the
	// last sync ("" otherwise): its directory is watched too, so an edit
	// of the file behind the link is seen.
	resolved string
}

// Option configures a Watcher.
type Option func(*Watcher)

// WithDebounce sets the quiet period after the last event before the
// callback runs.
func WithDebounce(d time.Duration) Option { return func(w *Watcher) { w.debounce = d } }

// WithLogger sets the logger for watch errors.
func WithLogger(l *slog.Logger) Option { return func(w *Watcher) { w.log = l } }

// New prepares a watcher for paths, each a file or a directory tree. A path
// may not exist yet: its nearest existing ancestor is watched until it
// appears. Whether a path is a directory is decided now; a path that does not
// exist is treated as a file unless it ends in a separator.
func New(paths []string, opts ...Option) (*Watcher, error) {
	if len(paths) == 0 {
		return nil, errors.New("watch: no paths")
	}
	w := &Watcher{debounce: DefaultDebounce, log: slog.Default(), watched: map[string]bool{}}
	for _, o := range opts {
		o(w)
	}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("watch: %s: %w", p, err)
		}
		t := target{path: filepath.Clean(abs), isDir: strings.HasSuffix(p, string(filepath.Separator))}
		if fi, err := os.Stat(abs); err == nil {
			t.isDir = fi.IsDir()
		}
		w.targets = append(w.targets, t)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	w.fsw = fsw
	w.sync()
	return w, nil
}

// Run delivers a call to onChange after each burst of relevant events, until
// ctx is done. Calls never overlap. It closes the watcher when it returns.
func (w *Watcher) Run(ctx context.Context, onChange func(context.Context)) error {
	defer w.fsw.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return errors.New("watch: event channel closed")
			}
			if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				// The kernel drops a watch with its directory; forget it
				// so a directory of that name created before the next sync
				// is watched again.
				w.forget(filepath.Clean(ev.Name))
			}
			if w.relevant(ev.Name) {
				timer.Reset(w.debounce)
			}
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return errors.New("watch: error channel closed")
			}
			// An overflow means events were lost: treat it as a change so the
			// owner re-reads everything.
			w.log.Warn("file watch error", "err", err)
			timer.Reset(w.debounce)
		case <-timer.C:
			w.sync()
			onChange(ctx)
		}
	}
}

// relevant reports whether an event on name can affect a target: anything
// inside a watched tree, the target itself, an ancestor on the way to a
// missing target, or a Kubernetes "..data"-style entry beside a file target.
func (w *Watcher) relevant(name string) bool {
	name = filepath.Clean(name)
	for _, t := range w.targets {
		switch {
		case name == t.path, isWithin(t.path, name) && t.isDir:
			return true
		case isWithin(name, t.path): // an ancestor of the target appeared or went
			return true
		case filepath.Dir(name) == filepath.Dir(t.path) && strings.HasPrefix(filepath.Base(name), ".."):
			return true
		case t.resolved != "" && name == t.resolved:
			return true
		}
	}
	return false
}

// sync (re)registers the directories each target needs: the tree of a
// directory target, the parent of a file target, and the nearest existing
// ancestor of a missing one. Stale registrations of removed directories are
// dropped by fsnotify itself.
func (w *Watcher) sync() {
	want := map[string]bool{}
	for i := range w.targets {
		t := &w.targets[i]
		// The parent is always watched so a deleted and recreated target is seen.
		if dir := existingAncestor(filepath.Dir(t.path)); dir != "" {
			want[dir] = true
		}
		if !t.isDir {
			t.resolved = ""
			if fi, err := os.Lstat(t.path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				if r, err := filepath.EvalSymlinks(t.path); err == nil && filepath.Dir(r) != filepath.Dir(t.path) {
					t.resolved = r
					want[filepath.Dir(r)] = true
				}
			}
			continue
		}
		// The trailing separator makes a target that is itself a symlink
		// to a directory walked (and watched: inotify follows it) too.
		_ = filepath.WalkDir(t.path+string(filepath.Separator), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // vanished mid-walk: the next event resyncs
			}
			if len(want) >= maxWatchedDirs {
				return fs.SkipAll
			}
			// Symlinks below the target are not followed: in a ConfigMap
			// volume "..data" points at a timestamped directory that is
			// itself in the tree.
			if d.IsDir() {
				want[filepath.Clean(p)] = true
			}
			return nil
		})
	}
	for dir := range want {
		if w.watched[dir] {
			continue
		}
		if err := w.fsw.Add(dir); err != nil {
			w.log.Warn("cannot watch directory", "dir", dir, "err", err)
			continue
		}
		w.watched[dir] = true
	}
	for dir := range w.watched {
		if !want[dir] {
			_ = w.fsw.Remove(dir) // may already be gone with the directory
			delete(w.watched, dir)
		}
	}
}

// forget drops the registration of dir and every directory under it (a
// removed or renamed tree), so sync adds them again if they reappear.
func (w *Watcher) forget(dir string) {
	for d := range w.watched {
		if d == dir || isWithin(dir, d) {
			_ = w.fsw.Remove(d) // usually gone with the directory already
			delete(w.watched, d)
		}
	}
}

func existingAncestor(p string) string {
	for {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return p
		}
		parent := filepath.Dir(p)
		if parent == p {
			return ""
		}
		p = parent
	}
}

// isWithin reports whether p lies strictly inside dir.
func isWithin(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
