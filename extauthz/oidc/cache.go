package oidc

import (
	"container/list"
	"sync"
	"time"
)

// ttlCache is a small bounded map whose entries expire; when full the
// oldest insertion goes. It backs the one-time state set, the logout-token
// jti set and the refresh results shared by concurrent requests.
type ttlCache[V any] struct {
	max int
	now func() time.Time

	mu    sync.Mutex
	items map[string]*list.Element
	order *list.List // front = oldest
}

type ttlItem[V any] struct {
	key     string
	val     V
	expires time.Time
}

func newTTLCache[V any](max int, now func() time.Time) *ttlCache[V] {
	return &ttlCache[V]{max: max, now: now, items: map[string]*list.Element{}, order: list.New()}
}

// get returns a live entry.
func (c *ttlCache[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	e, ok := c.items[key]
	if !ok {
		return zero, false
	}
	it := e.Value.(*ttlItem[V])
	if !it.expires.After(c.now()) {
		c.order.Remove(e)
		delete(c.items, key)
		return zero, false
	}
	return it.val, true
}

// add stores key unless a live entry exists; it reports whether it stored.
// That makes it a one-time test-and-set for replay detection.
func (c *ttlCache[V]) add(key string, val V, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if e, ok := c.items[key]; ok {
		if e.Value.(*ttlItem[V]).expires.After(now) {
			return false
		}
		c.order.Remove(e)
		delete(c.items, key)
	}
	c.insert(key, val, now.Add(ttl))
	return true
}

// put stores key, replacing any entry.
func (c *ttlCache[V]) put(key string, val V, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.order.Remove(e)
		delete(c.items, key)
	}
	c.insert(key, val, c.now().Add(ttl))
}

func (c *ttlCache[V]) insert(key string, val V, expires time.Time) {
	for c.order.Len() >= c.max {
		oldest := c.order.Front()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*ttlItem[V]).key)
	}
	c.items[key] = c.order.PushBack(&ttlItem[V]{key: key, val: val, expires: expires})
}
