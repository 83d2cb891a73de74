// Package validate checks one node's translated resources the way Envoy
// will, before they are offered to it: protoc-gen-validate rules on every
// resource and on the unpacked contents of every Any (ValidateAll does not
// descend into Any), no unknown fields or unknown Any types, only ADS config
// sources, and every cross-reference resolved within the node: RDS names,
// EDS clusters, clusters named by routes and by ext_authz, SDS secrets.
//
// A NACK from a fleet of Envoys is a poor error message; an error here names
// the node, the resource and the field.
package validate

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	// Register every type translate packs into an Any, so unpacking them
	// works; any other type URL is an error.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/gatehouse-proxy/gatehouse/xds/translate"
)

// Validate checks nr. When available is given it is the set of secrets the
// secret source can serve, and every secret nr needs must be among them.
func Validate(nr *translate.NodeResources, available ...string) error {
	return validateNode(nr, nil, available)
}

func validateNode(nr *translate.NodeResources, memo *Memo, available []string) error {
	v := &validator{node: nr.Node, refs: map[refKind][]ref{}, memo: memo}
	v.resources("listener", nr.Listeners)
	routeNames := v.resources("route", nr.Routes)
	clusterNames := v.resources("cluster", nr.Clusters)
	claNames := v.resources("endpoints", nr.Endpoints)

	v.resolve(refRoute, "route configuration", routeNames, "routes")
	v.resolve(refCluster, "cluster", clusterNames, "clusters")
	v.resolve(refEDS, "ClusterLoadAssignment", claNames, "endpoints")
	secrets := set(nr.SecretNames)
	v.resolve(refSecret, "secret", secrets, "SecretNames")

	// Nothing unreferenced: Envoy never asks for it, and with ADS an
	// unrequested secret or route can hold a response back.
	v.unused("route configuration", routeNames, refRoute)
	v.unused("ClusterLoadAssignment", claNames, refEDS)
	v.unused("secret", secrets, refSecret)
	if len(available) > 0 {
		have := set(available)
		for _, s := range nr.SecretNames {
			if !have[s] {
				v.errorf("secret %q: not available from the secret source", s)
			}
		}
	}
	if dup := duplicates(nr.SecretNames); dup != "" {
		v.errorf("SecretNames: %q listed twice", dup)
	}
	return v.err()
}

// Memo is Validate with memory: the deep check of a resource (ValidateAll
// on it and on the contents of every Any, unknown fields, config sources,
// the references it makes) depends on its content only, so it runs once per
// resource object and its outcome, rejection included, is reused for every
// node serving that object and for later changes that keep it. Checks that
// involve the whole node (references resolved, nothing unreferenced,
// secrets available, duplicate names) run every time.
//
// Resources are remembered by identity: they must not be modified once
// validated, which translate's results already promise. Results unused
// for a whole generation (see Next) are forgotten. A Memo is safe for
// concurrent use.
type Memo struct {
	mu        sync.Mutex
	cur, prev map[types.Resource]*checked
	checks    int
}

// NewMemo returns an empty Memo.
func NewMemo() *Memo {
	return &Memo{cur: map[types.Resource]*checked{}, prev: map[types.Resource]*checked{}}
}

// Validate is the package's Validate, with each resource's deep check
// looked up before it is run.
func (m *Memo) Validate(nr *translate.NodeResources, available ...string) error {
	return validateNode(nr, m, available)
}

// Next starts a generation, e.g. one config change: results used in
// neither this generation nor the previous one are dropped.
func (m *Memo) Next() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prev, m.cur = m.cur, make(map[types.Resource]*checked, len(m.cur))
}

// Checks is how many resources were deep-checked (not found in the memo)
// since the Memo was made.
func (m *Memo) Checks() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.checks
}

// lookup returns the remembered check of r, or nil (always, on a nil
// Memo).
func (m *Memo) lookup(r types.Resource) *checked {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.cur[r]; ok {
		return c
	}
	if c, ok := m.prev[r]; ok {
		m.cur[r] = c
		return c
	}
	return nil
}

