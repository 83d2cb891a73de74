package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"
	"github.com/gatehouse-proxy/gatehouse/test/testbackend"
	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
)

// replicaTemplate is one config for every replica: the shared store, and
// ext_authz behind one DNS name (several authz replicas).
const replicaTemplate = xdsListen + `store:
  backend: redis
  redis:
    address: %s
` + meshTrust + `    address: gatehouse-authz.gatehouse.svc:9001
` + greeterService + `    - name: greeter2
      endpoints: [%q]
      protocol: http2
` + ordersService + edgeRoutes + `        - path_prefix: /g
          service: greeter
        - path_prefix: /
          service: orders
` + ordersSidecar + webClient + `    - name: web2
      targets:
        - target: xds:///greeter2
          service: greeter2
`

// adsTypes is the order an Envoy-shaped client subscribes in.
var adsTypes = []string{resource.ClusterType, resource.ListenerType, resource.EndpointType, resource.RouteType, resource.SecretType}

// acked is what a proxy remembers per type: the last ACKed version and the
// names it asked for.
type acked struct {
	version string
	names   []string
}

// TestXDSReplicas runs two `gatehouse xds` replicas sharing a Redis and a
// CA directory made by `gatehouse ca init`, and shows they are one control
// plane to proxies: same resources and versions (SDS included: one leaf per
// identity for the fleet), a proxy moving replicas is sent nothing, live
// edits reach it there, and grpc-go keeps working when its replica stops.
func TestXDSReplicas(t *testing.T) {
	dir := t.TempDir()
	redis := redistest.Start(t)
	state := filepath.Join(dir, "state") // the mounted Secret: the CA only
	addrA, addrB := testbackend.Start(t, "A"), testbackend.Start(t, "B")
	conf := func(greeter string) string { return fmt.Sprintf(replicaTemplate, redis.Addr(), greeter, addrA) }
	cfgPath := writeConfig(t, dir, conf(addrA))

	t.Run("no CA of its own with a shared store", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, binary, "xds", "--config", cfgPath, "--state-dir", filepath.Join(dir, "empty")).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "shared CA required: run gatehouse ca init and mount it") {
			t.Fatalf("replica without a CA: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "empty", "ca", "ca.key")); err == nil {
			t.Fatal("a replica minted its own CA")
		}
	})
	gatehouse(t, "ca", "init", "--dir", filepath.Join(state, "ca"), "--trust-domain", "e2e.test")

	p1, addrs1 := start(t, "xds", "--config", cfgPath, "--state-dir", state)
	_, addrs2 := start(t, "xds", "--config", cfgPath, "--state-dir", state)
	xds1, admin1, xds2, admin2 := addrs1[0], addrs1[1], addrs2[0], addrs2[1]

	// Everything ACKed at replica 1, Envoy-style.
	a1 := dialADS(t, xds1)
	last := a1.subscribeAll()
	for _, typ := range adsTypes {
		if last[typ].version == "" {
			t.Fatalf("%s never answered", typ)
		}
	}
	if n := len(last[resource.SecretType].names); n < 2 {
		t.Fatalf("edge references %d secrets", n)
	}
	t.Run("ext_authz replicas behind one DNS name", func(t *testing.T) {
		// STRICT_DNS: Envoy resolves every address of the name and
		// balances Check calls across the authz replicas.
		for _, r := range unpack(t, a1.last[resource.ClusterType]) {
			if c := r.(*clusterv3.Cluster); c.GetName() == translate.AuthzClusterName {
				if c.GetType() != clusterv3.Cluster_STRICT_DNS {
					t.Fatalf("authz cluster type %v, want STRICT_DNS", c.GetType())
				}
				return
			}
		}
		t.Fatal("no authz cluster for the edge")
	})

	t.Run("same versions on both replicas", func(t *testing.T) {
		eventually(t, "identical per-type versions for edge", func() error {
			v1, v2 := nodeVersions(t, admin1, "edge"), nodeVersions(t, admin2, "edge")
			for _, typ := range adsTypes {
				if v1[typ] == "" || v1[typ] != v2[typ] || v1[typ] != last[typ].version {
					return fmt.Errorf("%s: replica 1 %q, replica 2 %q, acked %q", typ, v1[typ], v2[typ], last[typ].version)
				}
			}
			return nil
		})
	})

	// The proxy moves to replica 2 with its ACKed versions. The wildcard
	// types (CDS, LDS) are not resent: no push, no listener drain. The
	// named ones (EDS, RDS, SDS) are, since a version does not say which
	// names the proxy held; replica 2 resends exactly what replica 1 sent,
	// at the same version, which Envoy takes as unchanged ...
	a2 := dialADS(t, xds2)
	for _, typ := range adsTypes {
		a2.request(typ, last[typ].version, "", last[typ].names...)
		if typ == resource.ClusterType || typ == resource.ListenerType {
			continue
		}
		r := a2.await(typ)
		if r.GetVersionInfo() != last[typ].version {
			t.Fatalf("replica 2 resent %s at version %s, replica 1 at %s", typ, r.GetVersionInfo(), last[typ].version)
		}
		if got, want := r.GetResources(), a1.last[typ].GetResources(); len(got) != len(want) {
			t.Fatalf("replica 2 resent %d %s resources, replica 1 sent %d", len(got), typ, len(want))
		} else {
			for i := range got {
				if !proto.Equal(got[i], want[i]) {
					t.Fatalf("replica 2 resent %s resource %d unlike replica 1's", typ, i)
				}
			}
		}
		a2.request(typ, r.GetVersionInfo(), r.GetNonce(), last[typ].names...)
	}
	if r, ok := a2.recvWithin(3 * time.Second); ok {
		t.Fatalf("replica 2 sent %s version %s to a proxy up to date", r.GetTypeUrl(), r.GetVersionInfo())
	}
	// ... until the config changes, which both replicas see.
	writeFile(t, cfgPath, conf(addrB))
	r, ok := a2.recvWithin(30 * time.Second)
	if !ok {
		t.Fatal("the endpoint edit never reached the proxy on replica 2")
	}
	if r.GetTypeUrl() != resource.EndpointType {
		t.Fatalf("an endpoint edit pushed %s", r.GetTypeUrl())
	}
	a2.request(r.GetTypeUrl(), r.GetVersionInfo(), r.GetNonce(), last[resource.EndpointType].names...)

	t.Run("grpc-go keeps working when its replica stops", func(t *testing.T) {
		testGRPCFailover(t, cfgPath, xds1, xds2, p1)
	})
}

