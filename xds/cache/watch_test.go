package cache_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/types/known/anypb"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/cache/cachetest"
)

// sotwWatch opens a SotW watch as a new stream's first request would.
func sotwWatch(t *testing.T, c *cache.Cache, typ string, names ...string) (chan gcache.Response, *stream.Subscription) {
	t.Helper()
	req := &discovery.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typ, ResourceNames: names}
	sub := stream.NewSotwSubscription(names, typ == resource.ClusterType || typ == resource.ListenerType)
	ch := make(chan gcache.Response, 8)
	if _, err := c.CreateWatch(req, &sub, ch); err != nil {
		t.Fatal(err)
	}
	return ch, &sub
}

func receive(t *testing.T, ch chan gcache.Response) gcache.Response {
	t.Helper()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatal("no response")
		return nil
	}
}

// Every stream of a node gets the resources marshaled once: responses
// share the Any values but each is its own DiscoveryResponse (the server
// writes a per-stream nonce into it) with its own returned-resources map
// (the server's subscription edits it).
func TestSotwResponsesShareMarshaledResources(t *testing.T) {
	cs := certs(t, 3)
	c := cache.New(nil)
	if err := c.SetResources(context.Background(), node, cachetest.Set(cs, "10.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	ch1, _ := sotwWatch(t, c, resource.SecretType, cachetest.CASecret, cachetest.CertSecret)
	ch2, _ := sotwWatch(t, c, resource.SecretType, cachetest.CASecret, cachetest.CertSecret)
	r1, r2 := receive(t, ch1), receive(t, ch2)
	d1, err := r1.GetDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := r2.GetDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	if d1 == d2 {
		t.Fatal("two streams got the same DiscoveryResponse object")
	}
	if len(d1.GetResources()) != 2 || d1.GetResources()[0] != d2.GetResources()[0] {
		t.Fatalf("resources not shared: %p vs %p", d1.GetResources()[0], d2.GetResources()[0])
	}
	if d1.GetVersionInfo() != c.Version(node, resource.SecretType) || d1.GetTypeUrl() != resource.SecretType {
		t.Fatalf("response %q %s", d1.GetVersionInfo(), d1.GetTypeUrl())
	}
	m1 := r1.GetReturnedResources()
	delete(m1, cachetest.CASecret)
	if len(r2.GetReturnedResources()) != 2 || len(r1.GetReturnedResources()) != 2 {
		t.Fatal("returned-resources maps are shared")
	}
	hashes, ok := cache.PushedSecrets(r1.GetContext())
	want, _ := cache.ResourceHash(cs.CertSecret())
	if !ok || len(hashes) != 2 || hashes[cachetest.CertSecret] != want {
		t.Fatalf("PushedSecrets = %v, %v; want the cert's hash %s", hashes, ok, want)
	}
	if _, ok := cache.PushedSecrets(receive(t, mustWatch(t, c, resource.ClusterType)).GetContext()); ok {
		t.Fatal("PushedSecrets on a cluster response")
	}
}

func mustWatch(t *testing.T, c *cache.Cache, typ string) chan gcache.Response {
	ch, _ := sotwWatch(t, c, typ)
	return ch
}

// A change answers a node's open watches in ADS order, only for the types
// whose version moved.
func TestSotwFanOut(t *testing.T) {
	ctx := context.Background()
	c := cache.New(nil)
	cs := certs(t, 4)
	if err := c.SetResources(ctx, node, cachetest.Set(cs, "10.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	n := &corev3.Node{Id: node}
	shared := make(chan gcache.Response, 16)
	// Open an ACKed watch for every type, in reverse ADS order.
	subs := map[string][]string{
		resource.SecretType: {cachetest.CASecret, cachetest.CertSecret}, resource.RouteType: {cachetest.Name},
		resource.ListenerType: nil, resource.EndpointType: {cachetest.Name}, resource.ClusterType: nil,
	}
	for _, typ := range []string{resource.SecretType, resource.RouteType, resource.ListenerType, resource.EndpointType, resource.ClusterType} {
		ch, sub := sotwWatch(t, c, typ, subs[typ]...)
		sub.SetReturnedResources(receive(t, ch).GetReturnedResources())
		ack := &discovery.DiscoveryRequest{Node: n, TypeUrl: typ, ResourceNames: subs[typ], VersionInfo: c.Version(node, typ), ResponseNonce: "1"}
		if _, err := c.CreateWatch(ack, sub, shared); err != nil {
			t.Fatal(err)
		}
	}
	if len(shared) != 0 {
		t.Fatalf("%d responses to ACKs", len(shared))
	}

	tests := []struct {
		name   string
		change map[resource.Type][]types.Resource
		want   []string
	}{
		{"same content", cachetest.Set(cs, "10.0.0.1:1"), nil},
		{"endpoints only", map[resource.Type][]types.Resource{resource.EndpointType: {cachetest.Endpoints("10.0.0.2:2")}},
			[]string{resource.EndpointType}},
		{"everything", func() map[resource.Type][]types.Resource {
			cl := cachetest.Cluster(true)
			cl.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			l := cachetest.Listener()
			l.StatPrefix = "changed"
			r := cachetest.Route()
			r.VirtualHosts[0].Domains = []string{"changed"}
			c2 := certs(t, 5)
			return map[resource.Type][]types.Resource{
				resource.SecretType: {c2.CertSecret(), c2.CASecret()}, resource.RouteType: {r},
				resource.ListenerType: {l}, resource.EndpointType: {cachetest.Endpoints("10.0.0.3:3")},
				resource.ClusterType: {cl},
			}
		}(), // The endpoint watch was spent on the previous change.
			[]string{resource.ClusterType, resource.ListenerType, resource.RouteType, resource.SecretType}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.SetResources(ctx, node, tt.change); err != nil {
				t.Fatal(err)
			}
			var got []string
			for len(shared) > 0 {
				r := <-shared
				if r.GetResponseVersion() != c.Version(node, r.GetRequest().GetTypeUrl()) {
					t.Errorf("%s answered with %q, want the current version", r.GetRequest().GetTypeUrl(), r.GetResponseVersion())
				}
				got = append(got, r.GetRequest().GetTypeUrl())
			}
			if len(got) != len(tt.want) {
				t.Fatalf("answered %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("answered %v, want %v (ADS order)", got, tt.want)
				}
			}
		})
	}
}

// A SotW request naming some resources of a type is answered with exactly
// those (grpc-go asks for listeners one dial target at a time); one naming
// only resources that do not exist waits.
func TestSotwNamedSubsetAnswered(t *testing.T) {
	c := cache.New(nil)
	if err := c.SetResources(context.Background(), node, cachetest.Set(certs(t, 6), "10.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	ch, _ := sotwWatch(t, c, resource.SecretType, cachetest.CertSecret)
	resp, err := receive(t, ch).GetDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 1 {
		t.Fatalf("answered %d secrets, want only the one named", len(resp.GetResources()))
	}
	var sec tlsv3.Secret
	if err := resp.GetResources()[0].UnmarshalTo(&sec); err != nil || sec.GetName() != cachetest.CertSecret {
		t.Fatalf("answered %q (%v), want %q", sec.GetName(), err, cachetest.CertSecret)
	}
	ch, _ = sotwWatch(t, c, resource.SecretType, "no-such-secret")
	if len(ch) != 0 {
		t.Fatal("a request naming only a missing secret was answered")
	}
}

// Watches opened before the node has resources are answered when it gets
// them; ClearNode drops open watches.
func TestWatchBeforeResourcesAndClear(t *testing.T) {
	ctx := context.Background()
	c := cache.New(nil)
	ch := mustWatch(t, c, resource.ClusterType)
	dch := make(chan gcache.DeltaResponse, 4)
	dreq := &discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ClusterType}
	dsub := stream.NewDeltaSubscription(nil, nil, nil, true)
	cancel, err := c.CreateDeltaWatch(dreq, &dsub, dch)
	if err != nil || cancel == nil {
		t.Fatalf("delta watch before resources: cancel %v, %v", cancel != nil, err)
	}
	if len(ch) != 0 || len(dch) != 0 {
		t.Fatal("answered without resources")
	}
	if err := c.SetResources(ctx, node, cachetest.Set(nil, "10.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, ch); r.GetResponseVersion() != c.Version(node, resource.ClusterType) {
		t.Fatalf("version %q", r.GetResponseVersion())
	}
	select {
	case r := <-dch:
		d, _ := r.GetDeltaDiscoveryResponse()
		if len(d.GetResources()) != 1 || d.GetResources()[0].GetName() != cachetest.Name {
			t.Fatalf("delta answer %v", d.GetResources())
		}
	default:
		t.Fatal("delta watch not answered")
	}

	ch, sub := sotwWatch(t, c, resource.ClusterType)
	sub.SetReturnedResources(receive(t, ch).GetReturnedResources())
	n := &corev3.Node{Id: node}
	if _, err := c.CreateWatch(&discovery.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType,
		VersionInfo: c.Version(node, resource.ClusterType), ResponseNonce: "1"}, sub, ch); err != nil {
		t.Fatal(err)
	}
	if len(ch) != 0 {
		t.Fatal("ACK answered")
	}
	c.ClearNode(node)
	changed := cachetest.Set(nil, "10.0.0.1:1")
	changed[resource.ClusterType][0].(*clusterv3.Cluster).LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	if err := c.SetResources(ctx, node, changed); err != nil {
		t.Fatal(err)
	}
	if len(ch) != 0 {
		t.Fatal("a watch survived ClearNode")
	}
}

// A delta change sends each stream only the resources whose hash moved,
// sharing the encoded resource between streams; a change that leaves a
// type alone does not touch its watches.
func TestDeltaFanOut(t *testing.T) {
	ctx := context.Background()
	c := cache.New(nil)
	c1 := certs(t, 7)
	if err := c.SetResources(ctx, node, cachetest.Set(c1, "10.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	open := func() (chan gcache.DeltaResponse, *stream.Subscription) {
		ch := make(chan gcache.DeltaResponse, 4)
		sub := stream.NewDeltaSubscription([]string{cachetest.CertSecret, cachetest.CASecret}, nil, nil, false)
		req := &discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.SecretType,
			ResourceNamesSubscribe: []string{cachetest.CertSecret, cachetest.CASecret}}
		if _, err := c.CreateDeltaWatch(req, &sub, ch); err != nil {
			t.Fatal(err)
		}
		r := <-ch
		sub.SetReturnedResources(r.GetReturnedResources())
		ack := &discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.SecretType, ResponseNonce: "1"}
		if _, err := c.CreateDeltaWatch(ack, &sub, ch); err != nil {
			t.Fatal(err)
		}
		return ch, &sub
	}
	ch1, _ := open()
	ch2, _ := open()
	if len(ch1)+len(ch2) != 0 {
		t.Fatal("ACK answered")
	}
	if err := c.SetResources(ctx, node, map[resource.Type][]types.Resource{resource.EndpointType: {cachetest.Endpoints("10.0.0.2:2")}}); err != nil {
		t.Fatal(err)
	}
	if len(ch1)+len(ch2) != 0 {
		t.Fatal("an endpoint change answered secret watches")
	}
	c2 := certs(t, 8)
	if err := c.SetSecrets(ctx, node, []cache.Secret{{Resource: c2.CertSecret()}, {Resource: c1.CASecret()}}); err != nil {
		t.Fatal(err)
	}
	var got [2]*discovery.DeltaDiscoveryResponse
	for i, ch := range []chan gcache.DeltaResponse{ch1, ch2} {
		select {
		case r := <-ch:
			got[i], _ = r.GetDeltaDiscoveryResponse()
		default:
			t.Fatalf("stream %d not answered", i)
		}
		if rs := got[i].GetResources(); len(rs) != 1 || rs[0].GetName() != cachetest.CertSecret {
			t.Fatalf("stream %d got %v, want only %s", i, rs, cachetest.CertSecret)
		}
	}
	if got[0] == got[1] || got[0].GetResources()[0] != got[1].GetResources()[0] {
		t.Fatal("want separate responses sharing the encoded resource")
	}
	if want, _ := cache.ResourceHash(c2.CertSecret()); got[0].GetResources()[0].GetVersion() != want {
		t.Fatalf("resource version %q, want its hash %q", got[0].GetResources()[0].GetVersion(), want)
	}
}

// TestSetEncodedShares: resources encoded once and set on two nodes reach
// both nodes' streams as the same encoded bytes; an encoding of another
// type is refused; setting equal content again (new objects) answers no
// open watch and keeps every version.
func TestSetEncodedShares(t *testing.T) {
	ctx := context.Background()
	cs := certs(t, 7)
	encode := func(set map[resource.Type][]types.Resource) map[resource.Type][]*cache.Encoded {
		out := map[resource.Type][]*cache.Encoded{}
		for typ, rs := range set {
			out[typ] = []*cache.Encoded{}
			for _, r := range rs {
				e, err := cache.Encode(typ, r)
				if err != nil {
					t.Fatal(err)
				}
				out[typ] = append(out[typ], e)
			}
		}
		return out
	}
	c := cache.New(nil)
	shared := encode(cachetest.Set(cs, "10.0.0.1:1"))
	for _, n := range []string{node, "node-b"} {
		if err := c.SetEncoded(ctx, n, shared); err != nil {
			t.Fatal(err)
		}
	}
	var anys []*anypb.Any
	for _, n := range []string{node, "node-b"} {
		ch := make(chan gcache.Response, 1)
		sub := stream.NewSotwSubscription(nil, true)
		req := &discovery.DiscoveryRequest{Node: &corev3.Node{Id: n}, TypeUrl: resource.ListenerType}
		if _, err := c.CreateWatch(req, &sub, ch); err != nil {
			t.Fatal(err)
		}
		resp, _ := receive(t, ch).GetDiscoveryResponse()
		anys = append(anys, resp.GetResources()...)
	}
	if len(anys) != 2 || anys[0] != anys[1] {
		t.Fatalf("want one shared encoding on both nodes, got %v", anys)
	}

	wrong := encode(cachetest.Set(cs, "10.0.0.1:1"))
	wrong[resource.RouteType] = wrong[resource.ListenerType]
	if err := c.SetEncoded(ctx, node, wrong); err == nil || !strings.Contains(err.Error(), "encoded as") {
		t.Fatalf("listener set as route: %v", err)
	}

	// Current watches of every type on both protocols, then equal content.
	before := versions(c, node)
	sotw := map[string]chan gcache.Response{}
	delta := map[string]chan gcache.DeltaResponse{}
	for _, typ := range cache.Types() {
		sub := stream.NewSotwSubscription(nil, true)
		ch := make(chan gcache.Response, 1)
		req := &discovery.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typ}
		if _, err := c.CreateWatch(req, &sub, ch); err != nil {
			t.Fatal(err)
		}
		if len(ch) > 0 {
			sub.SetReturnedResources((<-ch).GetReturnedResources())
		}
		ack := &discovery.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typ, VersionInfo: before[typ], ResponseNonce: "1"}
		if _, err := c.CreateWatch(ack, &sub, ch); err != nil {
			t.Fatal(err)
		}
		sotw[typ] = ch
		dsub := stream.NewDeltaSubscription(nil, nil, nil, true)
		dch := make(chan gcache.DeltaResponse, 1)
		dreq := &discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typ}
		if _, err := c.CreateDeltaWatch(dreq, &dsub, dch); err != nil {
			t.Fatal(err)
		}
		if r := <-dch; r != nil {
			dsub.SetReturnedResources(r.GetNextVersionMap())
		}
		dreq = &discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typ, ResponseNonce: "1"}
		if _, err := c.CreateDeltaWatch(dreq, &dsub, dch); err != nil {
			t.Fatal(err)
		}
		delta[typ] = dch
	}
	if err := c.SetEncoded(ctx, node, encode(cachetest.Set(cs, "10.0.0.1:1"))); err != nil {
		t.Fatal(err)
	}
	if got := versions(c, node); !maps.Equal(got, before) {
		t.Errorf("equal content changed versions %v → %v", before, got)
	}
	for _, typ := range cache.Types() {
		if len(sotw[typ])+len(delta[typ]) != 0 {
			t.Errorf("%s: equal content answered a watch", typ)
		}
	}
}

