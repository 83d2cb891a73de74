package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"
)

// propagation is the bound the issue sets on a logout reaching every
// replica. Pub/sub on loopback takes milliseconds, so waiting up to this
// deadline does not measure speed.
const propagation = time.Second

// recovery bounds reconnecting after a restart (backoff up to 2s).
const recovery = 20 * time.Second

func TestRedisRevocationReachesOtherReplicas(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	a := newRedisStore(t, redisConfig(srv.Addr()), clock)
	b := newRedisStore(t, redisConfig(srv.Addr()), clock)
	now := clock.Now()

	tests := []struct{ name, key string }{
		{"back-channel logout by sid", "sid:https://idp|s-1"},
		{"back-channel logout by sub", "sub:https://idp|alice"},
		{"key with spaces", "session:a b c"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := a.Revoke(context.Background(), tc.key, now, now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if !revoked(t, a, tc.key, now) {
				t.Fatal("not revoked on the replica that received the logout")
			}
			eventually(t, propagation, "revocation enforced by the other replica", func() bool {
				return revoked(t, b, tc.key, now.Add(-time.Second))
			})
		})
	}
	// A replica started later loads the whole set before New returns.
	c := newRedisStore(t, redisConfig(srv.Addr()), clock)
	for _, tc := range tests {
		if !revoked(t, c, tc.key, now) {
			t.Errorf("%s: not loaded by a replica started later", tc.key)
		}
	}
	// Another prefix is another deployment.
	other := redisConfig(srv.Addr())
	other.Redis.KeyPrefix = "other:"
	d := newRedisStore(t, other, clock)
	if revoked(t, d, tests[0].key, now) {
		t.Error("revocation leaked across key prefixes")
	}
}

func TestRedisOnceRunsOnceAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	stores := make([]*redisStore, 3)
	for i := range stores {
		stores[i] = newRedisStore(t, redisConfig(srv.Addr()), clock)
	}
	var calls atomic.Int32
	start := make(chan struct{})
	fn := func(context.Context) ([]byte, error) {
		calls.Add(1)
		time.Sleep(50 * time.Millisecond) // let the others find it running
		return []byte("sealed new session"), nil
	}
	var wg sync.WaitGroup
	results := make(chan string, 20)
	for i := range 20 {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			v, err := stores[i%3].Once(ctx, "refresh:session-1/4", 10*time.Second, fn)
			if err != nil {
				results <- "error: " + err.Error()
				return
			}
			results <- string(v)
		})
	}
	close(start)
	wg.Wait()
	close(results)
	for r := range results {
		if r != "sealed new session" {
			t.Errorf("caller got %q", r)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("fn ran %d times across 3 replicas, want 1", n)
	}
	// The result is stored under a hashed key, not the caller's.
	raw := rawClient(t, srv)
	keys, _ := raw.Keys(context.Background(), "test:once:*").Result()
	for _, k := range keys {
		if k != "test:once:result:"+hashKey("refresh:session-1/4") {
			t.Errorf("unexpected key %q", k)
		}
	}
}

