package translate_test

import (
	"fmt"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
	"github.com/gatehouse-proxy/gatehouse/xds/validate"
)

// bigMesh has n services: one edge routing to all of them, ten mTLS
// services with sidecars calling n/10 services each, and a gRPC client of
// every tenth (HTTP/2) service.
func bigMesh(tb testing.TB, n int) *config.Mesh {
	tb.Helper()
	m := &config.Mesh{Authz: config.MeshAuthz{Address: "10.255.0.1:9001"}}
	edge := config.Edge{Name: "edge", TLS: config.EdgeTLS{DNSNames: []string{"example.com"}}}
	grpc := config.GRPCClient{Name: "grpc"}
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		s := config.Service{Name: name, Endpoints: []string{fmt.Sprintf("10.%d.%d.1:8080", i/256, i%256), fmt.Sprintf("10.%d.%d.2:8080", i/256, i%256)}}
		if i%10 == 0 {
			s.Protocol = config.ProtocolHTTP2
			grpc.Targets = append(grpc.Targets, config.GRPCTarget{Target: "xds:///" + name, Service: name})
		}
		if i < 10 {
			s.MTLS = true
			// The inbound listener takes the endpoint's port (8080): the
			// app, in the same network namespace, needs another.
			sc := config.Sidecar{Service: name, App: "127.0.0.1:9090"}
			for j := 10 + i; j < n; j += 10 {
				sc.Outbound = append(sc.Outbound, config.Outbound{Service: fmt.Sprintf("svc-%d", j), Listen: fmt.Sprintf("127.0.0.1:%d", 20000+j)})
			}
			m.Sidecars = append(m.Sidecars, sc)
		}
		m.Services = append(m.Services, s)
		edge.Routes = append(edge.Routes, config.Route{PathPrefix: "/" + name, Service: name})
	}
	m.Edges = []config.Edge{edge}
	m.GRPCClients = []config.GRPCClient{grpc}
	var p config.Problems
	m.Validate(&p)
	if p.Len() > 0 {
		tb.Fatalf("bench mesh has %d problems", p.Len())
	}
	return m
}

func TestBigMeshValidates(t *testing.T) {
	res, err := translate.Translate(bigMesh(t, 1000))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Nodes) != 12 {
		t.Fatalf("%d nodes, want 12", len(res.Nodes))
	}
	for id, nr := range res.Nodes {
		if err := validate.Validate(nr); err != nil {
			t.Errorf("node %s: %v", id, err)
		}
	}
}

func BenchmarkTranslate1000(b *testing.B) {
	m := bigMesh(b, 1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := translate.Translate(m); err != nil {
			b.Fatal(err)
		}
	}
}
