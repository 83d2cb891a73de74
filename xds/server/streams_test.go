package server

import (
	"sync"
	"testing"
	"unsafe"
)

// TestStreamTable: SotW and delta streams with the same id are separate
// entries, in the same shard or not; a removed stream is gone.
func TestStreamTable(t *testing.T) {
	if size := unsafe.Sizeof(streamShard{}); size%64 != 0 {
		t.Errorf("streamShard is %d bytes, want whole 64-byte cache lines", size)
	}
	var tab streamTable
	keys := []streamKey{{id: 1}, {delta: true, id: 1}, {id: 1 + streamShards}, {delta: true, id: 2}}
	states := map[streamKey]*streamState{}
	for _, k := range keys {
		states[k] = &streamState{node: "n"}
		tab.store(k, states[k])
	}
	for _, tc := range []struct {
		name   string
		remove streamKey
		gone   []streamKey
	}{
		{name: "same id, other protocol", remove: streamKey{id: 1}, gone: []streamKey{{id: 1}}},
		{name: "same shard", remove: streamKey{id: 1 + streamShards}, gone: []streamKey{{id: 1}, {id: 1 + streamShards}}},
		{name: "unknown", remove: streamKey{id: 99}, gone: []streamKey{{id: 1}, {id: 1 + streamShards}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tab.loadAndDelete(tc.remove); got != states[tc.remove] {
				t.Fatalf("removed %p, want %p", got, states[tc.remove])
			}
			for _, k := range keys {
				want := states[k]
				for _, g := range tc.gone {
					if g == k {
						want = nil
					}
				}
				if got := tab.load(k); got != want {
					t.Errorf("%+v: got %p, want %p", k, got, want)
				}
			}
		})
	}
	// Concurrent use is safe (go test -race).
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			k := streamKey{id: int64(100 + i)}
			tab.store(k, &streamState{})
			_ = tab.load(k)
			tab.loadAndDelete(k)
		})
	}
	wg.Wait()
}
