package server

import (
	"sync"
	"unsafe"
)

// streamShards is how many independently locked parts streamTable has.
const streamShards = 64

// streamTable holds a *streamState per open stream. Every request and
// response of every stream looks its state up, thousands of streams at
// once when a change fans out, so the table is split by stream id into
// shards with their own read-write lock: lookups of different streams
// rarely meet, and a lookup is a plain map read (a sync.Map would box the
// key in an interface, allocating, and walk a hash trie).
type streamTable struct {
	shards [streamShards]streamShard
}

type streamShard struct {
	mu sync.RWMutex
	m  map[streamKey]*streamState
	// Shards are written by different goroutines; keep each on its own
	// (64-byte) cache line.
	_ [64 - (unsafe.Sizeof(sync.RWMutex{})+unsafe.Sizeof(map[streamKey]*streamState(nil)))%64]byte
}

func (t *streamTable) shard(k streamKey) *streamShard {
	return &t.shards[uint64(k.id)%streamShards]
}

// store records st as k's state.
func (t *streamTable) store(k streamKey, st *streamState) {
	sh := t.shard(k)
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = map[streamKey]*streamState{}
	}
	sh.m[k] = st
	sh.mu.Unlock()
}

// load returns k's state, or nil.
func (t *streamTable) load(k streamKey) *streamState {
	sh := t.shard(k)
	sh.mu.RLock()
	st := sh.m[k]
	sh.mu.RUnlock()
	return st
}

// loadAndDelete removes k's state and returns it, or nil.
func (t *streamTable) loadAndDelete(k streamKey) *streamState {
	sh := t.shard(k)
	sh.mu.Lock()
	st := sh.m[k]
	delete(sh.m, k)
	sh.mu.Unlock()
	return st
}
