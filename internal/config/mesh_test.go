package config

import (
	"strings"
	"testing"
	"time"
)

func TestExampleLoads(t *testing.T) {
	cfg, err := Load[Config]("../../examples/gatehouse.yaml")
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	m := cfg.Mesh
	if m.TrustDomain != "gatehouse.local" {
		t.Errorf("trust_domain = %q", m.TrustDomain)
	}
	if got := m.Sidecars[0].Name; got != "orders" {
		t.Errorf("sidecar name default = %q, want the service name", got)
	}
	if got := m.Sidecars[0].Listen; got != "0.0.0.0:15443" {
		t.Errorf("sidecar listen default = %q, want 0.0.0.0 and the endpoint's port", got)
	}
	if got := m.Edges[0].TLS.Cert; got != "edge" {
		t.Errorf("edge cert default = %q", got)
	}
	if !Enabled(m.Edges[0].NormalizePath) || !Enabled(m.Edges[0].MergeSlashes) {
		t.Errorf("normalize_path/merge_slashes must default to true")
	}
	if Enabled(m.Edges[0].Routes[0].Authz) {
		t.Errorf("/healthz route: authz should be off")
	}
	if got := m.ServiceSPIFFEID("inventory"); got != "spiffe://gatehouse.local/sidecar/inventory" {
		t.Errorf("ServiceSPIFFEID = %q", got)
	}
}

// A minimal valid mesh; cases below break one line of it.
const baseMesh = `mesh:
  authz:
    address: gatehouse:9001
  services:
    - name: orders
      endpoints: ["10.0.0.1:15443"]
      mtls: true
    - name: greeter
      endpoints: ["10.0.0.2:50051"]
      protocol: http2
  edges:
    - name: edge
      tls:
        dns_names: [shop.example.com]
      routes:
        - path_prefix: /
          service: orders
  sidecars:
    - service: orders
  grpc_clients:
    - name: web
      targets:
        - target: xds:///greeter
          service: greeter
`

func TestBaseMeshValid(t *testing.T) {
	cfg, err := Parse[Config]("test.yaml", []byte(baseMesh))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mesh.Authz.Timeout != time.Second {
		t.Errorf("authz timeout default = %s", cfg.Mesh.Authz.Timeout)
	}
	if cfg.Mesh.Edges[0].Listen != "0.0.0.0:8443" || cfg.Mesh.Edges[0].Routes[0].Host != "*" {
		t.Errorf("edge defaults not applied: %+v", cfg.Mesh.Edges[0])
	}
}

