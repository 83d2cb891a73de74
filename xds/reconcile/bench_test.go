package reconcile

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
)

// benchMesh renders a config shaped like the fleet benchmark's
// (test/bench/xdsload): services mTLS services with three endpoints and
// three outbound listeners each, one edge routing to ten of them; timeout
// is the ext_authz timeout, the knob of a config edit (LDS on every node).
func benchMesh(tb testing.TB, services int, timeout time.Duration) *config.Config {
	tb.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "mesh:\n  trust_domain: unit.test\n  authz:\n    address: 127.0.0.1:9001\n    timeout: %s\n  services:\n", timeout)
	for i := range services {
		fmt.Fprintf(&b, "    - {name: svc-%02d, mtls: true, protocol: http2, endpoints: [\"10.0.%d.1:80\", \"10.0.%d.2:80\", \"10.0.%d.3:80\"]}\n", i, i, i, i)
	}
	b.WriteString("  edges:\n    - name: edge\n      tls: {dns_names: [shop.unit.test]}\n      routes:\n")
	for i := range min(10, services) {
		fmt.Fprintf(&b, "        - {path_prefix: /api/svc-%02d, service: svc-%02d}\n", i, i)
	}
	b.WriteString("  sidecars:\n")
	for i := range services {
		fmt.Fprintf(&b, "    - service: svc-%02d\n      skip_authz: [/healthz]\n      outbound:\n", i)
		for o := 1; o <= 3 && o < services; o++ {
			fmt.Fprintf(&b, "        - {service: svc-%02d, listen: \"127.0.0.1:%d\"}\n", (i+o)%services, 16000+o)
		}
	}
	cfg, err := config.Parse[config.Config]("bench.yaml", []byte(b.String()))
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// BenchmarkApplyEdit times one config edit of the fleet benchmark's mesh
// (50 services, 51 nodes): the ext_authz timeout changes, so every node's
// listeners change and nothing else does. No streams are open; this is the
// work before the fan-out.
func BenchmarkApplyEdit(b *testing.B) {
	r, _, _ := newReconciler(b)
	ctx := context.Background()
	cfgs := [2]*config.Config{benchMesh(b, 50, time.Second), benchMesh(b, 50, 2*time.Second)}
	if err := r.Apply(ctx, cfgs[1]); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := r.Apply(ctx, cfgs[i%2]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
