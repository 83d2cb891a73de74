package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/xds"

	"github.com/gatehouse-proxy/gatehouse/test/testbackend"
	"github.com/gatehouse-proxy/gatehouse/xds/cache/cachetest"
)

// TestGRPCXDSClient proves the resources and the server against grpc-go's
// own xDS client (proxyless gRPC): it resolves xds:///greeter through
// LDS→RDS→CDS→EDS, reaches a real backend, follows an endpoint change
// live, and a cluster it rejects is NACKed once, not in a loop.
func TestGRPCXDSClient(t *testing.T) {
	const nodeID = "grpc-client"
	addrA, addrB := testbackend.Start(t, "A"), testbackend.Start(t, "B")
	h := seededHarness(t, nodeID, cachetest.Set(nil, addrA))
	ctx := context.Background()

	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": %q}
	}`, h.addr, nodeID)
	rb, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+cachetest.Name, grpc.WithResolvers(rb),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)

	reaches := func(id string) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		last := ""
		for {
			callCtx, callCancel := context.WithTimeout(cctx, 2*time.Second)
			resp, err := client.UnaryCall(callCtx, &testpb.SimpleRequest{FillServerId: true})
			callCancel()
			if err == nil && resp.GetServerId() == id {
				return
			}
			last = fmt.Sprintf("id %q, err %v", resp.GetServerId(), err)
			select {
			case <-cctx.Done():
				t.Fatalf("never reached backend %s; last: %s", id, last)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	reaches("A")
	eventually(t, "all four types ACKed", func() bool {
		ns := h.nodeStatus(t, nodeID)
		for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
			ts := ns.Types[typ]
			if ts.Acked == "" || ts.Acked != ts.Current {
				return false
			}
		}
		return ns.Streams == 1
	})

	// Endpoint change re-routes live.
	if err := h.cache.SetResources(ctx, nodeID, map[resource.Type][]types.Resource{
		resource.EndpointType: {cachetest.Endpoints(addrB)},
	}); err != nil {
		t.Fatal(err)
	}
	reaches("B")

	// grpc-go rejects MAGLEV. It must NACK that once and not be fed it again.
	maglev := cachetest.Cluster(false)
	maglev.LbPolicy = clusterv3.Cluster_MAGLEV
	if err := h.cache.SetResources(ctx, nodeID, map[resource.Type][]types.Resource{
		resource.ClusterType: {maglev},
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "grpc-go NACK of the cluster", func() bool {
		return h.nodeStatus(t, nodeID).Types[resource.ClusterType].NackError != ""
	})
	ts := h.nodeStatus(t, nodeID).Types[resource.ClusterType]
	if ts.NackedVersion != ts.Current || ts.Acked == ts.Current {
		t.Errorf("cluster status %+v: want the current version NACKed and not ACKed", ts)
	}
	t.Logf("grpc-go NACK: %s", ts.NackError)
	pushes := h.counter(t, "gatehouse_xds_pushes_total", "Cluster")
	wctx, cancel := context.WithTimeout(ctx, quiet)
	<-wctx.Done()
	cancel()
	if n := h.counter(t, "gatehouse_xds_nacks_total", "Cluster"); n != 1 {
		t.Errorf("cluster NACKs = %v, want exactly 1 (no resend loop)", n)
	}
	if p := h.counter(t, "gatehouse_xds_pushes_total", "Cluster"); p != pushes {
		t.Errorf("cluster pushes grew from %v to %v after the NACK", pushes, p)
	}
	reaches("B") // the client keeps its last good config

	// Fixing the cluster is delivered and accepted.
	if err := h.cache.SetResources(ctx, nodeID, map[resource.Type][]types.Resource{
		resource.ClusterType:  {cachetest.Cluster(false)},
		resource.EndpointType: {cachetest.Endpoints(addrA)},
	}); err != nil {
		t.Fatal(err)
	}
	reaches("A")
	eventually(t, "fixed cluster ACKed", func() bool {
		ts := h.nodeStatus(t, nodeID).Types[resource.ClusterType]
		return ts.Acked == ts.Current
	})
}
