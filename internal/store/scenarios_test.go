package store

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"
)

// TestScenarioRevocationsSurviveRedisDataLoss: a replica that knows a
// logout writes it back when Redis loses its data, so that a replica
// started afterwards still enforces it.
func TestScenarioRevocationsSurviveRedisDataLoss(t *testing.T) {
	cases := []struct {
		name string
		lose func(t *testing.T, srv *redistest.Server)
		bug  string
	}{
		{"restart without persistence", func(t *testing.T, srv *redistest.Server) { srv.Restart() }, ""},
		{"flushall while connected", func(t *testing.T, srv *redistest.Server) {
			if err := rawClient(t, srv).FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			clock := newFakeClock()
			cfg := redisConfig(srv.Addr())
			s1 := newRedisStore(t, cfg, clock, WithHeartbeat(100*time.Millisecond))
			eventually(t, 5*time.Second, "s1 up", func() bool { return s1.Healthy() == nil })
			at := clock.Now()
			if err := s1.Revoke(context.Background(), "session:abc", at, at.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			tc.lose(t, srv)
			// Let s1 notice whatever it can notice.
			eventually(t, 10*time.Second, "s1 up again", func() bool { return s1.Healthy() == nil })
			time.Sleep(500 * time.Millisecond)
			if !revoked(t, s1, "session:abc", at) {
				t.Fatal("the replica that saw the logout forgot it")
			}
			s2 := newRedisStore(t, cfg, clock, WithHeartbeat(100*time.Millisecond))
			deadline := time.Now().Add(3 * time.Second)
			for {
				if s2.SessionsUsable() && revoked(t, s2, "session:abc", at) {
					return
				}
				if time.Now().After(deadline) {
					if tc.bug != "" {
						t.Skip(tc.bug)
					}
					t.Fatal("a replica started after Redis lost its data accepts a logged-out session")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestScenarioOnceAcrossRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	cfg := redisConfig(srv.Addr())
	a := newRedisStore(t, cfg, clock)
	b := newRedisStore(t, cfg, clock)
	eventually(t, 5*time.Second, "stores up", func() bool { return a.Healthy() == nil && b.Healthy() == nil })

	t.Run("down: error, fn not run", func(t *testing.T) {
		srv.Stop()
		var ran atomic.Int32
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		_, err := a.Once(ctx, "k-down", time.Second, func(context.Context) ([]byte, error) {
			ran.Add(1)
			return []byte("x"), nil
		})
		if err == nil {
			t.Fatal("Once succeeded with Redis down")
		}
		if ran.Load() != 0 {
			t.Fatal("fn ran although the lock could not be taken")
		}
		if d := time.Since(start); d > 8*time.Second {
			t.Fatalf("Once took %s to fail", d)
		}
	})
	t.Run("back: exactly once across replicas", func(t *testing.T) {
		srv.Restart()
		eventually(t, 10*time.Second, "stores up again", func() bool { return a.Healthy() == nil && b.Healthy() == nil })
		for round := range 3 {
			var ran atomic.Int32
			var wg sync.WaitGroup
			got := make([]string, 10)
			errs := make([]error, 10)
			key := "k-up-" + string(rune('a'+round))
			for i := range got {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s := a
					if i%2 == 1 {
						s = b
					}
					v, err := s.Once(context.Background(), key, 2*time.Second, func(context.Context) ([]byte, error) {
						ran.Add(1)
						time.Sleep(50 * time.Millisecond)
						return []byte("v"), nil
					})
					got[i], errs[i] = string(v), err
				}()
			}
			wg.Wait()
			for i := range got {
				if errs[i] != nil || got[i] != "v" {
					t.Errorf("caller %d: %q, %v", i, got[i], errs[i])
				}
			}
			if n := ran.Load(); n != 1 {
				t.Fatalf("fn ran %d times across replicas, want 1", n)
			}
		}
	})
}

func TestScenarioKeyPrefixIsolation(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	cfgA, cfgB := redisConfig(srv.Addr()), redisConfig(srv.Addr())
	cfgA.Redis.KeyPrefix, cfgB.Redis.KeyPrefix = "tenant-a:", "tenant-b:"
	a := newRedisStore(t, cfgA, clock)
	a2 := newRedisStore(t, cfgA, clock)
	b := newRedisStore(t, cfgB, clock)
	eventually(t, 5*time.Second, "stores up", func() bool { return a.Healthy() == nil && a2.Healthy() == nil && b.Healthy() == nil })
	ctx := context.Background()

	cases := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"claims", func(t *testing.T) {
			for _, s := range []*redisStore{a, b} {
				first, err := s.Claim(ctx, "state-1", time.Minute)
				if err != nil || !first {
					t.Fatalf("claim under its own prefix: first=%v err=%v", first, err)
				}
			}
			if first, _ := a2.Claim(ctx, "state-1", time.Minute); first {
				t.Fatal("same prefix claimed twice")
			}
		}},
		{"revocations", func(t *testing.T) {
			at := clock.Now()
			if err := a.Revoke(ctx, "sub:x", at, at.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "same-prefix replica sees it", func() bool { return revoked(t, a2, "sub:x", at) })
			if revoked(t, b, "sub:x", at) {
				t.Fatal("a revocation crossed key prefixes")
			}
			b2 := newRedisStore(t, cfgB, clock)
			eventually(t, 5*time.Second, "b2 up", func() bool { return b2.Healthy() == nil })
			if revoked(t, b2, "sub:x", at) {
				t.Fatal("a revocation crossed key prefixes on load")
			}
		}},
		{"once", func(t *testing.T) {
			var ran atomic.Int32
			fn := func(context.Context) ([]byte, error) { ran.Add(1); return []byte("r"), nil }
			for _, s := range []*redisStore{a, a2, b} {
				if _, err := s.Once(ctx, "refresh-1", time.Second, fn); err != nil {
					t.Fatal(err)
				}
			}
			if n := ran.Load(); n != 2 {
				t.Fatalf("fn ran %d times for two prefixes, want 2", n)
			}
		}},
		{"blobs", func(t *testing.T) {
			if err := a.Put(ctx, "cfg", []byte("A"), time.Minute); err != nil {
				t.Fatal(err)
			}
			if _, found, err := b.Get(ctx, "cfg"); err != nil || found {
				t.Fatalf("blob crossed prefixes: found=%v err=%v", found, err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.check)
	}
}

func TestScenarioClaimTTL(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, redisConfig(srv.Addr()), newFakeClock())
	eventually(t, 5*time.Second, "up", func() bool { return s.Healthy() == nil })
	ctx := context.Background()
	cases := []struct {
		name string
		ttl  time.Duration
		err  bool
	}{
		{"300ms", 300 * time.Millisecond, false},
		{"1ms", time.Millisecond, false},
		{"zero", 0, true},
		{"sub-millisecond", 500 * time.Microsecond, true},
		{"negative", -time.Second, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := "ttl-" + tc.name
			first, err := s.Claim(ctx, key, tc.ttl)
			if tc.err {
				if err == nil {
					t.Fatalf("Claim with ttl %s: no error", tc.ttl)
				}
				return
			}
			if err != nil || !first {
				t.Fatalf("first claim: %v %v", first, err)
			}
			if tc.ttl > 50*time.Millisecond {
				if again, err := s.Claim(ctx, key, tc.ttl); err != nil || again {
					t.Fatalf("second claim within ttl: first=%v err=%v", again, err)
				}
				pttl, err := rawClient(t, srv).PTTL(ctx, s.claimPrefix+hashKey(key)).Result()
				if err != nil || pttl <= 0 || pttl > tc.ttl {
					t.Fatalf("claim key PTTL %s (err %v), want in (0, %s]", pttl, err, tc.ttl)
				}
			}
			eventually(t, 3*time.Second, "claim usable again after its ttl", func() bool {
				again, err := s.Claim(ctx, key, time.Hour)
				return err == nil && again
			})
		})
	}
}

func TestScenarioRevocationExpiry(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	cfg := redisConfig(srv.Addr())
	s := newRedisStore(t, cfg, clock)
	eventually(t, 5*time.Second, "up", func() bool { return s.Healthy() == nil })
	ctx := context.Background()
	at := clock.Now()
	if err := s.Revoke(ctx, "session:exp", at, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		authTime time.Time
		advance  time.Duration
		want     bool
	}{
		{"session from before the logout", at.Add(-time.Second), 0, true},
		{"session at the logout instant", at, 0, true},
		{"session after the logout", at.Add(time.Millisecond), 0, false},
		{"entry forgotten after expiry", at.Add(-time.Second), time.Minute + time.Second, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock.Add(tc.advance)
			if got := revoked(t, s, "session:exp", tc.authTime); got != tc.want {
				t.Fatalf("revoked=%v, want %v", got, tc.want)
			}
		})
	}
	// An already-expired revocation is not written at all.
	if err := s.Revoke(ctx, "session:old", at, clock.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if revoked(t, s, "session:old", at) {
		t.Fatal("an expired revocation is enforced")
	}
}
