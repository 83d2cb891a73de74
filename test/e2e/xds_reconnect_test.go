package e2e

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"
	"github.com/gatehouse-proxy/gatehouse/test/testbackend"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
)

// TestXDSReconnectNamedResources runs two `gatehouse xds` replicas sharing a
// Redis and a CA (as TestXDSReplicas does) and proves, on the real binary,
// that a proxy moving to the other replica at its ACKed versions still gets
// a name it subscribed to but never received. A version is a hash of every
// resource of the type for the node, not of the names the proxy held at
// it: a reconnect naming the current version of EDS, RDS or SDS must be
// answered. Only the wildcard types (CDS, LDS) are not resent, so nothing
// drains Envoy's listeners.
func TestXDSReconnectNamedResources(t *testing.T) {
	dir := t.TempDir()
	redis := redistest.Start(t)
	state := filepath.Join(dir, "state")
	addrA, addrB, addrC := testbackend.Start(t, "A"), testbackend.Start(t, "B"), testbackend.Start(t, "C")
	// conf is replicaTemplate with greeter at greeterAddr and greeter2 at
	// B; edgeG2 adds the edge route /g2 to greeter2 (a new cluster for the
	// edge); swapped has web's xds:///greeter target use greeter2 and
	// xds:///greeter2 use greeter (the same clusters, other routes).
	conf := func(greeterAddr string, edgeG2, swapped bool) string {
		c := fmt.Sprintf(replicaTemplate, redis.Addr(), greeterAddr, addrB)
		services := []any{"greeter", "greeter2"}
		if swapped {
			slices.Reverse(services)
		}
		c = replaceOnce(t, c, webClient, fmt.Sprintf(`  grpc_clients:
    - name: web
      targets:
        - {target: "xds:///greeter", service: %s}
        - {target: "xds:///greeter2", service: %s}
`, services...))
		if edgeG2 {
			c = replaceOnce(t, c, edgeRoutes, edgeRoutes+"        - path_prefix: /g2\n          service: greeter2\n")
		}
		return c
	}
	cfgPath := writeConfig(t, dir, conf(addrA, false, false))
	gatehouse(t, "ca", "init", "--dir", filepath.Join(state, "ca"), "--trust-domain", "e2e.test")
	_, addrs1 := start(t, "xds", "--config", cfgPath, "--state-dir", state)
	_, addrs2 := start(t, "xds", "--config", cfgPath, "--state-dir", state)
	xds1, admin1, xds2, admin2 := addrs1[0], addrs1[1], addrs2[0], addrs2[1]

	t.Run("Envoy: endpoints of a cluster added just before the stream broke", func(t *testing.T) {
		a1 := dialADS(t, xds1)
		held := a1.subscribeAll()
		edsBefore := held[resource.EndpointType].version

		// A new cluster on the edge. Replica 1 pushes CDS and, to the open
		// EDS subscription for the old names, EDS at its new version; the
		// proxy ACKs each with the names it holds.
		writeFile(t, cfgPath, conf(addrA, true, false))
		for {
			cur := nodeVersions(t, admin1, "edge")
			done := cur[resource.EndpointType] != edsBefore
			for _, typ := range adsTypes {
				done = done && held[typ].version == cur[typ]
			}
			if done {
				break
			}
			r, ok := a1.recvWithin(30 * time.Second)
			if !ok {
				t.Fatalf("replica 1 never pushed the new cluster: proxy holds %v, replica 1 is at %v", held, cur)
			}
			typ := r.GetTypeUrl()
			unpack(t, r)
			a1.last[typ] = r
			a1.request(typ, r.GetVersionInfo(), r.GetNonce(), held[typ].names...)
			held[typ] = acked{r.GetVersionInfo(), held[typ].names}
		}
		var added string
		for _, r := range unpack(t, a1.last[resource.ClusterType]) {
			if c := r.(*clusterv3.Cluster); c.GetName() == translate.ServiceClusterName("greeter2") && c.GetType() == clusterv3.Cluster_EDS {
				if added = c.GetEdsClusterConfig().GetServiceName(); added == "" {
					added = c.GetName()
				}
			}
		}
		eds := held[resource.EndpointType]
		if added == "" || slices.Contains(eds.names, added) {
			t.Fatalf("the new CDS has EDS cluster %q; the proxy subscribed to %v", added, eds.names)
		}
		// The state the fix is about: the proxy holds the current EDS
		// version, but not the new name.
		if _, ok := loadAssignments(t, a1.last[resource.EndpointType])[added]; ok {
			t.Fatalf("precondition: the proxy already holds %s", added)
		}

		// As Envoy does on the new cluster: EDS for the old names and the
		// new one, at its last ACKed version. The stream breaks before the
		// answer is read.
		names := append(slices.Clone(eds.names), added)
		a1.request(resource.EndpointType, eds.version, a1.last[resource.EndpointType].GetNonce(), names...)
		if err := a1.s.CloseSend(); err != nil {
			t.Fatal(err)
		}

		eventually(t, "replica 2 at the versions the proxy holds", func() error {
			v2 := nodeVersions(t, admin2, "edge")
			for _, typ := range adsTypes {
				if v2[typ] != held[typ].version {
					return fmt.Errorf("%s: replica 2 at %q, proxy holds %q", typ, v2[typ], held[typ].version)
				}
			}
			return nil
		})

		// The reconnect to replica 2, every type at its last ACKed version.
		a2 := dialADS(t, xds2)
		want := map[string][]string{resource.EndpointType: names,
			resource.RouteType: held[resource.RouteType].names, resource.SecretType: held[resource.SecretType].names}
		for _, typ := range adsTypes {
			a2.request(typ, held[typ].version, "", want[typ]...)
		}
		got := map[string]*discovery.DiscoveryResponse{}
		for len(got) < len(want) {
			r, ok := a2.recvWithin(30 * time.Second)
			if !ok {
				t.Fatalf("replica 2 answered the reconnect for %d of EDS, RDS, SDS; the proxy never gets the endpoints of %s", len(got), added)
			}
			typ := r.GetTypeUrl()
			if want[typ] == nil {
				t.Fatalf("replica 2 resent %s at %s to a proxy that holds it: Envoy would drain its listeners or re-warm its clusters", typ, r.GetVersionInfo())
			}
			if r.GetVersionInfo() != held[typ].version {
				t.Fatalf("replica 2 answered %s at %s, the proxy holds %s", typ, r.GetVersionInfo(), held[typ].version)
			}
			got[typ] = r
			a2.request(typ, r.GetVersionInfo(), r.GetNonce(), want[typ]...)
		}
		cla := loadAssignments(t, got[resource.EndpointType])
		if len(cla) != len(names) {
			t.Fatalf("replica 2 sent endpoints of %d clusters, the proxy asked for %v", len(cla), names)
		}
		ep := cla[added].GetEndpoints()
		if len(ep) != 1 || len(ep[0].GetLbEndpoints()) != 1 {
			t.Fatalf("endpoints of %s: %v", added, ep)
		}
		sa := ep[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if hp := net.JoinHostPort(sa.GetAddress(), fmt.Sprint(sa.GetPortValue())); hp != addrB {
			t.Fatalf("endpoint of %s is %s, want greeter2's %s", added, hp, addrB)
		}

		// Nothing else was queued for the proxy: the next thing replica 2
		// sends is the next edit, an endpoint change. A CDS or LDS resend
		// of the reconnect would have come first.
		writeFile(t, cfgPath, conf(addrC, true, false))
		r, ok := a2.recvWithin(30 * time.Second)
		if !ok {
			t.Fatal("the endpoint edit never reached the proxy on replica 2")
		}
		if r.GetTypeUrl() != resource.EndpointType || r.GetVersionInfo() == held[resource.EndpointType].version {
			t.Fatalf("after the reconnect replica 2 sent %s at %s, want the endpoint edit", r.GetTypeUrl(), r.GetVersionInfo())
		}
		a2.request(r.GetTypeUrl(), r.GetVersionInfo(), r.GetNonce(), names...)
	})

	t.Run("grpc-go: a cluster first needed while its stream was broken", func(t *testing.T) {
		writeFile(t, cfgPath, conf(addrC, true, false))
		// One address for both replicas, as a Kubernetes Service gives:
		// grpc-go keeps its ACKed versions across the reconnect (it does
		// not across xds_servers entries, and makes one xDS client per
		// dial target, so a second target would start from nothing).
		svc := newSwitchProxy(t, xds1)
		cc := xdsClientConn(t, "xds:///greeter", grpcResolver(t, cfgPath, "web", svc.addr))
		awaitServer(t, "grpc-go reaches greeter (C) through replica 1", cc, "C")
		before := nodeVersions(t, admin1, "web")

		// The stream breaks and no replica is reachable while web's
		// xds:///greeter is pointed at greeter2: a route change only,
		// within clusters and endpoints grpc-go holds the current
		// versions of, but whose cluster service/greeter2 it never asked
		// for.
		svc.switchTo("")
		writeFile(t, cfgPath, conf(addrC, true, true))
		eventually(t, "both replicas route web's greeter to greeter2", func() error {
			for _, admin := range []string{admin1, admin2} {
				if v := nodeVersions(t, admin, "web"); v[resource.RouteType] == before[resource.RouteType] {
					return fmt.Errorf("%s: routes still at %s", admin, v[resource.RouteType])
				}
			}
			return nil
		})
		after := nodeVersions(t, admin2, "web")
		for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType} {
			if after[typ] != before[typ] {
				t.Fatalf("precondition: the swap changed %s (%s to %s), which would be resent anyway", typ, before[typ], after[typ])
			}
		}

		// grpc-go reconnects, to replica 2, with its ACKed versions: new
		// routes, then a subscription to service/greeter2 at the current
		// CDS version on a stream that was sent no clusters yet.
		svc.switchTo(xds2)
		awaitServer(t, "grpc-go follows the new route on replica 2 to greeter2 (B)", cc, "B")
	})
}

