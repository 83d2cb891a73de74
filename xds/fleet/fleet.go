// Package fleet shares workload certificates between replicas of the xDS
// control plane through the shared store, so every replica serves the same
// leaf for an identity and SDS versions (content hashes) are identical
// fleet-wide: a proxy that reconnects to another replica is resent its
// secrets byte for byte, which Envoy takes as unchanged.
//
// An Issuer is the certs.LeafIssuer a certs.Rotator issues through. For a
// SPIFFE id it returns the leaf stored under "cert/<id>" while that leaf is
// not due (before its RenewAt, signed by the CA in force) and carries the
// DNS names asked for (certs.Leaf.Satisfies: a config edit changed them
// otherwise). When the leaf is due, absent or for other names, the replica
// that takes the lease "cert-renewer/<id>" re-checks the store, issues from
// the CA and Puts the leaf; the others wait
// (bounded) for that Put, woken by Watch, and read it. Watch (Run) also
// hands every stored leaf that changes to a callback, which has the Rotator
// adopt it and push it over SDS, so all replicas switch together. The
// Rotator does not adopt a leaf for other DNS names than its own config
// asks: while a config edit rolls out, replicas on either side serve their
// own names and none re-issues in answer to another's Put.
//
// The lease is per identity and held only while one leaf is issued, rather
// than one fleet-wide renewer lease renewed on a ticker: a single holder
// would have to renew identities it was never asked for, with issue
// options (DNS names, TTL) only the asking replica knows. A holder that
// dies mid-issue loses the lease after its TTL and a waiter takes over.
//
// Private keys reach the store only sealed (store.Sealer, XChaCha20-
// Poly1305, the store key as additional data) with a key derived from the
// CA key (certs.CA.DeriveKey with SealPurpose): every replica mounting the
// shared CA can open them, nobody without the CA key can, and there is no
// other secret to distribute. Keys are never logged.
//
// When the store cannot be reached the Issuer issues locally and says so:
// proxies keep getting certificates, at the price of replicas serving
// different leaves until the store is back, when Reshare has them
// re-issued for the fleet.
package fleet

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/internal/store"
)

// Store names.
const (
	// KeyPrefix starts the store key of every shared leaf: "cert/<spiffe id>".
	KeyPrefix = "cert/"
	// LeasePrefix starts the lease a replica holds while issuing a leaf.
	LeasePrefix = "cert-renewer/"
	// SealPurpose is the certs.CA.DeriveKey purpose of the sealing key.
	SealPurpose = "fleet-leaf-seal/v1"
)

// Defaults.
const (
	DefaultLeaseTTL = 30 * time.Second
	DefaultWait     = 75 * time.Second
	DefaultPoll     = time.Second
)

// CA is what the Issuer needs of the CA in force: issuing, and knowing
// which CAs are rotated out (a leaf they signed is due).
type CA interface {
	certs.LeafIssuer
	Certificate() *x509.Certificate
	Previous() []certs.PreviousCA
}

// Store is the part of store.Store the Issuer uses.
type Store interface {
	store.Blobs
	store.Leases
}

// Issuer issues each leaf once for the whole fleet; see the package doc.
type Issuer struct {
	st  Store
	ca  CA
	log *slog.Logger
	// localMu guards local: the identities whose leaf this replica issued
	// for itself alone while the store was unreachable (see Reshare).
	localMu  sync.Mutex
	local    map[string]struct{}
	clock    certs.Clock
	leaseTTL time.Duration
	wait     time.Duration
	poll     time.Duration
	sealer   atomic.Pointer[store.Sealer]
	forced   atomic.Int64 // UnixNano: leaves issued before are due (RenewAll)

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every stored change
}

// Option configures an Issuer.
type Option func(*Issuer)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(i *Issuer) { i.log = l } }

// WithClock sets the clock deciding whether a leaf is due (default the
// system clock). Lease TTLs are the store's.
func WithClock(c certs.Clock) Option { return func(i *Issuer) { i.clock = c } }

// WithLeaseTTL sets how long an issuing replica holds the lease: the time
// before another takes over from one that died (default 30s).
func WithLeaseTTL(d time.Duration) Option { return func(i *Issuer) { i.leaseTTL = d } }

// WithWait bounds how long Issue waits for another replica's leaf before
// failing (the Rotator retries later); default 75s, past two lease TTLs.
func WithWait(d time.Duration) Option { return func(i *Issuer) { i.wait = d } }

// WithPoll sets how often a waiting Issue re-reads the store and retries
// the lease besides being woken by Watch (default 1s).
func WithPoll(d time.Duration) Option { return func(i *Issuer) { i.poll = d } }