func TestRedisOnceTakesOverFromDeadHolder(t *testing.T) {
	srv := redistest.Start(t)
	a := newRedisStore(t, redisConfig(srv.Addr()), newFakeClock())
	raw := rawClient(t, srv)
	key := "refresh:s/1"
	// A replica took the lock and died: nobody releases it.
	if err := raw.Set(context.Background(), "test:once:lock:"+hashKey(key), "dead-replica", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := a.Once(ctx, key, 5*time.Second, func(context.Context) ([]byte, error) {
		calls.Add(1)
		return []byte("ok"), nil
	})
	if err != nil || string(v) != "ok" || calls.Load() != 1 {
		t.Fatalf("Once = %q, %v after %d runs; want the lock taken over after expiry", v, err, calls.Load())
	}
	if n, _ := raw.Exists(context.Background(), "test:once:lock:"+hashKey(key)).Result(); n != 0 {
		t.Error("lock not released after fn")
	}

	// A waiter gives up when its ctx ends while the lock is held.
	if err := raw.Set(context.Background(), "test:once:lock:"+hashKey("k2"), "busy", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := a.Once(short, "k2", time.Minute, func(context.Context) ([]byte, error) { return nil, nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiter err = %v, want DeadlineExceeded", err)
	}
}

func TestRedisOnceFailureLetsAnotherReplicaRun(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	a := newRedisStore(t, redisConfig(srv.Addr()), clock)
	b := newRedisStore(t, redisConfig(srv.Addr()), clock)
	ctx := context.Background()
	boom := errors.New("idp down")
	if _, err := a.Once(ctx, "k", 5*time.Second, func(context.Context) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	v, err := b.Once(ctx, "k", 5*time.Second, func(context.Context) ([]byte, error) { return []byte("second try"), nil })
	if err != nil || string(v) != "second try" {
		t.Fatalf("after a failure elsewhere: %q, %v", v, err)
	}
}

func TestRedisLeaseExclusiveAndTakenOverAfterExpiry(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	a := newRedisStore(t, redisConfig(srv.Addr()), clock)
	b := newRedisStore(t, redisConfig(srv.Addr()), clock)
	ctx := context.Background()
	const ttl = 2 * time.Second // generous: Renew must land before it on a loaded machine

	la, ok, err := a.TryLease(ctx, "fleet-certs", ttl)
	if err != nil || !ok {
		t.Fatalf("a.TryLease = %v, %v", ok, err)
	}
	if _, ok, err := b.TryLease(ctx, "fleet-certs", ttl); ok || err != nil {
		t.Fatalf("b.TryLease while a holds it = %v, %v", ok, err)
	}
	if err := la.Renew(ctx); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	// a stops renewing (it died): b gets the lease once it expires.
	var lb Lease
	eventually(t, 10*time.Second, "lease taken over after expiry", func() bool {
		l, ok, err := b.TryLease(ctx, "fleet-certs", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		lb = l
		return ok
	})
	if err := la.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("old holder's Renew = %v, want ErrLeaseLost", err)
	}
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := a.TryLease(ctx, "fleet-certs", ttl); ok {
		t.Error("old holder's Release freed the new holder's lease")
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := a.TryLease(ctx, "fleet-certs", ttl); !ok {
		t.Error("lease not free after Release")
	}
}

func TestRedisWatchAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	a := newRedisStore(t, redisConfig(srv.Addr()), clock)
	b := newRedisStore(t, redisConfig(srv.Addr()), clock)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 16)
	b.Watch(ctx, "cert/", func(k string) { got <- k })
	if err := a.Put(ctx, "cert/spiffe://td/ns/orders", []byte("sealed leaf"), time.Hour); err != nil {
		t.Fatal(err)
	}
	select {
	case k := <-got:
		if k != "cert/spiffe://td/ns/orders" {
			t.Fatalf("notified of %q", k)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watcher on the other replica not notified")
	}
	v, ok, err := b.Get(ctx, "cert/spiffe://td/ns/orders")
	if err != nil || !ok || string(v) != "sealed leaf" {
		t.Fatalf("Get on the other replica = %q, %v, %v", v, ok, err)
	}
}

// TestRedisDownAndBack stops Redis under two replicas and brings it back on
// the same port, empty: revocations keep being answered locally, health
// reports it, sessions become unusable after the grace period (fail
// closed), and on recovery the stores resubscribe, write back what Redis
// lost and what was revoked while it was down, and carry new revocations.
func TestRedisDownAndBack(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	cfg := redisConfig(srv.Addr())
	cfg.Redis.DownGrace = 30 * time.Second
	a := newRedisStore(t, cfg, clock)
	b := newRedisStore(t, cfg, clock)
	ctx := context.Background()
	now := clock.Now()
	exp := now.Add(24 * time.Hour)

	if err := a.Revoke(ctx, "sid:before", now, exp); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagation, "revocation reaches b", func() bool { return revoked(t, b, "sid:before", now) })

	srv.Stop()
	for name, s := range map[string]*redisStore{"a": a, "b": b} {
		eventually(t, recovery, name+" reports Redis down", func() bool { return s.Healthy() != nil })
		if _, d := s.Degraded(); !d {
			t.Errorf("%s: Healthy fails but not Degraded", name)
		}
		if !errors.Is(s.Healthy(), ErrUnavailable) {
			t.Errorf("%s: Healthy = %v, want ErrUnavailable", name, s.Healthy())
		}
		if !revoked(t, s, "sid:before", now) {
			t.Errorf("%s: known revocation not answered while Redis is down", name)
		}
		if !s.SessionsUsable() {
			t.Errorf("%s: sessions unusable within the grace period", name)
		}
	}
	// A logout while Redis is down: enforced here, error returned, queued.
	if err := b.Revoke(ctx, "sid:during", now, exp); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Revoke while down = %v, want ErrUnavailable", err)
	}
	if !revoked(t, b, "sid:during", now) {
		t.Error("revocation made while down not enforced locally")
	}

	clock.Add(31 * time.Second)
	for name, s := range map[string]*redisStore{"a": a, "b": b} {
		if s.SessionsUsable() {
			t.Errorf("%s: sessions still usable after the grace period (on_down closed)", name)
		}
		if r, err := s.Revoked(ctx, "sid:unrelated", clock.Now()); !r || !errors.Is(err, ErrSessionsUnusable) {
			t.Errorf("%s: Revoked after grace = %v, %v; want true, ErrSessionsUnusable", name, r, err)
		}
	}

	srv.Restart() // same port, no data
	for name, s := range map[string]*redisStore{"a": a, "b": b} {
		eventually(t, recovery, name+" recovers", func() bool { return s.Healthy() == nil })
		if !s.SessionsUsable() {
			t.Errorf("%s: sessions unusable after recovery", name)
		}
	}
	eventually(t, recovery, "revocation made on b while down reaches a", func() bool {
		return revoked(t, a, "sid:during", now)
	})
	// Resubscribed: a new revocation flows as before.
	if err := a.Revoke(ctx, "sid:after", now, exp); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagation, "revocation after restart reaches b", func() bool { return revoked(t, b, "sid:after", now) })
	// Redis came back empty; the replicas wrote back what they knew, so a
	// replica started now knows every logout.
	c := newRedisStore(t, cfg, clock)
	for _, k := range []string{"sid:before", "sid:during", "sid:after"} {
		if !revoked(t, c, k, now) {
			t.Errorf("new replica after the restart does not know %s", k)
		}
	}
}

func TestRedisDownFailOpen(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	cfg := redisConfig(srv.Addr())
	cfg.Redis.OnDown = OnDownOpen
	a := newRedisStore(t, cfg, clock)
	now := clock.Now()
	if err := a.Revoke(context.Background(), "sid:x", now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	eventually(t, recovery, "Redis down noticed", func() bool { return a.Healthy() != nil })
	clock.Add(time.Hour - time.Minute)
	if !a.SessionsUsable() {
		t.Error("on_down open: sessions unusable")
	}
	if !revoked(t, a, "sid:x", now) || revoked(t, a, "sid:y", now) {
		t.Error("on_down open: local answers changed")
	}
}

// TestRedisReloadsOnResubscribe drops the subscriber connection while Redis
// stays up: a revocation that reached Redis but whose message was missed
// is loaded by the full reload on reconnect.
func TestRedisReloadsOnResubscribe(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	a := newRedisStore(t, redisConfig(srv.Addr()), clock)
	raw := rawClient(t, srv)
	ctx := context.Background()
	now := clock.Now()
	it := revItem{key: "sid:missed", at: now, expires: now.Add(time.Hour)}
	if err := raw.ZAdd(ctx, "test:revocations", redis.Z{Score: expiryScore(it.expires), Member: it.member()}).Err(); err != nil {
		t.Fatal(err)
	}
	if revoked(t, a, "sid:missed", now) {
		t.Fatal("known without a message or reload?")
	}
	// Likewise a certificate changed without a message reaching a watcher.
	got := make(chan string, 4)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	a.Watch(wctx, "cert/", func(k string) { got <- k })
	if err := raw.Set(ctx, "test:blob:cert/x", "sealed", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, recovery, "missed revocation loaded on reconnect", func() bool { return revoked(t, a, "sid:missed", now) })
	select {
	case k := <-got:
		if k != "cert/x" {
			t.Errorf("watcher told of %q after reconnect, want cert/x", k)
		}
	case <-time.After(recovery):
		t.Error("watcher not told of keys under its prefix after reconnect")
	}
}

func TestRedisDownAtStart(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	clock := newFakeClock()
	cfg := redisConfig(srv.Addr())
	cfg.Redis.DialTimeout = 200 * time.Millisecond
	a := newRedisStore(t, cfg, clock)
	if a.Healthy() == nil {
		t.Fatal("healthy with Redis down")
	}
	now := clock.Now()
	if err := a.Revoke(context.Background(), "sid:early", now, now.Add(time.Hour)); err == nil {
		t.Error("Revoke with Redis down returned nil")
	}
	srv.Restart()
	eventually(t, recovery, "connects once Redis is up", func() bool { return a.Healthy() == nil })
	b := newRedisStore(t, redisConfig(srv.Addr()), clock)
	eventually(t, recovery, "revocation queued before the first connection reaches Redis", func() bool {
		return revoked(t, b, "sid:early", now)
	})
}

func TestRedisACLUserAndPasswordFile(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{Args: []string{
		"--user", "default", "off",
		"--user", "gatehouse", "on", ">s3cret", "~test:*", "&test:*", "+@all",
	}})
	dir := t.TempDir()
	good := filepath.Join(dir, "pw")
	if err := os.WriteFile(good, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		address string
		user    string
		pwFile  string
		healthy bool
	}{
		{"user field", srv.Addr(), "gatehouse", good, true},
		{"user in URL", "redis://gatehouse@" + srv.Addr() + "/0", "", good, true},
		{"wrong password", srv.Addr(), "gatehouse", bad, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := redisConfig(tc.address)
			cfg.Redis.Username, cfg.Redis.PasswordFile = tc.user, tc.pwFile
			cfg.Redis.DialTimeout = 500 * time.Millisecond
			s := newRedisStore(t, cfg, newFakeClock())
			if got := s.Healthy() == nil; got != tc.healthy {
				t.Fatalf("healthy = %v (%v), want %v", got, s.Healthy(), tc.healthy)
			}
			if tc.healthy {
				if err := s.Put(context.Background(), "k", []byte("v"), time.Minute); err != nil {
					t.Errorf("Put as ACL user: %v", err)
				}
			}
		})
	}
	if _, err := New(context.Background(), Config{Backend: BackendRedis, Redis: Redis{Address: srv.Addr(), PasswordFile: filepath.Join(dir, "missing")}}); err == nil {
		t.Error("missing password file accepted")
	}
}

