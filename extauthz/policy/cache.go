package policy

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// DefaultDecisionCacheSize is how many decisions a policy revision keeps
// unless WithDecisionCache says otherwise.
const DefaultDecisionCacheSize = 4096

// maxCacheKeyBytes bounds one cache key: a request whose policy-visible
// parts are larger gains little from caching and must not make the cache
// large.
const maxCacheKeyBytes = 4096

// decisionCache remembers the decisions of one policy revision by the key
// of the request they were made on (appendKey): only what the policy can
// observe. With a deterministic policy (see deterministic) and static data,
// an equal key means an equal decision, whatever else differed between the
// requests. It is bounded in entries and key size, and dies with its
// revision, so a reload never serves a stale decision.
type decisionCache struct {
	seed     maphash.Seed
	shards   [cacheShards]cacheShard
	perShard int
	stats    *cacheStats // the engine's, across revisions
}

// cacheStats count lookups over an engine's life, so they only grow.
type cacheStats struct {
	hits, misses atomic.Uint64
}

const cacheShards = 16

type cacheShard struct {
	mu sync.Mutex
	m  map[string]Decision // ID empty: every answer gets its own
}

func newDecisionCache(size int, stats *cacheStats) *decisionCache {
	c := &decisionCache{seed: maphash.MakeSeed(), perShard: max(1, size/cacheShards), stats: stats}
	for i := range c.shards {
		c.shards[i].m = make(map[string]Decision)
	}
	return c
}

func (c *decisionCache) shard(key []byte) *cacheShard {
	return &c.shards[maphash.Bytes(c.seed, key)%cacheShards]
}

// get returns a copy of the decision cached under key. The copy shares the
// decision's slices and maps, which nobody modifies.
func (c *decisionCache) get(key []byte) (Decision, bool) {
	s := c.shard(key)
	s.mu.Lock()
	d, ok := s.m[string(key)]
	s.mu.Unlock()
	if ok {
		c.stats.hits.Add(1)
	} else {
		c.stats.misses.Add(1)
	}
	return d, ok
}

// put remembers d under key, unless the key is too large. A full shard
// drops an arbitrary entry (Go's map order is random) to make room.
func (c *decisionCache) put(key []byte, d Decision) {
	if len(key) > maxCacheKeyBytes {
		return
	}
	d.ID = ""
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[string(key)]; ok {
		return // a concurrent miss got here first
	}
	if len(s.m) >= c.perShard {
		for k := range s.m {
			delete(s.m, k)
			break
		}
	}
	s.m[string(key)] = d
}

func (c *decisionCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