// New returns an Issuer sharing leaves of ca through st, sealed with sealer
// (see SealerFor).
func New(st Store, ca CA, sealer *store.Sealer, opts ...Option) *Issuer {
	i := &Issuer{st: st, ca: ca, log: slog.Default(), clock: certs.SystemClock{},
		leaseTTL: DefaultLeaseTTL, wait: DefaultWait, poll: DefaultPoll, changed: make(chan struct{})}
	for _, o := range opts {
		o(i)
	}
	i.sealer.Store(sealer)
	return i
}

// SealerFor returns the sealer for leaves of cas: the first CA's derived
// key seals, every one's opens (pass the CA in force first and, after a
// rotation, the one before it).
func SealerFor(cas ...*certs.CA) (*store.Sealer, error) {
	var keys [][]byte
	for _, ca := range cas {
		k, err := ca.DeriveKey(SealPurpose)
		if err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		keys = append(keys, k)
	}
	return store.NewSealer(keys...)
}

// SetSealer replaces the sealer, after a CA rotation.
func (i *Issuer) SetSealer(s *store.Sealer) { i.sealer.Store(s) }

// ForceRenew makes every leaf issued until now due, so the next Issue for
// each id (the Rotator's RenewAll) issues a new one for the fleet; the
// other replicas adopt it through Watch.
func (i *Issuer) ForceRenew() { i.forced.Store(i.clock.Now().UnixNano()) }

// stored is the sealed value under "cert/<id>".
type stored struct {
	Chain    []byte    `json:"chain"`
	Key      []byte    `json:"key"`
	IssuedAt time.Time `json:"issued_at"`
}

// Issue returns the fleet's leaf for spiffeID; see the package doc.
func (i *Issuer) Issue(spiffeID string, opts ...certs.IssueOption) (*certs.Leaf, error) {
	ctx, cancel := context.WithTimeout(context.Background(), i.wait)
	defer cancel()
	for {
		wake := i.waitChan()
		leaf, issuedAt, ok, err := i.load(ctx, spiffeID)
		if err != nil {
			return i.issueLocally(spiffeID, err, opts)
		}
		if ok && i.usable(leaf, issuedAt) && leaf.Satisfies(opts...) {
			return leaf, nil
		}
		lease, got, err := i.st.TryLease(ctx, LeasePrefix+spiffeID, i.leaseTTL)
		if err != nil {
			return i.issueLocally(spiffeID, err, opts)
		}
		if got {
			return i.issueHolding(ctx, lease, spiffeID, opts)
		}
		t := time.NewTimer(i.poll)
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("fleet: %s: no replica issued a leaf within %s: %w", spiffeID, i.wait, ctx.Err())
		}
		t.Stop()
	}
}

// issueHolding issues and stores a leaf while holding the lease, unless
// another replica stored a usable one between our read and the lease.
func (i *Issuer) issueHolding(ctx context.Context, lease store.Lease, id string, opts []certs.IssueOption) (*certs.Leaf, error) {
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = lease.Release(rctx)
	}()
	if leaf, issuedAt, ok, err := i.load(ctx, id); err == nil && ok && i.usable(leaf, issuedAt) && leaf.Satisfies(opts...) {
		return leaf, nil
	}
	now := i.clock.Now()
	leaf, err := i.ca.Issue(id, opts...)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	val, err := json.Marshal(stored{Chain: leaf.ChainPEM, Key: leaf.KeyPEM, IssuedAt: now})
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	sealed := i.sealer.Load().Seal(KeyPrefix+id, val)
	ttl := leaf.NotAfter.Sub(now)
	// Fence: a holder that took longer than its lease may find another
	// replica issued meanwhile; it takes that leaf rather than overwrite it
	// (which would make every replica adopt and push a second new leaf).
	if err := lease.Renew(ctx); errors.Is(err, store.ErrLeaseLost) {
		if stored, issuedAt, ok, lerr := i.load(ctx, id); lerr == nil && ok && i.usable(stored, issuedAt) && stored.Satisfies(opts...) {
			i.log.Info("lease lost while issuing; serving the leaf another replica stored", "spiffe_id", id)
			return stored, nil
		}
	}
	if err := i.st.Put(ctx, KeyPrefix+id, sealed, ttl); err != nil {
		// Serve it anyway: the others issue their own after their wait.
		i.log.Warn("issued a leaf but could not share it; replicas may serve different leaves", "leaf", leaf, "err", err)
		return leaf, nil
	}
	i.log.Info("issued a leaf for the fleet", "leaf", leaf)
	return leaf, nil
}

// issueLocally is the fallback when the store is unreachable.
func (i *Issuer) issueLocally(id string, cause error, opts []certs.IssueOption) (*certs.Leaf, error) {
	leaf, err := i.ca.Issue(id, opts...)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	i.log.Warn("shared store unreachable: issued a leaf for this replica only", "leaf", leaf, "err", cause)
	i.localMu.Lock()
	if i.local == nil {
		i.local = map[string]struct{}{}
	}
	i.local[id] = struct{}{}
	i.localMu.Unlock()
	return leaf, nil
}

