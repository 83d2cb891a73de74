package cache_test

// Behaviour tests of the xDS protocol semantics Envoy and gRPC clients
// rely on (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol):
// when a SotW or delta watch must and must not be answered, what a
// response carries, how versions behave, and how the cache behaves under
// concurrency, many nodes and undrained channels.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/cache/cachetest"
)

// waitFor is how long a response that is due may take to arrive.
const waitFor = 5 * time.Second

// clustersSet is cachetest.Set(nil, addr) with one more EDS cluster (and
// its load assignment) for each extra name: a consistent set whose EDS
// type holds several names.
func clustersSet(addr string, extra ...string) map[resource.Type][]types.Resource {
	set := cachetest.Set(nil, addr)
	for _, name := range extra {
		cl := cachetest.Cluster(false)
		cl.Name = name
		ep := cachetest.Endpoints(addr)
		ep.ClusterName = name
		set[resource.ClusterType] = append(set[resource.ClusterType], cl)
		set[resource.EndpointType] = append(set[resource.EndpointType], ep)
	}
	return set
}

// mustSet is SetResources that must succeed.
func mustSet(t *testing.T, c *cache.Cache, nodeID string, set map[resource.Type][]types.Resource) {
	t.Helper()
	if err := c.SetResources(context.Background(), nodeID, set); err != nil {
		t.Fatal(err)
	}
}

// sotwClient is one SotW stream's view of one type, driven the way
// go-control-plane's server drives the cache.
type sotwClient struct {
	t     *testing.T
	c     *cache.Cache
	node  string
	typ   string
	names []string
	sub   stream.Subscription
	ch    chan gcache.Response
	// version is the last version the client accepted; nonce counts
	// responses.
	version string
	nonce   int
	// stop cancels the open watch: the server does before each request.
	stop func()
}

func newSotwClient(t *testing.T, c *cache.Cache, nodeID, typ string, names ...string) *sotwClient {
	return &sotwClient{t: t, c: c, node: nodeID, typ: typ, names: names,
		sub: stream.NewSotwSubscription(names, typ == resource.ClusterType || typ == resource.ListenerType),
		ch:  make(chan gcache.Response, 8)}
}

// request sends a request carrying the client's version and last nonce.
func (s *sotwClient) request(mutate func(*discovery.DiscoveryRequest)) {
	s.t.Helper()
	req := &discovery.DiscoveryRequest{Node: &corev3.Node{Id: s.node}, TypeUrl: s.typ, ResourceNames: s.names, VersionInfo: s.version}
	if s.nonce > 0 {
		req.ResponseNonce = fmt.Sprint(s.nonce)
	}
	if mutate != nil {
		mutate(req)
	}
	if s.stop != nil {
		s.stop()
	}
	cancel, err := s.c.CreateWatch(req, &s.sub, s.ch)
	if err != nil {
		s.t.Fatal(err)
	}
	s.stop = cancel
}

// take returns the response the cache sent, recording it as the server
// does, or nil if none is queued.
func (s *sotwClient) take() *discovery.DiscoveryResponse {
	s.t.Helper()
	select {
	case r := <-s.ch:
		return s.record(r)
	default:
		return nil
	}
}

func (s *sotwClient) record(r gcache.Response) *discovery.DiscoveryResponse {
	s.t.Helper()
	d, err := r.GetDiscoveryResponse()
	if err != nil {
		s.t.Fatal(err)
	}
	s.sub.SetReturnedResources(r.GetReturnedResources())
	s.nonce++
	return d
}

// ack accepts d and sends the ACK.
func (s *sotwClient) ack(d *discovery.DiscoveryResponse) {
	s.t.Helper()
	s.version = d.GetVersionInfo()
	s.request(nil)
}

// subscribe opens the stream and ACKs its first response.
func (s *sotwClient) subscribe() *discovery.DiscoveryResponse {
	s.t.Helper()
	s.request(nil)
	d := s.take()
	if d == nil {
		s.t.Fatalf("%s %v: first request not answered", s.typ, s.names)
	}
	s.ack(d)
	if extra := s.take(); extra != nil {
		s.t.Fatalf("%s: ACK of the current version answered with %q", s.typ, extra.GetVersionInfo())
	}
	return d
}

// resourceNames lists the names of a response's resources.
func resourceNames(t *testing.T, typ string, d *discovery.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range d.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, gcache.GetResourceName(m))
	}
	return out
}

// A SotW request naming the version the cache holds is not answered until
// the type changes; equal content set again is no change; removals from a
// wildcard LDS/CDS are told by omission.
func TestSemanticsSotwUpdateRules(t *testing.T) {
	c := cache.New(nil)
	set := clustersSet("10.0.0.1:1", "a", "b")
	set[resource.ListenerType] = benchListeners(3, 0)
	mustSet(t, c, node, set)

	tests := []struct {
		typ   string
		names []string
		// change is set after the client ACKed; want are the names of
		// the response it must get.
		change map[resource.Type][]types.Resource
		want   []string
	}{
		{resource.ListenerType, nil,
			map[resource.Type][]types.Resource{resource.ListenerType: benchListeners(2, 0)},
			[]string{"listener-0", "listener-1"}},
		{resource.ClusterType, nil, clustersSet("10.0.0.1:1", "a"), []string{"a", cachetest.Name}},
		{resource.EndpointType, []string{"a"}, clustersSet("10.0.0.2:2", "a"), []string{"a"}},
		{resource.RouteType, []string{cachetest.Name}, func() map[resource.Type][]types.Resource {
			r := cachetest.Route()
			r.VirtualHosts[0].Domains = []string{"example.com"}
			return map[resource.Type][]types.Resource{resource.RouteType: {r}}
		}(), []string{cachetest.Name}},
	}
	for _, tt := range tests {
		t.Run(tt.typ[strings.LastIndex(tt.typ, ".")+1:], func(t *testing.T) {
			mustSet(t, c, node, set)
			cl := newSotwClient(t, c, node, tt.typ, tt.names...)
			first := cl.subscribe()
			if first.GetVersionInfo() != c.Version(node, tt.typ) {
				t.Fatalf("first response at %q, want current %q", first.GetVersionInfo(), c.Version(node, tt.typ))
			}
			// Equal content in new objects is no change.
			again := clustersSet("10.0.0.1:1", "a", "b")
			again[resource.ListenerType] = benchListeners(3, 0)
			mustSet(t, c, node, again)
			if d := cl.take(); d != nil {
				t.Fatalf("equal content answered a current client with %q", d.GetVersionInfo())
			}
			mustSet(t, c, node, tt.change)
			d := cl.take()
			if d == nil {
				t.Fatal("change not pushed")
			}
			if got := resourceNames(t, tt.typ, d); !slices.Equal(got, tt.want) {
				t.Errorf("pushed %v, want %v", got, tt.want)
			}
			if d.GetVersionInfo() == first.GetVersionInfo() || d.GetVersionInfo() != c.Version(node, tt.typ) {
				t.Errorf("pushed version %q, want the new current %q", d.GetVersionInfo(), c.Version(node, tt.typ))
			}
			cl.ack(d)
			if d := cl.take(); d != nil {
				t.Fatalf("ACK answered with %q", d.GetVersionInfo())
			}
		})
	}
}