func TestRedisMetrics(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	reg := prometheus.NewRegistry()
	a := newRedisStore(t, redisConfig(srv.Addr()), clock, WithRegisterer(reg))
	b := newRedisStore(t, redisConfig(srv.Addr()), clock)
	if v := testutil.ToFloat64(a.m.up); v != 1 {
		t.Errorf("redis_up = %v, want 1", v)
	}
	now := clock.Now()
	if err := b.Revoke(context.Background(), "sid:m", now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagation, "revocation received", func() bool {
		return testutil.ToFloat64(a.m.received.WithLabelValues("pubsub")) == 1
	})
	srv.Stop()
	eventually(t, recovery, "redis_up drops", func() bool { return testutil.ToFloat64(a.m.up) == 0 })
	_ = a.Put(context.Background(), "k", nil, 0)
	if v := testutil.ToFloat64(a.m.errors.WithLabelValues("put")); v != 1 {
		t.Errorf("operation_errors_total{op=put} = %v, want 1", v)
	}
	n, err := testutil.GatherAndCount(reg)
	if err != nil || n == 0 {
		t.Errorf("gather: %d series, %v", n, err)
	}
}

func TestMemberRoundTrip(t *testing.T) {
	now := time.Unix(1700000000, 123456789)
	tests := []string{"sid:iss|x", "session:with spaces", "sub:https://idp.example.com/|ü"}
	for _, key := range tests {
		it := revItem{key: key, at: now, expires: now.Add(time.Hour)}
		got, ok := parseMember(it.member())
		if !ok || got.key != key || !got.at.Equal(it.at) || !got.expires.Equal(it.expires) {
			t.Errorf("%q: round trip = %+v, %v", key, got, ok)
		}
	}
	for _, bad := range []string{"", "1", "1 2", "x 2 k", "1 y k", "1 2 "} {
		if _, ok := parseMember(bad); ok {
			t.Errorf("parseMember(%q) accepted", bad)
		}
	}
	if s := expiryScore(time.UnixMilli(5).Add(time.Nanosecond)); s != 6 {
		t.Errorf("expiryScore rounds down: %v", s)
	}
	if got := globEscape("a*b?[c]\\"); got != `a\*b\?\[c\]\\` {
		t.Errorf("globEscape = %q", got)
	}
}

