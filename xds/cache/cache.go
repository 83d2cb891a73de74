// Package cache holds the xDS resources Gatehouse serves to each proxy node.
//
// It wraps go-control-plane's snapshot cache and adds what Gatehouse needs
// on top: per-type content-hash versions (replicas agree, unchanged types are
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
type Cache struct {
	inner gcache.SnapshotCache
	log   *slog.Logger

	// setMu serialises writers so version computation and the inner
	// SetSnapshot happen in the same order.
	setMu sync.Mutex

	mu    sync.RWMutex // guards nodes
	nodes map[string]*nodeResources

	statusMu sync.Mutex // guards status; never held while calling inner
	status   map[string]*nodeStatus
}

// nodeResources is the current, validated content for one node. It is
// replaced, never mutated, so readers may keep a reference.
type nodeResources struct {
	byType     map[resource.Type][]types.Resource
	versions   map[resource.Type]string
	snapshot   *gcache.Snapshot
	referenced []string // SDS names the listeners and clusters fetch over ADS
}

// New returns an empty cache. A nil logger discards logs.
func New(logger *slog.Logger) *Cache {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Cache{
		inner:  gcache.NewSnapshotCache(true, gcache.IDHash{}, gcpLogger{logger}),
		log:    logger,
		nodes:  map[string]*nodeResources{},
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
	if nodeID == "" {
		return errors.New("set resources: empty node id")
	}
	for t := range byType {
		if !slices.Contains(snapshotTypes[:], t) {
			return fmt.Errorf("set resources for %q: unsupported type %q", nodeID, t)
		}
	}
	c.setMu.Lock()
	defer c.setMu.Unlock()

	prev := c.node(nodeID)
	next := &nodeResources{byType: map[resource.Type][]types.Resource{}, versions: map[resource.Type]string{}}
	for _, t := range snapshotTypes {
		items, given := byType[t]
		if !given && prev != nil {
			next.byType[t], next.versions[t] = prev.byType[t], prev.versions[t]
			continue
		}
		v, err := TypeVersion(items)
		if err != nil {
			return fmt.Errorf("set resources for %q: %s: %w", nodeID, t, err)
		}
		next.byType[t], next.versions[t] = slices.Clone(items), v
	}
	ref, err := ReferencedSecrets(next.byType[resource.ListenerType], next.byType[resource.ClusterType])
	if err != nil {
		return fmt.Errorf("set resources for %q: %w", nodeID, err)
	}
	next.referenced = ref
	labels, err := secretLabels(next.byType[resource.SecretType], nil)
	if err != nil {
		return fmt.Errorf("set resources for %q: %w", nodeID, err)
	}
	return c.apply(ctx, nodeID, next, labels)
}

// SetSecrets replaces only the node's SDS secrets, e.g. after certificate
// rotation; only the secret type gets a new version. The set must match
// what the node's listeners and clusters reference.
func (c *Cache) SetSecrets(ctx context.Context, nodeID string, secrets []Secret) error {
	c.setMu.Lock()
	defer c.setMu.Unlock()

	prev := c.node(nodeID)
	if prev == nil {
		return fmt.Errorf("set secrets for %q: node has no resources", nodeID)
	}
	items := make([]types.Resource, 0, len(secrets))
	serials := map[string]string{}
	for _, s := range secrets {
		if s.Resource == nil {
			return fmt.Errorf("set secrets for %q: nil secret", nodeID)
		}
		items = append(items, s.Resource)
		if s.Serial != "" {
			serials[s.Resource.GetName()] = s.Serial
		}
	}
	v, err := TypeVersion(items)
	if err != nil {
		return fmt.Errorf("set secrets for %q: %w", nodeID, err)
	}
	labels, err := secretLabels(items, serials)
	if err != nil {
		return fmt.Errorf("set secrets for %q: %w", nodeID, err)
	}
	next := &nodeResources{
		byType:     maps.Clone(prev.byType),
		versions:   maps.Clone(prev.versions),
		referenced: prev.referenced,
	}
	next.byType[resource.SecretType], next.versions[resource.SecretType] = items, v
	return c.apply(ctx, nodeID, next, labels)
}

// apply validates next and installs it. Caller holds setMu.
func (c *Cache) apply(ctx context.Context, nodeID string, next *nodeResources, labels map[string]secretLabel) error {
	if err := checkSecrets(next.referenced, next.byType[resource.SecretType]); err != nil {
		return fmt.Errorf("node %q: %w", nodeID, err)
	}
	snap := &gcache.Snapshot{}
	for _, t := range snapshotTypes {
		snap.Resources[gcache.GetResponseType(t)] = gcache.NewResources(next.versions[t], next.byType[t])
	}
	if err := consistent(snap); err != nil {
		return fmt.Errorf("node %q: inconsistent snapshot: %w", nodeID, err)
	}
	next.snapshot = snap

	// Labels first: pushes triggered by SetSnapshot look serials up.
	c.setLabels(nodeID, labels)
	c.log.DebugContext(ctx, "xds snapshot set", "node", nodeID, "versions", next.versions)
	err := c.inner.SetSnapshot(ctx, nodeID, snap)
	// Publish to CreateWatch only now: while our view lags the inner one, a
	// NACK or reconnect compared against it errs towards sending.
	// SetSnapshot stores the snapshot even when answering watches fails.
	c.mu.Lock()
	c.nodes[nodeID] = next
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("node %q: push snapshot: %w", nodeID, err)
	}
	return nil
}

