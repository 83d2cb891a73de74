package store

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"golang.org/x/sync/singleflight"

	"github.com/gatehouse-proxy/gatehouse/internal/secretfile"
)

// Redis layout, every name under Config.Redis.KeyPrefix:
//
//	revocations          sorted set: member "<at ns> <expires ns> <key>", score expires (ms)
//	epoch                random id written on first use; a change means Redis lost its data
//	once:lock:<h>        lock token (SET NX PX); h = sha256(key) prefix
//	once:result:<h>      result bytes, for the result TTL
//	claim:<h>            "1" (SET NX PX); h = sha256(key) prefix
//	blob:<key>           Put values
//	lease:<name>         lease token (SET NX PX)
//	ch:revocations       channel: a revocations member
//	ch:once              channel: h of a finished Once
//	ch:blobs             channel: the key of a changed blob
const (
	onceMinPoll = 20 * time.Millisecond
	onceMaxPoll = 500 * time.Millisecond
	minBackoff  = 100 * time.Millisecond
	maxBackoff  = 2 * time.Second
	scanBatch   = 1000
	writeBatch  = 500
)

// compareAndDelete deletes KEYS[1] only if it still holds ARGV[1].
const compareAndDelete = `
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`

// compareAndExpire extends KEYS[1] by ARGV[2] ms only if it holds ARGV[1].
const compareAndExpire = `
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`

// redisStore is the Store shared through Redis.
type redisStore struct {
	cfg    Redis
	o      options
	log    *slog.Logger
	m      *metrics
	client *redis.Client
	cad    *redis.Script // compareAndDelete
	cae    *redis.Script // compareAndExpire

	revKey, epochKey                 string
	chRevocations, chOnce, chBlobs   string
	onceLockPrefix, onceResultPrefix string
	blobPrefix, leasePrefix          string
	claimPrefix                      string
	revs                             *revCache
	flights                          singleflight.Group
	watch                            *watchers
	cancel                           context.CancelFunc
	done                             chan struct{}
	synced                           chan struct{} // closed after the first full load
	syncedOnce                       sync.Once
	downSince                        atomic.Int64 // unix ns; 0 while up
	epoch                            string       // last seen; subscriber goroutine only
	healthMu                         sync.Mutex
	lastErr                          error
	waitMu                           sync.Mutex
	waiters                          map[string]*onceWait
	pendingMu                        sync.Mutex
	pending                          []revItem
	pendingDropped                   int
	closeOnce                        sync.Once
	closeErr                         error
}

type onceWait struct {
	ch chan struct{}
	n  int
}

type revItem struct {
	key         string
	at, expires time.Time
}

func newRedis(ctx context.Context, cfg Config, o options, m *metrics) (*redisStore, error) {
	rc := cfg.Redis
	ep, urlTLS, err := rc.endpoint()
	if err != nil {
		return nil, fmt.Errorf("store: redis.address: %w", err)
	}
	user := rc.Username
	if user == "" {
		user = ep.user
	}
	opt := &redis.Options{
		Addr:                  ep.addr,
		DB:                    ep.db,
		DialTimeout:           rc.DialTimeout,
		ReadTimeout:           rc.OpTimeout,
		WriteTimeout:          rc.OpTimeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            1,
		DisableIdentity:       true,
		// No cluster maintenance handshake: plain Redis, fewer moving parts.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if rc.PasswordFile != "" {
		if _, err := readSecretFile(rc.PasswordFile); err != nil {
			return nil, fmt.Errorf("store: redis.password_file: %w", err)
		}
		file := rc.PasswordFile
		// Re-read on every new connection so a rotated secret is used.
		opt.CredentialsProviderContext = func(context.Context) (string, string, error) {
			pw, err := readSecretFile(file)
			return user, pw, err
		}
	} else {
		opt.Username = user
	}
	if rc.TLS || urlTLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: rc.ServerName}
		if tc.ServerName == "" {
			host, _, _ := net.SplitHostPort(ep.addr)
			tc.ServerName = host
		}
		if rc.CAFile != "" {
			pem, err := os.ReadFile(rc.CAFile)
			if err != nil {
				return nil, fmt.Errorf("store: redis.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("store: redis.ca_file %s: no PEM certificates", rc.CAFile)
			}
			tc.RootCAs = pool
		}
		opt.TLSConfig = tc
	}
	p := rc.KeyPrefix
	s := &redisStore{
		cfg: rc, o: o, log: o.log.With("component", "store", "backend", "redis"), m: m,
		client:         redis.NewClient(opt),
		cad:            redis.NewScript(compareAndDelete),
		cae:            redis.NewScript(compareAndExpire),
		revKey:         p + "revocations",
		epochKey:       p + "epoch",
		chRevocations:  p + "ch:revocations",
		chOnce:         p + "ch:once",
		chBlobs:        p + "ch:blobs",
		onceLockPrefix: p + "once:lock:", onceResultPrefix: p + "once:result:",
		blobPrefix: p + "blob:", leasePrefix: p + "lease:", claimPrefix: p + "claim:",
		revs:    newRevCache(cfg.MaxRevocations, o.now),
		watch:   newWatchers(o.log),
		done:    make(chan struct{}),
		synced:  make(chan struct{}),
		waiters: map[string]*onceWait{},
		lastErr: errors.New("not connected yet"),
	}
	s.downSince.Store(o.now().UnixNano())
	m.setUp(false)
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(runCtx)

	wait, cancelWait := context.WithTimeout(ctx, rc.DialTimeout+rc.OpTimeout)
	defer cancelWait()
	select {
	case <-s.synced:
	case <-wait.Done():
		s.log.Warn("store: redis not reachable at start; running degraded and retrying",
			"address", ep.addr, "err", s.Healthy())
	}
	return s, nil
}

