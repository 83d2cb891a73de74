package store

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// maxPendingNotes bounds the keys one watcher has yet to be told about.
const maxPendingNotes = 10_000

// watchers fans change notifications out to Watch callbacks, each on its
// own goroutine so a slow callback delays nobody else.
type watchers struct {
	log  *slog.Logger
	mu   sync.Mutex
	next int
	set  map[int]*watcher
}

type watcher struct {
	prefix  string
	fn      func(string)
	log     *slog.Logger
	mu      sync.Mutex
	pending map[string]struct{}
	order   []string
	wake    chan struct{}
}

func newWatchers(log *slog.Logger) *watchers {
	return &watchers{log: log, set: map[int]*watcher{}}
}

// add registers fn for prefix until ctx ends.
func (ws *watchers) add(ctx context.Context, prefix string, fn func(string)) {
	w := &watcher{prefix: prefix, fn: fn, log: ws.log, pending: map[string]struct{}{}, wake: make(chan struct{}, 1)}
	ws.mu.Lock()
	id := ws.next
	ws.next++
	ws.set[id] = w
	ws.mu.Unlock()
	go func() {
		defer func() {
			ws.mu.Lock()
			delete(ws.set, id)
			ws.mu.Unlock()
		}()
		w.run(ctx)
	}()
}

// notify tells every watcher whose prefix matches key.
func (ws *watchers) notify(key string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.set {
		if strings.HasPrefix(key, w.prefix) {
			w.enqueue(key)
		}
	}
}

// prefixes lists the watched prefixes (for a resync after reconnect).
func (ws *watchers) prefixes() []string {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	var out []string
	for _, w := range ws.set {
		if !slices.Contains(out, w.prefix) {
			out = append(out, w.prefix)
		}
	}
	return out
}

func (w *watcher) enqueue(key string) {
	w.mu.Lock()
	if _, dup := w.pending[key]; !dup {
		if len(w.pending) >= maxPendingNotes {
			w.mu.Unlock()
			w.log.Warn("store watch: too many pending notifications; one dropped", "prefix", w.prefix)
			return
		}
		w.pending[key] = struct{}{}
		w.order = append(w.order, key)
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		for {
			w.mu.Lock()
			if len(w.order) == 0 {
				w.mu.Unlock()
				break
			}
			key := w.order[0]
			w.order = w.order[1:]
			delete(w.pending, key)
			w.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			w.fn(key)
		}
	}
}
