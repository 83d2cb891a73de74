// Package cache holds the xDS resources Gatehouse serves to each proxy node.
//
// It implements go-control-plane's cache interfaces with what Gatehouse
// needs: per-type content-hash versions (replicas agree, unchanged types are
// not resent), refusal of inconsistent snapshots (including SDS secrets), a
// fast path for certificate rotation, parking of NACKed watches so a client
// that rejects a config is not fed the same config in a tight loop, and a
// per-node record of what was sent, ACKed and NACKed.
package cache

import (
	"context"
	"errors"
	"fmt"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	"log/slog"
	"maps"
	"slices"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// snapshotTypes are the resource types a node snapshot holds.
var snapshotTypes = [...]resource.Type{
	resource.ClusterType,
	resource.EndpointType,
	resource.ListenerType,
	resource.RouteType,
	resource.SecretType,
}

// Types returns the resource types a node snapshot holds.
func Types() []resource.Type { return slices.Clone(snapshotTypes[:]) }

// Cache is a go-control-plane cache.Cache for ADS. It is safe for
// concurrent use.
//
// It answers watches itself rather than through go-control-plane's
// SnapshotCache, which re-marshals every resource for every response and
// fans out under one cache-wide lock: here each node's resources are
// marshaled once when set, responses share them, and a change to one node
// locks only that node.
type Cache struct {
	log *slog.Logger

	// setMu serialises writers so version computation and publication
	// happen in the same order.
	setMu sync.Mutex

	mu    sync.RWMutex // guards nodes (the map, not the entries)
	nodes map[string]*node

	// statusMu guards the status map; each record has its own lock (see
	// withStatus). Never taken while a node's watch lock is held.
	statusMu sync.RWMutex
	status   map[string]*nodeStatus
}

// nodeResources is the current, validated content for one node. It is
// replaced, never mutated, so readers may keep a reference.
type nodeResources struct {
	byType     map[resource.Type][]types.Resource
	versions   map[resource.Type]string
	data       map[resource.Type]*typeData
	referenced []string // SDS names the listeners and clusters fetch over ADS
}

// New returns an empty cache. A nil logger discards logs.
func New(logger *slog.Logger) *Cache {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Cache{
		log:    logger,
		nodes:  map[string]*node{},
		status: map[string]*nodeStatus{},
	}
}

var _ gcache.Cache = (*Cache)(nil)

// SetResources replaces the node's resources of every type present in
// byType; types absent from the map keep their current resources (a nil
// slice under a present key empties that type). Each type's version is its
// TypeVersion, so only types whose content changed are resent.
//
// The result must be consistent (every RDS and EDS name referenced exists
// and nothing else; every SDS secret referenced over ADS exists and nothing
// else); otherwise an error is returned and the last good snapshot stays.
func (c *Cache) SetResources(ctx context.Context, nodeID string, byType map[resource.Type][]types.Resource) error {
	if err := checkTypes(nodeID, byType); err != nil {
		return err
	}
	encoded := make(map[resource.Type][]*Encoded, len(byType))
	for t, items := range byType {
		list := make([]*Encoded, 0, len(items))
		for _, r := range items {
			e, err := Encode(t, r)
			if err != nil {
				return fmt.Errorf("set resources for %q: %s: %w", nodeID, t, err)
			}
			list = append(list, e)
		}
		encoded[t] = list
	}
	return c.SetEncoded(ctx, nodeID, encoded)
}

// SetEncoded is SetResources for resources encoded with Encode (secrets
// with EncodeSecret), which may be shared between nodes and kept across
// changes: each distinct resource is then marshaled and hashed once, not
// once per node. A type whose content is unchanged keeps its current
// content object, so its open watches are not even visited.
func (c *Cache) SetEncoded(ctx context.Context, nodeID string, byType map[resource.Type][]*Encoded) error {
	if err := checkTypes(nodeID, byType); err != nil {
		return err
	}
	c.setMu.Lock()
	defer c.setMu.Unlock()

	prev := c.resources(nodeID)
	next := &nodeResources{
		byType:   map[resource.Type][]types.Resource{},
		versions: map[resource.Type]string{},
		data:     map[resource.Type]*typeData{},
	}
	// same marks the types whose content is prev's.
	same := map[resource.Type]bool{}
	for _, t := range snapshotTypes {
		items, given := byType[t]
		if prev != nil && !given {
			next.byType[t], next.versions[t], next.data[t] = prev.byType[t], prev.versions[t], prev.data[t]
			same[t] = true
			continue
		}
		if prev != nil && prev.data[t].holds(items) {
			// The very encodings already served: equal content without
			// hashing it again.
			next.byType[t], next.versions[t], next.data[t] = prev.byType[t], prev.versions[t], prev.data[t]
			same[t] = true
			continue
		}
		td, err := typeDataOf(t, items)
		if err != nil {
			return fmt.Errorf("set resources for %q: %s: %w", nodeID, t, err)
		}
		if prev != nil && prev.data[t] != nil && prev.versions[t] == td.version {
			// Equal versions are equal content: keep the object open
			// watches were answered with.
			next.byType[t], next.versions[t], next.data[t] = prev.byType[t], prev.versions[t], prev.data[t]
			same[t] = true
			continue
		}
		next.byType[t], next.versions[t], next.data[t] = td.resources(), td.version, td
	}
	if prev != nil && len(same) == len(snapshotTypes) {
		// Nothing changed: nothing to check, label or push.
		return nil
	}
	if same[resource.ListenerType] && same[resource.ClusterType] {
		next.referenced = prev.referenced
	} else {
		ref, err := referencedSecrets(next.data[resource.ListenerType], next.data[resource.ClusterType])
		if err != nil {
			return fmt.Errorf("set resources for %q: %w", nodeID, err)
		}
		next.referenced = ref
	}
	labels, err := secretLabels(next.data[resource.SecretType], nil)
	if err != nil {
		return fmt.Errorf("set resources for %q: %w", nodeID, err)
	}
	if err := checkSecrets(next.referenced, next.byType[resource.SecretType]); err != nil {
		return fmt.Errorf("node %q: %w", nodeID, err)
	}
	// Secrets play no part in this check; unchanged content passed it.
	if !same[resource.ListenerType] || !same[resource.RouteType] || !same[resource.ClusterType] || !same[resource.EndpointType] {
		if err := consistent(next); err != nil {
			return fmt.Errorf("node %q: inconsistent snapshot: %w", nodeID, err)
		}
	}
	return c.publish(ctx, nodeID, next, labels)
}

// checkTypes refuses an empty node id and types a snapshot does not hold.
func checkTypes[T any](nodeID string, byType map[resource.Type][]T) error {
	if nodeID == "" {
		return errors.New("set resources: empty node id")
	}
	for t := range byType {
		if !slices.Contains(snapshotTypes[:], t) {
			return fmt.Errorf("set resources for %q: unsupported type %q", nodeID, t)
		}
	}
	return nil
}

// referencedSecrets is ReferencedSecrets over encoded listeners and
// clusters, each resource's references computed once.
func referencedSecrets(listeners, clusters *typeData) ([]string, error) {
	set := map[string]struct{}{}
	for _, td := range []*typeData{clusters, listeners} {
		for _, name := range td.names {
			refs, err := td.items[name].referenced()
			if err != nil {
				return nil, err
			}
			for _, r := range refs {
				set[r] = struct{}{}
			}
		}
	}
	return slices.Sorted(maps.Keys(set)), nil
}

// SetSecrets replaces only the node's SDS secrets, e.g. after certificate
// rotation; only the secret type gets a new version. The set must match
// what the node's listeners and clusters reference.
func (c *Cache) SetSecrets(ctx context.Context, nodeID string, secrets []Secret) error {
	encoded := make([]*Encoded, 0, len(secrets))
	for _, s := range secrets {
		e, err := EncodeSecret(s)
		if err != nil {
			return fmt.Errorf("set secrets for %q: %w", nodeID, err)
		}
		encoded = append(encoded, e)
	}
	return c.SetEncodedSecrets(ctx, nodeID, encoded)
}

// SetEncodedSecrets is SetSecrets for secrets encoded with EncodeSecret,
// which may be shared between nodes: a rotation of a certificate many
// nodes use encodes it once. Unchanged secrets push nothing.
func (c *Cache) SetEncodedSecrets(ctx context.Context, nodeID string, secrets []*Encoded) error {
	c.setMu.Lock()
	defer c.setMu.Unlock()

	prev := c.resources(nodeID)
	if prev == nil {
		return fmt.Errorf("set secrets for %q: node has no resources", nodeID)
	}
	td, err := typeDataOf(resource.SecretType, secrets)
	if err != nil {
		return fmt.Errorf("set secrets for %q: %w", nodeID, err)
	}
	labels, err := secretLabels(td, nil)
	if err != nil {
		return fmt.Errorf("set secrets for %q: %w", nodeID, err)
	}
	items := td.resources()
	if err := checkSecrets(prev.referenced, items); err != nil {
		return fmt.Errorf("node %q: %w", nodeID, err)
	}
	if td.version == prev.versions[resource.SecretType] {
		return nil
	}
	// Listeners, routes, clusters and endpoints are unchanged and were
	// consistent; secrets play no part in that check.
	next := &nodeResources{
		byType:     maps.Clone(prev.byType),
		versions:   maps.Clone(prev.versions),
		data:       maps.Clone(prev.data),
		referenced: prev.referenced,
	}
	next.byType[resource.SecretType], next.versions[resource.SecretType], next.data[resource.SecretType] = items, td.version, td
	return c.publish(ctx, nodeID, next, labels)
}

// publish installs validated content and answers the node's open watches.
// The content is installed even when ctx ends before every watch is
// answered; the error says so. Caller holds setMu.
func (c *Cache) publish(ctx context.Context, nodeID string, next *nodeResources, labels map[string]secretLabel) error {
	// Labels first: pushes triggered below look serials up.
	c.setLabels(nodeID, labels)
	c.log.DebugContext(ctx, "xds snapshot set", "node", nodeID, "versions", next.versions)
	if err := c.nodeFor(nodeID).set(ctx, c.log, next); err != nil {
		return fmt.Errorf("node %q: push snapshot: %w", nodeID, err)
	}
	return nil
}

// consistent runs go-control-plane's check on a view in which each
// api_listener (proxyless gRPC) is shown as a filter chain, since the stock
// check only follows RDS names found in filter chains.
func consistent(n *nodeResources) error {
	var view gcache.Snapshot
	for _, t := range snapshotTypes {
		view.Resources[gcache.GetResponseType(t)] = gcache.NewResources(n.versions[t], n.byType[t])
	}
	lt := gcache.GetResponseType(resource.ListenerType)
	for name, r := range view.Resources[lt].Items {
		l, ok := r.Resource.(*listenerv3.Listener)
		if ok && l.GetApiListener().GetApiListener() != nil {
			r.Resource = &listenerv3.Listener{
				Name: l.GetName(),
				FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
					Name:       "envoy.filters.network.http_connection_manager",
					ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: l.GetApiListener().GetApiListener()},
				}}}},
			}
			view.Resources[lt].Items[name] = r
		}
	}
	return view.Consistent()
}