// replaceOnce replaces old in s, which must contain it.
func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("config has no %q", old)
	}
	return strings.Replace(s, old, new, 1)
}

// loadAssignments are the ClusterLoadAssignments of r by cluster name.
func loadAssignments(t *testing.T, r *discovery.DiscoveryResponse) map[string]*endpointv3.ClusterLoadAssignment {
	t.Helper()
	out := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, res := range unpack(t, r) {
		c := res.(*endpointv3.ClusterLoadAssignment)
		out[c.GetClusterName()] = c
	}
	return out
}

// switchProxy forwards TCP connections to one target at a time, as a
// Service in front of the replicas does. Switching cuts every open
// connection; with no target, connections are closed at once.
type switchProxy struct {
	addr   string
	mu     sync.Mutex
	target string
	conns  map[net.Conn]struct{}
}

func newSwitchProxy(t *testing.T, target string) *switchProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &switchProxy{addr: l.Addr().String(), target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { l.Close(); p.switchTo("") })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
	return p
}

func (p *switchProxy) forward(c net.Conn) {
	p.mu.Lock()
	var up net.Conn
	if p.target != "" {
		up, _ = net.Dial("tcp", p.target)
	}
	if up == nil {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close(); c.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// switchTo sends new connections to target ("": none) and cuts the open
// ones.
func (p *switchProxy) switchTo(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}
