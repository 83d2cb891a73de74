package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// LeafIssuer signs leaves; *CA implements it. The Rotator depends on this
// rather than on *CA so a rotated CA can be swapped in (SetIssuer) and tests
// can inject failures.
type LeafIssuer interface {
	Issue(spiffeID string, opts ...IssueOption) (*Leaf, error)
}

// Rotator defaults.
const (
	DefaultMaxIdentities = 10000
	DefaultRetryInterval = 30 * time.Second
)

// ErrTooManyIdentities is returned by Get when the identity bound is reached.
var ErrTooManyIdentities = errors.New("too many identities")

// Rotator keeps one current leaf per SPIFFE ID that has been asked for, and
// re-issues each at RenewAt (two thirds of its life), telling subscribers.
// The xDS control plane uses it to push SDS secrets. Run drives renewal
// with one timer set to the earliest due renewal; it never polls.
type Rotator struct {
	clock   Clock
	log     *slog.Logger
	max     int
	retry   time.Duration
	wake    chan struct{}
	mu      sync.Mutex
	issuer  LeafIssuer
	entries map[string]*rotEntry
	subs    map[int]func(id string, leaf *Leaf)
	nextSub int
	gen     uint64 // counts force requests; see rotEntry.forceGen
	// notifyMu keeps subscriber calls one at a time when Adopt (on its
	// caller's goroutine) and Run both have news.
	notifyMu sync.Mutex
}

type rotEntry struct {
	leaf  *Leaf
	opts  []IssueOption
	due   time.Time // RenewAt, or the next retry after a failure
	force bool      // re-issue at the next opportunity (new issuer)
	// forceGen is the Rotator's gen when force was last set: a renewal
	// clears force only if none was requested while it ran (a SetIssuer
	// during an Issue from the old issuer must not be lost).
	forceGen uint64
}

// RotatorOption configures a Rotator.
type RotatorOption func(*Rotator)

// WithRotatorClock replaces the wall clock (for tests). Give the CA the
// same clock.
func WithRotatorClock(c Clock) RotatorOption { return func(r *Rotator) { r.clock = c } }

// WithRotatorLogger sets the logger (default slog.Default()).
func WithRotatorLogger(l *slog.Logger) RotatorOption { return func(r *Rotator) { r.log = l } }

// WithMaxIdentities bounds how many identities the Rotator keeps.
func WithMaxIdentities(n int) RotatorOption { return func(r *Rotator) { r.max = n } }

// WithRetryInterval sets how long to wait after a failed renewal.
func WithRetryInterval(d time.Duration) RotatorOption { return func(r *Rotator) { r.retry = d } }

// NewRotator returns a Rotator issuing from iss.
func NewRotator(iss LeafIssuer, opts ...RotatorOption) *Rotator {
	r := &Rotator{
		clock:   SystemClock{},
		log:     slog.Default(),
		max:     DefaultMaxIdentities,
		retry:   DefaultRetryInterval,
		wake:    make(chan struct{}, 1),
		issuer:  iss,
		entries: map[string]*rotEntry{},
		subs:    map[int]func(string, *Leaf){},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Get returns the current leaf for spiffeID, issuing one (with opts, which
// are remembered for renewals) the first time the ID is asked for, when the
// held leaf has expired because renewal kept failing, or when opts ask for
// other DNS names than the held leaf carries (a config edit changed them;
// see Leaf.Satisfies). A call without opts takes the held leaf as it is.
func (r *Rotator) Get(spiffeID string, opts ...IssueOption) (*Leaf, error) {
	r.mu.Lock()
	e, ok := r.entries[spiffeID]
	if ok && r.clock.Now().Before(e.leaf.NotAfter) && (len(opts) == 0 || e.leaf.Satisfies(opts...)) {
		leaf := e.leaf
		r.mu.Unlock()
		return leaf, nil
	}
	if !ok && len(r.entries) >= r.max {
		r.mu.Unlock()
		return nil, fmt.Errorf("rotator: %s: %w (limit %d)", spiffeID, ErrTooManyIdentities, r.max)
	}
	iss := r.issuer
	if ok && len(opts) == 0 {
		opts = e.opts
	}
	r.mu.Unlock()

	// Issue outside the lock: key generation may be slow (RSA).
	leaf, err := iss.Issue(spiffeID, opts...)
	if err != nil {
		return nil, fmt.Errorf("rotator: %w", err)
	}

	r.mu.Lock()
	if cur, ok := r.entries[spiffeID]; ok && r.clock.Now().Before(cur.leaf.NotAfter) && cur.leaf.Satisfies(opts...) {
		// Someone else installed a valid leaf meanwhile; keep one per ID.
		leaf = cur.leaf
		r.mu.Unlock()
		return leaf, nil
	}
	if _, ok := r.entries[spiffeID]; !ok && len(r.entries) >= r.max {
		r.mu.Unlock()
		return nil, fmt.Errorf("rotator: %s: %w (limit %d)", spiffeID, ErrTooManyIdentities, r.max)
	}
	r.entries[spiffeID] = &rotEntry{leaf: leaf, opts: slices.Clone(opts), due: leaf.RenewAt()}
	r.mu.Unlock()
	r.poke()
	return leaf, nil
}

// Current returns the held leaf for spiffeID without issuing.
func (r *Rotator) Current(spiffeID string) (*Leaf, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[spiffeID]
	if !ok {
		return nil, false
	}
	return e.leaf, true
}

// IDs lists the identities being kept, sorted.
func (r *Rotator) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.entries))
}

