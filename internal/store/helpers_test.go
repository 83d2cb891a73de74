package store

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// redisConfig is a config for srv with test-friendly timeouts (a loaded
// 2-core machine running -race).
func redisConfig(addr string) Config {
	return Config{Backend: BackendRedis, Redis: Redis{
		Address: addr, KeyPrefix: "test:", DialTimeout: 2 * time.Second, OpTimeout: 2 * time.Second,
	}}
}

// newRedisStore opens a store on srv, closed at the test's end.
func newRedisStore(t testing.TB, cfg Config, clock *fakeClock, opts ...Option) *redisStore {
	t.Helper()
	opts = append([]Option{WithLogger(testLogger(t)), WithClock(clock.Now)}, opts...)
	s, err := New(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.(*redisStore)
}

// rawClient talks to srv directly, to inspect or tamper with what the store wrote.
func rawClient(t testing.TB, srv *redistest.Server) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func revoked(t testing.TB, s Revocations, key string, authTime time.Time) bool {
	t.Helper()
	r, err := s.Revoked(context.Background(), key, authTime)
	if err != nil {
		t.Fatalf("Revoked(%q): %v", key, err)
	}
	return r
}