// TestDeltaWildcardDiff: a wildcard delta watch gets exactly the resources
// its client lacks or holds at another version, and the names it holds
// that are gone as removed; a current client's ACK is not answered. Each
// response hands the server its own copy of the client's new state.
func TestDeltaWildcardDiff(t *testing.T) {
	ctx := context.Background()
	c := cache.New(nil)
	set := cachetest.Set(nil, "10.0.0.1:1")
	set[resource.ListenerType] = benchListeners(3, 1)
	if err := c.SetResources(ctx, node, set); err != nil {
		t.Fatal(err)
	}
	current := map[string]string{}
	for _, l := range set[resource.ListenerType] {
		h, err := cache.ResourceHash(l)
		if err != nil {
			t.Fatal(err)
		}
		current[gcache.GetResourceName(l)] = h
	}
	with := func(edit func(m map[string]string)) map[string]string {
		m := maps.Clone(current)
		edit(m)
		return m
	}
	all := []string{"listener-0", "listener-1", "listener-2"}
	for _, tc := range []struct {
		name        string
		known       map[string]string
		nonce       string
		wantSent    bool
		wantOut     []string
		wantRemoved []string
	}{
		{name: "new stream", known: nil, wantSent: true, wantOut: all},
		{name: "reconnect, current", known: current, wantSent: true},
		{name: "ACK, current", known: current, nonce: "1"},
		{name: "stale version", known: with(func(m map[string]string) { m["listener-1"] = "old" }), nonce: "1",
			wantSent: true, wantOut: []string{"listener-1"}},
		{name: "unsubscribed by name", known: with(func(m map[string]string) { m["listener-2"] = "" }), nonce: "1",
			wantSent: true, wantOut: []string{"listener-2"}},
		{name: "missing", known: with(func(m map[string]string) { delete(m, "listener-0") }), nonce: "1",
			wantSent: true, wantOut: []string{"listener-0"}},
		{name: "gone", known: with(func(m map[string]string) { m["gone"] = "x" }), nonce: "1",
			wantSent: true, wantRemoved: []string{"gone"}},
		{name: "gone and missing", known: with(func(m map[string]string) { delete(m, "listener-0"); m["gone"] = "x" }), nonce: "1",
			wantSent: true, wantOut: []string{"listener-0"}, wantRemoved: []string{"gone"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var resps []gcache.DeltaResponse
			for range 2 {
				sub := stream.NewDeltaSubscription(nil, nil, maps.Clone(tc.known), true)
				ch := make(chan gcache.DeltaResponse, 1)
				req := &discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ListenerType, ResponseNonce: tc.nonce}
				cancel, err := c.CreateDeltaWatch(req, sub, ch)
				if err != nil {
					t.Fatal(err)
				}
				if !tc.wantSent {
					if len(ch) != 0 || cancel == nil {
						t.Fatal("answered a current client")
					}
					cancel()
					return
				}
				if len(ch) != 1 {
					t.Fatal("not answered")
				}
				resps = append(resps, <-ch)
			}
			d, err := resps[0].GetDeltaDiscoveryResponse()
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, r := range d.GetResources() {
				if r.GetVersion() != current[r.GetName()] {
					t.Errorf("%s at version %q, want %q", r.GetName(), r.GetVersion(), current[r.GetName()])
				}
				out = append(out, r.GetName())
			}
			if !slices.Equal(out, tc.wantOut) || !slices.Equal(d.GetRemovedResources(), tc.wantRemoved) {
				t.Errorf("sent %v removed %v, want %v and %v", out, d.GetRemovedResources(), tc.wantOut, tc.wantRemoved)
			}
			next := resps[0].GetNextVersionMap()
			if !maps.Equal(next, current) || !maps.Equal(resps[0].GetReturnedResources(), current) {
				t.Fatalf("client state after response %v, want %v", next, current)
			}
			// The server edits its subscription's map in place.
			next["listener-0"] = ""
			if got := resps[1].GetNextVersionMap(); !maps.Equal(got, current) {
				t.Fatalf("responses share the client state: %v", got)
			}
		})
	}
}
