package server_test

import (
	"context"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/cache/cachetest"
	"github.com/gatehouse-proxy/gatehouse/xds/server"
)

// fanOut is a running server with streams that ACK everything and report
// each version they receive.
type fanOut struct {
	cache  *cache.Cache
	nodes  []string
	events chan received
}

type received struct {
	node, typ, version string
}

// fanOutNodes is how many node ids the streams share, as Envoy replicas of
// a few services do.
const fanOutNodes = 10

// fanOutAddrs gives the endpoints of one generation: enough that EDS is
// not trivially small.
func fanOutAddrs(gen int) []string {
	out := make([]string, 32)
	for i := range out {
		out[i] = fmt.Sprintf("10.%d.%d.%d:%d", gen%2, i/250, i%250+1, 8000+i)
	}
	return out
}

// BenchmarkFanOut times one change until every stream has it: K streams
// over real gRPC (loopback TCP, streams spread over connections) on
// fanOutNodes nodes, SotW and delta, for an endpoint change and a
// certificate rotation. ns/op is the time from the cache write until the
// last stream received the new version. The client side shares the CPUs,
// as in the fleet harness; compare runs side by side, not with targets.
func BenchmarkFanOut(b *testing.B) {
	certs := [2]*cachetest.Certs{certs(b, 0x51), certs(b, 0x52)}
	for _, k := range []int{1000} {
		for _, delta := range []bool{false, true} {
			mode := "sotw"
			if delta {
				mode = "delta"
			}
			for _, kind := range []string{"endpoints", "rotation"} {
				b.Run(fmt.Sprintf("%s/%s/streams=%d", mode, kind, k), func(b *testing.B) {
					f := startFanOut(b, k, delta, certs[0])
					for i := range b.N {
						gen := i + 1
						typ := resource.EndpointType
						var want string
						var err error
						if kind == "rotation" {
							typ = resource.SecretType
							c := certs[gen%2]
							want, err = cache.TypeVersion([]types.Resource{c.CertSecret(), c.CASecret()})
						} else {
							want, err = cache.TypeVersion([]types.Resource{cachetest.Endpoints(fanOutAddrs(gen)...)})
						}
						if err != nil {
							b.Fatal(err)
						}
						ctx := context.Background()
						b.StartTimer()
						for _, n := range f.nodes {
							if kind == "rotation" {
								c := certs[gen%2]
								err = f.cache.SetSecrets(ctx, n, []cache.Secret{{Resource: c.CertSecret()}, {Resource: c.CASecret()}})
							} else {
								err = f.cache.SetResources(ctx, n, map[resource.Type][]types.Resource{
									resource.EndpointType: {cachetest.Endpoints(fanOutAddrs(gen)...)},
								})
							}
							if err != nil {
								b.Fatal(err)
							}
						}
						for got := 0; got < k; {
							if e := <-f.events; e.typ == typ && e.version == want {
								got++
							}
						}
						b.StopTimer()
					}
				})
			}
		}
	}
}

// startFanOut serves a fresh cache and opens k subscribed streams.
func startFanOut(b *testing.B, k int, delta bool, c *cachetest.Certs) *fanOut {
	b.Helper()
	b.StopTimer()
	f := &fanOut{cache: cache.New(nil), events: make(chan received, 8*k)}
	for i := range fanOutNodes {
		id := fmt.Sprintf("node-%02d", i)
		f.nodes = append(f.nodes, id)
		set := cachetest.Set(c, fanOutAddrs(0)...)
		if err := f.cache.SetResources(context.Background(), id, set); err != nil {
			b.Fatal(err)
		}
	}
	s, err := server.New(f.cache, server.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		b.Fatal(err)
	}
	addr := serve(b, s)

	// 50 streams per connection, under the server's limit of 100.
	var conns []*grpc.ClientConn
	for i := 0; i < k; i += 50 {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, cc)
	}
	sctx, scancel := context.WithCancel(context.Background())
	b.Cleanup(func() {
		scancel()
		for _, cc := range conns {
			cc.Close()
		}
	})
	for i := range k {
		client := discovery.NewAggregatedDiscoveryServiceClient(conns[i/50])
		node := &corev3.Node{Id: f.nodes[i%len(f.nodes)]}
		var err error
		if delta {
			err = deltaClient(sctx, client, node, f.events)
		} else {
			err = sotwClient(sctx, client, node, f.events)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	// Every stream holds all five types before the clock starts.
	for got := 0; got < 5*k; got++ {
		<-f.events
	}
	return f
}

var fanOutSubs = []struct {
	typ   string
	names []string
}{
	{resource.ClusterType, nil},
	{resource.EndpointType, []string{cachetest.Name}},
	{resource.ListenerType, nil},
	{resource.RouteType, []string{cachetest.Name}},
	{resource.SecretType, []string{cachetest.CASecret, cachetest.CertSecret}},
}

// sotwClient subscribes to every type and ACKs every response.
func sotwClient(ctx context.Context, client discovery.AggregatedDiscoveryServiceClient, node *corev3.Node, events chan<- received) error {
	names := map[string][]string{}
	return fanOutClient(ctx, client.StreamAggregatedResources, node, events,
		func(typ string, subNames []string, node *corev3.Node) *discovery.DiscoveryRequest {
			names[typ] = subNames
			return &discovery.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: subNames}
		},
		func(r *discovery.DiscoveryResponse) (received, *discovery.DiscoveryRequest) {
			return received{node.GetId(), r.GetTypeUrl(), r.GetVersionInfo()},
				&discovery.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResourceNames: names[r.GetTypeUrl()],
					VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}
		})
}

// deltaClient subscribes to every type and ACKs every response.
func deltaClient(ctx context.Context, client discovery.AggregatedDiscoveryServiceClient, node *corev3.Node, events chan<- received) error {
	return fanOutClient(ctx, client.DeltaAggregatedResources, node, events,
		func(typ string, names []string, node *corev3.Node) *discovery.DeltaDiscoveryRequest {
			if names == nil {
				names = []string{"*"}
			}
			return &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ, ResourceNamesSubscribe: names}
		},
		func(r *discovery.DeltaDiscoveryResponse) (received, *discovery.DeltaDiscoveryRequest) {
			return received{node.GetId(), r.GetTypeUrl(), r.GetSystemVersionInfo()},
				&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}
		})
}

// fanOutClient opens a stream of either protocol with open and sends the
// request subscribe makes for each of fanOutSubs (node is passed for the
// first only, nil after). Then, until the stream ends, it reports what
// answer says each response is and sends the ACK answer makes.
func fanOutClient[Req, Resp any](ctx context.Context, open func(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[Req, Resp], error),
	node *corev3.Node, events chan<- received,
	subscribe func(typ string, names []string, node *corev3.Node) *Req, answer func(*Resp) (received, *Req)) error {
	st, err := open(ctx)
	if err != nil {
		return err
	}
	for _, sub := range fanOutSubs {
		if err := st.Send(subscribe(sub.typ, sub.names, node)); err != nil {
			return err
		}
		node = nil // only the first request carries it
	}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			got, ack := answer(r)
			events <- got
			if st.Send(ack) != nil {
				return
			}
		}
	}()
	return nil
}