// readSecretFile returns the password in path without its trailing
// newline. secretfile refuses a file others may read, an empty one and an
// oversized one, on every re-read too.
func readSecretFile(path string) (string, error) {
	b, err := secretfile.Read(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func (s *redisStore) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.OpTimeout)
}

// fail counts a failed operation and wraps its error.
func (s *redisStore) fail(op string, err error) error {
	s.m.opError(op)
	return fmt.Errorf("store: redis %s: %w: %w", op, ErrUnavailable, err)
}

// ---- Revocations ----

func (it revItem) member() string {
	return strconv.FormatInt(it.at.UnixNano(), 10) + " " + strconv.FormatInt(it.expires.UnixNano(), 10) + " " + it.key
}

func parseMember(m string) (revItem, bool) {
	a, rest, ok1 := strings.Cut(m, " ")
	e, key, ok2 := strings.Cut(rest, " ")
	at, err1 := strconv.ParseInt(a, 10, 64)
	exp, err2 := strconv.ParseInt(e, 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || key == "" {
		return revItem{}, false
	}
	return revItem{key: key, at: time.Unix(0, at), expires: time.Unix(0, exp)}, true
}

// expiryScore is the sorted-set score: expiry in ms, rounded up.
func expiryScore(t time.Time) float64 {
	ms := t.UnixMilli()
	if t.After(time.UnixMilli(ms)) {
		ms++
	}
	return float64(ms)
}

func (s *redisStore) Revoke(ctx context.Context, key string, at, expires time.Time) error {
	it := revItem{key: key, at: at, expires: expires}
	if !expires.After(s.o.now()) {
		return nil
	}
	s.revs.add(key, at, expires)
	if err := s.writeRevocations(ctx, []revItem{it}); err != nil {
		s.queue(it)
		return fmt.Errorf("%w (enforced on this replica; written to Redis when it is back)", s.fail("revoke", err))
	}
	return nil
}

// writeRevocations adds items to the set, publishes them and drops expired entries.
func (s *redisStore) writeRevocations(ctx context.Context, items []revItem) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, it := range items {
			m := it.member()
			p.ZAdd(ctx, s.revKey, redis.Z{Score: expiryScore(it.expires), Member: m})
			p.Publish(ctx, s.chRevocations, m)
		}
		p.ZRemRangeByScore(ctx, s.revKey, "-inf", "("+strconv.FormatInt(s.o.now().UnixMilli(), 10))
		return nil
	})
	return err
}

// queue keeps a revocation that could not be written, for the next sync.
func (s *redisStore) queue(it revItem) {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	if len(s.pending) >= s.o.maxPending {
		s.pending = s.pending[1:]
		s.pendingDropped++
	}
	s.pending = append(s.pending, it)
}

func (s *redisStore) Revoked(_ context.Context, key string, authTime time.Time) (bool, error) {
	if !s.SessionsUsable() {
		return true, ErrSessionsUnusable
	}
	return s.revs.revoked(key, authTime), nil
}

