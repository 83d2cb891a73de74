package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Revocations remembers logged-out sessions. Its method set is the one
// extauthz/oidc.RevocationStore asks for, so a Store can be passed to
// oidc.WithRevocationStore as it is.
type Revocations interface {
	// Revoke records that sessions under key (e.g. "sid:<iss>|<sid>") that
	// authenticated at or before at are over, until expires. It is enforced
	// on this replica at once, even when it returns an error (Redis
	// unreachable); the Redis store then writes it when Redis is back.
	Revoke(ctx context.Context, key string, at, expires time.Time) error
	// Revoked reports whether a session under key that authenticated at
	// authTime is revoked. It never leaves the process. It returns (true,
	// ErrSessionsUnusable) when SessionsUsable is false; an error must be
	// treated as revoked.
	Revoked(ctx context.Context, key string, authTime time.Time) (bool, error)
}

// OnceRunner runs a function once per key across replicas.
type OnceRunner interface {
	// Once returns the result of fn for key, running fn at most once at a
	// time across every replica sharing the store. Callers that find it
	// running wait (bounded by ctx) and get the bytes the winner returned,
	// kept for the result TTL (WithResultTTL, default 30s). fn gets a
	// context that ends after ttl, when the lock expires and another
	// replica may take over; it is not cancelled with the caller's ctx.
	// An error from fn is returned to the callers waiting on this replica
	// but not stored: another replica's caller will run fn itself. Encode
	// outcomes to share (such as "refresh refused") in the bytes. The bytes
	// are stored as given: seal anything secret first.
	Once(ctx context.Context, key string, ttl time.Duration, fn func(context.Context) ([]byte, error)) ([]byte, error)
}

// Claims make a value usable once across replicas: an OIDC login's state,
// a back-channel logout token's jti. Without them a replay sent to another
// replica than the first use would be accepted there.
type Claims interface {
	// Claim records key for ttl and reports whether this was its first use
	// on any replica sharing the store. An error means the answer is
	// unknown (Redis unreachable): the caller decides whether to fail
	// closed.
	Claim(ctx context.Context, key string, ttl time.Duration) (first bool, err error)
}

// Blobs are opaque values shared by key, with change notifications.
type Blobs interface {
	// Get returns the value under key and whether there is one.
	Get(ctx context.Context, key string) ([]byte, bool, error)
	// Put stores value under key for ttl (0: no expiry) and notifies
	// watchers of key on every replica.
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Delete removes key and notifies watchers.
	Delete(ctx context.Context, key string) error
	// Watch calls fn with the key of every change under prefix until ctx
	// ends; Watch itself returns at once. fn runs on its own goroutine, one
	// call at a time; keys changing faster than fn returns are coalesced.
	// After a reconnect to Redis fn is called with every key under prefix,
	// since changes may have been missed. fn should Get the key.
	Watch(ctx context.Context, prefix string, fn func(key string))
}

// Leases elect one replica for a job.
type Leases interface {
	// TryLease takes the lease name for ttl if nobody holds it. It returns
	// false (and a nil Lease) when another holder has it.
	TryLease(ctx context.Context, name string, ttl time.Duration) (Lease, bool, error)
}

// Lease is held until it expires or is released.
type Lease interface {
	// Name is the lease's name.
	Name() string
	// Renew extends the lease by its ttl from now. It returns ErrLeaseLost
	// when the lease has expired and may be someone else's.
	Renew(ctx context.Context) error
	// Release gives the lease up (no error if it was already lost).
	Release(ctx context.Context) error
}

// Health reports on the shared backend.
type Health interface {
	// Healthy is nil when the backend is reachable (always, in memory).
	Healthy() error
	// Degraded reports whether the backend is unreachable, and since when.
	Degraded() (since time.Time, degraded bool)
	// SessionsUsable is false when session cookies must not be accepted:
	// Redis has been unreachable for longer than DownGrace and OnDown is
	// "closed".
	SessionsUsable() bool
}

// Store is everything replicas share. Create it with New; Close it when done.
type Store interface {
	Revocations
	OnceRunner
	Claims
	Blobs
	Leases
	Health
	// Close stops background work and closes connections.
	Close() error
}

// Errors.
var (
	// ErrUnavailable wraps errors of an unreachable backend.
	ErrUnavailable = errors.New("store unavailable")
	// ErrSessionsUnusable is Revoked's error when SessionsUsable is false.
	ErrSessionsUnusable = errors.New("shared store unreachable for longer than its grace period: sessions are not accepted")
	// ErrLeaseLost is Renew's error when the lease is no longer held.
	ErrLeaseLost = errors.New("lease lost")
)

// DefaultResultTTL is how long Once keeps a result for callers that come late.
const DefaultResultTTL = 30 * time.Second

// Option configures New.
type Option func(*options)

type options struct {
	log        *slog.Logger
	now        func() time.Time
	reg        prometheus.Registerer
	resultTTL  time.Duration
	heartbeat  time.Duration
	maxResults int
	maxPending int
}

// WithLogger sets the logger (default slog.Default()). Values are never logged.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithClock sets the clock for revocation expiry and the down grace period
// (default time.Now). Lock and lease TTLs are Redis's.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithRegisterer registers the store's metrics with reg (default: none).
func WithRegisterer(reg prometheus.Registerer) Option { return func(o *options) { o.reg = reg } }

// WithResultTTL sets how long Once results are kept (default 30s).
func WithResultTTL(d time.Duration) Option { return func(o *options) { o.resultTTL = d } }

// WithHeartbeat sets how often an idle pub/sub connection is pinged; two
// missed heartbeats count as Redis down (default 2s).
func WithHeartbeat(d time.Duration) Option { return func(o *options) { o.heartbeat = d } }

// New returns the store cfg selects. The Redis store starts its subscriber
// and waits up to the dial timeout for the first full load of revocations;
// if Redis is unreachable it still returns, degraded, and keeps trying.
// ctx bounds only that first wait.
func New(ctx context.Context, cfg Config, opts ...Option) (Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	o := options{log: slog.Default(), now: time.Now, resultTTL: DefaultResultTTL,
		heartbeat: 2 * time.Second, maxResults: 10_000, maxPending: 10_000}
	for _, opt := range opts {
		opt(&o)
	}
	if o.resultTTL <= 0 || o.heartbeat <= 0 {
		return nil, fmt.Errorf("store: result TTL and heartbeat must be positive")
	}
	m := newMetrics(o.reg, cfg.Backend)
	switch cfg.Backend {
	case BackendRedis:
		return newRedis(ctx, cfg, o, m)
	default:
		return newMemory(cfg, o), nil
	}
}
