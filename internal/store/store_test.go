package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"
)

// factory makes a fresh Store per test: the same suite runs against both
// implementations.
type factory struct {
	name string
	make func(t *testing.T, clock *fakeClock) Store
}

func factories() []factory {
	return []factory{
		{"memory", func(t *testing.T, clock *fakeClock) Store {
			s, err := New(context.Background(), Config{}, WithClock(clock.Now), WithLogger(testLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{"redis", func(t *testing.T, clock *fakeClock) Store {
			srv := redistest.Start(t)
			return newRedisStore(t, redisConfig(srv.Addr()), clock)
		}},
	}
}

func TestStoreRevocations(t *testing.T) {
	for _, f := range factories() {
		t.Run(f.name, func(t *testing.T) {
			clock := newFakeClock()
			s := f.make(t, clock)
			ctx := context.Background()
			now := clock.Now()
			if err := s.Revoke(ctx, "sid:iss|1", now, now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name     string
				key      string
				authTime time.Time
				want     bool
			}{
				{"session from before the logout", "sid:iss|1", now.Add(-time.Minute), true},
				{"session from the same instant", "sid:iss|1", now, true},
				{"new login after the logout", "sid:iss|1", now.Add(time.Second), false},
				{"other key", "sid:iss|2", now.Add(-time.Minute), false},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					if got := revoked(t, s, tc.key, tc.authTime); got != tc.want {
						t.Errorf("Revoked = %v, want %v", got, tc.want)
					}
				})
			}
			// A later revocation of the same key moves "at" forward.
			later := now.Add(10 * time.Second)
			if err := s.Revoke(ctx, "sid:iss|1", later, now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if !revoked(t, s, "sid:iss|1", now.Add(5*time.Second)) {
				t.Error("session between two logouts not revoked")
			}
			// Entries expire at their expiry.
			clock.Add(time.Hour + time.Second)
			if revoked(t, s, "sid:iss|1", now.Add(-time.Minute)) {
				t.Error("expired revocation still enforced")
			}
			// Already expired revocations are no-ops.
			if err := s.Revoke(ctx, "sid:iss|3", clock.Now(), clock.Now().Add(-time.Second)); err != nil {
				t.Fatal(err)
			}
			if revoked(t, s, "sid:iss|3", now) {
				t.Error("already expired revocation enforced")
			}
		})
	}
}

func TestStoreOnce(t *testing.T) {
	for _, f := range factories() {
		t.Run(f.name, func(t *testing.T) {
			s := f.make(t, newFakeClock())
			ctx := context.Background()
			var calls atomic.Int32
			fn := func(ctx context.Context) ([]byte, error) {
				calls.Add(1)
				if _, ok := ctx.Deadline(); !ok {
					return nil, errors.New("fn's context has no deadline")
				}
				return []byte("sealed-result"), nil
			}
			for i := range 3 {
				v, err := s.Once(ctx, "refresh:a/1", time.Second, fn)
				if err != nil || string(v) != "sealed-result" {
					t.Fatalf("call %d: Once = %q, %v", i, v, err)
				}
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("fn ran %d times, want 1 (later calls reuse the result)", n)
			}

			// Errors are returned, not kept: the next call runs fn again.
			boom := errors.New("idp unreachable")
			var failing atomic.Int32
			for range 2 {
				_, err := s.Once(ctx, "refresh:b/1", time.Second, func(context.Context) ([]byte, error) {
					failing.Add(1)
					return nil, boom
				})
				if !errors.Is(err, boom) {
					t.Fatalf("Once error = %v, want %v", err, boom)
				}
			}
			if n := failing.Load(); n != 2 {
				t.Errorf("failing fn ran %d times, want 2", n)
			}

			// Concurrent callers on one replica share one run, and a caller
			// whose ctx ends gives up without failing the others.
			release := make(chan struct{})
			var shared atomic.Int32
			slow := func(context.Context) ([]byte, error) {
				shared.Add(1)
				<-release
				return []byte("x"), nil
			}
			short, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := s.Once(short, "refresh:c/1", 5*time.Second, slow); !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled caller: err = %v, want context.Canceled", err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 5)
			for range 5 {
				wg.Go(func() {
					v, err := s.Once(ctx, "refresh:c/1", 5*time.Second, slow)
					if err == nil && string(v) != "x" {
						err = fmt.Errorf("got %q", v)
					}
					errs <- err
				})
			}
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			if n := shared.Load(); n != 1 {
				t.Errorf("slow fn ran %d times, want 1", n)
			}

			if _, err := s.Once(ctx, "k", 0, fn); err == nil {
				t.Error("Once with ttl 0 accepted")
			}
		})
	}
}

func TestStoreBlobs(t *testing.T) {
	for _, f := range factories() {
		t.Run(f.name, func(t *testing.T) {
			s := f.make(t, newFakeClock())
			ctx := context.Background()

			var mu sync.Mutex
			var seen []string
			wctx, stop := context.WithCancel(ctx)
			defer stop()
			s.Watch(wctx, "certs/", func(key string) {
				mu.Lock()
				seen = append(seen, key)
				mu.Unlock()
			})
			saw := func(key string) bool {
				mu.Lock()
				defer mu.Unlock()
				return slices.Contains(seen, key)
			}

			if _, ok, err := s.Get(ctx, "certs/a"); ok || err != nil {
				t.Fatalf("Get of a missing key = %v, %v", ok, err)
			}
			tests := []struct {
				key   string
				value []byte
			}{
				{"certs/a", []byte("sealed-leaf-a")},
				{"certs/b", []byte{0, 1, 2, 255}},
				{"certs/empty", []byte{}},
				{"other/x", []byte("not watched")},
			}
			for _, tc := range tests {
				if err := s.Put(ctx, tc.key, tc.value, time.Hour); err != nil {
					t.Fatalf("Put %s: %v", tc.key, err)
				}
			}
			for _, tc := range tests {
				v, ok, err := s.Get(ctx, tc.key)
				if err != nil || !ok || !bytes.Equal(v, tc.value) {
					t.Errorf("Get %s = %q, %v, %v; want %q", tc.key, v, ok, err, tc.value)
				}
			}
			eventually(t, 10*time.Second, "watcher told of certs/a, certs/b, certs/empty", func() bool {
				return saw("certs/a") && saw("certs/b") && saw("certs/empty")
			})
			if err := s.Delete(ctx, "certs/a"); err != nil {
				t.Fatal(err)
			}
			if _, ok, _ := s.Get(ctx, "certs/a"); ok {
				t.Error("deleted key still there")
			}
			// A marker put after other/x: once it is seen, other/x would have been too.
			if err := s.Put(ctx, "certs/marker", nil, 0); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "watcher told of certs/marker", func() bool { return saw("certs/marker") })
			if saw("other/x") {
				t.Error("watcher of certs/ told of other/x")
			}
		})
	}
}

func TestStoreLeases(t *testing.T) {
	for _, f := range factories() {
		t.Run(f.name, func(t *testing.T) {
			s := f.make(t, newFakeClock())
			ctx := context.Background()
			l, ok, err := s.TryLease(ctx, "cert-renewer", time.Minute)
			if err != nil || !ok || l.Name() != "cert-renewer" {
				t.Fatalf("TryLease = %v, %v, %v", l, ok, err)
			}
			if _, ok, err := s.TryLease(ctx, "cert-renewer", time.Minute); ok || err != nil {
				t.Fatalf("second TryLease = %v, %v; want false, nil", ok, err)
			}
			if _, ok, _ := s.TryLease(ctx, "other", time.Minute); !ok {
				t.Error("an unrelated lease was refused")
			}
			if err := l.Renew(ctx); err != nil {
				t.Fatalf("Renew: %v", err)
			}
			if err := l.Release(ctx); err != nil {
				t.Fatalf("Release: %v", err)
			}
			if err := l.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
				t.Errorf("Renew after Release = %v, want ErrLeaseLost", err)
			}
			l2, ok, err := s.TryLease(ctx, "cert-renewer", time.Minute)
			if err != nil || !ok {
				t.Fatalf("TryLease after Release = %v, %v", ok, err)
			}
			// The old holder's Release must not drop the new holder's lease.
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if err := l2.Renew(ctx); err != nil {
				t.Errorf("new holder lost its lease to an old Release: %v", err)
			}
		})
	}
}

func TestStoreHealthy(t *testing.T) {
	for _, f := range factories() {
		t.Run(f.name, func(t *testing.T) {
			s := f.make(t, newFakeClock())
			if err := s.Healthy(); err != nil {
				t.Errorf("Healthy = %v", err)
			}
			if _, d := s.Degraded(); d {
				t.Error("Degraded")
			}
			if !s.SessionsUsable() {
				t.Error("sessions not usable")
			}
		})
	}
}

func TestMemoryLeaseExpiresWithClock(t *testing.T) {
	clock := newFakeClock()
	s, _ := New(context.Background(), Config{}, WithClock(clock.Now))
	ctx := context.Background()
	l, _, _ := s.TryLease(ctx, "x", time.Minute)
	clock.Add(time.Minute)
	if _, ok, _ := s.TryLease(ctx, "x", time.Minute); !ok {
		t.Fatal("expired lease not taken over")
	}
	if err := l.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Renew of an expired lease = %v, want ErrLeaseLost", err)
	}
}

