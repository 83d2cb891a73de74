package cache_test

import (
	"context"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/cache/cachetest"
)

// benchListeners is a node's wildcard LDS content of one generation: n
// listeners, all changed from the previous generation (as a config edit
// changes every listener's ext_authz filter).
func benchListeners(n, gen int) []types.Resource {
	out := make([]types.Resource, 0, n)
	for i := range n {
		l := proto.Clone(cachetest.Listener()).(*listenerv3.Listener)
		l.Name = fmt.Sprintf("listener-%d", i)
		l.StatPrefix = fmt.Sprintf("gen-%d", gen)
		out = append(out, l)
	}
	return out
}

// BenchmarkWildcardFanOut times one change of a node's wildcard LDS to
// every open watch of the node, and what the server does with each
// response (records the client's new state, opens the ACK's watch), SotW
// and delta; ns/op is per change, streams watches in all.
func BenchmarkWildcardFanOut(b *testing.B) {
	const listeners = 4
	for _, streams := range []int{100} {
		for _, delta := range []bool{false, true} {
			mode := "sotw"
			if delta {
				mode = "delta"
			}
			b.Run(fmt.Sprintf("%s/streams=%d", mode, streams), func(b *testing.B) {
				ctx := context.Background()
				c := cache.New(nil)
				set := cachetest.Set(nil, "10.0.0.1:1")
				set[resource.ListenerType] = benchListeners(listeners, 0)
				if err := c.SetResources(ctx, node, set); err != nil {
					b.Fatal(err)
				}
				n := &corev3.Node{Id: node}
				type sotwStream struct {
					sub stream.Subscription
					ch  chan gcache.Response
				}
				type deltaStream struct {
					sub stream.Subscription
					ch  chan gcache.DeltaResponse
				}
				var ss []*sotwStream
				var ds []*deltaStream
				// ack answers each stream's response as the server does and
				// opens the watch of the client's ACK.
				ack := func() {
					for _, s := range ss {
						r := <-s.ch
						if _, err := r.GetDiscoveryResponse(); err != nil {
							b.Fatal(err)
						}
						s.sub.SetReturnedResources(r.GetReturnedResources())
						v, _ := r.GetVersion()
						req := &discovery.DiscoveryRequest{Node: n, TypeUrl: resource.ListenerType, VersionInfo: v, ResponseNonce: "1"}
						if _, err := c.CreateWatch(req, s.sub, s.ch); err != nil {
							b.Fatal(err)
						}
					}
					for _, s := range ds {
						r := <-s.ch
						if _, err := r.GetDeltaDiscoveryResponse(); err != nil {
							b.Fatal(err)
						}
						s.sub.SetReturnedResources(r.GetNextVersionMap())
						req := &discovery.DeltaDiscoveryRequest{Node: n, TypeUrl: resource.ListenerType, ResponseNonce: "1"}
						if _, err := c.CreateDeltaWatch(req, s.sub, s.ch); err != nil {
							b.Fatal(err)
						}
					}
				}
				for range streams {
					if delta {
						s := &deltaStream{sub: stream.NewDeltaSubscription(nil, nil, nil, true), ch: make(chan gcache.DeltaResponse, 1)}
						req := &discovery.DeltaDiscoveryRequest{Node: n, TypeUrl: resource.ListenerType}
						if _, err := c.CreateDeltaWatch(req, s.sub, s.ch); err != nil {
							b.Fatal(err)
						}
						ds = append(ds, s)
					} else {
						s := &sotwStream{sub: stream.NewSotwSubscription(nil, true), ch: make(chan gcache.Response, 1)}
						req := &discovery.DiscoveryRequest{Node: n, TypeUrl: resource.ListenerType}
						if _, err := c.CreateWatch(req, s.sub, s.ch); err != nil {
							b.Fatal(err)
						}
						ss = append(ss, s)
					}
				}
				ack()
				gens := [2]map[resource.Type][]types.Resource{}
				for g := range gens {
					gens[g] = map[resource.Type][]types.Resource{resource.ListenerType: benchListeners(listeners, g+1)}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if err := c.SetResources(ctx, node, gens[i%2]); err != nil {
						b.Fatal(err)
					}
					ack()
				}
			})
		}
	}
}