func (m *Memo) store(r types.Resource, c *checked) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cur[r] = c
	m.checks++
}

// checked is what the deep check of one resource found; it holds for any
// node serving the resource.
type checked struct {
	msgs []string // problems, without the node prefix
	refs map[refKind][]ref
}

type refKind int

const (
	refRoute refKind = iota
	refCluster
	refEDS
	refSecret
)

// ref is a name some field points at.
type ref struct{ name, from string }

type validator struct {
	node string
	// msgs are the problems found, each reported with the node prefix.
	msgs []string
	refs map[refKind][]ref
	memo *Memo
	// at names the resource being walked, for refs and errors.
	at string
	// anySource allows config sources other than ADS.
	anySource bool
}

func (v *validator) errorf(format string, args ...any) {
	v.msgs = append(v.msgs, fmt.Sprintf(format, args...))
}

// err joins the problems found, each naming the node.
func (v *validator) err() error {
	errs := make([]error, len(v.msgs))
	for i, m := range v.msgs {
		errs[i] = fmt.Errorf("node %s: %s", v.node, m)
	}
	return errors.Join(errs...)
}

// resources checks each resource is a T with a unique non-empty name,
// validates it deeply and returns the names.
func (v *validator) resources(kind string, rs []types.Resource) map[string]bool {
	names := map[string]bool{}
	for i, r := range rs {
		if r == nil {
			v.errorf("%s[%d]: nil resource", kind, i)
			continue
		}
		name := resourceName(r)
		if want := wantType(kind); r.ProtoReflect().Descriptor().FullName() != want {
			v.errorf("%s[%d] %q: is a %s, want %s", kind, i, name, r.ProtoReflect().Descriptor().FullName(), want)
			continue
		}
		if name == "" {
			v.errorf("%s[%d]: empty name", kind, i)
		} else if names[name] {
			v.errorf("%s %q: duplicate name", kind, name)
		}
		names[name] = true
		c := v.memo.lookup(r)
		if c == nil {
			c = deepCheck(kind, name, r)
			v.memo.store(r, c)
		}
		v.msgs = append(v.msgs, c.msgs...)
		for k, refs := range c.refs {
			v.refs[k] = append(v.refs[k], refs...)
		}
	}
	return names
}

// deepCheck validates one resource by itself and collects the references
// it makes.
func deepCheck(kind, name string, r types.Resource) *checked {
	v := &validator{refs: map[refKind][]ref{}, at: fmt.Sprintf("%s %q", kind, name)}
	v.message(r.ProtoReflect(), "", true)
	if c, ok := r.(*clusterv3.Cluster); ok && c.GetType() == clusterv3.Cluster_EDS {
		claName := c.GetEdsClusterConfig().GetServiceName()
		if claName == "" {
			claName = c.GetName()
		}
		v.refer(refEDS, claName, "eds_cluster_config")
	}
	return &checked{msgs: v.msgs, refs: v.refs}
}

func wantType(kind string) protoreflect.FullName {
	switch kind {
	case "listener":
		return (&listenerv3.Listener{}).ProtoReflect().Descriptor().FullName()
	case "route":
		return (&routev3.RouteConfiguration{}).ProtoReflect().Descriptor().FullName()
	case "cluster":
		return (&clusterv3.Cluster{}).ProtoReflect().Descriptor().FullName()
	default:
		return (&endpointv3.ClusterLoadAssignment{}).ProtoReflect().Descriptor().FullName()
	}
}

func resourceName(r types.Resource) string {
	switch r := r.(type) {
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	case interface{ GetName() string }:
		return r.GetName()
	}
	return ""
}

func (v *validator) refer(k refKind, name, field string) {
	v.refs[k] = append(v.refs[k], ref{name: name, from: v.at + ": " + field})
}

func (v *validator) resolve(k refKind, what string, have map[string]bool, where string) {
	for _, r := range v.refs[k] {
		if !have[r.name] {
			v.errorf("%s: %s %q is not in the node's %s", r.from, what, r.name, where)
		}
	}
}

