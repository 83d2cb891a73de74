package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/cache/cachetest"
	"github.com/gatehouse-proxy/gatehouse/xds/server"
)

func TestStatusHandler(t *testing.T) {
	h := newHarness(t)
	if err := h.cache.SetResources(context.Background(), "n1", cachetest.Set(nil, "10.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, target string
		code           int
		body           string
	}{
		{http.MethodGet, "/", http.StatusOK, `"node_id": "n1"`},
		{http.MethodGet, "/?node=n1", http.StatusOK, `"current": "` + h.cache.Version("n1", resource.ClusterType)},
		{http.MethodGet, "/?node=nobody", http.StatusNotFound, "unknown node"},
		{http.MethodPost, "/", http.StatusMethodNotAllowed, "method not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.target, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.srv.StatusHandler().ServeHTTP(rec, httptest.NewRequest(tt.method, tt.target, nil))
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.body) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body.String(), tt.code, tt.body)
			}
		})
	}
}

func TestMetricsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := cache.New(nil)
	if _, err := server.New(c, server.WithRegisterer(reg)); err != nil {
		t.Fatal(err)
	}
	if _, err := server.New(c, server.WithRegisterer(reg)); err == nil {
		t.Fatal("second server registered the same metrics")
	}
}

// The receive limit bounds what one client can make the server buffer.
func TestMaxRecvMsgSize(t *testing.T) {
	h := newHarness(t) // default limit, 4 MiB
	client := discovery.NewAggregatedDiscoveryServiceClient(h.conn(t))
	tests := []struct {
		name string
		size int
		want codes.Code
	}{
		{"small request served", 1 << 10, codes.OK},
		{"oversized request refused", 5 << 20, codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st, err := client.StreamAggregatedResources(ctx)
			if err != nil {
				t.Fatal(err)
			}
			req := sotwReq(&corev3.Node{Id: "big"}, resource.ClusterType)
			req.ErrorDetail = &statuspb.Status{Message: strings.Repeat("x", tt.size)}
			if err := st.Send(req); err != nil {
				t.Fatal(err)
			}
			if tt.want == codes.OK {
				// No snapshot for this node: the watch stays open. Show the
				// stream is alive by closing our side cleanly.
				if err := st.CloseSend(); err != nil {
					t.Fatal(err)
				}
				if _, err := st.Recv(); !errors.Is(err, io.EOF) {
					t.Fatalf("stream ended with %v", err)
				}
				return
			}
			if _, err := st.Recv(); status.Code(err) != tt.want {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}