// A NACK of the version the cache holds is not answered with that content
// again, not even when equal content is set again; it is answered when the
// content changes, and at once when it changed before the NACK arrived.
func TestSemanticsSotwNack(t *testing.T) {
	nack := func(r *discovery.DiscoveryRequest) { r.ErrorDetail = &statuspb.Status{Message: "rejected"} }
	lb := func(p clusterv3.Cluster_LbPolicy) map[resource.Type][]types.Resource {
		cl := cachetest.Cluster(false)
		cl.LbPolicy = p
		return map[resource.Type][]types.Resource{resource.ClusterType: {cl}}
	}
	tests := []struct {
		name string
		// before runs between the push and the NACK.
		before   func(t *testing.T, c *cache.Cache)
		answered bool
	}{
		{"nack of current parks", nil, false},
		{"equal content set again keeps it parked", func(t *testing.T, c *cache.Cache) {
			mustSet(t, c, node, cachetest.Set(nil, "10.0.0.1:1"))
		}, false},
		{"content changed before the nack", func(t *testing.T, c *cache.Cache) {
			mustSet(t, c, node, lb(clusterv3.Cluster_RING_HASH))
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cache.New(nil)
			mustSet(t, c, node, cachetest.Set(nil, "10.0.0.1:1"))
			cl := newSotwClient(t, c, node, resource.ClusterType)
			cl.request(nil)
			pushed := cl.take()
			// The server holds the response while the cache changes.
			ch := cl.ch
			cl.ch = make(chan gcache.Response, 8)
			if tt.before != nil {
				tt.before(t, c)
			}
			if len(ch) != 0 {
				t.Fatal("the answered watch was answered again")
			}
			cl.request(nack)
			d := cl.take()
			if (d != nil) != tt.answered {
				t.Fatalf("NACK answered=%v, want %v", d != nil, tt.answered)
			}
			if d != nil {
				if d.GetVersionInfo() == pushed.GetVersionInfo() {
					t.Fatalf("NACK answered with the rejected version %q", d.GetVersionInfo())
				}
				return
			}
			mustSet(t, c, node, lb(clusterv3.Cluster_LEAST_REQUEST))
			d = cl.take()
			if d == nil || d.GetVersionInfo() != c.Version(node, resource.ClusterType) {
				t.Fatalf("parked NACK after a change: got %v, want version %q", d, c.Version(node, resource.ClusterType))
			}
		})
	}
}

// A NACK of a response that carried no resources (so the stream recorded
// no version) is parked by the version the server recorded as sent.
func TestSemanticsSotwNackOfEmptyResponse(t *testing.T) {
	c := cache.New(nil)
	mustSet(t, c, node, map[resource.Type][]types.Resource{})
	cl := newSotwClient(t, c, node, resource.ClusterType)
	cl.request(nil)
	d := cl.take()
	if d == nil || len(d.GetResources()) != 0 {
		t.Fatalf("wildcard CDS of an empty node: %v", d)
	}
	c.RecordSent(node, cache.Push{TypeURL: resource.ClusterType, Version: d.GetVersionInfo()})
	cl.request(func(r *discovery.DiscoveryRequest) { r.ErrorDetail = &statuspb.Status{Message: "no"} })
	if d := cl.take(); d != nil {
		t.Fatalf("NACK of an empty response answered with the same version %q", d.GetVersionInfo())
	}
}

// For EDS/RDS/SDS a request names what it wants; a name that does not
// exist yet is delivered when it appears, however the watch got there.
func TestSemanticsSotwNamedResourceAppears(t *testing.T) {
	tests := []struct {
		name string
		// open leaves a client with an open watch for "late" only.
		open func(t *testing.T, c *cache.Cache) *sotwClient
	}{
		{"first request names a missing resource", func(t *testing.T, c *cache.Cache) *sotwClient {
			cl := newSotwClient(t, c, node, resource.EndpointType, "late")
			cl.request(nil)
			return cl
		}},
		{"subscription moved to a missing resource, then the type changed", func(t *testing.T, c *cache.Cache) *sotwClient {
			cl := newSotwClient(t, c, node, resource.EndpointType, cachetest.Name)
			cl.subscribe()
			cl.names = []string{"late"}
			cl.sub.SetResourceSubscription(cl.names)
			cl.request(nil)
			// An endpoint the client does not want changes.
			mustSet(t, c, node, clustersSet("10.0.0.2:2"))
			return cl
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cache.New(nil)
			mustSet(t, c, node, clustersSet("10.0.0.1:1"))
			cl := tt.open(t, c)
			if d := cl.take(); d != nil {
				t.Fatalf("answered %v before the resource exists", resourceNames(t, cl.typ, d))
			}
			mustSet(t, c, node, clustersSet("10.0.0.1:1", "late"))
			d := cl.take()
			if d == nil {
				t.Fatal(`"late" was added but never delivered`)
			}
			if got := resourceNames(t, cl.typ, d); !slices.Equal(got, []string{"late"}) {
				t.Fatalf("delivered %v, want [late]", got)
			}
		})
	}
}

// For EDS/RDS/SDS (not wildcard on Gatehouse's server) an empty name
// list means the client wants nothing of the type (grpc-go unsubscribing
// from its last resource): it must not be sent every resource.
func TestSemanticsSotwEmptyNamesWantNothing(t *testing.T) {
	tests := []struct {
		name string
		open func(t *testing.T, c *cache.Cache) *sotwClient
	}{
		{"first request names nothing", func(t *testing.T, c *cache.Cache) *sotwClient {
			cl := newSotwClient(t, c, node, resource.EndpointType)
			cl.request(nil)
			return cl
		}},
		{"unsubscribed from its last name", func(t *testing.T, c *cache.Cache) *sotwClient {
			cl := newSotwClient(t, c, node, resource.EndpointType, cachetest.Name)
			cl.subscribe()
			cl.names = nil
			cl.sub.SetResourceSubscription(nil)
			cl.request(nil)
			return cl
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cache.New(nil)
			mustSet(t, c, node, clustersSet("10.0.0.1:1", "a"))
			cl := tt.open(t, c)
			if cl.sub.IsWildcard() {
				t.Fatal("subscription is wildcard")
			}
			for i := range 2 {
				if d := cl.take(); d != nil && len(d.GetResources()) != 0 {
					t.Fatalf("step %d: client wanting nothing was sent %v", i, resourceNames(t, cl.typ, d))
				}
				mustSet(t, c, node, clustersSet("10.0.0.2:2", "a"))
			}
		})
	}
}

