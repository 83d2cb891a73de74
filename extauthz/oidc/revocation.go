package oidc

import (
	"context"
	"sync"
	"time"
)

// RevocationStore remembers logged-out sessions. Session cookies are
// stateless, so a copy of a cookie outlives a logout unless every Check
// asks the store. A shared implementation (Redis) makes logout and
// back-channel logout take effect across replicas.
type RevocationStore interface {
	// Revoke records that sessions under key authenticated at or before at
	// are over. The entry may be forgotten after expires, when no such
	// session can be valid any more.
	Revoke(ctx context.Context, key string, at, expires time.Time) error
	// Revoked reports whether a session under key that authenticated at
	// authTime has been revoked. An error must be treated as revoked.
	Revoked(ctx context.Context, key string, authTime time.Time) (bool, error)
}

// MemoryRevocations is a RevocationStore in this process, bounded in size.
// When full it forgets the entry closest to expiry and, to stay fail-closed,
// raises a watermark: every session that authenticated at or before that
// entry's time is then revoked, whatever its key.
type MemoryRevocations struct {
	max int
	now func() time.Time

	mu        sync.RWMutex
	entries   map[string]revocation
	watermark time.Time
}

type revocation struct{ at, expires time.Time }

// NewMemoryRevocations returns a store of at most maxEntries entries
// (default 100000 when ≤ 0). now is its clock (time.Now when nil).
func NewMemoryRevocations(maxEntries int, now func() time.Time) *MemoryRevocations {
	if maxEntries <= 0 {
		maxEntries = 100_000
	}
	if now == nil {
		now = time.Now
	}
	return &MemoryRevocations{max: maxEntries, now: now, entries: map[string]revocation{}}
}

// Revoke implements RevocationStore.
func (m *MemoryRevocations) Revoke(_ context.Context, key string, at, expires time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.entries[key]; ok {
		if old.at.After(at) {
			at = old.at
		}
		if old.expires.After(expires) {
			expires = old.expires
		}
	} else if len(m.entries) >= m.max {
		m.makeRoom()
	}
	m.entries[key] = revocation{at: at, expires: expires}
	return nil
}

// makeRoom drops expired entries, or else the one expiring first.
func (m *MemoryRevocations) makeRoom() {
	now := m.now()
	var victim string
	var first revocation
	for k, e := range m.entries {
		if !e.expires.After(now) {
			delete(m.entries, k)
			continue
		}
		if victim == "" || e.expires.Before(first.expires) {
			victim, first = k, e
		}
	}
	if len(m.entries) < m.max || victim == "" {
		return
	}
	delete(m.entries, victim)
	if first.at.After(m.watermark) {
		m.watermark = first.at
	}
}

// Revoked implements RevocationStore.
func (m *MemoryRevocations) Revoked(_ context.Context, key string, authTime time.Time) (bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !authTime.After(m.watermark) {
		return true, nil
	}
	e, ok := m.entries[key]
	if !ok || !e.expires.After(m.now()) {
		return false, nil
	}
	return !authTime.After(e.at), nil
}

// Len is the number of entries held (expired ones included until purged).
func (m *MemoryRevocations) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.entries)
}
