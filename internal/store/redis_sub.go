package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// run keeps one pub/sub connection up until ctx ends: subscribe, then
// synchronise (epoch, queued writes, full revocation load, watcher resync),
// then apply messages. Any failure marks the store degraded and starts over
// on a new connection after a backoff.
func (s *redisStore) run(ctx context.Context) {
	defer close(s.done)
	backoff := minBackoff
	for {
		wasUp, err := s.session(ctx)
		if ctx.Err() != nil {
			s.m.setUp(false)
			return
		}
		s.setDown(err)
		if wasUp {
			backoff = minBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session runs one subscriber connection; it returns when that connection
// fails, saying whether it got as far as being synchronised.
func (s *redisStore) session(ctx context.Context) (bool, error) {
	ps := s.client.Subscribe(ctx)
	defer ps.Close()
	// A blocked read does not watch ctx: closing the connection ends it.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	chans := []string{s.chRevocations, s.chOnce, s.chBlobs}
	sctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout+s.cfg.OpTimeout)
	err := ps.Subscribe(sctx, chans...)
	cancel()
	if err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	// Subscribed before loading: whatever is published from now on reaches
	// us, whatever was published before is in the set we load.
	for confirmed := 0; confirmed < len(chans); {
		msg, err := ps.ReceiveTimeout(ctx, s.cfg.DialTimeout+s.cfg.OpTimeout)
		if err != nil {
			return false, fmt.Errorf("subscribe: %w", err)
		}
		switch msg := msg.(type) {
		case *redis.Subscription:
			confirmed++
		case *redis.Message:
			s.dispatch(msg)
		}
	}
	if err := s.sync(ctx); err != nil {
		return false, err
	}
	s.setUp()
	s.wake("") // Once waiters look again: a completion may have been missed
	s.resyncWatchers(ctx)

	pingSent := false
	lastEpoch := time.Now()
	for {
		// A Redis flushed (or replaced) without dropping this connection
		// loses the revocations too: check the epoch every heartbeat and
		// reconnect when it changed, so sync writes ours back.
		if time.Since(lastEpoch) >= s.o.heartbeat {
			lastEpoch = time.Now()
			if err := s.epochUnchanged(ctx); err != nil {
				return true, err
			}
		}
		msg, err := ps.ReceiveTimeout(ctx, s.o.heartbeat)
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return true, fmt.Errorf("pub/sub: %w", err)
			}
			if pingSent {
				return true, fmt.Errorf("pub/sub: no answer to ping within %s", s.o.heartbeat)
			}
			pctx, cancel := s.opCtx(ctx)
			err := ps.Ping(pctx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("pub/sub ping: %w", err)
			}
			pingSent = true
			continue
		}
		pingSent = false
		if m, ok := msg.(*redis.Message); ok {
			s.dispatch(m)
		}
	}
}

// dispatch applies one pub/sub message.
func (s *redisStore) dispatch(m *redis.Message) {
	switch m.Channel {
	case s.chRevocations:
		it, ok := parseMember(m.Payload)
		if !ok {
			s.log.Warn("store: malformed revocation message ignored")
			return
		}
		if s.revs.add(it.key, it.at, it.expires) {
			s.m.gotRevocations("pubsub", 1)
		}
	case s.chOnce:
		s.wake(m.Payload)
	case s.chBlobs:
		s.watch.notify(m.Payload)
	}
}

// sync brings this replica and Redis up to date after a (re)connect.
func (s *redisStore) sync(ctx context.Context) error {
	reset, err := s.checkEpoch(ctx)
	if err != nil {
		return err
	}
	if err := s.flushPending(ctx); err != nil {
		return err
	}
	if reset {
		// Redis lost its data (restarted without persistence, flushed):
		// give it back what this replica knows, so replicas started later
		// still enforce those logouts.
		snap := s.revs.snapshot()
		items := make([]revItem, 0, len(snap))
		for k, e := range snap {
			items = append(items, revItem{key: k, at: e.at, expires: e.expires})
		}
		for len(items) > 0 {
			n := min(len(items), writeBatch)
			if err := s.writeRevocations(ctx, items[:n]); err != nil {
				return s.fail("reseed", err)
			}
			items = items[n:]
		}
		if len(snap) > 0 {
			s.log.Warn("store: redis lost its data; revocations held here written back", "count", len(snap))
		}
	}
	return s.loadRevocations(ctx)
}