// A client may subscribe to the wildcard explicitly with the name "*"
// (alone or beside other names): it gets every resource of the type.
func TestSemanticsSotwExplicitWildcard(t *testing.T) {
	c := cache.New(nil)
	mustSet(t, c, node, clustersSet("10.0.0.1:1", "a"))
	for _, names := range [][]string{{"*"}, {"*", "a"}} {
		t.Run(strings.Join(names, ","), func(t *testing.T) {
			cl := newSotwClient(t, c, node, resource.ClusterType, names...)
			if !cl.sub.IsWildcard() {
				t.Fatal("go-control-plane does not see a wildcard subscription")
			}
			cl.request(nil)
			d := cl.take()
			if d == nil {
				t.Fatal("explicit wildcard request not answered")
			}
			if got := resourceNames(t, cl.typ, d); !slices.Equal(got, []string{"a", cachetest.Name}) {
				t.Fatalf("answered %v, want every cluster", got)
			}
		})
	}
}

// A reconnecting client naming the current version of a wildcard type is
// not resent what it holds: that version is a hash of every resource of the
// type. A reconnect to named resources is answered even at the current
// version: the client may have subscribed to a name just before its old
// stream broke, and the version does not say which names it held
// (xds_protocol, "ACK/NACK and resource type instance version": a name the
// client does not hold must be sent).
func TestSemanticsSotwReconnect(t *testing.T) {
	c := cache.New(nil)
	set := clustersSet("10.0.0.1:1", "a", "b")
	set[resource.ListenerType] = benchListeners(2, 0)
	mustSet(t, c, node, set)
	tests := []struct {
		name     string
		typ      string
		before   []string // names subscribed on the old stream
		after    []string // names on the new stream
		wantSent []string // nil: no response
	}{
		{"wildcard LDS", resource.ListenerType, nil, nil, nil},
		{"wildcard CDS", resource.ClusterType, nil, nil, nil},
		{"same EDS names", resource.EndpointType, []string{"a"}, []string{"a"}, []string{"a"}},
		{"EDS adds a name", resource.EndpointType, []string{"a"}, []string{"a", "b"}, []string{"a", "b"}},
		{"LDS by name adds a name", resource.ListenerType, []string{"listener-0"}, []string{"listener-0", "listener-1"},
			[]string{"listener-0", "listener-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := newSotwClient(t, c, node, tt.typ, tt.before...)
			old.subscribe()
			cl := newSotwClient(t, c, node, tt.typ, tt.after...)
			cl.version = old.version
			cl.request(nil)
			d := cl.take()
			switch {
			case tt.wantSent == nil && d != nil:
				t.Fatalf("reconnect at the current version answered with %v", resourceNames(t, tt.typ, d))
			case tt.wantSent != nil && d == nil:
				t.Fatal("reconnect to named resources not answered")
			case d != nil:
				if got := resourceNames(t, tt.typ, d); !slices.Equal(got, tt.wantSent) {
					t.Fatalf("sent %v, want %v", got, tt.wantSent)
				}
				if d.GetVersionInfo() != old.version {
					t.Fatalf("resent at version %q, want the current %q", d.GetVersionInfo(), old.version)
				}
				cl.ack(d)
			}
			// Either way the client's next watch is answered by the next
			// change (clusters, endpoints and listeners all change here).
			next := clustersSet("10.0.0.3:3", "a", "b", "c")
			next[resource.ListenerType] = benchListeners(2, 1)
			mustSet(t, c, node, next)
			defer mustSet(t, c, node, set)
			if d := cl.take(); d == nil || d.GetVersionInfo() != c.Version(node, tt.typ) {
				t.Fatalf("after a change got %v, want version %q", d, c.Version(node, tt.typ))
			}
		})
	}
}

// deltaClient is one delta stream's view of one type.
type deltaClient struct {
	t    *testing.T
	c    *cache.Cache
	typ  string
	sub  stream.Subscription
	ch   chan gcache.DeltaResponse
	sent int
}

func newDeltaClient(t *testing.T, c *cache.Cache, typ string, subscribe []string, initial map[string]string) *deltaClient {
	return &deltaClient{t: t, c: c, typ: typ,
		sub: stream.NewDeltaSubscription(subscribe, nil, initial, typ == resource.ClusterType || typ == resource.ListenerType),
		ch:  make(chan gcache.DeltaResponse, 8)}
}

// request sends a delta request (the first on the stream when nothing was
// sent yet), subscribe and unsubscribe already applied to the subscription
// as the server does. It reports whether the cache kept a watch.
func (d *deltaClient) request(subscribe, unsubscribe []string) bool {
	d.t.Helper()
	d.sub.UpdateResourceSubscriptions(subscribe, unsubscribe)
	req := &discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: d.typ,
		ResourceNamesSubscribe: subscribe, ResourceNamesUnsubscribe: unsubscribe}
	if d.sent > 0 {
		req.ResponseNonce = fmt.Sprint(d.sent)
	}
	cancel, err := d.c.CreateDeltaWatch(req, &d.sub, d.ch)
	if err != nil {
		d.t.Fatal(err)
	}
	return cancel != nil
}

// take returns the response sent, recorded as the server does, or nil.
func (d *deltaClient) take() *discovery.DeltaDiscoveryResponse {
	d.t.Helper()
	select {
	case r := <-d.ch:
		out, err := r.GetDeltaDiscoveryResponse()
		if err != nil {
			d.t.Fatal(err)
		}
		d.sub.SetReturnedResources(r.GetNextVersionMap())
		d.sent++
		return out
	default:
		return nil
	}
}

func deltaNames(d *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, r := range d.GetResources() {
		out = append(out, r.GetName())
	}
	slices.Sort(out)
	return out
}

