package translate_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds"

	"github.com/gatehouse-proxy/gatehouse/xds/bootstrap"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
)

// TestGRPCClientThroughGRPCGoXDS serves a gRPC client node's translated
// resources over ADS (go-control-plane's own cache and server) to grpc-go's
// real xDS client, which must accept them all (a NACK fails the test) and
// reach both real backends named in the config.
func TestGRPCClientThroughGRPCGoXDS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Two real backends; record which one answered.
	var mu sync.Mutex
	hits := map[string]int{}
	var backends []string
	for range 2 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		backends = append(backends, addr)
		srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			mu.Lock()
			hits[addr]++
			mu.Unlock()
			return h(ctx, req)
		}))
		healthpb.RegisterHealthServer(srv, health.NewServer())
		go srv.Serve(lis)
		t.Cleanup(srv.Stop)
	}

	m := parseMesh(t, fmt.Sprintf(`mesh:
  services:
    - {name: greeter, endpoints: [%q, %q], protocol: http2}
  grpc_clients:
    - {name: web, targets: [{target: "xds:///greeter", service: greeter}]}
`, backends[0], backends[1]))
	res, err := translate.Translate(m)
	if err != nil {
		t.Fatal(err)
	}
	nr := node(t, res, "web")

	// Control plane.
	snaps := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{
		resource.ListenerType: nr.Listeners, resource.RouteType: nr.Routes,
		resource.ClusterType: nr.Clusters, resource.EndpointType: nr.Endpoints,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.SetSnapshot(ctx, "web", snap); err != nil {
		t.Fatal(err)
	}
	nacks := make(chan string, 16)
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, req *discoverygrpc.DiscoveryRequest) error {
		if d := req.GetErrorDetail(); d != nil {
			select {
			case nacks <- req.GetTypeUrl() + ": " + d.GetMessage():
			default:
			}
		}
		return nil
	}}
	cpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(cp, serverv3.NewServer(ctx, snaps, cb))
	go cp.Serve(cpLis)
	t.Cleanup(cp.Stop)

	// Client, bootstrapped the way a real deployment would be.
	bs, err := bootstrap.RenderGRPC(bootstrap.GRPCOptions{NodeID: "web", ControlPlane: cpLis.Addr().String(), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := xds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		t.Fatalf("grpc-go rejects the bootstrap: %v", err)
	}
	cc, err := grpc.NewClient("xds:///greeter", grpc.WithResolvers(rb), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)

	// Round robin over both EDS endpoints.
	for {
		select {
		case n := <-nacks:
			t.Fatalf("grpc-go NACKed: %s", n)
		default:
		}
		var p peer.Peer
		callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := hc.Check(callCtx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true), grpc.Peer(&p))
		callCancel()
		if err != nil {
			select {
			case n := <-nacks:
				t.Fatalf("grpc-go NACKed: %s", n)
			default:
			}
			t.Fatalf("RPC through xDS: %v", err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("status %v", resp.GetStatus())
		}
		mu.Lock()
		done := hits[backends[0]] > 0 && hits[backends[1]] > 0
		mu.Unlock()
		if done {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("only reached %v of %v", hits, backends)
		}
	}
}
