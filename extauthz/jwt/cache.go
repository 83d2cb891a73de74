package jwt

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// Verified-token cache defaults. Entries live until the token's exp or
// maxTTL, whichever is first; maxTTL bounds how long a token stays accepted
// after its key was withdrawn (JWKS rotation, trust store removal).
const (
	defaultCacheSize   = 10000
	defaultCacheMaxTTL = 5 * time.Minute
	cacheShards        = 16
)

type cacheKey [sha256.Size]byte

// resultCache is a sharded LRU of successful verifications keyed by the
// SHA-256 of the token, so the token itself is never stored. Failures are not
// cached.
type resultCache struct {
	shards [cacheShards]cacheShard
	maxTTL time.Duration
}

type cacheShard struct {
	mu  sync.Mutex
	max int
	ll  list.List // front = most recently used; values are *cacheEntry
	m   map[cacheKey]*list.Element
}

type cacheEntry struct {
	key   cacheKey
	res   *Result
	until time.Time // expiry: min(exp, stored + maxTTL)
	from  time.Time // not served before: max(nbf, iat) - skew; zero without either
}

func newResultCache(size int, maxTTL time.Duration) *resultCache {
	if size <= 0 {
		return nil
	}
	per := (size + cacheShards - 1) / cacheShards
	c := &resultCache{maxTTL: maxTTL}
	for i := range c.shards {
		c.shards[i].max = per
		c.shards[i].m = make(map[cacheKey]*list.Element, min(per, 1024))
	}
	return c
}

func (c *resultCache) shard(k *cacheKey) *cacheShard {
	return &c.shards[k[0]%cacheShards]
}

// get returns the cached result while now is inside the window it was
// stored for: before its expiry (exp, or maxTTL after it was stored), and
// not before the earliest time its nbf and iat allow, so a clock stepped
// back does not accept from the cache what verification would refuse. A
// result outside its window is dropped.
func (c *resultCache) get(k *cacheKey, now time.Time) (*Result, bool) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.m[*k]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.until) || now.Before(e.from) {
		s.ll.Remove(el)
		delete(s.m, *k)
		return nil, false
	}
	s.ll.MoveToFront(el)
	return e.res, true
}

// put stores res until min(exp, now+maxTTL); nothing is stored if that is
// not in the future. skew is the issuer's clock skew, with which nbf and
// iat were checked.
func (c *resultCache) put(k *cacheKey, res *Result, now time.Time, skew time.Duration) {
	var from time.Time // earliest time nbf and iat accept: both <= t+skew
	for _, t := range [...]time.Time{res.NotBefore, res.IssuedAt} {
		if !t.IsZero() && t.Add(-skew).After(from) {
			from = t.Add(-skew)
		}
	}
	until := res.Expiry
	if !res.certValidUntil.IsZero() && res.certValidUntil.Before(until) {
		until = res.certValidUntil // the signing certificate expires first
	}
	if c.maxTTL > 0 {
		if lim := now.Add(c.maxTTL); lim.Before(until) {
			until = lim
		}
	}
	if !now.Before(until) {
		return
	}
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.m[*k]; ok {
		e := el.Value.(*cacheEntry)
		e.res, e.until, e.from = res, until, from
		s.ll.MoveToFront(el)
		return
	}
	s.m[*k] = s.ll.PushFront(&cacheEntry{key: *k, res: res, until: until, from: from})
	for s.ll.Len() > s.max {
		old := s.ll.Back()
		s.ll.Remove(old)
		delete(s.m, old.Value.(*cacheEntry).key)
	}
}

func (c *resultCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.ll.Len()
		s.mu.Unlock()
	}
	return n
}

// purge drops every entry, e.g. after configuration changes.
func (c *resultCache) purge() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.ll.Init()
		clear(s.m)
		s.mu.Unlock()
	}
}