// Delta: the client's initial versions, subscriptions and unsubscriptions
// decide what is sent; an unchanged resource is never resent; a removal is
// told in removed_resources; a name that does not exist yet is sent when
// it appears.
func TestSemanticsDelta(t *testing.T) {
	base := clustersSet("10.0.0.1:1", "a", "b")
	base[resource.ListenerType] = benchListeners(3, 0)
	hashes := func(typ string, set map[resource.Type][]types.Resource) map[string]string {
		out := map[string]string{}
		for _, r := range set[typ] {
			h, err := cache.ResourceHash(r)
			if err != nil {
				t.Fatal(err)
			}
			out[gcache.GetResourceName(r)] = h
		}
		return out
	}
	// movedA is clustersSet with the endpoints of "a" moved.
	movedA := func(extra ...string) map[resource.Type][]types.Resource {
		set := clustersSet("10.0.0.1:1", extra...)
		set[resource.EndpointType][1] = cachetest.Endpoints("10.0.0.9:9")
		set[resource.EndpointType][1].(*endpointv3.ClusterLoadAssignment).ClusterName = "a"
		return set
	}
	changedA, withoutB := movedA("a", "b"), movedA("a")
	withC := clustersSet("10.0.0.1:1", "a", "b", "c")

	type step struct {
		set            map[resource.Type][]types.Resource
		sub, unsub     []string // a request after set; both nil: none
		want           []string // resources sent; nil with wantRemoved nil: no response
		wantRemoved    []string
		wantNoResponse bool
	}
	tests := []struct {
		name    string
		typ     string
		sub     []string
		initial map[string]string
		first   []string // resources in the first response; nil: none
		steps   []step
	}{
		{name: "initial versions current", typ: resource.EndpointType, sub: []string{"a", "b"},
			initial: hashes(resource.EndpointType, base),
			steps: []step{
				{set: changedA, want: []string{"a"}},
			}},
		{name: "initial version stale", typ: resource.EndpointType, sub: []string{"a", "b"},
			initial: map[string]string{"a": "stale", "b": hashes(resource.EndpointType, base)["b"]},
			first:   []string{"a"}},
		{name: "unchanged not resent, removal told", typ: resource.EndpointType, sub: []string{"a", "b"},
			first: []string{"a", "b"},
			steps: []step{
				{set: changedA, want: []string{"a"}},
				{set: withoutB, wantRemoved: []string{"b"}},
			}},
		{name: "name appears later", typ: resource.EndpointType, sub: []string{"a", "c"},
			first: []string{"a"},
			steps: []step{
				{set: withC, want: []string{"c"}},
			}},
		{name: "unsubscribe stops updates", typ: resource.EndpointType, sub: []string{"a", "b"},
			first: []string{"a", "b"},
			steps: []step{
				{unsub: []string{"a"}, wantNoResponse: true},
				{set: changedA, wantNoResponse: true},
				{sub: []string{"a"}, want: []string{"a"}},
			}},
		{name: "wildcard LDS", typ: resource.ListenerType,
			first: []string{"listener-0", "listener-1", "listener-2"},
			steps: []step{
				{set: func() map[resource.Type][]types.Resource {
					ls := benchListeners(3, 0)
					ls[1] = benchListeners(2, 7)[1]
					return map[resource.Type][]types.Resource{resource.ListenerType: ls}
				}(), want: []string{"listener-1"}},
				{set: map[resource.Type][]types.Resource{resource.ListenerType: benchListeners(2, 7)},
					want: []string{"listener-0"}, wantRemoved: []string{"listener-2"}},
			}},
		{name: "wildcard reconnect current", typ: resource.ListenerType,
			initial: hashes(resource.ListenerType, base)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cache.New(nil)
			mustSet(t, c, node, base)
			cl := newDeltaClient(t, c, tt.typ, nil, maps.Clone(tt.initial))
			cl.request(tt.sub, nil)
			d := cl.take()
			if d == nil && (tt.first != nil || cl.sub.IsWildcard()) {
				t.Fatal("first request not answered")
			}
			if got := deltaNames(d); !slices.Equal(got, tt.first) || len(d.GetRemovedResources()) != 0 {
				t.Fatalf("first response sent %v removed %v, want %v", got, d.GetRemovedResources(), tt.first)
			}
			if d != nil {
				if !cl.request(nil, nil) {
					t.Fatal("ACK of a current client answered")
				}
				if d := cl.take(); d != nil {
					t.Fatalf("ACK answered with %v", deltaNames(d))
				}
			}
			for i, s := range tt.steps {
				if s.set != nil {
					mustSet(t, c, node, s.set)
				}
				if s.sub != nil || s.unsub != nil {
					cl.request(s.sub, s.unsub)
				}
				d := cl.take()
				if s.wantNoResponse {
					if d != nil {
						t.Fatalf("step %d: sent %v removed %v, want nothing", i, deltaNames(d), d.GetRemovedResources())
					}
					continue
				}
				if d == nil {
					t.Fatalf("step %d: no response", i)
				}
				if got := deltaNames(d); !slices.Equal(got, s.want) || !slices.Equal(d.GetRemovedResources(), s.wantRemoved) {
					t.Fatalf("step %d: sent %v removed %v, want %v and %v", i, got, d.GetRemovedResources(), s.want, s.wantRemoved)
				}
				if d.GetSystemVersionInfo() != c.Version(node, tt.typ) {
					t.Errorf("step %d: system version %q, want %q", i, d.GetSystemVersionInfo(), c.Version(node, tt.typ))
				}
				cl.request(nil, nil)
				if d := cl.take(); d != nil {
					t.Fatalf("step %d: ACK answered with %v", i, deltaNames(d))
				}
			}
		})
	}
}

// Versions are content hashes: the same content gives the same versions
// on a fresh cache whatever the order it was listed in, whichever setter
// was used, and after ClearNode; TypeVersion agrees with the cache.
func TestSemanticsDeterministicVersions(t *testing.T) {
	cs := certs(t, 9)
	build := func(shuffle bool) map[resource.Type][]types.Resource {
		set := cachetest.Set(cs, "10.0.0.1:1")
		extra := clustersSet("10.0.0.1:1", "a", "b", "c")
		set[resource.EndpointType] = extra[resource.EndpointType]
		tls := set[resource.ClusterType][0]
		set[resource.ClusterType] = append([]types.Resource{tls}, extra[resource.ClusterType][1:]...)
		set[resource.ListenerType] = benchListeners(5, 3)
		if shuffle {
			for _, rs := range set {
				rand.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
			}
		}
		return set
	}
	ref := cache.New(nil)
	mustSet(t, ref, node, build(false))
	want := versions(ref, node)
	for typ, rs := range build(true) {
		v, err := cache.TypeVersion(rs)
		if err != nil || v != want[typ] {
			t.Errorf("TypeVersion(%s) = %q, %v; cache has %q", typ, v, err, want[typ])
		}
	}
	tests := []struct {
		name string
		set  func(c *cache.Cache) error
	}{
		{"shuffled", func(c *cache.Cache) error { return c.SetResources(context.Background(), "other", build(true)) }},
		{"encoded", func(c *cache.Cache) error {
			enc := map[resource.Type][]*cache.Encoded{}
			for typ, rs := range build(true) {
				enc[typ] = []*cache.Encoded{}
				for _, r := range rs {
					e, err := cache.Encode(typ, r)
					if err != nil {
						return err
					}
					if e.Name() != gcache.GetResourceName(r) || !proto.Equal(e.Resource(), r) {
						return fmt.Errorf("encoded %q does not hold its resource", e.Name())
					}
					if h, _ := cache.ResourceHash(r); h != e.Hash() {
						return fmt.Errorf("encoded hash %q, ResourceHash %q", e.Hash(), h)
					}
					enc[typ] = append(enc[typ], e)
				}
			}
			return c.SetEncoded(context.Background(), "other", enc)
		}},
		{"over other content", func(c *cache.Cache) error {
			if err := c.SetResources(context.Background(), "other", clustersSet("10.0.0.7:7", "x")); err != nil {
				return err
			}
			return c.SetResources(context.Background(), "other", build(true))
		}},
		{"after ClearNode", func(c *cache.Cache) error {
			if err := c.SetResources(context.Background(), "other", clustersSet("10.0.0.7:7")); err != nil {
				return err
			}
			c.ClearNode("other")
			if v := c.Version("other", resource.ClusterType); v != "" {
				return fmt.Errorf("version %q after ClearNode", v)
			}
			return c.SetResources(context.Background(), "other", build(true))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cache.New(nil)
			if err := tt.set(c); err != nil {
				t.Fatal(err)
			}
			if got := versions(c, "other"); !maps.Equal(got, want) {
				t.Errorf("versions %v, want %v", got, want)
			}
		})
	}
}

