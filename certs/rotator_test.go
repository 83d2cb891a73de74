package certs_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/certs/certstest"
)

type rotation struct {
	id   string
	leaf *certs.Leaf
}

// startRotator runs r until the test ends and returns a channel of the
// rotations it reports.
func startRotator(t *testing.T, r *certs.Rotator) <-chan rotation {
	t.Helper()
	ch := make(chan rotation, 16)
	r.OnRotate(func(id string, l *certs.Leaf) { ch <- rotation{id, l} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not stop after cancel")
		}
	})
	return ch
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func nextRotation(t *testing.T, ch <-chan rotation) rotation {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no rotation reported")
		return rotation{}
	}
}

func TestRotatorRenewsAtTwoThirds(t *testing.T) {
	clk := certstest.NewClock(t0)
	_, ca := initCA(t, certs.WithClock(clk))
	r := certs.NewRotator(ca, certs.WithRotatorClock(clk), certs.WithRotatorLogger(slog.New(slog.DiscardHandler)))
	rotations := startRotator(t, r)
	ctx := waitCtx(t)

	const id = "spiffe://gatehouse.local/proxy/edge"
	first, err := r.Get(id, certs.WithTTL(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := r.Get(id)
	if again != first {
		t.Fatal("Get issued a second leaf for a held identity")
	}
	// NotBefore is t0-1m and life 3h1m, so renewal is due at t0-1m + 2/3*(3h1m).
	wantRenew := t0.Add(-time.Minute).Add(2 * (3*time.Hour + time.Minute) / 3)
	deadline, err := clk.WaitForTimer(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !deadline.Equal(wantRenew) {
		t.Fatalf("Run sleeps until %s, want RenewAt %s", deadline, wantRenew)
	}
	select {
	case rot := <-rotations:
		t.Fatalf("rotated before due: %v", rot.leaf)
	default:
	}

	clk.Set(deadline.Add(-time.Second)) // not yet: the timer stays armed
	if n := clk.Pending(); n != 1 {
		t.Fatalf("%d timers pending a second before renewal, want 1", n)
	}
	clk.Set(deadline)
	rot := nextRotation(t, rotations)
	if rot.id != id || rot.leaf.Serial == first.Serial {
		t.Fatalf("rotation %s serial %s, want %s with a new serial (old %s)", rot.id, rot.leaf.Serial, id, first.Serial)
	}
	if got := rot.leaf.NotAfter.Sub(clk.Now()); got != 3*time.Hour {
		t.Errorf("renewed leaf TTL %s, want the remembered 3h", got)
	}
	if cur, _ := r.Current(id); cur != rot.leaf {
		t.Error("Current does not return the renewed leaf")
	}
	// And it goes back to sleep until the new leaf's renewal time.
	next, err := clk.WaitForTimer(ctx, deadline)
	if err != nil {
		t.Fatal(err)
	}
	if !next.Equal(rot.leaf.RenewAt()) {
		t.Fatalf("next wake %s, want %s", next, rot.leaf.RenewAt())
	}
	clk.Set(next)
	if rot2 := nextRotation(t, rotations); rot2.leaf.Serial == rot.leaf.Serial {
		t.Fatal("second rotation reused the serial")
	}
}

func TestRotatorWakesForEarlierIdentity(t *testing.T) {
	clk := certstest.NewClock(t0)
	_, ca := initCA(t, certs.WithClock(clk))
	r := certs.NewRotator(ca, certs.WithRotatorClock(clk), certs.WithRotatorLogger(slog.New(slog.DiscardHandler)))
	rotations := startRotator(t, r)
	ctx := waitCtx(t)

	long, err := r.Get("spiffe://gatehouse.local/a/long", certs.WithTTL(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if d, err := clk.WaitForTimer(ctx, t0); err != nil || !d.Equal(long.RenewAt()) {
		t.Fatalf("first sleep until %s (%v), want %s", d, err, long.RenewAt())
	}
	short, err := r.Get("spiffe://gatehouse.local/a/short", certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// Run must re-arm for the shorter leaf rather than sleep past it.
	if err := clk.WaitForDeadline(ctx, short.RenewAt()); err != nil {
		t.Fatal(err)
	}
	if n := clk.Pending(); n != 1 {
		t.Fatalf("%d timers pending, want the old one stopped", n)
	}
	clk.Set(short.RenewAt())
	if rot := nextRotation(t, rotations); rot.id != "spiffe://gatehouse.local/a/short" {
		t.Fatalf("rotated %s first, want the short-lived identity", rot.id)
	}
}

// flakyIssuer fails while fail is set, then delegates.
type flakyIssuer struct {
	mu   sync.Mutex
	fail bool
	ca   *certs.CA
}

func (f *flakyIssuer) Issue(id string, opts ...certs.IssueOption) (*certs.Leaf, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, errors.New("injected failure")
	}
	return f.ca.Issue(id, opts...)
}

func TestRotatorRetriesAfterFailure(t *testing.T) {
	clk := certstest.NewClock(t0)
	_, ca := initCA(t, certs.WithClock(clk))
	iss := &flakyIssuer{ca: ca}
	r := certs.NewRotator(iss, certs.WithRotatorClock(clk), certs.WithRetryInterval(time.Minute),
		certs.WithRotatorLogger(slog.New(slog.DiscardHandler)))
	rotations := startRotator(t, r)
	ctx := waitCtx(t)

	first, err := r.Get("spiffe://gatehouse.local/a/b")
	if err != nil {
		t.Fatal(err)
	}
	due, err := clk.WaitForTimer(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	iss.mu.Lock()
	iss.fail = true
	iss.mu.Unlock()
	clk.Set(due)
	retry, err := clk.WaitForTimer(ctx, due)
	if err != nil {
		t.Fatal(err)
	}
	if !retry.Equal(due.Add(time.Minute)) {
		t.Fatalf("retry at %s, want %s", retry, due.Add(time.Minute))
	}
	if cur, _ := r.Current("spiffe://gatehouse.local/a/b"); cur != first {
		t.Fatal("failed renewal replaced the held leaf")
	}
	iss.mu.Lock()
	iss.fail = false
	iss.mu.Unlock()
	clk.Set(retry)
	if rot := nextRotation(t, rotations); rot.leaf.Serial == first.Serial {
		t.Fatal("retry did not issue a new leaf")
	}
}

func TestRotatorSetIssuerReissuesFromNewCA(t *testing.T) {
	clk := certstest.NewClock(t0)
	dir, ca := initCA(t, certs.WithClock(clk))
	r := certs.NewRotator(ca, certs.WithRotatorClock(clk), certs.WithRotatorLogger(slog.New(slog.DiscardHandler)))
	rotations := startRotator(t, r)
	if _, err := r.Get("spiffe://gatehouse.local/a/b"); err != nil {
		t.Fatal(err)
	}
	newCA, err := certs.Rotate(dir, time.Hour, certs.WithClock(clk), quiet)
	if err != nil {
		t.Fatal(err)
	}
	r.SetIssuer(newCA)
	rot := nextRotation(t, rotations)
	if err := rot.leaf.Cert.CheckSignatureFrom(newCA.Certificate()); err != nil {
		t.Fatalf("leaf after SetIssuer not from the new CA: %v", err)
	}
}

func TestRotatorBoundsAndForget(t *testing.T) {
	_, ca := initCA(t)
	r := certs.NewRotator(ca, certs.WithMaxIdentities(2))
	for _, id := range []string{"spiffe://gatehouse.local/a/1", "spiffe://gatehouse.local/a/2"} {
		if _, err := r.Get(id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Get("spiffe://gatehouse.local/a/3"); !errors.Is(err, certs.ErrTooManyIdentities) {
		t.Fatalf("third identity: %v, want ErrTooManyIdentities", err)
	}
	if _, err := r.Get("spiffe://evil.local/a/1"); err == nil {
		t.Fatal("Get issued for a foreign trust domain")
	}
	r.Forget("spiffe://gatehouse.local/a/1")
	if _, err := r.Get("spiffe://gatehouse.local/a/3"); err != nil {
		t.Fatalf("after Forget: %v", err)
	}
	if got := r.IDs(); len(got) != 2 || got[0] != "spiffe://gatehouse.local/a/2" || got[1] != "spiffe://gatehouse.local/a/3" {
		t.Fatalf("IDs = %v", got)
	}
}

// Without Run (or when renewal kept failing), Get must not hand out an
// expired leaf: it re-issues.
func TestRotatorGetReissuesExpired(t *testing.T) {
	clk := certstest.NewClock(t0)
	_, ca := initCA(t, certs.WithClock(clk))
	r := certs.NewRotator(ca, certs.WithRotatorClock(clk))
	first, err := r.Get("spiffe://gatehouse.local/a/b", certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	clk.Set(first.NotAfter.Add(time.Second))
	second, err := r.Get("spiffe://gatehouse.local/a/b")
	if err != nil {
		t.Fatal(err)
	}
	if second.Serial == first.Serial || !clk.Now().Before(second.NotAfter) {
		t.Fatalf("Get returned an expired leaf (serial %s, not after %s)", second.Serial, second.NotAfter)
	}
	if got := second.NotAfter.Sub(clk.Now()); got != time.Hour {
		t.Errorf("re-issued TTL %s, want the remembered 1h", got)
	}
}

func TestLeafLogValueHidesKey(t *testing.T) {
	_, ca := initCA(t)
	leaf, err := ca.IssueRole("a", "b")
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "leaf", leaf)
	if out := buf.String(); !strings.Contains(out, leaf.Serial) || strings.Contains(out, "PRIVATE") || strings.Contains(out, string(leaf.KeyPEM[30:60])) {
		t.Fatalf("log line %q", out)
	}
}
