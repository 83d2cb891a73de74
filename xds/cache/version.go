package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// TypeVersion returns the content version of one resource type: a SHA-256
// over the deterministic proto encoding of every resource, sorted by name.
// It carries no timestamps or counters, so two replicas given the same
// resources agree on the version and a client can reconnect to either one
// without a resend. Duplicate or empty names are refused because the
// version would then not identify the set.
func TypeVersion(resources []types.Resource) (string, error) {
	type named struct {
		name string
		res  types.Resource
	}
	items := make([]named, 0, len(resources))
	for _, r := range resources {
		if r == nil {
			return "", fmt.Errorf("nil resource")
		}
		n := gcache.GetResourceName(r)
		if n == "" {
			return "", fmt.Errorf("resource %T has no name", r)
		}
		items = append(items, named{n, r})
	}
	slices.SortFunc(items, func(a, b named) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	h := sha256.New()
	var lenBuf [binary.MaxVarintLen64]byte
	write := func(b []byte) {
		// Length prefixes keep ("ab","c") and ("a","bc") apart.
		n := binary.PutUvarint(lenBuf[:], uint64(len(b)))
		h.Write(lenBuf[:n])
		h.Write(b)
	}
	for i, it := range items {
		if i > 0 && items[i-1].name == it.name {
			return "", fmt.Errorf("duplicate resource name %q", it.name)
		}
		b, err := gcache.MarshalResource(it.res)
		if err != nil {
			return "", fmt.Errorf("marshal %q: %w", it.name, err)
		}
		write([]byte(it.name))
		write(b)
	}
	// 128 bits is plenty to detect change and keeps versions readable.
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// ResourceHash is the per-resource version go-control-plane uses in delta
// xDS (and the hash of a SotW Any value), used to map a pushed secret back
// to its serial label.
func ResourceHash(r types.Resource) (string, error) {
	b, err := gcache.MarshalResource(r)
	if err != nil {
		return "", fmt.Errorf("marshal %q: %w", gcache.GetResourceName(r), err)
	}
	return gcache.HashResource(b), nil
}