// ClearNode drops the node's watches and status; a watch opened after it
// is answered when the node is set again, unless the client already holds
// that content.
func TestSemanticsClearNodeThenSet(t *testing.T) {
	c := cache.New(nil)
	mustSet(t, c, node, clustersSet("10.0.0.1:1"))
	held := newSotwClient(t, c, node, resource.ClusterType)
	held.subscribe()
	c.ClearNode(node)
	if st := c.Status(); len(st) != 0 {
		t.Fatalf("status after ClearNode: %+v", st)
	}
	if _, err := c.Fetch(context.Background(), &discovery.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ClusterType}); err == nil {
		t.Fatal("Fetch of a cleared node succeeded")
	}
	fresh := newSotwClient(t, c, node, resource.ClusterType)
	fresh.request(nil)
	current := newSotwClient(t, c, node, resource.ClusterType)
	current.version = held.version
	current.nonce = 1
	current.request(nil)
	if fresh.take() != nil || current.take() != nil {
		t.Fatal("answered while the node has no resources")
	}
	mustSet(t, c, node, clustersSet("10.0.0.1:1"))
	if c.Version(node, resource.ClusterType) != held.version {
		t.Fatalf("version after re-set %q, want the same content's %q", c.Version(node, resource.ClusterType), held.version)
	}
	if d := fresh.take(); d == nil || d.GetVersionInfo() != held.version {
		t.Fatalf("watch opened after ClearNode: %v", d)
	}
	if d := current.take(); d != nil {
		t.Fatal("client holding the content answered again")
	}
	if d := held.take(); d != nil {
		t.Fatal("a watch from before ClearNode was answered")
	}
}

// ClearNode forgets a node's status "once it has no streams": also when
// its last stream closes after the ClearNode.
func TestSemanticsClearNodeStatusAfterStreamClosed(t *testing.T) {
	c := cache.New(nil)
	mustSet(t, c, node, clustersSet("10.0.0.1:1"))
	c.StreamOpened(node)
	c.ClearNode(node)
	if st := c.Status(); len(st) != 1 || st[0].Streams != 1 {
		t.Fatalf("status while connected after ClearNode: %+v", st)
	}
	c.StreamClosed(node)
	if st := c.Status(); len(st) != 0 {
		t.Fatalf("status after the last stream of a cleared node closed: %+v", st)
	}
}

// Status reports, per type and secret, what the cache holds, what was
// sent, ACKed and NACKed; SotW pushes replace the sent secret set, delta
// pushes change it.
func TestSemanticsStatusRecords(t *testing.T) {
	c := cache.New(nil)
	old, rotated := certs(t, 0x21), certs(t, 0x22)
	mustSet(t, c, node, cachetest.Set(old, "10.0.0.1:1"))
	c.StreamOpened(node)
	c.StreamOpened(node)
	c.StreamClosed(node)
	c.StreamClosed("never-opened")

	cl := newSotwClient(t, c, node, resource.SecretType, cachetest.CASecret, cachetest.CertSecret)
	cl.request(nil)
	r := <-cl.ch
	hashes, ok := cache.PushedSecrets(r.GetContext())
	if !ok {
		t.Fatal("no pushed secrets on an SDS response")
	}
	if _, ok := cache.PushedSecrets(nil); ok { //nolint:staticcheck // a nil context is what the function guards against
		t.Fatal("PushedSecrets(nil) ok")
	}
	v, err := r.GetVersion()
	if err != nil || v != c.Version(node, resource.SecretType) {
		t.Fatalf("GetVersion = %q, %v", v, err)
	}
	sent := c.RecordSent(node, cache.Push{TypeURL: resource.SecretType, Version: v, Secrets: hashes})
	if sent.Serials[cachetest.CertSecret] != "21" || sent.Serials[cachetest.CASecret] != "21" {
		t.Fatalf("serials of the push %v, want 21", sent.Serials)
	}
	// Rotation between push and ACK: the ACK still reports what was sent.
	if err := c.SetSecrets(context.Background(), node, []cache.Secret{{Resource: rotated.CertSecret()}, {Resource: rotated.CASecret()}}); err != nil {
		t.Fatal(err)
	}
	c.RecordAck(node, sent)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c.RecordSent(node, cache.Push{TypeURL: resource.ClusterType, Version: "c1"})
	c.RecordNack(node, cache.Push{TypeURL: resource.ClusterType, Version: "c1"}, "7", "bad", at)
	// A delta push of the rotated cert alone, and one removing the CA.
	certHash, _ := cache.ResourceHash(rotated.CertSecret())
	c.RecordSent(node, cache.Push{TypeURL: resource.SecretType, Delta: true, Version: "d1", Secrets: map[string]string{cachetest.CertSecret: certHash}})
	c.RecordSent(node, cache.Push{TypeURL: resource.SecretType, Delta: true, Version: "d2", Removed: []string{cachetest.CASecret}})

	st := c.Status()
	if len(st) != 1 || st[0].NodeID != node || st[0].Streams != 1 {
		t.Fatalf("status %+v", st)
	}
	ns := st[0]
	if ct := ns.Types[resource.ClusterType]; ct.Sent != "c1" || ct.NackedVersion != "c1" || ct.NackNonce != "7" || ct.NackError != "bad" ||
		!ct.NackAt.Equal(at) || ct.Current != c.Version(node, resource.ClusterType) || ct.Acked != "" {
		t.Errorf("cluster status %+v", ct)
	}
	if sec := ns.Types[resource.SecretType]; sec.Acked != v || sec.Sent != "d2" || sec.Current != c.Version(node, resource.SecretType) {
		t.Errorf("secret type status %+v", sec)
	}
	want := map[string]cache.SecretStatus{
		cachetest.CertSecret: {Current: "22", Sent: "22", Acked: "21"},
		cachetest.CASecret:   {Current: "22", Acked: "21"},
	}
	if !maps.Equal(ns.Secrets, want) {
		t.Errorf("secrets %+v, want %+v", ns.Secrets, want)
	}
}

