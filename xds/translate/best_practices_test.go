package translate_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/gatehouse-proxy/gatehouse/xds/translate"
	"github.com/gatehouse-proxy/gatehouse/xds/validate"
)

// The numbers of Envoy's "Configuring Envoy as an edge proxy" best
// practices (configuration/best_practices/edge).
const (
	bpBufferLimit       = 32 << 10
	bpMaxStreams        = 100
	bpStreamWindow      = 64 << 10
	bpConnectionWindow  = 1 << 20
	envoyDefaultBuffer  = 1 << 20
	bpConnectionIdle    = time.Hour
	bpStreamIdle        = 5 * time.Minute
	bpRequestHeadersMax = 10 * time.Second
)

// TestBestPracticeHTTPSettings checks each listener's connection manager
// against the edge best practices: the edge gets all of them, a sidecar's
// inbound listener the ones that do not assume an untrusted internet
// (Envoy's defaults suit a mesh), the loopback outbound listener none, and
// a proxyless gRPC client's api_listener none at all (grpc-go reads few
// HCM fields and must get the shape it was proven with).
func TestBestPracticeHTTPSettings(t *testing.T) {
	_, res := scenario(t)
	type want struct {
		hardened    bool // use_remote_address, timeouts, underscores handled
		underscores corev3.HttpProtocolOptions_HeadersWithUnderscoresAction
		h2Limits    bool   // edge HTTP/2 stream and window limits
		bufferLimit uint32 // listener per_connection_buffer_limit_bytes, 0 = unset
	}
	tests := []struct {
		node, listener string
		want           want
	}{
		{"edge", translate.EdgeListenerName, want{true, corev3.HttpProtocolOptions_REJECT_REQUEST, true, bpBufferLimit}},
		{"api", translate.InboundListenerName, want{true, corev3.HttpProtocolOptions_DROP_HEADER, false, envoyDefaultBuffer}},
		{"apiv1-proxy", translate.InboundListenerName, want{true, corev3.HttpProtocolOptions_DROP_HEADER, false, envoyDefaultBuffer}},
		{"api", translate.OutboundListenerName("apiv1"), want{}},
		{"grpc-web", "apiv1", want{}},
	}
	for _, tt := range tests {
		t.Run(tt.node+"/"+tt.listener, func(t *testing.T) {
			l := find[*listenerv3.Listener](t, node(t, res, tt.node).Listeners, tt.listener)
			h := hcmOf(t, l)
			if got := l.GetPerConnectionBufferLimitBytes(); (got == nil && tt.want.bufferLimit != 0) || got.GetValue() != tt.want.bufferLimit {
				t.Errorf("per_connection_buffer_limit_bytes = %v, want %d", got, tt.want.bufferLimit)
			}
			// Whole-request timeouts stay off everywhere (they would cut
			// gRPC streams), nothing in front is trusted for XFF, and the
			// header size limit is Envoy's default (60 KiB).
			if h.GetRequestTimeout() != nil || h.GetXffNumTrustedHops() != 0 || h.GetMaxRequestHeadersKb() != nil {
				t.Errorf("request_timeout=%v xff_num_trusted_hops=%d max_request_headers_kb=%v", h.GetRequestTimeout(), h.GetXffNumTrustedHops(), h.GetMaxRequestHeadersKb())
			}
			if !tt.want.hardened {
				if h.GetUseRemoteAddress() != nil || h.GetCommonHttpProtocolOptions() != nil || h.GetHttp2ProtocolOptions() != nil ||
					h.GetStreamIdleTimeout() != nil || h.GetRequestHeadersTimeout() != nil || l.GetPerConnectionBufferLimitBytes() != nil {
					t.Errorf("unhardened listener carries hardening: %v", h)
				}
				return
			}
			if !h.GetUseRemoteAddress().GetValue() {
				t.Error("use_remote_address off: X-Forwarded-For would name the client")
			}
			cpo := h.GetCommonHttpProtocolOptions()
			if got := cpo.GetHeadersWithUnderscoresAction(); got != tt.want.underscores {
				t.Errorf("headers_with_underscores_action = %v, want %v", got, tt.want.underscores)
			}
			if got := cpo.GetIdleTimeout().AsDuration(); got != bpConnectionIdle {
				t.Errorf("idle_timeout = %s, want %s", got, bpConnectionIdle)
			}
			if got := h.GetStreamIdleTimeout().AsDuration(); got != bpStreamIdle {
				t.Errorf("stream_idle_timeout = %s, want %s", got, bpStreamIdle)
			}
			if got := h.GetRequestHeadersTimeout().AsDuration(); got != bpRequestHeadersMax {
				t.Errorf("request_headers_timeout = %s, want %s", got, bpRequestHeadersMax)
			}
			h2 := h.GetHttp2ProtocolOptions()
			if !tt.want.h2Limits {
				if h2 != nil {
					t.Errorf("http2_protocol_options = %v, want Envoy's defaults", h2)
				}
				return
			}
			if h2.GetMaxConcurrentStreams().GetValue() != bpMaxStreams || h2.GetInitialStreamWindowSize().GetValue() != bpStreamWindow ||
				h2.GetInitialConnectionWindowSize().GetValue() != bpConnectionWindow {
				t.Errorf("http2_protocol_options = %v, want 100 streams, 64 KiB / 1 MiB windows", h2)
			}
		})
	}
}