func TestRevCacheBoundedFailsClosed(t *testing.T) {
	clock := newFakeClock()
	c := newRevCache(3, clock.Now)
	now := clock.Now()
	for i := range 3 {
		c.add(fmt.Sprint("k", i), now.Add(time.Duration(i)*time.Second), now.Add(time.Duration(i+1)*time.Hour))
	}
	// Full: adding drops k0 (expiring first) and raises the watermark to its at.
	c.add("k3", now.Add(10*time.Second), now.Add(5*time.Hour))
	if c.len() != 3 {
		t.Fatalf("len = %d, want 3", c.len())
	}
	if !c.revoked("unrelated", now) {
		t.Error("a session from before the dropped entry is not revoked (watermark)")
	}
	if c.revoked("unrelated", now.Add(time.Millisecond)) {
		t.Error("a session after the watermark is revoked")
	}
	if !c.revoked("k3", now.Add(5*time.Second)) {
		t.Error("k3 not revoked")
	}
}

func TestStoreClaims(t *testing.T) {
	for _, f := range factories() {
		t.Run(f.name, func(t *testing.T) {
			clock := newFakeClock()
			s := f.make(t, clock)
			ctx := context.Background()
			claim := func(key string, ttl time.Duration) bool {
				t.Helper()
				first, err := s.Claim(ctx, key, ttl)
				if err != nil {
					t.Fatalf("Claim(%q): %v", key, err)
				}
				return first
			}
			tests := []struct {
				name string
				key  string
				want bool
			}{
				{"first use of a login state", "login|state-1", true},
				{"the same state again", "login|state-1", false},
				{"another state", "login|state-2", true},
				{"a jti with the same text in another namespace", "jti|state-1", true},
				{"that jti again", "jti|state-1", false},
			}
			for _, tc := range tests {
				if got := claim(tc.key, time.Hour); got != tc.want {
					t.Errorf("%s: Claim = %v, want %v", tc.name, got, tc.want)
				}
			}
			for _, ttl := range []time.Duration{0, -time.Second, time.Microsecond} {
				if _, err := s.Claim(ctx, "bad-ttl", ttl); err == nil {
					t.Errorf("Claim with ttl %v: no error", ttl)
				}
			}
			// A claim ends with its ttl (the store's clock in memory,
			// Redis' own clock in Redis) and the key can be claimed anew.
			if !claim("short", 100*time.Millisecond) || claim("short", 100*time.Millisecond) {
				t.Fatal("short claim: want first true, then false")
			}
			clock.Add(200 * time.Millisecond)
			eventually(t, 5*time.Second, "expired claim claimable again", func() bool { return claim("short", time.Hour) })
			if claim("login|state-1", time.Hour) {
				t.Error("a live claim was forgotten")
			}
		})
	}
}

// The memory store forgets the claim that expires first when full, never
// one of the live claims that expire later.
func TestMemoryClaimsBounded(t *testing.T) {
	clock := newFakeClock()
	c := newTTLBytes(3, clock.Now)
	if !c.add("soon", time.Minute) || !c.add("b", time.Hour) || !c.add("c", time.Hour) {
		t.Fatal("first claims refused")
	}
	if !c.add("d", time.Hour) {
		t.Fatal("claim refused when full")
	}
	if len(c.m) != 3 {
		t.Fatalf("%d entries, bound is 3", len(c.m))
	}
	for _, k := range []string{"b", "c", "d"} {
		if c.add(k, time.Hour) {
			t.Errorf("live claim %q forgotten", k)
		}
	}
	if !c.add("soon", time.Hour) {
		t.Error("the evicted claim is still held")
	}
}