// Fetch (REST) answers with the current version, skips a client that
// holds it, and filters by name.
func TestSemanticsFetch(t *testing.T) {
	c := cache.New(nil)
	mustSet(t, c, node, clustersSet("10.0.0.1:1", "a"))
	n := &corev3.Node{Id: node}
	tests := []struct {
		name     string
		req      *discovery.DiscoveryRequest
		want     []string
		wantSkip bool
	}{
		{"all", &discovery.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType}, []string{"a", cachetest.Name}, false},
		{"named", &discovery.DiscoveryRequest{Node: n, TypeUrl: resource.EndpointType, ResourceNames: []string{"a", "nope"}}, []string{"a"}, false},
		{"current", &discovery.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType, VersionInfo: c.Version(node, resource.ClusterType)}, nil, true},
		{"type without resources", &discovery.DiscoveryRequest{Node: n, TypeUrl: resource.SecretType}, nil, false},
		{"type outside the snapshot", &discovery.DiscoveryRequest{Node: n, TypeUrl: resource.RuntimeType}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := c.Fetch(context.Background(), tt.req)
			if tt.wantSkip {
				var skip *types.SkipFetchError
				if !errors.As(err, &skip) {
					t.Fatalf("err = %v, want SkipFetchError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			d, err := r.GetDiscoveryResponse()
			if err != nil {
				t.Fatal(err)
			}
			if got := resourceNames(t, tt.req.GetTypeUrl(), d); !slices.Equal(got, tt.want) {
				t.Fatalf("fetched %v, want %v", got, tt.want)
			}
			if d.GetVersionInfo() == "" || d.GetTypeUrl() != tt.req.GetTypeUrl() {
				t.Fatalf("response version %q type %q", d.GetVersionInfo(), d.GetTypeUrl())
			}
			if again, err := c.Fetch(context.Background(), &discovery.DiscoveryRequest{Node: n, TypeUrl: tt.req.GetTypeUrl(),
				ResourceNames: tt.req.GetResourceNames(), VersionInfo: d.GetVersionInfo()}); err == nil {
				t.Fatalf("refetch at the returned version answered %v", again)
			}
		})
	}
}

// go-control-plane's per-request Info chatter is logged at Debug.
func TestSemanticsGCPLogger(t *testing.T) {
	var buf bytes.Buffer
	l := cache.GCPLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	l.Debugf("d %d", 1)
	l.Infof("i %d", 2)
	l.Warnf("w %d", 3)
	l.Errorf("e %d", 4)
	out := buf.String()
	for _, tc := range []struct {
		line string
		want bool
	}{{"level=WARN msg=\"w 3\"", true}, {"level=ERROR msg=\"e 4\"", true}, {"i 2", false}, {"d 1", false}} {
		if strings.Contains(out, tc.line) != tc.want {
			t.Errorf("%q logged=%v, want %v; log:\n%s", tc.line, !tc.want, tc.want, out)
		}
	}
}

// Delta responses expose what the server asks of them.
func TestSemanticsDeltaResponseAccessors(t *testing.T) {
	c := cache.New(nil)
	mustSet(t, c, node, clustersSet("10.0.0.1:1"))
	ch := make(chan gcache.DeltaResponse, 1)
	sub := stream.NewDeltaSubscription(nil, nil, nil, true)
	req := &discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ClusterType}
	if _, err := c.CreateDeltaWatch(req, &sub, ch); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	v, err := r.GetSystemVersion()
	if err != nil || v != c.Version(node, resource.ClusterType) || r.GetResponseVersion() != v {
		t.Fatalf("versions %q %q %v", v, r.GetResponseVersion(), err)
	}
	if r.GetDeltaRequest() != req || r.GetContext() == nil {
		t.Fatal("request or context not kept")
	}
}

// Concurrent writers, SotW and delta clients, ClearNode, Status and Fetch
// (run with -race). When the writers stop, every client converges on the
// last content: no change is lost to a race between a write and a watch.
func TestSemanticsConcurrent(t *testing.T) {
	c := cache.New(nil)
	const nodes, writes = 4, 60
	ids := make([]string, nodes)
	for i := range ids {
		ids[i] = fmt.Sprintf("node-%d", i)
		mustSet(t, c, ids[i], clustersSet("10.0.0.1:1"))
	}
	gens := make([]map[resource.Type][]types.Resource, 8)
	for g := range gens {
		gens[g] = map[resource.Type][]types.Resource{resource.EndpointType: {cachetest.Endpoints(fmt.Sprintf("10.0.1.%d:1", g))}}
	}
	final := map[resource.Type][]types.Resource{resource.EndpointType: {cachetest.Endpoints("10.0.2.1:1")}}
	finalVersion := func() string {
		v, err := cache.TypeVersion(final[resource.EndpointType])
		if err != nil {
			t.Error(err)
		}
		return v
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	// SotW and delta clients, each one stream per node.
	for _, id := range ids {
		wg.Go(func() {
			sub := stream.NewSotwSubscription([]string{cachetest.Name}, false)
			ch := make(chan gcache.Response, 1)
			version := ""
			for version != finalVersion {
				req := &discovery.DiscoveryRequest{Node: &corev3.Node{Id: id}, TypeUrl: resource.EndpointType,
					ResourceNames: []string{cachetest.Name}, VersionInfo: version, ResponseNonce: version}
				stop, err := c.CreateWatch(req, &sub, ch)
				if err != nil {
					t.Error(err)
					return
				}
				select {
				case r := <-ch:
					sub.SetReturnedResources(r.GetReturnedResources())
					version = r.GetResponseVersion()
				case <-ctx.Done():
					stop()
					t.Errorf("%s sotw client stuck at %q, want %q", id, version, finalVersion)
					return
				}
			}
		})
		wg.Go(func() {
			sub := stream.NewDeltaSubscription([]string{cachetest.Name}, nil, nil, false)
			ch := make(chan gcache.DeltaResponse, 1)
			nonce := ""
			want, _ := cache.ResourceHash(final[resource.EndpointType][0])
			for sub.ReturnedResources()[cachetest.Name] != want {
				req := &discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: id}, TypeUrl: resource.EndpointType, ResponseNonce: nonce}
				stop, err := c.CreateDeltaWatch(req, &sub, ch)
				if err != nil {
					t.Error(err)
					return
				}
				select {
				case r := <-ch:
					sub.SetReturnedResources(r.GetNextVersionMap())
					nonce = r.GetResponseVersion()
				case <-ctx.Done():
					if stop != nil {
						stop()
					}
					t.Errorf("%s delta client stuck, holds %v", id, sub.ReturnedResources())
					return
				}
			}
		})
	}
	// Writers, one per node, and readers.
	var writers sync.WaitGroup
	for i, id := range ids {
		writers.Go(func() {
			for w := range writes {
				if err := c.SetResources(ctx, id, gens[(w+i)%len(gens)]); err != nil {
					t.Error(err)
					return
				}
			}
			if err := c.SetResources(ctx, id, final); err != nil {
				t.Error(err)
			}
		})
	}
	writers.Go(func() {
		for w := range writes {
			c.StreamOpened("churn")
			if err := c.SetResources(ctx, "churn", gens[w%len(gens)]); err == nil {
				t.Error("endpoints alone accepted for a node without clusters")
			}
			mustSetErr := c.SetResources(ctx, "churn", clustersSet("10.0.0.1:1"))
			if mustSetErr != nil {
				t.Error(mustSetErr)
			}
			_ = c.Status()
			_, _ = c.Fetch(ctx, &discovery.DiscoveryRequest{Node: &corev3.Node{Id: ids[w%nodes]}, TypeUrl: resource.EndpointType})
			c.ClearNode("churn")
			c.StreamClosed("churn")
		}
	})
	writers.Wait()
	wg.Wait()
	for _, id := range ids {
		if v := c.Version(id, resource.EndpointType); v != finalVersion {
			t.Errorf("%s endpoints at %q, want %q", id, v, finalVersion)
		}
	}
}