// ---- Once ----

func hashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16])
}

func (s *redisStore) Once(ctx context.Context, key string, ttl time.Duration, fn func(context.Context) ([]byte, error)) ([]byte, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("store: once %q: ttl must be positive", key)
	}
	h := hashKey(key)
	ch := s.flights.DoChan(h, func() (any, error) {
		// Not bound to the first caller; bounded by waiting out one holder
		// (ttl) and running fn (ttl).
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*ttl+4*s.cfg.OpTimeout)
		defer cancel()
		return s.once(fctx, h, ttl, fn)
	})
	return waitFlight(ctx, key, ch)
}

func (s *redisStore) once(ctx context.Context, h string, ttl time.Duration, fn func(context.Context) ([]byte, error)) ([]byte, error) {
	lockKey, resKey := s.onceLockPrefix+h, s.onceResultPrefix+h
	poll := onceMinPoll
	for {
		wake, release := s.waitFor(h)
		v, found, err := s.getBytes(ctx, resKey, "once")
		if err != nil || found {
			release()
			return v, err
		}
		tok := newToken()
		deadline := time.Now().Add(ttl)
		octx, cancel := s.opCtx(ctx)
		won, err := s.client.SetNX(octx, lockKey, tok, ttl).Result()
		cancel()
		if err != nil {
			release()
			return nil, s.fail("once lock", err)
		}
		if won {
			release()
			return s.runLocked(ctx, h, lockKey, resKey, tok, deadline, fn)
		}
		t := time.NewTimer(poll)
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			release()
			return nil, fmt.Errorf("store: once: waiting for another replica: %w", ctx.Err())
		}
		t.Stop()
		release()
		poll = min(2*poll, onceMaxPoll)
	}
}

func (s *redisStore) runLocked(ctx context.Context, h, lockKey, resKey, tok string, deadline time.Time, fn func(context.Context) ([]byte, error)) ([]byte, error) {
	defer func() {
		octx, cancel := s.opCtx(context.WithoutCancel(ctx))
		defer cancel()
		if err := s.cad.Run(octx, s.client, []string{lockKey}, tok).Err(); err != nil {
			s.log.Warn("store: once lock not released; it expires by itself", "err", s.fail("once unlock", err))
		}
		// Wake waiters: to take the result, or the lock after a failure.
		if err := s.client.Publish(octx, s.chOnce, h).Err(); err != nil {
			s.m.opError("once publish")
		}
	}()
	// A winner may have finished between our GET and SET.
	if v, found, err := s.getBytes(ctx, resKey, "once"); err != nil || found {
		return v, err
	}
	fctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	v, err := fn(fctx)
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = []byte{}
	}
	octx, cancel2 := s.opCtx(ctx)
	defer cancel2()
	if err := s.client.Set(octx, resKey, v, s.o.resultTTL).Err(); err != nil {
		// The caller has its result; others will run fn again.
		s.log.Warn("store: once result not stored", "err", s.fail("once store", err))
	}
	return v, nil
}

// waitFor registers interest in a Once key's completion.
func (s *redisStore) waitFor(h string) (<-chan struct{}, func()) {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	w, ok := s.waiters[h]
	if !ok {
		w = &onceWait{ch: make(chan struct{})}
		s.waiters[h] = w
	}
	w.n++
	return w.ch, func() {
		s.waitMu.Lock()
		defer s.waitMu.Unlock()
		w.n--
		if w.n == 0 && s.waiters[h] == w {
			delete(s.waiters, h)
		}
	}
}

// wake wakes the waiters of h, or of every key when h is "".
func (s *redisStore) wake(h string) {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	for k, w := range s.waiters {
		if h == "" || k == h {
			close(w.ch)
			delete(s.waiters, k)
		}
	}
}

// ---- Blobs ----

func (s *redisStore) getBytes(ctx context.Context, key, op string) ([]byte, bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	v, err := s.client.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, s.fail(op, err)
	}
	return v, true, nil
}

func (s *redisStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	return s.getBytes(ctx, s.blobPrefix+key, "get")
}

func (s *redisStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("store: put %q: negative ttl", key)
	}
	if value == nil {
		value = []byte{}
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.blobPrefix+key, value, ttl)
		p.Publish(ctx, s.chBlobs, key)
		return nil
	})
	if err != nil {
		return s.fail("put", err)
	}
	return nil
}