// testGRPCFailover bootstraps grpc-go with both replicas, replica 1 first,
// then stops replica 1.
func testGRPCFailover(t *testing.T, cfgPath, xds1, xds2 string, p1 *proc) {
	cc := xdsClientConn(t, "xds:///greeter", grpcResolver(t, cfgPath, "web", xds1, xds2))
	awaitServer(t, "grpc-go reaches greeter (B) through replica 1", cc, "B")

	// Stop replica 1, the one grpc-go's xDS client streams from.
	if err := p1.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- p1.cmd.Wait() }()
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
		t.Fatal("replica 1 did not stop")
	}
	// Resources it has keep being used: calls succeed, at most one retried.
	failed := 0
	for range 20 {
		id, err := callOn(cc)
		if err != nil || id != "B" {
			failed++
			t.Logf("call after replica 1 stopped: %s %v", id, err)
		}
	}
	if failed > 1 {
		t.Fatalf("%d of 20 calls failed after replica 1 stopped", failed)
	}
	// A client starting now, with the same replica list: replica 1 is down
	// before any response while nothing is cached, so grpc-go falls back
	// to replica 2 (gRFC A71) and resolves there.
	cc2 := xdsClientConn(t, "xds:///greeter2", grpcResolver(t, cfgPath, "web2", xds1, xds2))
	awaitServer(t, "grpc-go falls back to replica 2", cc2, "A")
}

// xdsClientConn is a grpc-go client of target resolved through rb, closed
// with the test.
func xdsClientConn(t *testing.T, target string, rb resolver.Builder) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(target, grpc.WithResolvers(rb), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// awaitServer waits (see eventually) until a call on cc reaches the backend
// named id.
func awaitServer(t *testing.T, what string, cc *grpc.ClientConn, id string) {
	t.Helper()
	eventually(t, what, func() error {
		got, err := callOn(cc)
		if err == nil && got != id {
			err = fmt.Errorf("reached %s", got)
		}
		return err
	})
}

// grpcResolver is grpc-go's xDS resolver bootstrapped by `gatehouse
// bootstrap --xds` with the replicas, in that order.
func grpcResolver(t *testing.T, cfgPath, node string, replicas ...string) resolver.Builder {
	t.Helper()
	out, err := exec.Command(binary, "bootstrap", "--config", cfgPath, "--node", node, "--xds", strings.Join(replicas, ",")).Output()
	if err != nil {
		t.Fatalf("gatehouse bootstrap: %v", err)
	}
	var bs struct {
		XDSServers []struct {
			ServerURI string `json:"server_uri"`
		} `json:"xds_servers"`
	}
	if err := json.Unmarshal(out, &bs); err != nil || len(bs.XDSServers) != len(replicas) {
		t.Fatalf("bootstrap names %+v (%v)", bs.XDSServers, err)
	}
	for i, s := range bs.XDSServers {
		if s.ServerURI != replicas[i] {
			t.Fatalf("xds_servers[%d] = %s, want %s", i, s.ServerURI, replicas[i])
		}
	}
	rb, err := xds.NewXDSResolverWithConfigForTesting(out)
	if err != nil {
		t.Fatalf("grpc-go refuses the bootstrap: %v\n%s", err, out)
	}
	return rb
}

func callOn(cc *grpc.ClientConn) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{})
	return resp.GetServerId(), err
}

