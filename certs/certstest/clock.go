// Package certstest provides a fake certs.Clock so code built on the
// Rotator (such as the SDS push in the xDS control plane) can be tested
// through certificate renewals without waiting for them.
package certstest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gatehouse-proxy/gatehouse/certs"
)

// Clock is a manually advanced certs.Clock. Timers fire when Advance moves
// the time to or past their deadline.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*timer
	changed chan struct{} // closed and replaced whenever a timer is created
}

// NewClock returns a Clock reading start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, changed: make(chan struct{})}
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer firing once the clock reaches Now()+d.
func (c *Clock) NewTimer(d time.Duration) certs.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{clock: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		t.fired = true
	} else {
		c.timers = append(c.timers, t)
	}
	close(c.changed)
	c.changed = make(chan struct{})
	return t
}

// Advance moves the clock forward by d and fires due timers.
func (c *Clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// Set moves the clock to t (never backwards) and fires due timers.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if !tm.at.After(c.now) {
			tm.fired = true
			tm.ch <- c.now
			continue
		}
		kept = append(kept, tm)
	}
	c.timers = kept
}

// Pending is how many timers are waiting to fire.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// NextDeadline is when the earliest pending timer fires.
func (c *Clock) NextDeadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for i, t := range c.timers {
		if i == 0 || t.at.Before(next) {
			next = t.at
		}
	}
	return next, len(c.timers) > 0
}

// WaitForTimer blocks until a pending timer with a deadline after `after`
// exists (the code under test has gone to sleep), or ctx ends.
func (c *Clock) WaitForTimer(ctx context.Context, after time.Time) (time.Time, error) {
	for {
		c.mu.Lock()
		var next time.Time
		found := false
		for _, t := range c.timers {
			if t.at.After(after) && (!found || t.at.Before(next)) {
				next, found = t.at, true
			}
		}
		changed := c.changed
		c.mu.Unlock()
		if found {
			return next, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-changed:
		}
	}
}

// WaitForDeadline blocks until a timer due exactly at deadline is pending,
// or ctx ends.
func (c *Clock) WaitForDeadline(ctx context.Context, deadline time.Time) error {
	for {
		c.mu.Lock()
		found := false
		for _, t := range c.timers {
			found = found || t.at.Equal(deadline)
		}
		changed := c.changed
		c.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no timer due at %s: %w", deadline, ctx.Err())
		case <-changed:
		}
	}
}

type timer struct {
	clock *Clock
	at    time.Time
	ch    chan time.Time
	fired bool
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.fired {
		return false
	}
	for i, tm := range c.timers {
		if tm == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			return true
		}
	}
	return false
}