// A node's stream that does not drain its channel must not stall the
// configuration of other nodes: "a change to one node locks only that
// node" (Cache doc).
func TestSemanticsUndrainedChannelOtherNodes(t *testing.T) {
	t.Skip("BUG: SetResources holds the cache-wide setMu (cache.go SetEncoded) while node.set blocks on one stream's full channel, so every other node's SetResources waits until that ctx ends")
	c := cache.New(nil)
	mustSet(t, c, node, clustersSet("10.0.0.1:1"))
	mustSet(t, c, "node-b", clustersSet("10.0.0.1:1"))
	stuck := newSotwClient(t, c, node, resource.EndpointType, cachetest.Name)
	stuck.subscribe()
	stuck.ch = make(chan gcache.Response) // nobody reads it
	stuck.request(nil)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	blocked := make(chan error, 1)
	go func() { blocked <- c.SetResources(ctx, node, clustersSet("10.0.0.2:2")) }()
	// Wait until node's set is blocked on the channel.
	deadline := time.Now().Add(waitFor)
	for c.Version(node, resource.EndpointType) == stuck.version {
		if time.Now().After(deadline) {
			t.Fatal("node's new content never installed")
		}
		runtime.Gosched()
	}
	start := time.Now()
	if err := c.SetResources(context.Background(), "node-b", clustersSet("10.0.0.3:3")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("another node's SetResources took %v behind a stuck stream", d)
	}
	cancel()
	<-blocked
}

// A stream that does not drain its channel: SetResources gives up when its
// context ends, having installed the content; the watches it did not get
// to, of that type and of the types after it, are answered later, and not
// only when their own type changes again.
func TestSemanticsUndrainedChannel(t *testing.T) {
	c := cache.New(nil)
	mustSet(t, c, node, clustersSet("10.0.0.1:1"))
	stuck := newSotwClient(t, c, node, resource.ClusterType)
	stuck.subscribe()
	stuck.ch = make(chan gcache.Response) // nobody reads it
	stuck.request(nil)
	eds := newSotwClient(t, c, node, resource.EndpointType, cachetest.Name, "a")
	eds.subscribe()

	// Clusters and endpoints change; the CDS watch is answered first.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.SetResources(ctx, node, clustersSet("10.0.0.2:2", "a"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	if d := time.Since(start); d > waitFor {
		t.Fatalf("SetResources returned after %v", d)
	}
	if c.Version(node, resource.ClusterType) == stuck.version {
		t.Fatal("content not installed")
	}
	// The stuck watch is still open: draining it later gets the content.
	got, done := make(chan gcache.Response, 1), make(chan struct{})
	defer close(done)
	go func() {
		select {
		case r := <-stuck.ch:
			got <- r
		case <-done:
		case <-time.After(waitFor):
			close(got)
		}
	}()
	// Only listeners change now (their route stays the same).
	mustSet(t, c, node, map[resource.Type][]types.Resource{resource.ListenerType: benchListeners(1, 4)})
	t.Run("endpoint watch answered", func(t *testing.T) {
		t.Skip("BUG: node.set returns on ctx end (watch.go set) leaving the watches of later types unanswered, and later changes only visit types whose content changed, so they stay stale")
		if d := eds.take(); d == nil || d.GetVersionInfo() != c.Version(node, resource.EndpointType) {
			t.Fatalf("endpoint client holds %q, cache has %q", eds.version, c.Version(node, resource.EndpointType))
		}
	})
	t.Run("stuck watch answered once drained", func(t *testing.T) {
		t.Skip("BUG: the CDS watch skipped by the ended ctx is only answered by the next cluster change (watch.go set)")
		r, ok := <-got
		if !ok || r.GetResponseVersion() != c.Version(node, resource.ClusterType) {
			t.Fatal("stuck CDS watch never answered with the current clusters")
		}
	})
}

// Memory stays bounded when many nodes connect, watch and go away without
// ever getting resources.
func TestSemanticsManyNodesBounded(t *testing.T) {
	c := cache.New(nil)
	churn := func(from, n int) {
		for i := range n {
			id := fmt.Sprintf("ephemeral-%d", from+i)
			c.StreamOpened(id)
			ch := make(chan gcache.Response, 1)
			sub := stream.NewSotwSubscription(nil, true)
			stop, err := c.CreateWatch(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: id}, TypeUrl: resource.ClusterType}, &sub, ch)
			if err != nil {
				t.Fatal(err)
			}
			stop()
			c.StreamClosed(id)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	churn(0, 1000)
	before := heap()
	const n = 20000
	churn(1000, n)
	after := heap()
	if after > before && (after-before)/n > 64 {
		t.Errorf("heap grew %d bytes per departed node", (after-before)/n)
	}
	if st := c.Status(); len(st) != 0 {
		t.Errorf("Status lists %d nodes that left without resources", len(st))
	}
}

