package store

import (
	"context"
	"testing"
	"time"
)

// TestLocalRevocations: the fail-closed rules of the bounded set.
func TestLocalRevocations(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	m := NewLocalRevocations(3, clock)
	at := now
	_ = m.Revoke(ctx, "sub:alice", at, at.Add(time.Hour))
	if r, _ := m.Revoked(ctx, "sub:alice", at.Add(-time.Minute)); !r {
		t.Error("session from before the revocation not revoked")
	}
	if r, _ := m.Revoked(ctx, "sub:alice", at.Add(time.Minute)); r {
		t.Error("session from after the revocation revoked")
	}
	if r, _ := m.Revoked(ctx, "sub:bob", at.Add(-time.Minute)); r {
		t.Error("another key revoked")
	}
	// Full: the entry expiring first is forgotten, and the watermark keeps
	// its sessions revoked (fail closed, at the cost of others).
	_ = m.Revoke(ctx, "a", at.Add(time.Second), at.Add(2*time.Hour))
	_ = m.Revoke(ctx, "b", at.Add(2*time.Second), at.Add(3*time.Hour))
	_ = m.Revoke(ctx, "c", at.Add(3*time.Second), at.Add(4*time.Hour))
	if m.c.len() != 3 {
		t.Fatalf("len %d, want bounded to 3", m.c.len())
	}
	if r, _ := m.Revoked(ctx, "sub:alice", at.Add(-time.Minute)); !r {
		t.Error("evicted revocation lost: fail open")
	}
	if r, _ := m.Revoked(ctx, "unrelated", at.Add(-time.Minute)); !r {
		t.Error("sessions older than the watermark should be revoked")
	}
	if r, _ := m.Revoked(ctx, "unrelated", at.Add(time.Minute)); r {
		t.Error("newer sessions under no key revoked")
	}
	// Expired entries are purged first, without raising the watermark.
	now = now.Add(10 * time.Hour)
	_ = m.Revoke(ctx, "d", now, now.Add(time.Hour))
	if m.c.len() != 1 {
		t.Errorf("expired entries kept: len %d", m.c.len())
	}
}