// replicaStream is an Envoy-shaped SotW ADS stream that remembers the last
// response per type.
type replicaStream struct {
	*adsStream
	last map[string]*discovery.DiscoveryResponse
	msgs chan *discovery.DiscoveryResponse
}

func dialADS(t *testing.T, addr string) *replicaStream {
	t.Helper()
	s, stop, err := openADS(t, addr, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	a := &replicaStream{adsStream: &adsStream{t: t, s: s, node: &corev3.Node{Id: "edge", Cluster: "edge"}},
		last: map[string]*discovery.DiscoveryResponse{}, msgs: make(chan *discovery.DiscoveryResponse, 16)}
	go func() {
		defer close(a.msgs)
		for {
			r, err := s.Recv()
			if err != nil {
				return
			}
			a.msgs <- r
		}
	}()
	return a
}

// recvWithin returns the next response, or false if none comes within d.
func (a *replicaStream) recvWithin(d time.Duration) (*discovery.DiscoveryResponse, bool) {
	select {
	case r, ok := <-a.msgs:
		return r, ok
	case <-time.After(d):
		return nil, false
	}
}

// await returns the next response of typ, failing after a bound.
func (a *replicaStream) await(typ string) *discovery.DiscoveryResponse {
	a.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, ok := a.recvWithin(time.Until(deadline))
		if !ok {
			a.t.Fatalf("no %s response", typ)
		}
		a.last[r.GetTypeUrl()] = r
		if r.GetTypeUrl() == typ {
			return r
		}
	}
}

// subscribeAll does what Envoy does: wildcard CDS and LDS, then EDS, RDS
// and SDS for what they name, ACKing each answer. It returns what was ACKed.
func (a *replicaStream) subscribeAll() map[string]acked {
	t := a.t
	t.Helper()
	out := map[string]acked{}
	ack := func(r *discovery.DiscoveryResponse, names []string) {
		a.request(r.GetTypeUrl(), r.GetVersionInfo(), r.GetNonce(), names...)
		out[r.GetTypeUrl()] = acked{r.GetVersionInfo(), names}
	}
	a.request(resource.ClusterType, "", "")
	cds := a.await(resource.ClusterType)
	ack(cds, nil)
	a.request(resource.ListenerType, "", "")
	lds := a.await(resource.ListenerType)
	ack(lds, nil)
	clusters, listeners := unpack(t, cds), unpack(t, lds)

	var eds, rds []string
	for _, r := range clusters {
		if c := r.(*clusterv3.Cluster); c.GetType() == clusterv3.Cluster_EDS {
			name := c.GetEdsClusterConfig().GetServiceName()
			if name == "" {
				name = c.GetName()
			}
			eds = append(eds, name)
		}
	}
	for _, r := range listeners {
		for _, fc := range r.(*listenerv3.Listener).GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) == nil && hcm.GetRds().GetRouteConfigName() != "" {
					rds = append(rds, hcm.GetRds().GetRouteConfigName())
				}
			}
		}
	}
	sds, err := cache.ReferencedSecrets(listeners, clusters)
	if err != nil {
		t.Fatal(err)
	}
	if len(eds) == 0 || len(rds) == 0 {
		t.Fatalf("edge names EDS %v, RDS %v", eds, rds)
	}
	names := map[string][]string{resource.EndpointType: eds, resource.RouteType: rds, resource.SecretType: sds}
	for _, typ := range []string{resource.EndpointType, resource.RouteType, resource.SecretType} {
		a.request(typ, "", "", names[typ]...)
	}
	for len(out) < len(adsTypes) {
		r, ok := a.recvWithin(30 * time.Second)
		if !ok {
			t.Fatalf("only %d of %d types answered", len(out), len(adsTypes))
		}
		a.last[r.GetTypeUrl()] = r
		unpack(t, r)
		ack(r, names[r.GetTypeUrl()])
	}
	return out
}

// nodeVersions is the version per type a replica's cache holds for node.
func nodeVersions(t *testing.T, adminAddr, node string) map[string]string {
	t.Helper()
	var status struct{ Nodes []cache.NodeStatus }
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+adminAddr+"/debug/xds?node="+node)), &status); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range status.Nodes {
		if n.NodeID == node {
			for typ, ts := range n.Types {
				out[typ] = ts.Current
			}
		}
	}
	return out
}
