package store

import (
	"context"
	"sync"
	"time"
)

// LocalRevocations is a revocation set in this process alone: the
// revocation part of the memory store, for code that needs nothing else
// (the OIDC flow's default when no store is given).
type LocalRevocations struct{ c *revCache }

// NewLocalRevocations returns a set of at most max entries (default
// DefaultMaxRevocations when ≤ 0); now is its clock (time.Now when nil).
func NewLocalRevocations(max int, now func() time.Time) *LocalRevocations {
	if now == nil {
		now = time.Now
	}
	return &LocalRevocations{c: newRevCache(max, now)}
}

// Revoke records that sessions under key authenticated at or before at are
// over, until expires.
func (l *LocalRevocations) Revoke(_ context.Context, key string, at, expires time.Time) error {
	l.c.add(key, at, expires)
	return nil
}

// Revoked reports whether a session under key that authenticated at
// authTime has been revoked.
func (l *LocalRevocations) Revoked(_ context.Context, key string, authTime time.Time) (bool, error) {
	return l.c.revoked(key, authTime), nil
}

// revCache is the local revocation set every replica answers from: bounded
// in size, entries forgotten after they expire. When full it forgets the
// entry closest to expiry and, to stay fail-closed, raises a watermark:
// every session that authenticated at or before that entry's time is then
// revoked, whatever its key.
type revCache struct {
	max int
	now func() time.Time

	mu        sync.RWMutex
	entries   map[string]revocation
	watermark time.Time
}

type revocation struct{ at, expires time.Time }

func newRevCache(max int, now func() time.Time) *revCache {
	if max <= 0 {
		max = DefaultMaxRevocations
	}
	return &revCache{max: max, now: now, entries: map[string]revocation{}}
}

// add merges an entry (latest at, latest expiry) and reports whether it
// changed anything. Expired entries are ignored.
func (c *revCache) add(key string, at, expires time.Time) bool {
	if !expires.After(c.now()) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old, ok := c.entries[key]
	if ok {
		if !at.After(old.at) && !expires.After(old.expires) {
			return false
		}
		if old.at.After(at) {
			at = old.at
		}
		if old.expires.After(expires) {
			expires = old.expires
		}
	} else if len(c.entries) >= c.max {
		c.makeRoom()
	}
	c.entries[key] = revocation{at: at, expires: expires}
	return true
}

// makeRoom drops expired entries, or else the one expiring first.
func (c *revCache) makeRoom() {
	now := c.now()
	var victim string
	var first revocation
	found := false
	for k, e := range c.entries {
		if !e.expires.After(now) {
			delete(c.entries, k)
			continue
		}
		if !found || e.expires.Before(first.expires) {
			victim, first, found = k, e, true
		}
	}
	if len(c.entries) < c.max || !found {
		return
	}
	delete(c.entries, victim)
	if first.at.After(c.watermark) {
		c.watermark = first.at
	}
}

func (c *revCache) revoked(key string, authTime time.Time) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !authTime.After(c.watermark) {
		return true
	}
	e, ok := c.entries[key]
	if !ok || !e.expires.After(c.now()) {
		return false
	}
	return !authTime.After(e.at)
}

// snapshot copies the live entries.
func (c *revCache) snapshot() map[string]revocation {
	now := c.now()
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]revocation, len(c.entries))
	for k, e := range c.entries {
		if e.expires.After(now) {
			out[k] = e
		}
	}
	return out
}

func (c *revCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
