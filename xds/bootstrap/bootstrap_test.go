package bootstrap_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/xds/bootstrap"
)

var update = flag.Bool("update", false, "rewrite envoy/*.yaml from the example config")

const envoyDir = "../../envoy"

// shipped returns the bootstrap files envoy/ must hold for the example
// config: <role>.yaml when the proxy is named like its role, else
// <role>-<name>.yaml. The control plane is "gatehouse" (the compose service
// name) on listen.xds's port.
func shipped(t *testing.T) map[string][]byte {
	t.Helper()
	cfg, err := config.Load[config.Config]("../../examples/gatehouse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(cfg.Listen.XDS)
	if err != nil {
		t.Fatal(err)
	}
	cp := []string{net.JoinHostPort("gatehouse", port)}
	out := map[string][]byte{}
	add := func(role, name string) {
		file := role + "-" + name + ".yaml"
		if role == name {
			file = role + ".yaml"
		}
		b, err := bootstrap.Render(bootstrap.Options{NodeID: name, Cluster: role, ControlPlane: cp})
		if err != nil {
			t.Fatal(err)
		}
		out[file] = b
	}
	for _, e := range cfg.Mesh.Edges {
		add(config.RoleEdge, e.Name)
	}
	for _, s := range cfg.Mesh.Sidecars {
		add(config.RoleSidecar, s.Name)
	}
	return out
}

// TestShippedBootstraps keeps envoy/*.yaml equal to what Render makes of
// the example config. Regenerate with:
//
//	go test ./xds/bootstrap -run TestShippedBootstraps -update
func TestShippedBootstraps(t *testing.T) {
	want := shipped(t)
	if *update {
		for file, b := range want {
			if err := os.WriteFile(filepath.Join(envoyDir, file), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	have, err := filepath.Glob(filepath.Join(envoyDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var haveNames []string
	for _, p := range have {
		haveNames = append(haveNames, filepath.Base(p))
	}
	wantNames := slices.Sorted(func(yield func(string) bool) {
		for f := range want {
			if !yield(f) {
				return
			}
		}
	})
	if !slices.Equal(haveNames, wantNames) {
		t.Errorf("envoy/ holds %v, want %v (run with -update)", haveNames, wantNames)
	}
	for file, b := range want {
		got, err := os.ReadFile(filepath.Join(envoyDir, file))
		if err != nil {
			t.Errorf("%v (run with -update)", err)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("envoy/%s differs from Render's output (run with -update)", file)
		}
	}
	if !slices.Contains(wantNames, "edge.yaml") || !slices.Contains(wantNames, "sidecar-orders.yaml") || !slices.Contains(wantNames, "sidecar-inventory.yaml") {
		t.Errorf("expected edge.yaml, sidecar-orders.yaml, sidecar-inventory.yaml; got %v", wantNames)
	}
}

// parseStrict is bootstrap.Parse for tests.
// renderWant renders opts: with wantErr set the error must contain it (nil
// is returned), else the bootstrap must render and parse strictly.
func renderWant(t *testing.T, opts bootstrap.Options, wantErr string) *bootstrapv3.Bootstrap {
	t.Helper()
	out, err := bootstrap.Render(opts)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("err = %v, want %q", err, wantErr)
		}
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return parseStrict(t, out)
}

func parseStrict(t *testing.T, data []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	bs, err := bootstrap.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

func TestShippedBootstrapsParseStrictly(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(envoyDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no shipped bootstraps: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			bs := parseStrict(t, data)
			wantNode := strings.TrimSuffix(filepath.Base(f), ".yaml")
			wantNode = wantNode[strings.LastIndexByte(wantNode, '-')+1:]
			if bs.GetNode().GetId() != wantNode {
				t.Errorf("node id %q, want %q", bs.GetNode().GetId(), wantNode)
			}
			checkShape(t, bs)
		})
	}
}

func checkShape(t *testing.T, bs *bootstrapv3.Bootstrap) {
	t.Helper()
	dr := bs.GetDynamicResources()
	ads := dr.GetAdsConfig()
	if ads.GetApiType().String() != "GRPC" || ads.GetTransportApiVersion().String() != "V3" ||
		ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != bootstrap.ControlPlaneCluster {
		t.Errorf("ads_config = %v", ads)
	}
	if dr.GetLdsConfig().GetAds() == nil || dr.GetCdsConfig().GetAds() == nil ||
		dr.GetLdsConfig().GetResourceApiVersion().String() != "V3" || dr.GetCdsConfig().GetResourceApiVersion().String() != "V3" {
		t.Errorf("lds/cds must come over ADS v3: %v", dr)
	}
	cl := bs.GetStaticResources().GetClusters()
	if len(cl) != 1 || cl[0].GetName() != bootstrap.ControlPlaneCluster || cl[0].GetType().String() != "STRICT_DNS" {
		t.Fatalf("static clusters = %v", cl)
	}
	po := &httpv3.HttpProtocolOptions{}
	if err := cl[0].GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(po); err != nil {
		t.Fatal(err)
	}
	if po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("control plane cluster is not HTTP/2")
	}
	if a := bs.GetAdmin().GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.1" || a.GetPortValue() != 9901 {
		t.Errorf("admin = %v", a)
	}
	checkOverloadDefaults(t, bs)
}

func TestRender(t *testing.T) {
	tests := []struct {
		name    string
		opts    bootstrap.Options
		wantErr string
		check   func(t *testing.T, bs *bootstrapv3.Bootstrap)
	}{
		{name: "no node id", opts: bootstrap.Options{ControlPlane: []string{"cp:18000"}}, wantErr: "NodeID is required"},
		{name: "no control plane", opts: bootstrap.Options{NodeID: "edge"}, wantErr: "at least one control plane"},
		{name: "bad control plane", opts: bootstrap.Options{NodeID: "edge", ControlPlane: []string{"cp"}}, wantErr: "control plane [0]"},
		{name: "bad admin", opts: bootstrap.Options{NodeID: "edge", ControlPlane: []string{"cp:1"}, AdminAddress: "x:0"}, wantErr: "admin address"},
		{name: "partial TLS", opts: bootstrap.Options{NodeID: "edge", ControlPlane: []string{"cp:1"}, TLS: &bootstrap.TLS{CertFile: "c"}}, wantErr: "TLS needs"},
		{
			name: "several control planes and mTLS",
			opts: bootstrap.Options{NodeID: "orders", ControlPlane: []string{"10.0.0.1:18000", "cp.example:18000"},
				TLS: &bootstrap.TLS{CertFile: "/certs/tls.crt", KeyFile: "/certs/tls.key", CAFile: "/certs/ca.crt", ServerSAN: "spiffe://gatehouse.local/control-plane/gatehouse"}},
			check: func(t *testing.T, bs *bootstrapv3.Bootstrap) {
				checkShape(t, bs)
				c := bs.GetStaticResources().GetClusters()[0]
				if n := len(c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()); n != 2 {
					t.Errorf("%d control plane endpoints, want 2", n)
				}
				if c.GetTransportSocket().GetName() != "envoy.transport_sockets.tls" {
					t.Errorf("no TLS transport socket: %v", c.GetTransportSocket())
				}
				if bs.GetNode().GetCluster() != "gatehouse" {
					t.Errorf("default node cluster = %q", bs.GetNode().GetCluster())
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := renderWant(t, tt.opts, tt.wantErr)
			if bs == nil {
				return
			}
			tt.check(t, bs)
		})
	}
}

func TestRenderGRPC(t *testing.T) {
	out, err := bootstrap.RenderGRPC(bootstrap.GRPCOptions{NodeID: "web", ControlPlane: "gatehouse:18000", CertFile: "c", KeyFile: "k", CAFile: "a"})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XDSServers []struct {
			ServerURI    string `json:"server_uri"`
			ChannelCreds []struct {
				Type string `json:"type"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
		Node struct {
			ID string `json:"id"`
		} `json:"node"`
		CertificateProviders map[string]struct {
			PluginName string `json:"plugin_name"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Node.ID != "web" || doc.XDSServers[0].ServerURI != "gatehouse:18000" || doc.XDSServers[0].ChannelCreds[0].Type != "tls" {
		t.Errorf("bootstrap = %s", out)
	}
	if doc.CertificateProviders["gatehouse"].PluginName != "file_watcher" {
		t.Errorf("certificate provider = %+v", doc.CertificateProviders)
	}
	if _, err := bootstrap.RenderGRPC(bootstrap.GRPCOptions{NodeID: "web", ControlPlane: "gatehouse:18000"}); err == nil {
		t.Error("TLS without files was accepted")
	}
}

// Replicas are listed in priority order, each with the same credentials,
// and every address is checked.
func TestRenderGRPCReplicas(t *testing.T) {
	tests := []struct {
		name      string
		fallbacks []string
		want      []string
		wantErr   bool
	}{
		{"one", nil, []string{"xds-0:18000"}, false},
		{"two", []string{"xds-1:18000"}, []string{"xds-0:18000", "xds-1:18000"}, false},
		{"bad fallback", []string{"xds-1"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := bootstrap.RenderGRPC(bootstrap.GRPCOptions{NodeID: "web", ControlPlane: "xds-0:18000", Fallbacks: tc.fallbacks, Insecure: true})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				return
			}
			var doc struct {
				XDSServers []struct {
					ServerURI    string            `json:"server_uri"`
					ChannelCreds []json.RawMessage `json:"channel_creds"`
				} `json:"xds_servers"`
			}
			if err := json.Unmarshal(out, &doc); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range doc.XDSServers {
				got = append(got, s.ServerURI)
				if len(s.ChannelCreds) != 1 {
					t.Errorf("server %s creds %s", s.ServerURI, s.ChannelCreds)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("xds_servers %v, want %v", got, tc.want)
			}
		})
	}
}