// checkEpoch reads (or creates) the epoch and reports whether it changed
// since the last connection.
func (s *redisStore) checkEpoch(ctx context.Context) (bool, error) {
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.client.SetNX(octx, s.epochKey, newToken(), 0).Err(); err != nil {
		return false, s.fail("epoch", err)
	}
	ep, err := s.client.Get(octx, s.epochKey).Result()
	if err != nil {
		return false, s.fail("epoch", err)
	}
	reset := s.epoch != "" && ep != s.epoch
	s.epoch = ep
	return reset, nil
}

// epochUnchanged reports an error when Redis no longer holds the epoch
// this connection synced with (its data was lost), or cannot be asked.
func (s *redisStore) epochUnchanged(ctx context.Context) error {
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	ep, err := s.client.Get(octx, s.epochKey).Result()
	switch {
	case errors.Is(err, redis.Nil) || err == nil && ep != s.epoch:
		return errors.New("redis lost its data (epoch changed)")
	case err != nil:
		return fmt.Errorf("epoch: %w", err)
	}
	return nil
}

// flushPending writes revocations queued while Redis was unreachable.
func (s *redisStore) flushPending(ctx context.Context) error {
	s.pendingMu.Lock()
	items, dropped := s.pending, s.pendingDropped
	s.pending, s.pendingDropped = nil, 0
	s.pendingMu.Unlock()
	if dropped > 0 {
		s.log.Error("store: revocations made while redis was down were dropped from the write-back queue (still enforced on this replica)",
			"dropped", dropped)
	}
	for len(items) > 0 {
		n := min(len(items), writeBatch)
		if err := s.writeRevocations(ctx, items[:n]); err != nil {
			s.pendingMu.Lock()
			s.pending = append(items, s.pending...)
			s.pendingMu.Unlock()
			return s.fail("revoke replay", err)
		}
		items = items[n:]
	}
	return nil
}

// loadRevocations merges the whole set into the local cache. ZSCAN returns
// every member present for the whole scan, whatever changes meanwhile.
func (s *redisStore) loadRevocations(ctx context.Context) error {
	var cursor uint64
	added := 0
	for {
		octx, cancel := s.opCtx(ctx)
		members, next, err := s.client.ZScan(octx, s.revKey, cursor, "", scanBatch).Result()
		cancel()
		if err != nil {
			return s.fail("load revocations", err)
		}
		// ZSCAN returns member, score pairs.
		for i := 0; i+1 < len(members); i += 2 {
			it, ok := parseMember(members[i])
			if !ok {
				continue
			}
			if s.revs.add(it.key, it.at, it.expires) {
				added++
			}
		}
		s.m.gotRevocations("reload", added)
		added = 0
		if cursor = next; cursor == 0 {
			break
		}
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.client.ZRemRangeByScore(octx, s.revKey, "-inf", "("+strconv.FormatInt(s.o.now().UnixMilli(), 10)).Err(); err != nil {
		return s.fail("purge revocations", err)
	}
	return nil
}

// resyncWatchers tells every watcher about every key under its prefix:
// changes published while disconnected were missed.
func (s *redisStore) resyncWatchers(ctx context.Context) {
	for _, p := range s.watch.prefixes() {
		match := globEscape(s.blobPrefix+p) + "*"
		var cursor uint64
		for {
			octx, cancel := s.opCtx(ctx)
			keys, next, err := s.client.Scan(octx, cursor, match, scanBatch).Result()
			cancel()
			if err != nil {
				s.log.Warn("store: watch resync failed", "prefix", p, "err", s.fail("scan", err))
				break
			}
			for _, k := range keys {
				s.watch.notify(strings.TrimPrefix(k, s.blobPrefix))
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
}

// globEscape quotes the glob characters of Redis' MATCH.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
