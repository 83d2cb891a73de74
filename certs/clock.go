package certs

import (
	"context"
	"time"
)

// Clock is the source of time for the CA, the Rotator and DirSource. Tests
// inject a fake one (see package certstest) so rotation can be driven
// without waiting.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the Rotator needs.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// SystemClock is the real wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (SystemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

type sysTimer struct{ t *time.Timer }

func (s sysTimer) C() <-chan time.Time { return s.t.C }
func (s sysTimer) Stop() bool          { return s.t.Stop() }

// sleepUntil waits until at (only when ok), a wake-up or the end of ctx,
// and reports false when ctx ended. The loops that act at a time (the
// Rotator's renewals, DirSource's expiries) all wait this way, so a fake
// clock drives them alike.
func sleepUntil(ctx context.Context, c Clock, at time.Time, ok bool, wake <-chan struct{}) bool {
	var fire <-chan time.Time
	if ok {
		t := c.NewTimer(at.Sub(c.Now()))
		defer t.Stop()
		fire = t.C()
	}
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-fire:
	}
	return true
}
