package identity

import (
	"crypto/sha256"
	"sync"
)

// DefaultPeerCacheSize is how many parsed peer certificates a PeerCache
// keeps: a mesh has a few per workload (the current leaf and the one before
// a rotation).
const DefaultPeerCacheSize = 1024

// PeerCache remembers parsed peer certificates. Every request on a sidecar
// hop carries its caller's certificate, and parsing X.509 cost more than
// the rest of a cached Check; the same few certificates arrive again and
// again. Entries are keyed by the SHA-256 of what Envoy sent (certificate
// and principal), hold only parsed fields, and are shared: callers must not
// modify a returned Peer. It is bounded and safe for concurrent use.
type PeerCache struct {
	mu  sync.Mutex
	max int
	m   map[[sha256.Size]byte]*Peer
}

// NewPeerCache returns a cache of at most size entries (size ≤ 0: none;
// Parse then always parses).
func NewPeerCache(size int) *PeerCache {
	return &PeerCache{max: size, m: make(map[[sha256.Size]byte]*Peer, min(max(size, 0), 64))}
}

// Parse is ParsePeer with the result of an equal input reused. Errors are
// not cached: a malformed certificate costs its parse every time, which
// bounds nothing an attacker could not already send.
func (c *PeerCache) Parse(urlEncodedPEM, principal string) (*Peer, error) {
	if c == nil || c.max <= 0 || urlEncodedPEM == "" || len(urlEncodedPEM) > MaxPeerCertBytes {
		return ParsePeer(urlEncodedPEM, principal)
	}
	h := sha256.New()
	h.Write([]byte(urlEncodedPEM))
	h.Write([]byte{0})
	h.Write([]byte(principal))
	var k [sha256.Size]byte
	h.Sum(k[:0])

	c.mu.Lock()
	p, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err := ParsePeer(urlEncodedPEM, principal)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		for old := range c.m { // random victim: Go's map order
			delete(c.m, old)
			break
		}
	}
	c.m[k] = p
	c.mu.Unlock()
	return p, nil
}

// Len is the number of cached peers.
func (c *PeerCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
