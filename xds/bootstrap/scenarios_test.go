package bootstrap_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/gatehouse-proxy/gatehouse/xds/bootstrap"
)

func TestScenarioBootstrapShape(t *testing.T) {
	const san = "spiffe://gatehouse.local/gatehouse/xds"
	tls := &bootstrap.TLS{CertFile: "/c/tls.crt", KeyFile: "/c/tls.key", CAFile: "/c/ca.crt", ServerSAN: san}
	tests := []struct {
		name      string
		opts      bootstrap.Options
		wantAdmin string
		wantPort  uint32
		wantCPs   []string
		wantTLS   bool
	}{
		{name: "defaults", opts: bootstrap.Options{NodeID: "edge", ControlPlane: []string{"gatehouse:18000"}},
			wantAdmin: "127.0.0.1", wantPort: 9901, wantCPs: []string{"gatehouse"}},
		{name: "ipv6 control plane and admin", opts: bootstrap.Options{NodeID: "orders", ControlPlane: []string{"[::1]:18000", "10.1.2.3:18000"}, AdminAddress: "[::1]:9902"},
			wantAdmin: "::1", wantPort: 9902, wantCPs: []string{"::1", "10.1.2.3"}},
		{name: "mTLS", opts: bootstrap.Options{NodeID: "inventory", Cluster: "sidecar", ControlPlane: []string{"gatehouse:18000"}, TLS: tls},
			wantAdmin: "127.0.0.1", wantPort: 9901, wantCPs: []string{"gatehouse"}, wantTLS: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := bootstrap.Render(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			bs, err := bootstrap.Parse(out)
			if err != nil {
				t.Fatalf("rendered bootstrap does not parse back: %v\n%s", err, out)
			}
			if bs.GetNode().GetId() != tt.opts.NodeID {
				t.Errorf("node id %q", bs.GetNode().GetId())
			}
			a := bs.GetAdmin().GetAddress().GetSocketAddress()
			if a.GetAddress() != tt.wantAdmin || a.GetPortValue() != tt.wantPort {
				t.Errorf("admin %v, want %s:%d", a, tt.wantAdmin, tt.wantPort)
			}
			if ip, err := netip.ParseAddr(a.GetAddress()); err != nil || !ip.IsLoopback() {
				t.Errorf("admin %q is not on loopback", a.GetAddress())
			}
			dr := bs.GetDynamicResources()
			ads := dr.GetAdsConfig()
			if ads.GetApiType() != corev3.ApiConfigSource_GRPC || ads.GetTransportApiVersion() != corev3.ApiVersion_V3 {
				t.Errorf("ads_config = %v", ads)
			}
			if gs := ads.GetGrpcServices(); len(gs) != 1 || gs[0].GetEnvoyGrpc().GetClusterName() != bootstrap.ControlPlaneCluster {
				t.Errorf("ads grpc services %v", gs)
			}
			for what, cs := range map[string]*corev3.ConfigSource{"lds": dr.GetLdsConfig(), "cds": dr.GetCdsConfig()} {
				if cs.GetAds() == nil || cs.GetResourceApiVersion() != corev3.ApiVersion_V3 {
					t.Errorf("%s_config = %v, want ads with resource_api_version V3", what, cs)
				}
			}
			cs := bs.GetStaticResources().GetClusters()
			if len(cs) != 1 || cs[0].GetName() != bootstrap.ControlPlaneCluster {
				t.Fatalf("static clusters %v", cs)
			}
			var got []string
			for _, le := range cs[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints() {
				got = append(got, le.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
			}
			if strings.Join(got, ",") != strings.Join(tt.wantCPs, ",") {
				t.Errorf("control plane endpoints %v, want %v", got, tt.wantCPs)
			}
			ts := cs[0].GetTransportSocket()
			if (ts != nil) != tt.wantTLS {
				t.Fatalf("transport socket %v, want TLS=%v", ts, tt.wantTLS)
			}
			if ts == nil {
				return
			}
			ut := &tlsv3.UpstreamTlsContext{}
			if err := ts.GetTypedConfig().UnmarshalTo(ut); err != nil {
				t.Fatal(err)
			}
			ctx := ut.GetCommonTlsContext()
			ms := ctx.GetValidationContext().GetMatchTypedSubjectAltNames()
			if len(ms) != 1 || ms[0].GetSanType() != tlsv3.SubjectAltNameMatcher_URI || ms[0].GetMatcher().GetExact() != san {
				t.Errorf("server SAN matchers %v, want URI exact %s", ms, san)
			}
			if ctx.GetValidationContext().GetTrustedCa().GetFilename() != "/c/ca.crt" {
				t.Errorf("trusted CA %v", ctx.GetValidationContext().GetTrustedCa())
			}
			if c := ctx.GetTlsCertificates(); len(c) != 1 || c[0].GetCertificateChain().GetFilename() != "/c/tls.crt" || c[0].GetPrivateKey().GetFilename() != "/c/tls.key" {
				t.Errorf("client certificate %v", c)
			}
			if alpn := ctx.GetAlpnProtocols(); len(alpn) != 1 || alpn[0] != "h2" {
				t.Errorf("ALPN %v, want h2", alpn)
			}
			// Gatehouse's xDS server accepts TLS 1.3 only, and Envoy's client
			// maximum defaults to 1.2: both bounds must say 1.3.
			if p := ctx.GetTlsParams(); p.GetTlsMinimumProtocolVersion() != tlsv3.TlsParameters_TLSv1_3 || p.GetTlsMaximumProtocolVersion() != tlsv3.TlsParameters_TLSv1_3 {
				t.Errorf("tls_params %v, want TLS 1.3 only", p)
			}
		})
	}
}

// TestScenarioBootstrapRejectsWhatEnvoyRejects: an admin address Envoy
// cannot bind must be refused at render time, not at proxy start.
func TestScenarioBootstrapRejectsWhatEnvoyRejects(t *testing.T) {
	tests := []struct {
		name string
		opts bootstrap.Options
	}{
		{"admin without host", bootstrap.Options{NodeID: "edge", ControlPlane: []string{"cp:1"}, AdminAddress: ":9901"}},
		{"admin port out of range", bootstrap.Options{NodeID: "edge", ControlPlane: []string{"cp:1"}, AdminAddress: "127.0.0.1:70000"}},
		{"control plane without host", bootstrap.Options{NodeID: "edge", ControlPlane: []string{":18000"}}},
		{"empty control plane entry", bootstrap.Options{NodeID: "edge", ControlPlane: []string{"cp:1", ""}}},
		// Envoy binds the admin listener to an IP: "address … Listeners will
		// bind to the address" (config.core.v3.SocketAddress); a DNS name
		// fails at startup with "malformed IP address: localhost".
		{"admin host name", bootstrap.Options{NodeID: "edge", ControlPlane: []string{"cp:1"}, AdminAddress: "localhost:9901"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if out, err := bootstrap.Render(tt.opts); err == nil {
				t.Errorf("accepted:\n%s", out)
			}
		})
	}
}

func TestScenarioGRPCBootstrap(t *testing.T) {
	tests := []struct {
		name     string
		opts     bootstrap.GRPCOptions
		wantCred string
		wantCP   bool
		wantErr  bool
	}{
		{name: "insecure without files", opts: bootstrap.GRPCOptions{NodeID: "web", ControlPlane: "gatehouse:18000", Insecure: true}, wantCred: "insecure"},
		{name: "insecure with files keeps provider", opts: bootstrap.GRPCOptions{NodeID: "web", ControlPlane: "gatehouse:18000", Insecure: true, CertFile: "c", KeyFile: "k", CAFile: "ca"}, wantCred: "insecure", wantCP: true},
		{name: "tls", opts: bootstrap.GRPCOptions{NodeID: "web", ControlPlane: "gatehouse:18000", CertFile: "c", KeyFile: "k", CAFile: "ca"}, wantCred: "tls", wantCP: true},
		{name: "tls without files", opts: bootstrap.GRPCOptions{NodeID: "web", ControlPlane: "gatehouse:18000"}, wantErr: true},
		{name: "bad fallback", opts: bootstrap.GRPCOptions{NodeID: "web", ControlPlane: "gatehouse:18000", Fallbacks: []string{"nope"}, Insecure: true}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := bootstrap.RenderGRPC(tt.opts)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("accepted: %s", out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				XDSServers []struct {
					ServerURI      string   `json:"server_uri"`
					ServerFeatures []string `json:"server_features"`
					ChannelCreds   []struct {
						Type string `json:"type"`
					} `json:"channel_creds"`
				} `json:"xds_servers"`
				Node struct {
					ID string `json:"id"`
				} `json:"node"`
				CertificateProviders map[string]json.RawMessage `json:"certificate_providers"`
			}
			if err := json.Unmarshal(out, &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Node.ID != tt.opts.NodeID || len(doc.XDSServers) != 1+len(tt.opts.Fallbacks) {
				t.Fatalf("doc = %+v", doc)
			}
			s := doc.XDSServers[0]
			if s.ServerURI != tt.opts.ControlPlane || len(s.ServerFeatures) != 1 || s.ServerFeatures[0] != "xds_v3" {
				t.Errorf("server %+v", s)
			}
			if len(s.ChannelCreds) != 1 || s.ChannelCreds[0].Type != tt.wantCred {
				t.Errorf("channel_creds %+v, want %s", s.ChannelCreds, tt.wantCred)
			}
			if _, ok := doc.CertificateProviders["gatehouse"]; ok != tt.wantCP {
				t.Errorf("certificate provider gatehouse present = %v, want %v", ok, tt.wantCP)
			}
		})
	}
}