// Malformed input is refused with an error, never half applied.
func TestSemanticsRefusals(t *testing.T) {
	cs := certs(t, 0x31)
	c := cache.New(nil)
	mustSet(t, c, node, cachetest.Set(cs, "10.0.0.1:1"))
	before := versions(c, node)
	route, err := cache.Encode(resource.RouteType, cachetest.Route())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		do   func() error
	}{
		{"encode nil", func() error { _, err := cache.Encode(resource.ClusterType, nil); return err }},
		{"encode nameless", func() error { _, err := cache.Encode(resource.ClusterType, &clusterv3.Cluster{}); return err }},
		{"encode nil secret", func() error { _, err := cache.EncodeSecret(cache.Secret{}); return err }},
		{"encode nameless secret", func() error {
			s := cs.CertSecret()
			s.Name = ""
			_, err := cache.EncodeSecret(cache.Secret{Resource: s})
			return err
		}},
		{"type version of nameless", func() error { _, err := cache.TypeVersion([]types.Resource{&clusterv3.Cluster{}}); return err }},
		{"empty node id", func() error { return c.SetResources(context.Background(), "", cachetest.Set(cs, "10.0.0.2:2")) }},
		{"nil resource", func() error {
			return c.SetResources(context.Background(), node, map[resource.Type][]types.Resource{resource.ClusterType: {nil}})
		}},
		{"nil encoded", func() error {
			return c.SetEncoded(context.Background(), node, map[resource.Type][]*cache.Encoded{resource.RouteType: {nil}})
		}},
		{"encoded unsupported type", func() error {
			return c.SetEncoded(context.Background(), node, map[resource.Type][]*cache.Encoded{resource.RuntimeType: nil})
		}},
		{"secrets of a nameless secret", func() error {
			s := cs.CertSecret()
			s.Name = ""
			return c.SetSecrets(context.Background(), node, []cache.Secret{{Resource: s}})
		}},
		{"route set as secret", func() error {
			return c.SetEncodedSecrets(context.Background(), node, []*cache.Encoded{route})
		}},
		{"duplicate secret", func() error {
			return c.SetSecrets(context.Background(), node, []cache.Secret{{Resource: cs.CertSecret()}, {Resource: cs.CertSecret()}})
		}},
		{"route as cluster", func() error {
			_, err := cache.ReferencedSecrets(nil, []types.Resource{cachetest.Route()})
			return err
		}},
		{"route as listener", func() error {
			_, err := cache.ReferencedSecrets([]types.Resource{cachetest.Route()}, nil)
			return err
		}},
		{"undecodable tls context", func() error {
			cl := cachetest.Cluster(true)
			cl.GetTransportSocket().GetTypedConfig().Value = []byte{0xff}
			_, err := cache.ReferencedSecrets(nil, []types.Resource{cl})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.do(); err == nil {
				t.Fatal("accepted")
			}
			if got := versions(c, node); !maps.Equal(got, before) {
				t.Fatalf("versions moved %v → %v", before, got)
			}
		})
	}
	// The same secrets again change nothing.
	if err := c.SetSecrets(context.Background(), node, []cache.Secret{{Resource: cs.CASecret()}, {Resource: cs.CertSecret()}}); err != nil {
		t.Fatal(err)
	}
	if got := versions(c, node); !maps.Equal(got, before) {
		t.Fatalf("equal secrets moved versions %v → %v", before, got)
	}
}

// Every place a listener or cluster can fetch a secret over ADS counts;
// other config sources do not.
func TestSemanticsReferencedSecretsPlaces(t *testing.T) {
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	path := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Path{Path: "/etc/sds.yaml"}}
	sds := func(name string, src *corev3.ConfigSource) *tlsv3.SdsSecretConfig {
		return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: src}
	}
	socket := func(m proto.Message) *corev3.TransportSocket {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	}
	down := socket(&tlsv3.DownstreamTlsContext{
		SessionTicketKeysType: &tlsv3.DownstreamTlsContext_SessionTicketKeysSdsSecretConfig{SessionTicketKeysSdsSecretConfig: sds("tickets", ads)},
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds("server", ads), sds("from-file", path)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				ValidationContextSdsSecretConfig: sds("combined-ca", ads),
			}},
		},
	})
	up := socket(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds("match-client", ads)},
	}})
	other := socket(&corev3.Node{Id: "not a tls context"})
	l := &listenerv3.Listener{Name: "l",
		FilterChains:       []*listenerv3.FilterChain{{TransportSocket: other}, {}},
		DefaultFilterChain: &listenerv3.FilterChain{TransportSocket: down},
	}
	cl := &clusterv3.Cluster{Name: "c", TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{{Name: "m", TransportSocket: up}}}
	got, err := cache.ReferencedSecrets([]types.Resource{l}, []types.Resource{cl})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"combined-ca", "match-client", "server", "tickets"}; !slices.Equal(got, want) {
		t.Fatalf("referenced %v, want %v", got, want)
	}
}

// Watches of types a snapshot does not hold are kept, not answered with
// content, and can be cancelled.
func TestSemanticsTypesOutsideSnapshot(t *testing.T) {
	c := cache.New(nil)
	mustSet(t, c, node, clustersSet("10.0.0.1:1"))
	cl := newSotwClient(t, c, node, resource.RuntimeType)
	cl.request(nil)
	if d := cl.take(); d != nil {
		t.Fatalf("runtime request answered with %v", d)
	}
	cl.stop()
	dcl := newDeltaClient(t, c, resource.RuntimeType, []string{"rt"}, nil)
	if !dcl.request(nil, nil) {
		t.Fatal("delta runtime watch not kept")
	}
	if d := dcl.take(); d != nil {
		t.Fatalf("delta runtime request answered with %v", d)
	}
	mustSet(t, c, node, clustersSet("10.0.0.2:2"))
	if cl.take() != nil || dcl.take() != nil {
		t.Fatal("a change of the snapshot answered a runtime watch")
	}
}

// PushedSecrets tells the server which secrets a SotW response carried:
// for a request naming some secrets, only those.
func TestSemanticsPushedSecretsOfNamedSubset(t *testing.T) {
	c := cache.New(nil)
	cs := certs(t, 0x41)
	mustSet(t, c, node, cachetest.Set(cs, "10.0.0.1:1"))
	cl := newSotwClient(t, c, node, resource.SecretType, cachetest.CertSecret)
	cl.request(nil)
	r := <-cl.ch
	d, err := r.GetDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	if got := resourceNames(t, cl.typ, d); !slices.Equal(got, []string{cachetest.CertSecret}) {
		t.Fatalf("response carried %v", got)
	}
	hashes, _ := cache.PushedSecrets(r.GetContext())
	if want, _ := cache.ResourceHash(cs.CertSecret()); !maps.Equal(hashes, map[string]string{cachetest.CertSecret: want}) {
		t.Fatalf("PushedSecrets = %v, want only %s", hashes, cachetest.CertSecret)
	}
	// What the server then records: the CA was never sent on this node.
	c.RecordSent(node, cache.Push{TypeURL: resource.SecretType, Version: d.GetVersionInfo(), Secrets: hashes})
	if sent := c.Status()[0].Secrets[cachetest.CASecret].Sent; sent != "" {
		t.Fatalf("status says CA serial %q was sent", sent)
	}
}