// Forget stops renewing spiffeID (e.g. no proxy asks for it any more).
func (r *Rotator) Forget(spiffeID string) {
	r.mu.Lock()
	delete(r.entries, spiffeID)
	r.mu.Unlock()
	r.poke()
}

// OnRotate registers fn to be called with every re-issued leaf (not the
// first one, which Get returns). Calls come from Run's goroutine (or
// Adopt's caller), one at a time, outside any lock; fn may call Get. The
// returned func unsubscribes.
func (r *Rotator) OnRotate(fn func(spiffeID string, leaf *Leaf)) (cancel func()) {
	r.mu.Lock()
	id := r.nextSub
	r.nextSub++
	r.subs[id] = fn
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.subs, id)
		r.mu.Unlock()
	}
}

// Adopt installs leaf for spiffeID as the current one when the Rotator
// keeps that identity and holds a different leaf, and tells subscribers as
// for a renewal. It is how a leaf issued elsewhere (by another replica,
// shared through a store) replaces the one held here without issuing. An
// expired leaf, or one for an identity not kept, is ignored. It reports
// whether the leaf was adopted.
func (r *Rotator) Adopt(spiffeID string, leaf *Leaf) bool {
	r.mu.Lock()
	e, ok := r.entries[spiffeID]
	if !ok || leaf == nil || e.leaf.Serial == leaf.Serial || !r.clock.Now().Before(leaf.NotAfter) || !leaf.Satisfies(e.opts...) {
		// Not a leaf this replica would issue: another replica running
		// with other DNS names for the identity (mid-rollout of a config
		// edit) must not flip this one's, nor start a re-issue storm.
		r.mu.Unlock()
		return false
	}
	e.leaf, e.due, e.force = leaf, r.dueOf(leaf), false
	r.mu.Unlock()
	r.poke()
	r.log.Info("certificate adopted", "leaf", leaf)
	r.notify([]rotated{{spiffeID, leaf}})
	return true
}

// SetIssuer switches to a new issuer (after a CA rotation) and has Run
// re-issue every held leaf from it promptly.
func (r *Rotator) SetIssuer(iss LeafIssuer) {
	r.mu.Lock()
	r.issuer = iss
	r.mu.Unlock()
	r.RenewAll()
}

// Renew has Run re-issue the held leaves of ids promptly (ids not kept
// are ignored); subscribers hear of each new leaf as usual.
func (r *Rotator) Renew(ids ...string) {
	r.mu.Lock()
	for _, id := range ids {
		if e, ok := r.entries[id]; ok {
			r.forceLocked(e)
		}
	}
	r.mu.Unlock()
	r.poke()
}

// RenewAll has Run re-issue every held leaf promptly, as when an operator
// forces a rotation; subscribers hear of each new leaf as usual.
func (r *Rotator) RenewAll() {
	r.mu.Lock()
	for _, e := range r.entries {
		r.forceLocked(e)
	}
	r.mu.Unlock()
	r.poke()
}