// Reshare checks every interval whether the store answers again after this
// replica issued leaves for itself alone, and then has renew (the Rotator's
// Renew) re-issue those identities through the store: the replicas
// converge on one leaf at once instead of serving their own until the next
// renewal. It returns when ctx ends.
func (i *Issuer) Reshare(ctx context.Context, every time.Duration, renew func(ids ...string)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		i.localMu.Lock()
		ids := slices.Sorted(maps.Keys(i.local))
		i.localMu.Unlock()
		if len(ids) == 0 {
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _, err := i.st.Get(gctx, KeyPrefix+ids[0])
		cancel()
		if err != nil {
			continue // still unreachable
		}
		i.localMu.Lock()
		for _, id := range ids {
			delete(i.local, id)
		}
		i.localMu.Unlock()
		i.log.Info("shared store reachable again: re-issuing locally issued leaves for the fleet", "identities", len(ids))
		renew(ids...)
	}
}

// usable reports whether a stored leaf may be served rather than renewed:
// not due, not from before a forced renewal, not signed by a rotated-out CA.
// A leaf signed by a CA this replica does not know yet (another replica
// loaded a rotated CA first) is usable: the CA directory is shared, so this
// replica is about to load it too, and re-issuing from the older CA would
// flip the fleet back.
func (i *Issuer) usable(leaf *certs.Leaf, issuedAt time.Time) bool {
	now := i.clock.Now()
	if !now.Before(leaf.RenewAt()) || issuedAt.UnixNano() < i.forced.Load() {
		return false
	}
	if leaf.SignedBy(i.ca.Certificate()) {
		return true
	}
	for _, p := range i.ca.Previous() {
		if leaf.SignedBy(p.Cert) {
			return false
		}
	}
	return true
}

// load reads and opens the stored leaf for id. A value that does not open
// or parse (sealed with another CA's key, or damaged) counts as absent.
func (i *Issuer) load(ctx context.Context, id string) (*certs.Leaf, time.Time, bool, error) {
	val, ok, err := i.st.Get(ctx, KeyPrefix+id)
	if err != nil || !ok {
		return nil, time.Time{}, false, err
	}
	leaf, issuedAt, err := i.open(id, val)
	if err != nil {
		i.log.Warn("stored leaf unusable; a new one will be issued", "spiffe_id", id, "err", err)
		return nil, time.Time{}, false, nil
	}
	return leaf, issuedAt, true, nil
}

func (i *Issuer) open(id string, val []byte) (*certs.Leaf, time.Time, error) {
	plain, err := i.sealer.Load().Open(KeyPrefix+id, val)
	if err != nil {
		return nil, time.Time{}, err
	}
	var s stored
	if err := json.Unmarshal(plain, &s); err != nil {
		return nil, time.Time{}, fmt.Errorf("decode: %w", err)
	}
	leaf, err := certs.ParseLeaf(s.Chain, s.Key)
	if err != nil {
		return nil, time.Time{}, err
	}
	if leaf.SPIFFEID != id {
		return nil, time.Time{}, fmt.Errorf("stored leaf is for %q", leaf.SPIFFEID)
	}
	return leaf, s.IssuedAt, nil
}

func (i *Issuer) waitChan() <-chan struct{} {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.changed
}

func (i *Issuer) wakeWaiters() {
	i.mu.Lock()
	close(i.changed)
	i.changed = make(chan struct{})
	i.mu.Unlock()
}

// Run watches the shared leaves until ctx ends, waking waiting Issue calls
// and calling onChange with every stored leaf that changes and is usable (see usable) (on this
// replica's Puts too), one call at a time: give it certs.Rotator.Adopt, so
// a leaf renewed by another replica is served here as well. It returns at
// once; the watch runs on the store's goroutine.
func (i *Issuer) Run(ctx context.Context, onChange func(spiffeID string, leaf *certs.Leaf)) {
	i.st.Watch(ctx, KeyPrefix, func(key string) {
		i.wakeWaiters()
		id, ok := strings.CutPrefix(key, KeyPrefix)
		if !ok || onChange == nil {
			return
		}
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		leaf, issuedAt, found, err := i.load(gctx, id)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				i.log.Warn("reading a changed shared leaf failed", "spiffe_id", id, "err", err)
			}
			return
		}
		// Only a leaf Issue would serve is handed on: not one that is due
		// (a resync after a partition replays the stale leaf) nor one from
		// a rotated-out CA (a replica still on the old CA re-issued from
		// it), either of which would flip this replica back.
		if found && i.usable(leaf, issuedAt) {
			onChange(id, leaf)
		}
	})
}