// TestListenerBufferLimitCoversRequestBody: per_connection_buffer_limit_bytes
// is also the most a filter may buffer of one request body. ext_authz with
// allow_partial buffers up to max_bytes within it (without allow_partial it
// raises the stream's limit itself), so a listener limit below max_bytes
// would answer 413 where the config promises a truncated check.
func TestListenerBufferLimitCoversRequestBody(t *testing.T) {
	tests := []struct {
		body                string
		maxBytes            uint32
		wantEdge, wantInbnd uint32
	}{
		{"", 0, bpBufferLimit, envoyDefaultBuffer},
		{"{max_bytes: 8192, allow_partial: true}", 8192, bpBufferLimit, envoyDefaultBuffer},
		{"{max_bytes: 262144, allow_partial: true}", 262144, 262144, envoyDefaultBuffer},
		{"{max_bytes: 262144, allow_partial: false}", 262144, 262144, envoyDefaultBuffer},
		{"{max_bytes: 4194304, allow_partial: true}", 4194304, 4194304, 4194304},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.maxBytes), func(t *testing.T) {
			authz := `{address: "10.0.0.9:9001"}`
			if tt.body != "" {
				authz = `{address: "10.0.0.9:9001", with_request_body: ` + tt.body + `}`
			}
			m := parseMesh(t, `mesh:
  authz: `+authz+`
  services:
    - {name: web, endpoints: ["10.0.0.1:15443"], mtls: true}
  sidecars:
    - {service: web}
  edges:
    - name: edge
      tls: {dns_names: [example.com]}
      routes: [{service: web}]
`)
			res, err := translate.Translate(m)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				node, listener string
				want           uint32
			}{{"edge", translate.EdgeListenerName, tt.wantEdge}, {"web", translate.InboundListenerName, tt.wantInbnd}} {
				nr := node(t, res, c.node)
				l := find[*listenerv3.Listener](t, nr.Listeners, c.listener)
				if got := l.GetPerConnectionBufferLimitBytes().GetValue(); got != c.want {
					t.Errorf("%s: per_connection_buffer_limit_bytes = %d, want %d", c.node, got, c.want)
				}
				ea := filterConfig[*extauthzv3.ExtAuthz](t, hcmOf(t, l), translate.ExtAuthzFilterName)
				if got := ea.GetWithRequestBody().GetMaxRequestBytes(); got != tt.maxBytes || got > l.GetPerConnectionBufferLimitBytes().GetValue() {
					t.Errorf("%s: max_request_bytes = %d, want %d within the listener limit", c.node, got, tt.maxBytes)
				}
				if err := validate.Validate(nr); err != nil {
					t.Errorf("%s: %v", c.node, err)
				}
			}
		})
	}
}