func (r *Rotator) forceLocked(e *rotEntry) {
	r.gen++
	e.force, e.forceGen = true, r.gen
}

// NextRenewal is the earliest time a held leaf is due, and false if none is held.
func (r *Rotator) NextRenewal() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nextDueLocked()
}

func (r *Rotator) nextDueLocked() (time.Time, bool) {
	var next time.Time
	found := false
	for _, e := range r.entries {
		due := e.due
		if e.force {
			due = time.Time{} // now
		}
		if !found || due.Before(next) {
			next, found = due, true
		}
	}
	return next, found
}

// poke wakes Run to recompute its timer.
func (r *Rotator) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run renews leaves as they fall due until ctx ends, then returns nil.
func (r *Rotator) Run(ctx context.Context) error {
	for {
		r.mu.Lock()
		next, ok := r.nextDueLocked()
		r.mu.Unlock()
		if ok && !next.After(r.clock.Now()) {
			r.renewDue()
			continue
		}
		if !sleepUntil(ctx, r.clock, next, ok, r.wake) {
			return nil
		}
	}
}

type rotated struct {
	id   string
	leaf *Leaf
}

// renewDue re-issues every leaf whose time has come and notifies subscribers.
func (r *Rotator) renewDue() {
	now := r.clock.Now()
	type job struct {
		id       string
		entry    *rotEntry
		opts     []IssueOption
		forceGen uint64
	}
	r.mu.Lock()
	iss := r.issuer
	var jobs []job
	for id, e := range r.entries {
		if e.force || !now.Before(e.due) {
			jobs = append(jobs, job{id, e, e.opts, e.forceGen})
		}
	}
	r.mu.Unlock()

	var done []rotated
	for _, j := range jobs {
		leaf, err := iss.Issue(j.id, j.opts...)
		r.mu.Lock()
		if r.entries[j.id] != j.entry { // forgotten or replaced meanwhile
			r.mu.Unlock()
			continue
		}
		// A force requested while Issue ran (a new issuer) still stands.
		stillForced := j.entry.forceGen != j.forceGen
		if err != nil {
			j.entry.force = stillForced
			j.entry.due = now.Add(r.retry)
			retryAt, expires := j.entry.due, j.entry.leaf.NotAfter
			r.mu.Unlock()
			r.log.Error("certificate renewal failed; will retry", "spiffe_id", j.id,
				"retry_at", retryAt, "expires", expires, "err", err)
			continue
		}
		same := j.entry.leaf.Serial == leaf.Serial
		j.entry.leaf, j.entry.due, j.entry.force = leaf, r.dueOf(leaf), stillForced
		r.mu.Unlock()
		if stillForced {
			r.poke()
		}
		if same {
			// The issuer handed back the leaf already held (one shared by
			// replicas, or adopted meanwhile): nothing new to tell.
			continue
		}
		r.log.Info("certificate renewed", "leaf", leaf)
		done = append(done, rotated{j.id, leaf})
	}
	r.notify(done)
}

// dueOf is when leaf should be renewed: its RenewAt, or a retry interval
// from now when an issuer handed back a leaf already due (a shared leaf the
// replica renewing it has not replaced yet), so Run does not spin.
func (r *Rotator) dueOf(leaf *Leaf) time.Time {
	due, now := leaf.RenewAt(), r.clock.Now()
	if !now.Before(due) {
		return now.Add(r.retry)
	}
	return due
}

// notify calls every subscriber with each rotated leaf, one call at a time.
func (r *Rotator) notify(done []rotated) {
	if len(done) == 0 {
		return
	}
	r.notifyMu.Lock()
	defer r.notifyMu.Unlock()
	r.mu.Lock()
	keys := slices.Sorted(maps.Keys(r.subs))
	subs := make([]func(string, *Leaf), 0, len(keys))
	for _, k := range keys {
		subs = append(subs, r.subs[k])
	}
	r.mu.Unlock()
	for _, d := range done {
		for _, fn := range subs {
			fn(d.id, d.leaf)
		}
	}
}
