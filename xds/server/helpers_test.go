package server_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

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

// quiet is how long a test listens to show that nothing more is sent. It
// bounds a negative check; nothing asserts speed.
const quiet = 300 * time.Millisecond

type harness struct {
	cache *cache.Cache
	srv   *server.Server
	reg   *prometheus.Registry
	addr  string
}

// serve runs s on a loopback listener until the test ends and returns its
// address; Serve must end cleanly when its context does.
func serve(tb testing.TB, s *server.Server) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, lis) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c := cache.New(log)
	reg := prometheus.NewRegistry()
	s, err := server.New(c, server.WithRegisterer(reg), server.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	return &harness{cache: c, srv: s, reg: reg, addr: serve(t, s)}
}

// seededHarness is newHarness with set already in the cache for nodeID.
func seededHarness(t *testing.T, nodeID string, set map[resource.Type][]types.Resource) *harness {
	t.Helper()
	h := newHarness(t)
	if err := h.cache.SetResources(context.Background(), nodeID, set); err != nil {
		t.Fatal(err)
	}
	return h
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func (h *harness) conn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func (h *harness) counter(t *testing.T, name, typ string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func (h *harness) nodeStatus(t *testing.T, id string) cache.NodeStatus {
	t.Helper()
	for _, n := range h.cache.Status() {
		if n.NodeID == id {
			return n
		}
	}
	t.Fatalf("node %q not in status", id)
	return cache.NodeStatus{}
}

func certs(t testing.TB, serial int64) *cachetest.Certs {
	t.Helper()
	c, err := cachetest.NewCerts(serial)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// openStream opens an ADS stream of either protocol with open (a client's
// StreamAggregatedResources or DeltaAggregatedResources) on a context of
// its own. It returns the responses (see pump), a send that fails the test
// on error, and a cancel that ends the stream; the stream also ends with
// the test.
func openStream[Req, Resp any](t *testing.T, open func(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[Req, Resp], error)) (<-chan *Resp, func(*Req), context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(req *Req) {
		t.Helper()
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	return pump(st.Recv), send, cancel
}

// pump turns a stream's Recv into a channel so tests can wait with a
// deadline; the channel closes when the stream ends.
func pump[T any](recv func() (T, error)) <-chan T {
	ch := make(chan T, 16)
	go func() {
		defer close(ch)
		for {
			m, err := recv()
			if err != nil {
				return
			}
			ch <- m
		}
	}()
	return ch
}

// next waits for one message.
func next[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("stream ended")
		}
		return m
	case <-ctx.Done():
		t.Fatal("no response before deadline")
	}
	var zero T
	return zero
}

// none asserts that nothing arrives for the quiet period.
func none[T any](t *testing.T, ch <-chan T, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), quiet)
	defer cancel()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("%s: unexpected response %.300v", why, m)
		}
		t.Fatalf("%s: stream ended", why)
	case <-ctx.Done():
	}
}

func sotwReq(node *corev3.Node, typ string, names ...string) *discovery.DiscoveryRequest {
	return &discovery.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: names}
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// ack answers resp as accepted.
func ack(req *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) *discovery.DiscoveryRequest {
	return &discovery.DiscoveryRequest{
		TypeUrl: req.GetTypeUrl(), ResourceNames: req.GetResourceNames(),
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
	}
}