// Replicas racing to claim one key: exactly one wins, whichever replica
// it runs on; other prefixes are other deployments; an unreachable Redis
// is an error, never a "first".
func TestRedisClaimExactlyOnceAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	replicas := []*redisStore{
		newRedisStore(t, redisConfig(srv.Addr()), clock),
		newRedisStore(t, redisConfig(srv.Addr()), clock),
		newRedisStore(t, redisConfig(srv.Addr()), clock),
	}
	ctx := context.Background()
	for round := range 5 {
		key := fmt.Sprintf("login|state-%d", round)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for _, r := range replicas {
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					first, err := r.Claim(ctx, key, time.Minute)
					if err != nil {
						t.Error(err)
					}
					if first {
						wins.Add(1)
					}
				}()
			}
		}
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("%s: %d first claims across 3 replicas x 8, want exactly 1", key, n)
		}
	}
	other := redisConfig(srv.Addr())
	other.Redis.KeyPrefix = "other:"
	if first, err := newRedisStore(t, other, clock).Claim(ctx, "login|state-0", time.Minute); err != nil || !first {
		t.Errorf("another key prefix: first %v, err %v; want a first claim", first, err)
	}
	srv.Stop()
	first, err := replicas[0].Claim(ctx, "login|after-stop", time.Minute)
	if first || !errors.Is(err, ErrUnavailable) {
		t.Errorf("Redis down: first %v, err %v; want false and ErrUnavailable", first, err)
	}
}