// ClearNode forgets a node's resources (and its status once it has no
// streams), e.g. when it leaves the configuration. Its open watches are
// dropped with it, as go-control-plane's cache does, so a still-connected
// client hears nothing more until it sends a new request or reconnects.
func (c *Cache) ClearNode(nodeID string) {
	c.setMu.Lock()
	defer c.setMu.Unlock()
	c.mu.Lock()
	delete(c.nodes, nodeID)
	c.mu.Unlock()
	c.statusMu.Lock()
	if st := c.status[nodeID]; st != nil && st.streams == 0 {
		delete(c.status, nodeID)
	}
	c.statusMu.Unlock()
}

// Version returns the node's current version of a type, or "".
func (c *Cache) Version(nodeID string, typeURL resource.Type) string {
	if n := c.resources(nodeID); n != nil {
		return n.versions[typeURL]
	}
	return ""
}

// resources returns the node's current content, or nil.
func (c *Cache) resources(nodeID string) *nodeResources {
	c.mu.RLock()
	n := c.nodes[nodeID]
	c.mu.RUnlock()
	if n == nil {
		return nil
	}
	return n.res.Load()
}

// nodeFor returns the node's entry, creating it: watches may arrive before
// the node has resources.
func (c *Cache) nodeFor(nodeID string) *node {
	c.mu.RLock()
	n := c.nodes[nodeID]
	c.mu.RUnlock()
	if n != nil {
		return n
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n = c.nodes[nodeID]; n == nil {
		n = newNode()
		c.nodes[nodeID] = n
	}
	return n
}

// CreateWatch implements cache.ConfigWatcher for SotW. Two requests are
// treated specially:
//
//   - A NACK (error_detail set) of the version the cache still holds is
//     parked: go-control-plane's cache compares the client's last ACKed
//     version with the current one and would resend the rejected config at
//     once, which the client rejects again, in a loop. The watch is
//     answered when the type's version next changes.
//   - The first request on a new stream that names the current version of
//     a wildcard type (LDS, CDS: a reconnect after an ACK) gets no resend:
//     the client already holds that content, since the version is a hash
//     of all of it. A reconnect to named resources (EDS, RDS, SDS) is
//     answered: the version says nothing of which names the client held
//     at it, and one it subscribed to just before the old stream broke
//     would otherwise never be sent. Envoy ignores the identical resend.
func (c *Cache) CreateWatch(req *gcache.Request, sub gcache.Subscription, ch chan gcache.Response) (func(), error) {
	nodeID := req.GetNode().GetId()
	typ := req.GetTypeUrl()
	n := c.nodeFor(nodeID)
	if res := n.res.Load(); res != nil {
		current := res.versions[typ]
		switch {
		case req.GetErrorDetail() != nil:
			rejected := sentVersion(sub)
			if rejected == "" {
				rejected = c.lastSent(nodeID, typ)
			}
			if rejected != "" && rejected == current {
				c.log.Debug("xds nack parked until next change", "node", nodeID, "type", typ, "version", current)
				parked := proto.Clone(req).(*gcache.Request)
				parked.VersionInfo = current
				req = parked
			}
		case sub.IsWildcard() && req.GetResponseNonce() == "" && req.GetVersionInfo() != "" &&
			req.GetVersionInfo() == current && len(sub.ReturnedResources()) == 0:
			if td := res.data[typ]; td != nil {
				sub = knownSubscription{Subscription: sub, known: td.returned}
			}
		}
	}
	return n.watch(c.log, req, sub, ch), nil
}

// sentVersion is the version of the last SotW response on this stream: the
// server records it for every resource it returned.
func sentVersion(sub gcache.Subscription) string {
	for _, v := range sub.ReturnedResources() {
		return v
	}
	return ""
}

// knownSubscription tells the watch a reconnecting client already holds the
// current resources. It is only read, never handed to the server.
type knownSubscription struct {
	gcache.Subscription
	known map[string]string
}

func (k knownSubscription) ReturnedResources() map[string]string { return k.known }

// CreateDeltaWatch implements cache.ConfigWatcher for delta xDS. No extra
// parking is needed: the delta server records a response's resource
// versions as the client's state when it sends it, so a NACK finds nothing
// new to send and its watch waits for the next change. Reconnects are
// served from initial_resource_versions the same way.
func (c *Cache) CreateDeltaWatch(req *gcache.DeltaRequest, sub gcache.Subscription, ch chan gcache.DeltaResponse) (func(), error) {
	return c.nodeFor(req.GetNode().GetId()).deltaWatch(req, sub, ch), nil
}

// Fetch implements cache.ConfigFetcher (REST xDS).
func (c *Cache) Fetch(ctx context.Context, req *gcache.Request) (gcache.Response, error) {
	nodeID := req.GetNode().GetId()
	res := c.resources(nodeID)
	if res == nil {
		return nil, fmt.Errorf("missing snapshot for %q", nodeID)
	}
	td := res.data[req.GetTypeUrl()]
	if td == nil {
		td = emptyType(req.GetTypeUrl())
	}
	if req.GetVersionInfo() == td.version {
		return nil, &types.SkipFetchError{}
	}
	// REST is not used by proxies here; build the response plainly.
	out := &discovery.DiscoveryResponse{VersionInfo: td.version, TypeUrl: req.GetTypeUrl()}
	returned := map[string]string{}
	for i, name := range td.names {
		if len(req.GetResourceNames()) == 0 || slices.Contains(req.GetResourceNames(), name) {
			out.Resources = append(out.Resources, td.anys[i])
			returned[name] = td.version
		}
	}
	return &gcache.PassthroughResponse{Request: req, DiscoveryResponse: out, ReturnedResources: returned}, nil
}

// GCPLogger routes go-control-plane's logs to l. Its Info level is
// per-watch and per-request chatter, so it goes to Debug.
func GCPLogger(l *slog.Logger) gcplog.Logger { return gcpLogger{l} }

type gcpLogger struct{ l *slog.Logger }

func (g gcpLogger) logf(lvl slog.Level, f string, a []any) {
	if g.l.Enabled(context.Background(), lvl) {
		g.l.Log(context.Background(), lvl, fmt.Sprintf(f, a...))
	}
}

func (g gcpLogger) Debugf(f string, a ...any) { g.logf(slog.LevelDebug, f, a) }
func (g gcpLogger) Infof(f string, a ...any)  { g.logf(slog.LevelDebug, f, a) }
func (g gcpLogger) Warnf(f string, a ...any)  { g.logf(slog.LevelWarn, f, a) }
func (g gcpLogger) Errorf(f string, a ...any) { g.logf(slog.LevelError, f, a) }