func (v *validator) unused(what string, have map[string]bool, k refKind) {
	used := map[string]bool{}
	for _, r := range v.refs[k] {
		used[r.name] = true
	}
	for _, name := range sortedKeys(have) {
		if !used[name] {
			v.errorf("%s %q: nothing references it", what, name)
		}
	}
}

type validatable interface{ ValidateAll() error }

// message records the references m makes and descends into its fields,
// unpacking Any. A root (a resource or the contents of an Any) is also
// validated: ValidateAll covers everything below it up to the next Any.
func (v *validator) message(m protoreflect.Message, path string, root bool) {
	field := path
	if field == "" {
		field = "(resource)"
	}
	if len(m.GetUnknown()) > 0 {
		v.errorf("%s: %s: unknown fields in %s", v.at, field, m.Descriptor().FullName())
	}
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{Resolver: protoregistry.GlobalTypes})
		if err != nil {
			v.errorf("%s: %s: cannot unpack %q: %v", v.at, field, a.GetTypeUrl(), err)
			return
		}
		v.message(inner.ProtoReflect(), path+"("+string(inner.ProtoReflect().Descriptor().Name())+")", true)
		return
	}
	if val, ok := m.Interface().(validatable); ok && root {
		if err := val.ValidateAll(); err != nil {
			v.errorf("%s: %s: %v", v.at, field, err)
		}
	}
	v.collect(m.Interface(), path)
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		kind := fd.Kind()
		if fd.IsMap() {
			kind = fd.MapValue().Kind()
		}
		if kind != protoreflect.MessageKind && kind != protoreflect.GroupKind {
			return true
		}
		p := join(path, fd.TextName())
		switch {
		case fd.IsMap():
			val.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				v.message(mv.Message(), fmt.Sprintf("%s[%q]", p, k.String()), false)
				return true
			})
		case fd.IsList():
			l := val.List()
			for i := 0; i < l.Len(); i++ {
				v.message(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), false)
			}
		default:
			v.message(val.Message(), p, false)
		}
		return true
	})
}

// collect records references and checks config sources.
func (v *validator) collect(m proto.Message, path string) {
	switch m := m.(type) {
	case *hcmv3.Rds:
		v.refer(refRoute, m.GetRouteConfigName(), join(path, "route_config_name"))
	case *tlsv3.SdsSecretConfig:
		v.refer(refSecret, m.GetName(), join(path, "name"))
	case *routev3.RouteAction:
		switch cs := m.GetClusterSpecifier().(type) {
		case *routev3.RouteAction_Cluster:
			v.refer(refCluster, cs.Cluster, join(path, "cluster"))
		case *routev3.RouteAction_WeightedClusters:
			for i, wc := range cs.WeightedClusters.GetClusters() {
				v.refer(refCluster, wc.GetName(), fmt.Sprintf("%s[%d].name", join(path, "weighted_clusters.clusters"), i))
			}
		default:
			v.errorf("%s: %s: cluster_specifier %T cannot be checked; use cluster or weighted_clusters", v.at, path, cs)
		}
	case *corev3.GrpcService_EnvoyGrpc:
		v.refer(refCluster, m.GetClusterName(), join(path, "cluster_name"))
	case *corev3.ConfigSource:
		if v.anySource {
			return
		}
		if m.GetAds() == nil {
			v.errorf("%s: %s: config source must be ADS (resource_api_version V3); got %T", v.at, path, m.GetConfigSourceSpecifier())
		}
		if m.GetResourceApiVersion() != corev3.ApiVersion_V3 {
			v.errorf("%s: %s: resource_api_version must be V3", v.at, path)
		}
	}
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func duplicates(names []string) string {
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			return n
		}
		seen[n] = true
	}
	return ""
}

// Message deeply validates one message outside any node, e.g. an Envoy
// bootstrap: ValidateAll on it and on the contents of every Any, no unknown
// fields, no unknown Any types. References are not resolved and config
// sources may be anything.
func Message(m proto.Message) error {
	v := &validator{node: "-", refs: map[refKind][]ref{}, at: string(m.ProtoReflect().Descriptor().Name()), anySource: true}
	v.message(m.ProtoReflect(), "", true)
	return v.err()
}
