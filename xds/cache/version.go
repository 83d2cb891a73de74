package cache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// TypeVersion returns the content version of one resource type: a SHA-256
// over the deterministic proto encoding of every resource, sorted by name.
// It carries no timestamps or counters, so two replicas given the same
// resources agree on the version and a client can reconnect to either one
// without a resend. Duplicate or empty names are refused because the
// version would then not identify the set.
func TypeVersion(resources []types.Resource) (string, error) {
	td, err := newTypeData("", resources)
	if err != nil {
		return "", err
	}
	return td.version, nil
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

// typeData is one resource type of one node, marshaled once when it is set
// and then shared, read-only, by every response to every stream of the
// node: fan-out to thousands of streams copies pointers instead of
// re-encoding each resource per stream as go-control-plane's snapshot cache
// does. It is never mutated after newTypeData returns.
type typeData struct {
	typeURL string
	version string
	// items by name; names sorted.
	items map[string]*item
	names []string
	// anys is the SotW resources field, sorted by name.
	anys []*anypb.Any
	// returned maps every name to version: what a SotW client holds after
	// a response. Handed out cloned, since subscriptions edit theirs.
	returned map[string]string
	// ctx is the context of every SotW response of this type; for secrets
	// it carries their hashes (see PushedSecrets).
	ctx context.Context
}

// item is one resource with its encodings.
type item struct {
	res types.Resource
	// hash is go-control-plane's resource hash: the delta version.
	hash string
	// delta is the resource as a delta response carries it.
	delta *discovery.Resource
}

// newTypeData marshals resources (deterministically) and computes the
// type's version. typeURL may be "" when only the version is wanted.
func newTypeData(typeURL string, resources []types.Resource) (*typeData, error) {
	td := &typeData{
		typeURL:  typeURL,
		items:    make(map[string]*item, len(resources)),
		names:    make([]string, 0, len(resources)),
		anys:     make([]*anypb.Any, 0, len(resources)),
		returned: make(map[string]string, len(resources)),
		ctx:      context.Background(),
	}
	bodies := make(map[string][]byte, len(resources))
	for _, r := range resources {
		if r == nil {
			return nil, fmt.Errorf("nil resource")
		}
		name := gcache.GetResourceName(r)
		if name == "" {
			return nil, fmt.Errorf("resource %T has no name", r)
		}
		if _, dup := td.items[name]; dup {
			return nil, fmt.Errorf("duplicate resource name %q", name)
		}
		b, err := gcache.MarshalResource(r)
		if err != nil {
			return nil, fmt.Errorf("marshal %q: %w", name, err)
		}
		a := &anypb.Any{TypeUrl: typeURL, Value: b}
		it := &item{res: r, hash: gcache.HashResource(b)}
		it.delta = &discovery.Resource{Name: name, Version: it.hash, Resource: a}
		td.items[name], bodies[name] = it, b
		td.names = append(td.names, name)
	}
	slices.SortFunc(td.names, strings.Compare)

	h := sha256.New()
	var lenBuf [binary.MaxVarintLen64]byte
	write := func(b []byte) {
		// Length prefixes keep ("ab","c") and ("a","bc") apart.
		n := binary.PutUvarint(lenBuf[:], uint64(len(b)))
		h.Write(lenBuf[:n])
		h.Write(b)
	}
	for _, name := range td.names {
		write([]byte(name))
		write(bodies[name])
		td.anys = append(td.anys, td.items[name].delta.GetResource())
	}
	// 128 bits is plenty to detect change and keeps versions readable.
	td.version = hex.EncodeToString(h.Sum(nil)[:16])
	for _, name := range td.names {
		td.returned[name] = td.version
	}
	if typeURL == resource.SecretType {
		hashes := make(map[string]string, len(td.items))
		for name, it := range td.items {
			hashes[name] = it.hash
		}
		td.ctx = context.WithValue(td.ctx, pushedSecretsKey{}, hashes)
	}
	return td, nil
}

// resources lists the items' resources in name order.
func (td *typeData) resources() []types.Resource {
	out := make([]types.Resource, 0, len(td.names))
	for _, n := range td.names {
		out = append(out, td.items[n].res)
	}
	return out
}

type pushedSecretsKey struct{}

// PushedSecrets returns, from the context of a SotW response of this cache
// (the one go-control-plane passes to OnStreamResponse), each pushed secret
// name with its ResourceHash, so recording a push needs no decoding. The
// map is shared and must not be modified.
func PushedSecrets(ctx context.Context) (map[string]string, bool) {
	if ctx == nil {
		return nil, false
	}
	m, ok := ctx.Value(pushedSecretsKey{}).(map[string]string)
	return m, ok
}
