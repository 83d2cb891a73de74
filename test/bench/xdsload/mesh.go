package xdsload

import (
	"fmt"
	"strings"
	"time"
)

// Mesh is the generated config the control plane serves. Services are
// svc-00 … svc-NN, each mTLS with one sidecar entry (node id = service
// name) and outbound listeners to the next Outbound services in the ring;
// one edge routes to the first EdgeRoutes services. Many proxies share one
// node id, as Envoy replicas of one service do.
type Mesh struct {
	Services   int
	Endpoints  int // IP endpoints per service
	Outbound   int // outbound listeners per sidecar
	EdgeRoutes int
	// AuthzTimeout is the knob of a config edit: it is in every edge and
	// sidecar listener, so changing it pushes LDS to every node.
	AuthzTimeout time.Duration
	// EndpointGen shifts the endpoints of svc-00: an endpoint change pushes
	// EDS to the nodes that call svc-00.
	EndpointGen int
}

// DefaultMesh is the 50-service mesh of the benchmark.
func DefaultMesh() Mesh {
	return Mesh{Services: 50, Endpoints: 3, Outbound: 3, EdgeRoutes: 10, AuthzTimeout: time.Second}
}

// ServiceName is the name (and sidecar node id) of service i.
func ServiceName(i int) string { return fmt.Sprintf("svc-%02d", i) }

// EdgeNode is the edge proxy's node id.
const EdgeNode = "edge"

// Nodes lists the node ids of the mesh: the edge first, then the sidecars.
func (m Mesh) Nodes() []string {
	out := []string{EdgeNode}
	for i := range m.Services {
		out = append(out, ServiceName(i))
	}
	return out
}

// YAML renders the config file with loopback listeners for xds and admin.
func (m Mesh) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, `listen:
  xds: 127.0.0.1:0
  admin: 127.0.0.1:0
log:
  level: warn
mesh:
  trust_domain: bench.test
  authz:
    address: 127.0.0.1:9001
    timeout: %s
  services:
`, m.AuthzTimeout)
	for i := range m.Services {
		fmt.Fprintf(&b, "    - name: %s\n      mtls: true\n      protocol: http2\n      endpoints: [", ServiceName(i))
		for e := range m.Endpoints {
			if e > 0 {
				b.WriteString(", ")
			}
			host := 10 + e
			if i == 0 {
				host += m.EndpointGen * m.Endpoints
			}
			fmt.Fprintf(&b, "\"10.%d.%d.%d:%d\"", i/200, i%200, host%250+1, 15000+i)
		}
		b.WriteString("]\n")
	}
	fmt.Fprintf(&b, `  edges:
    - name: %s
      listen: 0.0.0.0:8443
      tls:
        dns_names: [shop.bench.test]
      routes:
        - path_prefix: /healthz
          service: %s
          authz: false
`, EdgeNode, ServiceName(0))
	for r := 0; r < m.EdgeRoutes && r < m.Services; r++ {
		fmt.Fprintf(&b, "        - path_prefix: /api/%s\n          service: %s\n", ServiceName(r), ServiceName(r))
	}
	b.WriteString("  sidecars:\n")
	for i := range m.Services {
		fmt.Fprintf(&b, "    - service: %s\n      skip_authz: [/healthz]\n      forward_client_cert: true\n", ServiceName(i))
		if m.Outbound > 0 && m.Services > 1 {
			b.WriteString("      outbound:\n")
			for o := 1; o <= m.Outbound && o < m.Services; o++ {
				fmt.Fprintf(&b, "        - service: %s\n          listen: 127.0.0.1:%d\n", ServiceName((i+o)%m.Services), 16000+o)
			}
		}
	}
	return b.String()
}