func (s *redisStore) Delete(ctx context.Context, key string) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.blobPrefix+key)
		p.Publish(ctx, s.chBlobs, key)
		return nil
	})
	if err != nil {
		return s.fail("delete", err)
	}
	return nil
}

func (s *redisStore) Watch(ctx context.Context, prefix string, fn func(string)) {
	s.watch.add(ctx, prefix, fn)
}

// ---- Claims ----

func (s *redisStore) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		return false, fmt.Errorf("store: claim %q: ttl must be at least 1ms", key)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	// SET NX is atomic in Redis: of any number of replicas claiming the
	// same key at once, exactly one gets OK.
	ok, err := s.client.SetNX(ctx, s.claimPrefix+hashKey(key), "1", ttl).Result()
	if err != nil {
		return false, s.fail("claim", err)
	}
	return ok, nil
}

// ---- Leases ----

func (s *redisStore) TryLease(ctx context.Context, name string, ttl time.Duration) (Lease, bool, error) {
	if ttl < time.Millisecond {
		return nil, false, fmt.Errorf("store: lease %q: ttl must be at least 1ms", name)
	}
	tok := newToken()
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	ok, err := s.client.SetNX(octx, s.leasePrefix+name, tok, ttl).Result()
	if err != nil {
		return nil, false, s.fail("lease", err)
	}
	if !ok {
		return nil, false, nil
	}
	return &redisLease{s: s, name: name, token: tok, ttl: ttl}, true, nil
}

type redisLease struct {
	s     *redisStore
	name  string
	token string
	ttl   time.Duration
}

func (l *redisLease) Name() string { return l.name }

func (l *redisLease) Renew(ctx context.Context) error {
	ctx, cancel := l.s.opCtx(ctx)
	defer cancel()
	n, err := l.s.cae.Run(ctx, l.s.client, []string{l.s.leasePrefix + l.name}, l.token, l.ttl.Milliseconds()).Int()
	if err != nil {
		return l.s.fail("lease renew", err)
	}
	if n == 0 {
		return fmt.Errorf("store: lease %q: %w", l.name, ErrLeaseLost)
	}
	return nil
}

func (l *redisLease) Release(ctx context.Context) error {
	ctx, cancel := l.s.opCtx(ctx)
	defer cancel()
	if err := l.s.cad.Run(ctx, l.s.client, []string{l.s.leasePrefix + l.name}, l.token).Err(); err != nil {
		return l.s.fail("lease release", err)
	}
	return nil
}

// ---- Health ----

func (s *redisStore) Healthy() error {
	since, down := s.Degraded()
	if !down {
		return nil
	}
	s.healthMu.Lock()
	err := s.lastErr
	s.healthMu.Unlock()
	return fmt.Errorf("store: redis %s unreachable since %s: %w: %w", s.client.Options().Addr,
		since.UTC().Format(time.RFC3339), ErrUnavailable, err)
}

func (s *redisStore) Degraded() (time.Time, bool) {
	ns := s.downSince.Load()
	if ns == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

func (s *redisStore) SessionsUsable() bool {
	if s.cfg.OnDown == OnDownOpen {
		return true
	}
	ns := s.downSince.Load()
	return ns == 0 || s.o.now().Sub(time.Unix(0, ns)) <= s.cfg.DownGrace
}

func (s *redisStore) setUp() {
	s.healthMu.Lock()
	s.lastErr = nil
	s.healthMu.Unlock()
	if s.downSince.Swap(0) != 0 {
		s.log.Info("store: redis connected and synchronised", "revocations", s.revs.len())
	}
	s.m.setUp(true)
	s.syncedOnce.Do(func() { close(s.synced) })
}

func (s *redisStore) setDown(err error) {
	s.healthMu.Lock()
	s.lastErr = err
	s.healthMu.Unlock()
	if s.downSince.CompareAndSwap(0, s.o.now().UnixNano()) {
		mode := "sessions keep being checked against the local revocation cache"
		if s.cfg.OnDown == OnDownClosed {
			mode = fmt.Sprintf("session cookies are refused after %s", s.cfg.DownGrace)
		}
		s.log.Error("store: redis unreachable; "+mode, "err", err)
	}
	s.m.setUp(false)
}

func (s *redisStore) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		s.closeErr = s.client.Close()
	})
	return s.closeErr
}
