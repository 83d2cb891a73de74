// Package translate turns the mesh section of the config into Envoy
// resources per proxy node: listeners, route configurations, clusters and
// endpoints, plus the names of the SDS secrets each node needs.
//
// Translation is pure: no I/O, no clock. Resources are immutable once
// returned and are shared between nodes whenever their content is equal
// (one object per distinct resource), so a thousand sidecars do not cost a
// thousand copies of the ext_authz cluster. Callers must not modify them.
//
// Envoy nodes get listeners with an HttpConnectionManager whose routes come
// by RDS over ADS and clusters whose endpoints come by EDS over ADS (or by
// the proxy's own DNS when an endpoint is a host name); certificates come by
// SDS over ADS. gRPC clients get api_listeners and EDS clusters in the shape
// grpc-go's xDS client accepts (router filter only, certificate providers
// instead of SDS).
package translate

import (
	"fmt"
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
)

// Role of a node.
type Role string

const (
	RoleEdge    Role = config.RoleEdge
	RoleSidecar Role = config.RoleSidecar
	RoleGRPC    Role = config.RoleGRPC
)

// NodeResources is everything one node is served. Each slice is sorted by
// resource name.
type NodeResources struct {
	Node string // node id = proxy name
	Role Role
	// Identity is the SPIFFE id the node's proxy presents (its workload
	// certificate); the only peer allowed to fetch this node's resources
	// when the control plane requires client certificates.
	Identity  string
	Listeners []types.Resource // *listenerv3.Listener
	Routes    []types.Resource // *routev3.RouteConfiguration
	Clusters  []types.Resource // *clusterv3.Cluster
	Endpoints []types.Resource // *endpointv3.ClusterLoadAssignment
	// SecretNames lists exactly the SDS secrets the listeners and clusters
	// reference, sorted. With ADS an unreferenced secret in a snapshot would
	// stall the secret type, so there are never extras.
	SecretNames []string
}

// SecretKind says what a secret holds.
type SecretKind string

const (
	// SecretWorkload is a certificate and key for a SPIFFE identity.
	SecretWorkload SecretKind = "workload"
	// SecretEdgeServer is an edge's public server certificate and key.
	SecretEdgeServer SecretKind = "edge-server"
	// SecretTrustBundle is the CA bundle (validation context).
	SecretTrustBundle SecretKind = "trust-bundle"
)

// SecretSpec says what to put in one named secret, for xds/secrets.
type SecretSpec struct {
	Name     string
	Kind     SecretKind
	SPIFFEID string   // SecretWorkload only
	DNSNames []string // SecretEdgeServer only
}

// Result is the translation of one mesh.
type Result struct {
	// Nodes by node id.
	Nodes map[string]*NodeResources
	// Secrets by name: every secret some node references.
	Secrets map[string]SecretSpec
}

// Option adjusts translation.
type Option func(*options)

type options struct {
	headerPrefix string
}

// WithIdentityHeaderPrefix sets the prefix of identity headers stripped
// from client requests (config authz.headers.prefix). Default
// DefaultIdentityHeaderPrefix.
func WithIdentityHeaderPrefix(prefix string) Option {
	return func(o *options) { o.headerPrefix = strings.ToLower(prefix) }
}

// Translate builds every node's resources. m must have passed validation
// (config.Load does that); Translate still reports, rather than panics on,
// references it cannot resolve.
func Translate(m *config.Mesh, opts ...Option) (*Result, error) {
	o := options{headerPrefix: DefaultIdentityHeaderPrefix}
	for _, opt := range opts {
		opt(&o)
	}
	if o.headerPrefix == "" || !strings.HasPrefix(o.headerPrefix, "x-") {
		return nil, fmt.Errorf("translate: identity header prefix %q must start with x-", o.headerPrefix)
	}
	b := newBuilder(m, o)
	res := &Result{Nodes: map[string]*NodeResources{}, Secrets: map[string]SecretSpec{}}
	add := func(n *node, err error) error {
		if err != nil {
			return err
		}
		if _, dup := res.Nodes[n.id]; dup {
			return fmt.Errorf("translate: duplicate node id %q", n.id)
		}
		res.Nodes[n.id] = n.finish()
		for name, s := range n.secrets {
			res.Secrets[name] = s
		}
		return nil
	}
	for i := range m.Edges {
		if err := add(b.edge(&m.Edges[i])); err != nil {
			return nil, err
		}
	}
	for i := range m.Sidecars {
		if err := add(b.sidecar(&m.Sidecars[i])); err != nil {
			return nil, err
		}
	}
	for i := range m.GRPCClients {
		if err := add(b.grpcClient(&m.GRPCClients[i])); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// node accumulates one node's resources, deduplicated by name.
type node struct {
	id                                     string
	role                                   Role
	identity                               string
	listeners, routes, clusters, endpoints map[string]types.Resource
	secrets                                map[string]SecretSpec
}

func newNode(id string, role Role) *node {
	return &node{
		id: id, role: role,
		listeners: map[string]types.Resource{}, routes: map[string]types.Resource{},
		clusters: map[string]types.Resource{}, endpoints: map[string]types.Resource{},
		secrets: map[string]SecretSpec{},
	}
}

type named interface {
	proto.Message
	GetName() string
}

func put[T named](into map[string]types.Resource, r T) { into[r.GetName()] = r }

func (n *node) finish() *NodeResources {
	nr := &NodeResources{
		Node: n.id, Role: n.role, Identity: n.identity,
		Listeners: sorted(n.listeners), Routes: sorted(n.routes),
		Clusters: sorted(n.clusters), Endpoints: sorted(n.endpoints),
	}
	for name := range n.secrets {
		nr.SecretNames = append(nr.SecretNames, name)
	}
	slices.Sort(nr.SecretNames)
	return nr
}

func sorted(m map[string]types.Resource) []types.Resource {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make([]types.Resource, len(names))
	for i, name := range names {
		out[i] = m[name]
	}
	return out
}
