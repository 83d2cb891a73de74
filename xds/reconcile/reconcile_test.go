package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/secrets"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
)

const base = `mesh:
  trust_domain: unit.test
  authz: {address: "127.0.0.1:9001"}
  services:
    - {name: orders, endpoints: ["127.0.0.1:15443"], mtls: true}
    - {name: web, endpoints: ["%s"]}
  edges:
    - name: edge
      tls: {dns_names: [shop.unit.test]}
      routes:
        - {path_prefix: /api, service: orders}
        - {path_prefix: /, service: web}
  sidecars:
    - service: orders
`

func parse(t *testing.T, webEndpoint string) *config.Config {
	t.Helper()
	cfg, err := config.Parse[config.Config]("test.yaml", []byte(strings.Replace(base, "%s", webEndpoint, 1)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newReconciler(t testing.TB) (*Reconciler, *cache.Cache, *certs.Rotator) {
	t.Helper()
	ca, err := certs.Init(t.TempDir()+"/ca", certs.WithTrustDomain("unit.test"), certs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	rot := certs.NewRotator(ca)
	c := cache.New(nil)
	return New(c, secrets.New(ca, rot), nil), c, rot
}

// TestApplyOnlyChangesWhatChanged: an endpoint edit bumps only the endpoint
// version; every other type keeps its version.
func TestApplyOnlyChangesWhatChanged(t *testing.T) {
	r, c, _ := newReconciler(t)
	ctx := context.Background()
	if err := r.Apply(ctx, parse(t, "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for _, typ := range cache.Types() {
		before[typ] = c.Version("edge", typ)
	}
	if before[resource.SecretType] == "" || before[resource.ListenerType] == "" {
		t.Fatalf("edge not served: %v", before)
	}
	if err := r.Apply(ctx, parse(t, "10.0.0.2:80")); err != nil {
		t.Fatal(err)
	}
	for _, typ := range cache.Types() {
		changed := c.Version("edge", typ) != before[typ]
		if want := typ == resource.EndpointType; changed != want {
			t.Errorf("%s changed = %v, want %v", typ, changed, want)
		}
	}
}

// TestRejectedConfigChangesNothing: a config that fails translation keeps
// every node's versions and is reported in Status.
func TestRejectedConfigChangesNothing(t *testing.T) {
	r, c, _ := newReconciler(t)
	ctx := context.Background()
	if err := r.Apply(ctx, parse(t, "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	v := c.Version("edge", resource.EndpointType)
	bad := parse(t, "10.0.0.9:80")
	bad.Mesh.Edges[0].Routes[1].Service = "missing" // past schema validation, as a bug would be
	if err := r.Apply(ctx, bad); err == nil {
		t.Fatal("bad config applied")
	}
	if c.Version("edge", resource.EndpointType) != v {
		t.Error("a rejected config changed endpoints")
	}
	if st := r.Status(); st.LastError == "" || r.Ready() != nil {
		t.Errorf("status %+v ready %v", st, r.Ready())
	}
}

// TestRotationPushesOnlySecrets: re-issuing a leaf changes the secret
// version of the nodes that use it and nothing else.
func TestRotationPushesOnlySecrets(t *testing.T) {
	r, c, rot := newReconciler(t)
	ctx := context.Background()
	if err := r.Apply(ctx, parse(t, "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	ids := r.Identities()
	if len(ids) != 3 { // edge server, edge workload, orders sidecar
		t.Fatalf("identities %v", ids)
	}
	type versions map[string]string
	snap := func(node string) versions {
		v := versions{}
		for _, typ := range cache.Types() {
			v[typ] = c.Version(node, typ)
		}
		return v
	}
	edge, orders := snap("edge"), snap("orders")
	sidecar := "spiffe://unit.test/sidecar/orders"
	if _, err := rot.Get(sidecar); err != nil {
		t.Fatal(err)
	}
	rot.Forget(sidecar) // the next Build issues a fresh leaf, as a renewal does
	if err := r.Rotated(ctx, sidecar); err != nil {
		t.Fatal(err)
	}
	if got := snap("orders"); got[resource.SecretType] == orders[resource.SecretType] || got[resource.ListenerType] != orders[resource.ListenerType] {
		t.Errorf("orders versions %v → %v", orders, got)
	}
	if got := snap("edge"); got[resource.SecretType] != edge[resource.SecretType] {
		t.Errorf("edge does not use the orders sidecar's certificate, but its secrets changed")
	}
}

// TestEditRevalidatesOnlyWhatChanged: an edit deep-validates exactly the
// resources whose content it changed (and whatever it had not served
// before); re-applying the same config validates nothing, changes no
// version and pushes nothing.
func TestEditRevalidatesOnlyWhatChanged(t *testing.T) {
	distinct := func(cfg *config.Config) map[string]bool {
		res, err := translate.Translate(&cfg.Mesh)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, nr := range res.Nodes {
			for typ, rs := range map[string][]types.Resource{
				resource.ListenerType: nr.Listeners, resource.RouteType: nr.Routes,
				resource.ClusterType: nr.Clusters, resource.EndpointType: nr.Endpoints,
			} {
				for _, r := range rs {
					e, err := cache.Encode(typ, r)
					if err != nil {
						t.Fatal(err)
					}
					out[typ+" "+e.Hash()] = true
				}
			}
		}
		return out
	}
	versions := func(c *cache.Cache, nodes []string) map[string]string {
		out := map[string]string{}
		for _, n := range nodes {
			for _, typ := range cache.Types() {
				out[n+" "+typ] = c.Version(n, typ)
			}
		}
		return out
	}
	one, two := benchMesh(t, 5, time.Second), benchMesh(t, 5, 2*time.Second)
	changed := 0
	before := distinct(one)
	for k := range distinct(two) {
		if !before[k] {
			changed++
		}
	}
	if changed == 0 || changed >= len(before) {
		t.Fatalf("the edit changes %d of %d resources; the test needs some, not all", changed, len(before))
	}

	r, c, _ := newReconciler(t)
	ctx := context.Background()
	steps := []struct {
		name       string
		cfg        *config.Config
		wantChecks int
		changes    []string // types whose version changes on every node
	}{
		{"first config", one, len(before), nil},
		{"same config again", one, 0, nil},
		{"authz timeout edit", two, changed, []string{resource.ListenerType}},
		{"edit reverted", one, changed, []string{resource.ListenerType}},
	}
	var prev map[string]string
	for _, st := range steps {
		checks := r.memo.Checks()
		if err := r.Apply(ctx, st.cfg); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := r.memo.Checks() - checks; got != st.wantChecks {
			t.Errorf("%s: %d resources deep-validated, want %d", st.name, got, st.wantChecks)
		}
		nodes := r.Status().Nodes
		cur := versions(c, nodes)
		if prev != nil {
			for _, n := range nodes {
				for _, typ := range cache.Types() {
					k := n + " " + typ
					if want := slices.Contains(st.changes, typ); (cur[k] != prev[k]) != want {
						t.Errorf("%s: node %s %s version changed = %v, want %v", st.name, n, typ, cur[k] != prev[k], want)
					}
				}
			}
		}
		prev = cur
	}
}

// TestEdgeDNSNameEditReissues: a live edit of an edge's tls.dns_names
// re-issues its server certificate for the new names and pushes it; other
// nodes see nothing.
func TestEdgeDNSNameEditReissues(t *testing.T) {
	r, c, rot := newReconciler(t)
	ctx := context.Background()
	if err := r.Apply(ctx, parse(t, "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	id := secrets.EdgeSPIFFEID("unit.test", "edge")
	before, ok := rot.Current(id)
	if !ok || !slices.Equal(before.Cert.DNSNames, []string{"shop.unit.test"}) {
		t.Fatalf("edge certificate before the edit: held %v", ok)
	}
	edgeSDS, orders := c.Version("edge", resource.SecretType), c.Version("orders", resource.SecretType)
	edited := parse(t, "10.0.0.1:80")
	edited.Mesh.Edges[0].TLS.DNSNames = []string{"shop.unit.test", "www.unit.test"}
	if err := r.Apply(ctx, edited); err != nil {
		t.Fatal(err)
	}
	after, _ := rot.Current(id)
	if after.Serial == before.Serial || !slices.Equal(after.Cert.DNSNames, []string{"shop.unit.test", "www.unit.test"}) {
		t.Errorf("after the edit the edge serves %s for %v (before %s)", after.Serial, after.Cert.DNSNames, before.Serial)
	}
	if c.Version("edge", resource.SecretType) == edgeSDS {
		t.Error("the re-issued certificate was not pushed to the edge")
	}
	if c.Version("orders", resource.SecretType) != orders {
		t.Error("the orders sidecar was pushed secrets it does not use")
	}
}

// TestRemovedIdentitiesAreReleased: identities no secret references after
// an edit are no longer kept and renewed, so renaming services again and
// again never fills the Rotator (bounded here to four identities: the
// edge's two and one sidecar, plus one spare).
func TestRemovedIdentitiesAreReleased(t *testing.T) {
	ca, err := certs.Init(t.TempDir()+"/ca", certs.WithTrustDomain("unit.test"), certs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	rot := certs.NewRotator(ca, certs.WithMaxIdentities(4))
	r := New(cache.New(nil), secrets.New(ca, rot), nil)
	ctx := context.Background()
	for i := range 6 {
		name := fmt.Sprintf("orders%d", i)
		cfg, err := config.Parse[config.Config]("test.yaml", []byte(strings.ReplaceAll(strings.Replace(base, "%s", "10.0.0.1:80", 1), "orders", name)))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Apply(ctx, cfg); err != nil {
			t.Fatalf("edit %d (sidecar %s): %v", i, name, err)
		}
		want := r.Identities()
		if got := rot.IDs(); !slices.Equal(got, want) {
			t.Fatalf("edit %d: rotator keeps %v, want exactly the config's %v", i, got, want)
		}
		if !slices.Contains(want, "spiffe://unit.test/sidecar/"+name) {
			t.Fatalf("edit %d: %s not among %v", i, name, want)
		}
	}
}