func TestMeshRejections(t *testing.T) {
	tests := []struct {
		name    string
		old     string // a line of baseMesh (or "" to append)
		new     string
		want    string // "test.yaml:<line>" prefix
		wantMsg string
	}{
		{"bad trust domain", "mesh:\n", "mesh:\n  trust_domain: Gatehouse.Local\n", "test.yaml:2", "mesh.trust_domain"},
		{"authz address missing", "    address: gatehouse:9001\n", "    timeout: 1s\n", "test.yaml:2", "mesh.authz.address: is required"},
		{"authz address bad", "address: gatehouse:9001", "address: gatehouse", "test.yaml:3", "not a host:port"},
		{"authz body zero", "    address: gatehouse:9001\n", "    address: gatehouse:9001\n    with_request_body: {allow_partial: true}\n", "test.yaml:4", "max_bytes"},
		{"service name bad", "name: orders", "name: Orders", "test.yaml:5", "DNS label"},
		{"service duplicate", "name: greeter", "name: orders", "test.yaml:8", `duplicate service "orders"`},
		{"endpoint bad port", `["10.0.0.2:50051"]`, `["10.0.0.2:99999"]`, "test.yaml:9", "port must be 1-65535"},
		{"endpoint no port", `["10.0.0.2:50051"]`, `["greeter"]`, "test.yaml:9", "not a host:port"},
		{"endpoint bad host", `["10.0.0.2:50051"]`, `["gr eeter:80"]`, "test.yaml:9", "not a DNS name"},
		{"protocol bad", "protocol: http2", "protocol: grpc", "test.yaml:10", "must be http1 or http2"},
		{"route unknown service", "          service: orders\n", "          service: payments\n", "test.yaml:17", `unknown service "payments"`},
		{"route prefix relative", "path_prefix: /", "path_prefix: api", "test.yaml:16", "must start with /"},
		{"route prefix dotdot", "path_prefix: /", "path_prefix: /a/../b", "test.yaml:16", `".." segment`},
		{"route prefix trailing slash", "path_prefix: /", "path_prefix: /api/", "test.yaml:16", "must not end with /"},
		{"route host bad", "        - path_prefix: /\n", "        - path_prefix: /\n          host: shop_example.com\n", "test.yaml:17", "not a DNS name"},
		{"route duplicate", "          service: orders\n  sidecars", "          service: orders\n        - path_prefix: /\n          service: orders\n  sidecars", "test.yaml:18", "duplicate route"},
		{"edge listen hostname", "    - name: edge\n", "    - name: edge\n      listen: edge:8443\n", "test.yaml:13", "listeners bind an IP address"},
		{"edge no dns names", "dns_names: [shop.example.com]", "dns_names: []", "test.yaml:14", "at least one DNS name"},
		{"edge trusts too many hops", "    - name: edge\n", "    - name: edge\n      trusted_proxy_hops: 6\n", "test.yaml:13", "mesh.edges[0].trusted_proxy_hops: must be 0 to 5"},
		{"edges share a cert with other names", "  sidecars:\n", "    - name: edge-b\n      tls: {cert: edge, dns_names: [b.example.com]}\n      routes: [{path_prefix: /, service: orders}]\n  sidecars:\n", "test.yaml:19", `certificate "edge" is also used by mesh.edges[0]`},
		{"edge no routes", "      routes:\n        - path_prefix: /\n          service: orders\n", "      routes: []\n", "test.yaml:15", "at least one route"},
		{"sidecar unknown service", "    - service: orders\n", "    - service: payments\n", "test.yaml:19", `unknown service "payments"`},
		{"sidecar needs mtls service", "      mtls: true\n", "", "test.yaml:18", "must set mtls: true"},
		{"mtls service without sidecar", "  sidecars:\n    - service: orders\n", "", "test.yaml:7", "no sidecar serves it"},
		{"sidecar skip_authz root", "    - service: orders\n", "    - service: orders\n      skip_authz: [/]\n", "test.yaml:20", "every path"},
		{"sidecar outbound to self", "    - service: orders\n", "    - service: orders\n      outbound:\n        - service: orders\n          listen: 127.0.0.1:15001\n", "test.yaml:21", "own service"},
		{"sidecar outbound port clash", "    - service: orders\n", "    - service: orders\n      outbound:\n        - service: greeter\n          listen: 127.0.0.1:15443\n", "test.yaml:22", "port 15443 is already used"},
		{"sidecar outbound missing listen", "    - service: orders\n", "    - service: orders\n      outbound:\n        - service: greeter\n", "test.yaml:21", "listen: is required"},
		{"duplicate proxy name", "    - name: web\n", "    - name: edge\n", "test.yaml:21", `proxy name "edge" is already used by mesh.edges[0]`},
		{"grpc target form", "target: xds:///greeter", "target: dns:///greeter", "test.yaml:23", `must be "xds:///<name>"`},
		{"grpc target authority", "target: xds:///greeter", "target: xds://td/greeter", "test.yaml:23", `must be "xds:///<name>"`},
		{"grpc needs http2", "      protocol: http2\n", "", "test.yaml:23", "protocol: http2"},
		{"grpc dns endpoints", `["10.0.0.2:50051"]`, `["a.local:50051", "b.local:50051"]`, "test.yaml:24", "exactly one DNS name"},
		{"unknown key", "      mtls: true\n", "      mtls: true\n      tls: true\n", "test.yaml:8", "field tls not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(baseMesh, tt.old) {
				t.Fatalf("test bug: %q not in baseMesh", tt.old)
			}
			data := strings.Replace(baseMesh, tt.old, tt.new, 1)
			_, err := Parse[Config]("test.yaml", []byte(data))
			if err == nil {
				t.Fatalf("accepted:\n%s", data)
			}
			var line string
			for _, l := range strings.Split(err.Error(), "\n") {
				if strings.Contains(l, tt.wantMsg) {
					line = l
					break
				}
			}
			if line == "" {
				t.Fatalf("error does not mention %q:\n%v", tt.wantMsg, err)
			}
			if !strings.HasPrefix(line, tt.want+":") {
				t.Errorf("error %q not located at %s", line, tt.want)
			}
		})
	}
}