// consistent runs go-control-plane's check on a view in which each
// api_listener (proxyless gRPC) is shown as a filter chain, since the stock
// check only follows RDS names found in filter chains.
func consistent(snap *gcache.Snapshot) error {
	lt := gcache.GetResponseType(resource.ListenerType)
	view := *snap
	view.VersionMap = nil
	items := map[string]types.ResourceWithTTL{}
	for name, r := range snap.Resources[lt].Items {
		l, ok := r.Resource.(*listenerv3.Listener)
		if ok && l.GetApiListener().GetApiListener() != nil {
			r.Resource = &listenerv3.Listener{
				Name: l.GetName(),
				FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
					Name:       "envoy.filters.network.http_connection_manager",
					ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: l.GetApiListener().GetApiListener()},
				}}}},
			}
		}
		items[name] = r
	}
	view.Resources[lt] = gcache.Resources{Version: snap.Resources[lt].Version, Items: items}
	return view.Consistent()
}

// ClearNode forgets a node's resources (and its status once it has no
// streams), e.g. when it leaves the configuration. The stock cache drops the
// node's open watches with it, so a still-connected client hears nothing
// more until it sends a new request or reconnects.
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
	c.inner.ClearSnapshot(nodeID)
}

// Version returns the node's current version of a type, or "".
func (c *Cache) Version(nodeID string, typeURL resource.Type) string {
	if n := c.node(nodeID); n != nil {
		return n.versions[typeURL]
	}
	return ""
}

func (c *Cache) node(nodeID string) *nodeResources {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.nodes[nodeID]
}

// CreateWatch implements cache.ConfigWatcher for SotW. Two requests are
// treated specially before the stock cache sees them:
//
//   - A NACK (error_detail set) of the version the cache still holds is
//     parked: the stock cache compares the client's last ACKed version with
//     the current one and would resend the rejected config at once, which
//     the client rejects again, in a loop. The watch is answered when the
//     type's version next changes.
//   - The first request on a new stream that names the current version
//     (a reconnect after an ACK) gets no resend: the client already holds
//     that content, since the version is a hash of it.
func (c *Cache) CreateWatch(req *gcache.Request, sub gcache.Subscription, ch chan gcache.Response) (func(), error) {
	nodeID := req.GetNode().GetId()
	typ := req.GetTypeUrl()
	n := c.node(nodeID)
	if n == nil {
		return c.inner.CreateWatch(req, sub, ch)
	}
	current := n.versions[typ]
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
	case req.GetResponseNonce() == "" && req.GetVersionInfo() != "" &&
		req.GetVersionInfo() == current && len(sub.ReturnedResources()) == 0:
		known := map[string]string{}
		for _, r := range n.byType[typ] {
			known[gcache.GetResourceName(r)] = current
		}
		sub = knownSubscription{Subscription: sub, known: known}
	}
	return c.inner.CreateWatch(req, sub, ch)
}

// sentVersion is the version of the last SotW response on this stream: the
// server records it for every resource it returned.
func sentVersion(sub gcache.Subscription) string {
	for _, v := range sub.ReturnedResources() {
		return v
	}
	return ""
}

// knownSubscription tells the stock cache a reconnecting client already
// holds the current resources.
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
	return c.inner.CreateDeltaWatch(req, sub, ch)
}

// Fetch implements cache.ConfigFetcher (REST xDS).
func (c *Cache) Fetch(ctx context.Context, req *gcache.Request) (gcache.Response, error) {
	return c.inner.Fetch(ctx, req)
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
