package server_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatehouse-proxy/gatehouse/xds/cache/cachetest"
)

// TestStreamsDoNotLeak opens SotW and delta streams with live watches,
// closes them, and expects goroutines, stream counts and the gauge to
// return to where they were.
func TestStreamsDoNotLeak(t *testing.T) {
	const nodeID = "leaky"
	h := seededHarness(t, nodeID, cachetest.Set(nil, "10.0.0.1:1"))
	ctx := context.Background()
	base := settledGoroutines(t, h.addr)

	cc, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	client := discovery.NewAggregatedDiscoveryServiceClient(cc)
	sctx, cancel := context.WithCancel(ctx)
	node := &corev3.Node{Id: nodeID}
	const n = 4
	for range n {
		s, err := client.StreamAggregatedResources(sctx)
		if err != nil {
			t.Fatal(err)
		}
		// Two watches: one answered, one (unknown route) left open.
		if err := s.Send(sotwReq(node, resource.ClusterType)); err != nil {
			t.Fatal(err)
		}
		if err := s.Send(sotwReq(nil, resource.RouteType, "unknown")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		d, err := client.DeltaAggregatedResources(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "all streams counted", func() bool { return h.nodeStatus(t, nodeID).Streams == 2*n })
	if runtime.NumGoroutine() <= base {
		t.Fatal("open streams left no goroutines; the baseline check below would prove nothing")
	}

	cancel()
	cc.Close()
	eventually(t, "streams closed", func() bool { return h.nodeStatus(t, nodeID).Streams == 0 })
	eventually(t, "stream gauge back to 0", func() bool {
		mfs, _ := h.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "gatehouse_xds_streams" {
				for _, m := range mf.GetMetric() {
					if m.GetGauge().GetValue() != 0 {
						return false
					}
				}
			}
		}
		return true
	})
	eventually(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= base })
}

// settledGoroutines makes sure the server is fully serving (its accept loop
// and helpers started, one stream served and closed), then returns the
// goroutine count once it stops changing. Measuring earlier would count
// server start-up goroutines as a leak.
func settledGoroutines(t *testing.T, addr string) int {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err == nil {
		err = s.Send(sotwReq(&corev3.Node{Id: "warm-up"}, resource.ClusterType))
	}
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	cc.Close()
	last, same := -1, 0
	for deadline := time.Now().Add(10 * time.Second); same < 5 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n := runtime.NumGoroutine(); n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	return last
}