// TestBestPracticeClusters: the edge's clusters towards services get the
// 32 KiB buffer limit and, over HTTP/2, the 64 KiB / 1 MiB windows; a
// sidecar's clusters, the shared ext_authz cluster and gRPC clients'
// clusters keep Envoy's (and grpc-go's) defaults. Circuit breakers are
// Envoy's defaults everywhere (1024 connections, pending and requests).
func TestBestPracticeClusters(t *testing.T) {
	_, res := scenario(t)
	tests := []struct {
		node, cluster string
		wantBuffer    uint32 // 0 = unset
		wantH2        bool   // explicit HTTP/2 upstream
		wantWindows   bool
	}{
		{"edge", translate.ServiceClusterName("web"), bpBufferLimit, false, false},
		{"edge", translate.ServiceClusterName("apiv1"), bpBufferLimit, true, true},
		{"edge", translate.AuthzClusterName, 0, true, false},
		{"api", translate.ServiceClusterName("apiv1"), 0, true, false},
		{"api", translate.LocalClusterName("api"), 0, false, false},
		{"api", translate.AuthzClusterName, 0, true, false},
		{"grpc-web", translate.ServiceClusterName("apiv1"), 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.node+"/"+tt.cluster, func(t *testing.T) {
			c := find[*clusterv3.Cluster](t, node(t, res, tt.node).Clusters, tt.cluster)
			if got := c.GetConnectTimeout().AsDuration(); got != 5*time.Second {
				t.Errorf("connect_timeout = %s, want 5s", got)
			}
			if got := c.GetPerConnectionBufferLimitBytes(); (got == nil) != (tt.wantBuffer == 0) || got.GetValue() != tt.wantBuffer {
				t.Errorf("per_connection_buffer_limit_bytes = %v, want %d", got, tt.wantBuffer)
			}
			if c.GetCircuitBreakers() != nil {
				t.Errorf("circuit_breakers = %v, want Envoy's defaults", c.GetCircuitBreakers())
			}
			opts := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
			if (opts != nil) != tt.wantH2 {
				t.Fatalf("HttpProtocolOptions = %v, want HTTP/2: %v", opts, tt.wantH2)
			}
			if opts == nil {
				return
			}
			h2 := unpack[*httpv3.HttpProtocolOptions](t, opts).GetExplicitHttpConfig().GetHttp2ProtocolOptions()
			if h2 == nil {
				t.Fatal("not explicit HTTP/2")
			}
			hasWindows := h2.GetInitialStreamWindowSize() != nil || h2.GetInitialConnectionWindowSize() != nil
			if hasWindows != tt.wantWindows {
				t.Errorf("http2 windows = %v, want set: %v", h2, tt.wantWindows)
			}
			if tt.wantWindows && (h2.GetInitialStreamWindowSize().GetValue() != bpStreamWindow || h2.GetInitialConnectionWindowSize().GetValue() != bpConnectionWindow) {
				t.Errorf("http2 windows = %v, want 64 KiB / 1 MiB", h2)
			}
		})
	}
}

// TestTLSVersionsAndALPN: the public edge listener takes TLS 1.2 and up;
// every hop between Gatehouse's own proxies is TLS 1.3 only, with the
// maximum set too (Envoy's client maximum defaults to 1.2, so a 1.3
// minimum alone would never connect). gRPC clients' TLS has no tls_params:
// grpc-go takes the shape it was proven with.
func TestTLSVersionsAndALPN(t *testing.T) {
	_, res := scenario(t)
	tls12, tls13, auto := tlsv3.TlsParameters_TLSv1_2, tlsv3.TlsParameters_TLSv1_3, tlsv3.TlsParameters_TLS_AUTO
	tests := []struct {
		node, name         string
		downstream         bool
		wantMin, wantMax   tlsv3.TlsParameters_TlsProtocol
		wantALPN           []string
		wantRequireClient  bool
		wantNoTLSParamsSet bool
	}{
		{"edge", translate.EdgeListenerName, true, tls12, auto, []string{"h2", "http/1.1"}, false, false},
		{"api", translate.InboundListenerName, true, tls13, tls13, []string{"h2", "http/1.1"}, true, false},
		{"apiv1-proxy", translate.InboundListenerName, true, tls13, tls13, []string{"h2", "http/1.1"}, true, false},
		{"edge", translate.ServiceClusterName("api"), false, tls13, tls13, []string{"http/1.1"}, false, false},
		{"edge", translate.ServiceClusterName("apiv1"), false, tls13, tls13, []string{"h2"}, false, false},
		{"api", translate.ServiceClusterName("apiv1"), false, tls13, tls13, []string{"h2"}, false, false},
		{"grpc-web", translate.ServiceClusterName("apiv1"), false, auto, auto, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.node+"/"+tt.name, func(t *testing.T) {
			nr := node(t, res, tt.node)
			var ctc *tlsv3.CommonTlsContext
			if tt.downstream {
				ts := downstreamTLS(t, find[*listenerv3.Listener](t, nr.Listeners, tt.name))
				if ts.GetRequireClientCertificate().GetValue() != tt.wantRequireClient {
					t.Errorf("require_client_certificate = %v, want %v", ts.GetRequireClientCertificate(), tt.wantRequireClient)
				}
				ctc = ts.GetCommonTlsContext()
			} else {
				ctc = upstreamTLS(t, find[*clusterv3.Cluster](t, nr.Clusters, tt.name)).GetCommonTlsContext()
			}
			p := ctc.GetTlsParams()
			if tt.wantNoTLSParamsSet != (p == nil) {
				t.Fatalf("tls_params = %v", p)
			}
			if p.GetTlsMinimumProtocolVersion() != tt.wantMin || p.GetTlsMaximumProtocolVersion() != tt.wantMax {
				t.Errorf("TLS versions %v..%v, want %v..%v", p.GetTlsMinimumProtocolVersion(), p.GetTlsMaximumProtocolVersion(), tt.wantMin, tt.wantMax)
			}
			if !slices.Equal(ctc.GetAlpnProtocols(), tt.wantALPN) {
				t.Errorf("ALPN = %v, want %v", ctc.GetAlpnProtocols(), tt.wantALPN)
			}
		})
	}
}
