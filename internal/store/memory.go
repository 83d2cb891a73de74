package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// maxMemoryBlobs bounds the memory store's blobs (certificates: one per
// identity).
const maxMemoryBlobs = 100_000

// maxMemoryClaims bounds the memory store's claims. When it is full of live
// claims the one that expires first is forgotten (a replay of it would then
// be accepted); callers keep their own bounded one-time sets as well.
const maxMemoryClaims = 100_000

// memStore is the one-replica Store: everything in this process.
type memStore struct {
	now       func() time.Time
	resultTTL time.Duration

	revs    *revCache
	flights singleflight.Group
	results *ttlBytes
	blobs   *ttlBytes
	claims  *ttlBytes
	watch   *watchers

	mu     sync.Mutex
	leases map[string]memLeaseState
}

type memLeaseState struct {
	token   string
	expires time.Time
}

func newMemory(cfg Config, o options) *memStore {
	return &memStore{
		now:       o.now,
		resultTTL: o.resultTTL,
		revs:      newRevCache(cfg.MaxRevocations, o.now),
		results:   newTTLBytes(o.maxResults, o.now),
		blobs:     newTTLBytes(maxMemoryBlobs, o.now),
		claims:    newTTLBytes(maxMemoryClaims, o.now),
		watch:     newWatchers(o.log),
		leases:    map[string]memLeaseState{},
	}
}

func (m *memStore) Revoke(_ context.Context, key string, at, expires time.Time) error {
	m.revs.add(key, at, expires)
	return nil
}

func (m *memStore) Revoked(_ context.Context, key string, authTime time.Time) (bool, error) {
	return m.revs.revoked(key, authTime), nil
}

func (m *memStore) Once(ctx context.Context, key string, ttl time.Duration, fn func(context.Context) ([]byte, error)) ([]byte, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("store: once %q: ttl must be positive", key)
	}
	if v, ok := m.results.get(key); ok {
		return v, nil
	}
	ch := m.flights.DoChan(key, func() (any, error) {
		if v, ok := m.results.get(key); ok {
			return v, nil
		}
		// Not bound to the first caller: its cancellation must not fail the others.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ttl)
		defer cancel()
		v, err := fn(fctx)
		if err != nil {
			return nil, err
		}
		m.results.put(key, v, m.resultTTL)
		return v, nil
	})
	return waitFlight(ctx, key, ch)
}

// waitFlight waits for a singleflight result or ctx.
func waitFlight(ctx context.Context, key string, ch <-chan singleflight.Result) ([]byte, error) {
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return bytes.Clone(r.Val.([]byte)), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("store: once %q: %w", key, ctx.Err())
	}
}

func (m *memStore) Claim(_ context.Context, key string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		return false, fmt.Errorf("store: claim %q: ttl must be at least 1ms", key)
	}
	return m.claims.add(key, ttl), nil
}

func (m *memStore) Get(_ context.Context, key string) ([]byte, bool, error) {
	v, ok := m.blobs.get(key)
	return v, ok, nil
}

func (m *memStore) Put(_ context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("store: put %q: negative ttl", key)
	}
	if !m.blobs.put(key, value, ttl) {
		return fmt.Errorf("store: put %q: more than %d keys", key, maxMemoryBlobs)
	}
	m.watch.notify(key)
	return nil
}

func (m *memStore) Delete(_ context.Context, key string) error {
	m.blobs.del(key)
	m.watch.notify(key)
	return nil
}

func (m *memStore) Watch(ctx context.Context, prefix string, fn func(string)) {
	m.watch.add(ctx, prefix, fn)
}

func (m *memStore) TryLease(_ context.Context, name string, ttl time.Duration) (Lease, bool, error) {
	if ttl <= 0 {
		return nil, false, fmt.Errorf("store: lease %q: ttl must be positive", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if cur, ok := m.leases[name]; ok && now.Before(cur.expires) {
		return nil, false, nil
	}
	tok := newToken()
	m.leases[name] = memLeaseState{token: tok, expires: now.Add(ttl)}
	return &memLease{m: m, name: name, token: tok, ttl: ttl}, true, nil
}

type memLease struct {
	m     *memStore
	name  string
	token string
	ttl   time.Duration
}

func (l *memLease) Name() string { return l.name }

func (l *memLease) Renew(context.Context) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	now := l.m.now()
	cur, ok := l.m.leases[l.name]
	if !ok || cur.token != l.token || !now.Before(cur.expires) {
		return fmt.Errorf("store: lease %q: %w", l.name, ErrLeaseLost)
	}
	l.m.leases[l.name] = memLeaseState{token: l.token, expires: now.Add(l.ttl)}
	return nil
}

func (l *memLease) Release(context.Context) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if cur, ok := l.m.leases[l.name]; ok && cur.token == l.token {
		delete(l.m.leases, l.name)
	}
	return nil
}

func (m *memStore) Healthy() error              { return nil }
func (m *memStore) Degraded() (time.Time, bool) { return time.Time{}, false }
func (m *memStore) SessionsUsable() bool        { return true }
func (m *memStore) Close() error                { return nil }

// newToken is a random lock/lease owner token.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return hex.EncodeToString(b[:])
}

// ttlBytes is a bounded map of byte values with optional expiry. When full
// it drops expired entries, then the one expiring first (entries without
// expiry last).
type ttlBytes struct {
	max int
	now func() time.Time
	mu  sync.Mutex
	m   map[string]ttlEntry
}

type ttlEntry struct {
	v       []byte
	expires time.Time // zero: never
}

func newTTLBytes(max int, now func() time.Time) *ttlBytes {
	return &ttlBytes{max: max, now: now, m: map[string]ttlEntry{}}
}

func (c *ttlBytes) get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return nil, false
	}
	if !e.expires.IsZero() && !c.now().Before(e.expires) {
		delete(c.m, key)
		return nil, false
	}
	return bytes.Clone(e.v), true
}

// add stores an empty value under key unless a live entry is there: a
// one-time test-and-set. It reports whether it stored.
func (c *ttlBytes) add(key string, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok && (e.expires.IsZero() || c.now().Before(e.expires)) {
		return false
	}
	return c.putLocked(key, nil, ttl)
}

// put stores v; false when full of entries that never expire.
func (c *ttlBytes) put(key string, v []byte, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.putLocked(key, v, ttl)
}

func (c *ttlBytes) putLocked(key string, v []byte, ttl time.Duration) bool {
	var exp time.Time
	if ttl > 0 {
		exp = c.now().Add(ttl)
	}
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		now := c.now()
		victim, vexp := "", time.Time{}
		for k, e := range c.m {
			if e.expires.IsZero() {
				continue
			}
			if !now.Before(e.expires) {
				delete(c.m, k)
				continue
			}
			if victim == "" || e.expires.Before(vexp) {
				victim, vexp = k, e.expires
			}
		}
		if len(c.m) >= c.max {
			if victim == "" {
				return false
			}
			delete(c.m, victim)
		}
	}
	c.m[key] = ttlEntry{v: bytes.Clone(v), expires: exp}
	return true
}

func (c *ttlBytes) del(key string) {
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}
