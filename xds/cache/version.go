package cache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
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
// without a resend of its wildcard types (and an identical resend of its
// named ones). Duplicate or empty names are refused because the
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
	// items by name; names sorted, list in the same order.
	items map[string]*Encoded
	names []string
	list  []*Encoded
	// hashes maps every name to its resource hash: what a delta client
	// holds after receiving the whole type. Shared; copied before use.
	hashes map[string]string
	// anys is the SotW resources field, sorted by name.
	anys []*anypb.Any
	// returned maps every name to version: what a SotW client holds after
	// a response. Handed out cloned, since subscriptions edit theirs.
	returned map[string]string
	// ctx is the context of every SotW response of this type; for secrets
	// it carries their hashes (see PushedSecrets).
	ctx context.Context
}

// Encoded is one resource with its deterministic encoding, computed once
// by Encode and then shared, read-only, by every node whose snapshot holds
// it and by every response that carries it. Translation shares one object
// between the nodes that get equal content, so encoding each distinct
// object once (rather than once per node) is what keeps a config change
// that touches every node cheap.
type Encoded struct {
	res  types.Resource
	name string
	body []byte
	// hash is go-control-plane's resource hash: the delta version.
	hash string
	// delta is the resource as a delta response carries it.
	delta *discovery.Resource
	// serial labels a secret in Status; "" means: read it from the
	// certificate, once, when first needed.
	serial     string
	serialOnce sync.Once
	// refs are the SDS names a listener or cluster fetches over ADS,
	// computed once when first needed.
	refsOnce sync.Once
	refs     []string
	refsErr  error
}

// Encode marshals r deterministically as a resource of typeURL; "" when
// only versions are wanted.
func Encode(typeURL string, r types.Resource) (*Encoded, error) {
	if r == nil {
		return nil, fmt.Errorf("nil resource")
	}
	name := gcache.GetResourceName(r)
	if name == "" {
		return nil, fmt.Errorf("resource %T has no name", r)
	}
	b, err := gcache.MarshalResource(r)
	if err != nil {
		return nil, fmt.Errorf("marshal %q: %w", name, err)
	}
	e := &Encoded{res: r, name: name, body: b, hash: gcache.HashResource(b)}
	e.delta = &discovery.Resource{Name: name, Version: e.hash, Resource: &anypb.Any{TypeUrl: typeURL, Value: b}}
	return e, nil
}

// EncodeSecret is Encode for an SDS secret, keeping its serial label.
func EncodeSecret(s Secret) (*Encoded, error) {
	if s.Resource == nil {
		return nil, fmt.Errorf("nil secret")
	}
	e, err := Encode(resource.SecretType, s.Resource)
	if err != nil {
		return nil, err
	}
	e.serial = s.Serial
	return e, nil
}

// Resource is the encoded resource; it must not be modified.
func (e *Encoded) Resource() types.Resource { return e.res }

// Name is the resource's name.
func (e *Encoded) Name() string { return e.name }

// Hash is the resource's ResourceHash: a SHA-256 of its deterministic
// encoding, so equal content has equal hashes.
func (e *Encoded) Hash() string { return e.hash }

// typeURL is the type the resource was encoded as.
func (e *Encoded) typeURL() string { return e.delta.GetResource().GetTypeUrl() }

// secretSerial is the serial label of a secret: the one it was encoded
// with, else its certificate's.
func (e *Encoded) secretSerial(sec *tlsv3.Secret) string {
	e.serialOnce.Do(func() {
		if e.serial == "" {
			e.serial = certSerial(sec)
		}
	})
	return e.serial
}

// referenced returns the SDS secrets a listener or cluster fetches over
// ADS (see ReferencedSecrets).
func (e *Encoded) referenced() ([]string, error) {
	e.refsOnce.Do(func() {
		switch e.res.(type) {
		case *listenerv3.Listener:
			e.refs, e.refsErr = ReferencedSecrets([]types.Resource{e.res}, nil)
		default:
			e.refs, e.refsErr = ReferencedSecrets(nil, []types.Resource{e.res})
		}
	})
	return e.refs, e.refsErr
}

// newTypeData marshals resources (deterministically) and computes the
// type's version. typeURL may be "" when only the version is wanted.
func newTypeData(typeURL string, resources []types.Resource) (*typeData, error) {
	encoded := make([]*Encoded, 0, len(resources))
	for _, r := range resources {
		e, err := Encode(typeURL, r)
		if err != nil {
			return nil, err
		}
		encoded = append(encoded, e)
	}
	return typeDataOf(typeURL, encoded)
}

// typeDataOf computes the version of encoded resources of typeURL and the
// shared forms of its responses. Only pointers to the encodings are kept.
func typeDataOf(typeURL string, encoded []*Encoded) (*typeData, error) {
	td := &typeData{
		typeURL:  typeURL,
		items:    make(map[string]*Encoded, len(encoded)),
		names:    make([]string, 0, len(encoded)),
		anys:     make([]*anypb.Any, 0, len(encoded)),
		returned: make(map[string]string, len(encoded)),
		ctx:      context.Background(),
	}
	for _, e := range encoded {
		if e == nil {
			return nil, fmt.Errorf("nil resource")
		}
		if e.typeURL() != typeURL {
			return nil, fmt.Errorf("resource %q encoded as %q, not %q", e.name, e.typeURL(), typeURL)
		}
		if _, dup := td.items[e.name]; dup {
			return nil, fmt.Errorf("duplicate resource name %q", e.name)
		}
		td.items[e.name] = e
		td.names = append(td.names, e.name)
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
	td.list = make([]*Encoded, 0, len(td.names))
	td.hashes = make(map[string]string, len(td.names))
	for _, name := range td.names {
		e := td.items[name]
		write([]byte(name))
		write(e.body)
		td.anys = append(td.anys, e.delta.GetResource())
		td.list = append(td.list, e)
		td.hashes[name] = e.hash
	}
	// 128 bits is plenty to detect change and keeps versions readable.
	td.version = hex.EncodeToString(h.Sum(nil)[:16])
	for _, name := range td.names {
		td.returned[name] = td.version
	}
	if typeURL == resource.SecretType {
		td.ctx = context.WithValue(td.ctx, pushedSecretsKey{}, td.hashes)
	}
	return td, nil
}

// holds reports whether encoded are exactly td's items, as objects and in
// name order (as translate lists them): then they are td's content. Any
// other order is answered false, and the caller hashes. A nil td holds
// nothing.
func (td *typeData) holds(encoded []*Encoded) bool {
	if td == nil || len(encoded) != len(td.names) {
		return false
	}
	for i, e := range encoded {
		if td.items[td.names[i]] != e {
			return false
		}
	}
	return true
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
