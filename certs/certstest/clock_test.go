package certstest

import (
	"context"
	"testing"
	"time"
)

func TestClockTimers(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		after     time.Duration
		advance   time.Duration
		stopFirst bool
		wantFire  bool
	}{
		{"fires at deadline", time.Hour, time.Hour, false, true},
		{"fires past deadline", time.Hour, 2 * time.Hour, false, true},
		{"not before deadline", time.Hour, time.Hour - time.Nanosecond, false, false},
		{"stopped never fires", time.Hour, 2 * time.Hour, true, false},
		{"zero fires at once", 0, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewClock(start)
			tm := c.NewTimer(tt.after)
			if tt.stopFirst && !tm.Stop() {
				t.Fatal("Stop of a pending timer returned false")
			}
			c.Advance(tt.advance)
			select {
			case at := <-tm.C():
				if !tt.wantFire {
					t.Fatalf("fired at %s", at)
				}
				if !at.Equal(start.Add(tt.advance)) {
					t.Errorf("fired with %s, want %s", at, start.Add(tt.advance))
				}
			default:
				if tt.wantFire {
					t.Fatal("did not fire")
				}
			}
		})
	}
}

func TestWaitForTimer(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(start)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan time.Time, 1)
	go func() {
		d, _ := c.WaitForTimer(ctx, start)
		got <- d
	}()
	c.NewTimer(time.Minute)
	if d := <-got; !d.Equal(start.Add(time.Minute)) {
		t.Fatalf("WaitForTimer = %s", d)
	}
	if err := c.WaitForDeadline(ctx, start.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if err := c.WaitForDeadline(short, start.Add(time.Hour)); err == nil {
		t.Fatal("WaitForDeadline without such a timer returned nil")
	}
}
