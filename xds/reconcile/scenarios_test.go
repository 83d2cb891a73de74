package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/secrets"
)

// allVersions is every node's version of every type, by "node type".
func allVersions(c *cache.Cache, nodes ...string) map[string]string {
	out := map[string]string{}
	for _, n := range nodes {
		for _, typ := range cache.Types() {
			out[n+" "+typ] = c.Version(n, typ)
		}
	}
	return out
}

// watchAll opens, for every node and type, a SotW watch that already holds
// the current version: it is answered only by a push.
func watchAll(t *testing.T, c *cache.Cache, nodes ...string) map[string]chan gcache.Response {
	t.Helper()
	out := map[string]chan gcache.Response{}
	for _, n := range nodes {
		for _, typ := range cache.Types() {
			wild := typ == resource.ClusterType || typ == resource.ListenerType
			var names []string // EDS/RDS/SDS name what they want, as Envoy does
			var held map[string]string
			if r, err := c.Fetch(context.Background(), &discovery.DiscoveryRequest{Node: &corev3.Node{Id: n}, TypeUrl: typ}); err == nil {
				held = r.(*gcache.PassthroughResponse).ReturnedResources
				if !wild {
					names = slices.Sorted(maps.Keys(held))
				}
			}
			// The ACK of the current content on a stream that was sent it.
			req := &discovery.DiscoveryRequest{Node: &corev3.Node{Id: n}, TypeUrl: typ, VersionInfo: c.Version(n, typ), ResourceNames: names, ResponseNonce: "1"}
			sub := stream.NewSotwSubscription(names, wild)
			sub.SetReturnedResources(held)
			ch := make(chan gcache.Response, 8)
			if _, err := c.CreateWatch(req, &sub, ch); err != nil {
				t.Fatal(err)
			}
			out[n+" "+typ] = ch
		}
	}
	return out
}

// pushes counts the responses each watch got so far.
func pushes(ws map[string]chan gcache.Response) map[string]int {
	out := map[string]int{}
	for k, ch := range ws {
		out[k] = len(ch)
	}
	return out
}

// A file that cannot be loaded (missing, unreadable, half written, invalid)
// changes nothing that is served, keeps the reconciler ready and says why,
// with the file and, where it has one, the line.
func TestLoadFileBadFileChangesNothing(t *testing.T) {
	dir := t.TempDir()
	good := strings.Replace(base, "%s", "10.0.0.1:80", 1)
	tests := []struct {
		name  string
		write func(path string) // nil: the file does not exist
		want  string            // in the error and LastError; %p is the path
	}{
		{"missing", nil, "%p"},
		{"half written mid-flow-mapping", func(p string) {
			cut := strings.Index(good, "mtls: true}") + len("mtls: tr")
			os.WriteFile(p, []byte(good[:cut]), 0o600)
		}, "%p:"},
		{"empty", func(p string) { os.WriteFile(p, nil, 0o600) }, "%p: file is empty"},
		{"unknown field", func(p string) {
			os.WriteFile(p, []byte(strings.Replace(good, "  edges:", "  edgez: []\n  edges:", 1)), 0o600)
		}, "%p:7"},
		{"invalid value", func(p string) {
			os.WriteFile(p, []byte(strings.Replace(good, "path_prefix: /api,", "path_prefix: api,", 1)), 0o600)
		}, "%p:11"},
		{"two documents", func(p string) { os.WriteFile(p, []byte(good+"---\n"+good), 0o600) }, "only one YAML document"},
		{"a directory", func(p string) { os.Mkdir(p, 0o700) }, "%p"},
	}
	if os.Geteuid() != 0 {
		tests = append(tests, struct {
			name  string
			write func(string)
			want  string
		}{"unreadable", func(p string) { os.WriteFile(p, []byte(good), 0o000) }, "permission denied"})
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, c, _ := newReconciler(t)
			ctx := context.Background()
			goodPath := filepath.Join(dir, fmt.Sprintf("good%d.yaml", i))
			if err := os.WriteFile(goodPath, []byte(good), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := r.LoadFile(ctx, goodPath); err != nil {
				t.Fatal(err)
			}
			before := r.Status()
			versions := allVersions(c, before.Nodes...)
			path := filepath.Join(dir, fmt.Sprintf("bad%d.yaml", i))
			if tc.write != nil {
				tc.write(path)
			}
			want := strings.ReplaceAll(tc.want, "%p", path)
			err := r.LoadFile(ctx, path)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("LoadFile = %v, want an error containing %q", err, want)
			}
			st := r.Status()
			if st.LastError != err.Error() || st.LastErrorAt.IsZero() {
				t.Errorf("status %+v does not report %q", st, err)
			}
			if !st.AppliedAt.Equal(before.AppliedAt) || !slices.Equal(st.Nodes, before.Nodes) || st.Secrets != before.Secrets {
				t.Errorf("status changed: %+v → %+v", before, st)
			}
			if got := allVersions(c, before.Nodes...); !maps.Equal(got, versions) {
				t.Errorf("versions changed: %v → %v", versions, got)
			}
			if err := r.Ready(); err != nil {
				t.Errorf("a good config was applied, yet Ready = %v", err)
			}
			// Fixing the file clears the error.
			if err := r.LoadFile(ctx, goodPath); err != nil || r.Status().LastError != "" {
				t.Errorf("after the fix: %v, status %+v", err, r.Status())
			}
		})
	}
}

// Before any config applies, Ready says why, file and line included.
func TestReadyNamesTheFirstFailure(t *testing.T) {
	r, _, _ := newReconciler(t)
	if err := r.Ready(); err == nil || !strings.Contains(err.Error(), "no mesh config applied yet") {
		t.Fatalf("fresh: Ready = %v", err)
	}
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	bad := strings.Replace(strings.Replace(base, "%s", "10.0.0.1:80", 1), "trust_domain:", "trust_domian:", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.LoadFile(context.Background(), path); err == nil {
		t.Fatal("loaded a file with an unknown key")
	}
	err := r.Ready()
	if err == nil || !strings.Contains(err.Error(), path+":2") || !strings.Contains(err.Error(), "trust_domian") {
		t.Fatalf("Ready = %v, want the file:line of the unknown key", err)
	}
	if _, ok := r.NodeIdentity("orders"); ok || r.Identities() != nil {
		t.Error("identities known before any config applied")
	}
}

// boundedReconciler is newReconciler with a Rotator keeping at most max
// identities.
func boundedReconciler(t *testing.T, max int) (*Reconciler, *cache.Cache, *certs.Rotator) {
	t.Helper()
	ca, err := certs.Init(t.TempDir()+"/ca", certs.WithTrustDomain("unit.test"), certs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	rot := certs.NewRotator(ca, certs.WithMaxIdentities(max))
	c := cache.New(nil)
	return New(c, secrets.New(ca, rot), nil), c, rot
}

// A rotation push that cannot build a node's secrets (here: the Rotator
// is full) is reported in Status, changes nothing for that node, keeps
// the reconciler ready, and succeeds once the cause is gone.
func TestRotatedFailureIsReported(t *testing.T) {
	r, c, rot := boundedReconciler(t, 3) // exactly the base config's identities
	ctx := context.Background()
	if err := r.Apply(ctx, parse(t, "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	sidecar := "spiffe://unit.test/sidecar/orders"
	versions := allVersions(c, r.Status().Nodes...)
	rot.Forget(sidecar)
	intruder := "spiffe://unit.test/sidecar/intruder"
	if _, err := rot.Get(intruder); err != nil {
		t.Fatal(err)
	}
	err := r.Rotated(ctx, sidecar)
	if err == nil || !strings.Contains(err.Error(), "node orders") || !errors.Is(err, certs.ErrTooManyIdentities) {
		t.Fatalf("Rotated = %v", err)
	}
	if st := r.Status(); st.LastError != err.Error() || r.Ready() != nil {
		t.Errorf("status %+v, ready %v", st, r.Ready())
	}
	if got := allVersions(c, r.Status().Nodes...); !maps.Equal(got, versions) {
		t.Errorf("a failed rotation push changed versions")
	}
	rot.Forget(intruder)
	if err := r.Rotated(ctx, sidecar); err != nil {
		t.Fatal(err)
	}
	if c.Version("orders", resource.SecretType) == versions["orders "+resource.SecretType] {
		t.Error("the re-issued leaf was not pushed")
	}
	// One identity's push proves nothing about the others; a full push
	// (every secret rebuilt) clears the reported failure.
	if st := r.Status(); st.LastError == "" {
		t.Error("a push of one identity cleared the failure of the earlier push")
	}
	if err := r.Rotated(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.LastError != "" {
		t.Errorf("after every secret was pushed again, LastError = %q", st.LastError)
	}
}

// rejectedByValidation is cfg changed so that it translates but one of
// its resources fails deep validation (ext_authz max_request_bytes 0), as a
// translator bug would make it.
func rejectedByValidation(cfg *config.Config) *config.Config {
	cfg.Mesh.Authz.WithRequestBody = &config.RequestBody{MaxBytes: 0}
	return cfg
}

// A config that translates but fails deep validation pushes nothing to
// any stream; Status names the node, resource and field, Ready stays nil.
func TestRejectedByValidationPushesNothing(t *testing.T) {
	r, c, _ := newReconciler(t)
	ctx := context.Background()
	if err := r.Apply(ctx, parse(t, "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	before := r.Status()
	ws := watchAll(t, c, before.Nodes...)
	err := r.Apply(ctx, rejectedByValidation(parse(t, "10.0.0.2:80")))
	if err == nil {
		t.Fatal("applied a config that fails validation")
	}
	for _, want := range []string{"node edge", "node orders", "ExtAuthz", "MaxRequestBytes"} {
		if !strings.Contains(r.Status().LastError, want) {
			t.Errorf("LastError %q does not say %q", r.Status().LastError, want)
		}
	}
	for k, n := range pushes(ws) {
		if n != 0 {
			t.Errorf("%s: %d pushes for a rejected config", k, n)
		}
	}
	if st := r.Status(); !st.AppliedAt.Equal(before.AppliedAt) || r.Ready() != nil {
		t.Errorf("status %+v, ready %v", st, r.Ready())
	}
}

// A config rejected by validation changes nothing: not the cache, and not
// the certificates the Rotator keeps and renews (an identity only that
// config named, an edge's DNS names).
func TestRejectedConfigLeavesCertificatesAlone(t *testing.T) {
	r, c, rot := boundedReconciler(t, 4)
	ctx := context.Background()
	if err := r.Apply(ctx, parse(t, "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	edgeTLS := secrets.EdgeSPIFFEID("unit.test", "edge")
	held, _ := rot.Current(edgeTLS)
	versions := allVersions(c, r.Status().Nodes...)

	for i := range 3 {
		name := fmt.Sprintf("billing%d", i)
		cfg := renamedSidecar(t, name)
		cfg.Mesh.Edges[0].TLS.DNSNames = []string{"rejected.unit.test"}
		if err := r.Apply(ctx, rejectedByValidation(cfg)); err == nil || !strings.Contains(err.Error(), "MaxRequestBytes") {
			t.Fatalf("rejected config %d: %v", i, err)
		}
		if got := allVersions(c, r.Status().Nodes...); !maps.Equal(got, versions) {
			t.Fatalf("rejected config %d changed versions", i)
		}
		if got, want := rot.IDs(), r.Identities(); !slices.Equal(got, want) {
			t.Errorf("after rejected config %d the Rotator keeps %v, want the applied config's %v", i, got, want)
		}
		if cur, _ := rot.Current(edgeTLS); cur.Serial != held.Serial {
			t.Errorf("after rejected config %d the edge's leaf is %s for %v, want %s for %v", i, cur.Serial, cur.Cert.DNSNames, held.Serial, held.Cert.DNSNames)
		}
	}
	// A good config renaming the sidecar still fits the bound (the old
	// name is released once the new one is served, as without the
	// rejected configs: TestRemovedIdentitiesAreReleased).
	if err := r.Apply(ctx, renamedSidecar(t, "payments")); err != nil {
		t.Errorf("a good config after rejected ones: %v", err)
	}
}

// Two edges presenting one certificate (same tls.cert) with different
// dns_names: either the config is refused or each edge's names are in the
// certificate it serves; never is one edge's dns_names silently dropped.
func TestEdgesSharingACertKeepTheirNames(t *testing.T) {
	// Different names for one certificate: refused where they are written.
	src := strings.Replace(twoEdgesSource("b.unit.test"), "%s", "10.0.0.1:80", 1)
	if _, err := config.Parse[config.Config]("test.yaml", []byte(src)); err == nil ||
		!strings.Contains(err.Error(), "mesh.edges[1].tls.dns_names") || !strings.Contains(err.Error(), `certificate "shop" is also used by mesh.edges[0]`) {
		t.Fatalf("conflicting dns_names for one certificate: err = %v", err)
	}
	// The same names: one certificate serves both edges.
	r, _, rot := newReconciler(t)
	if err := r.Apply(context.Background(), twoEdges(t, "shop.unit.test")); err != nil {
		t.Fatal(err)
	}
	leaf, ok := rot.Current(secrets.EdgeSPIFFEID("unit.test", "shop"))
	if !ok || !slices.Equal(leaf.Cert.DNSNames, []string{"shop.unit.test"}) {
		t.Fatalf("shared certificate: held %v", ok)
	}
}

// Re-applying the config in force pushes nothing to any stream.
func TestSameConfigTwicePushesNothing(t *testing.T) {
	r, c, _ := newReconciler(t)
	ctx := context.Background()
	if err := r.Apply(ctx, parse(t, "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	ws := watchAll(t, c, r.Status().Nodes...)
	for range 2 {
		if err := r.Apply(ctx, parse(t, "10.0.0.1:80")); err != nil {
			t.Fatal(err)
		}
	}
	for k, n := range pushes(ws) {
		if n != 0 {
			t.Errorf("%s: %d pushes for an unchanged config", k, n)
		}
	}
	// Nor does a rotation event for a leaf that did not change.
	for _, id := range append(r.Identities(), "") {
		if err := r.Rotated(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	for k, n := range pushes(ws) {
		if n != 0 {
			t.Errorf("%s: %d pushes for rotation events without a new leaf", k, n)
		}
	}
}

// Removing a node clears it from the cache and status, releases the
// identities only it used, and adding it back serves it again.
func TestRemovedNodeIsCleared(t *testing.T) {
	r, c, rot := newReconciler(t)
	ctx := context.Background()
	full := parse(t, "10.0.0.1:80")
	if err := r.Apply(ctx, full); err != nil {
		t.Fatal(err)
	}
	if id, ok := r.NodeIdentity("orders"); !ok || id != "spiffe://unit.test/sidecar/orders" {
		t.Fatalf("NodeIdentity(orders) = %q %v", id, ok)
	}
	edge := allVersions(c, "edge")
	noSidecar := parse(t, "10.0.0.1:80")
	noSidecar.Mesh.Sidecars = nil
	if err := r.Apply(ctx, noSidecar); err != nil {
		t.Fatal(err)
	}
	for _, typ := range cache.Types() {
		if v := c.Version("orders", typ); v != "" {
			t.Errorf("removed node still serves %s version %s", typ, v)
		}
	}
	if _, ok := r.NodeIdentity("orders"); ok {
		t.Error("NodeIdentity knows a removed node")
	}
	if st := r.Status(); !slices.Equal(st.Nodes, []string{"edge"}) {
		t.Errorf("status nodes %v", st.Nodes)
	}
	if slices.Contains(rot.IDs(), "spiffe://unit.test/sidecar/orders") {
		t.Error("the removed sidecar's identity is still renewed")
	}
	if got := allVersions(c, "edge"); !maps.Equal(got, edge) {
		t.Errorf("the edge was pushed when only a sidecar left: %v → %v", edge, got)
	}
	if err := r.Apply(ctx, full); err != nil {
		t.Fatal(err)
	}
	if c.Version("orders", resource.SecretType) == "" || c.Version("orders", resource.ListenerType) == "" {
		t.Error("the re-added node is not served")
	}
}

// twoEdges has two edge nodes presenting one server certificate (tls.cert
// "shop"): both serve the secret of spiffe://unit.test/edge-tls/shop.
// dnsB are edge-b's names (edge-a's are shop.unit.test).
func twoEdges(t *testing.T, dnsB string) *config.Config {
	t.Helper()
	return parseSource(t, strings.Replace(twoEdgesSource(dnsB), "%s", "10.0.0.1:80", 1))
}

// twoEdgesSource is base with a second edge sharing the first one's
// certificate "shop", for dnsB.
func twoEdgesSource(dnsB string) string {
	src := strings.Replace(base,
		"      tls: {dns_names: [shop.unit.test]}\n",
		"      tls: {cert: shop, dns_names: [shop.unit.test]}\n", 1) +
		"  # second edge\n"
	src = strings.Replace(src, "  sidecars:\n", `    - name: edge-b
      listen: "0.0.0.0:9443"
      tls: {cert: shop, dns_names: [`+dnsB+`]}
      routes:
        - {path_prefix: /, service: web}
  sidecars:
`, 1)
	return src
}

// renamedSidecar is the base config with the orders service (and so its
// sidecar and identity) renamed to name.
func renamedSidecar(t *testing.T, name string) *config.Config {
	t.Helper()
	return parseSource(t, strings.ReplaceAll(strings.Replace(base, "%s", "10.0.0.1:80", 1), "orders", name))
}

func parseSource(t *testing.T, src string) *config.Config {
	t.Helper()
	cfg, err := config.Parse[config.Config]("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A rotation of an identity several nodes present pushes each of them
// once, the new leaf, and nobody else; an identity the config does not
// use pushes nothing.
func TestRotationOfSharedIdentityPushesEachNodeOnce(t *testing.T) {
	r, c, rot := newReconciler(t)
	ctx := context.Background()
	if err := r.Apply(ctx, twoEdges(t, "shop.unit.test")); err != nil {
		t.Fatal(err)
	}
	nodes := r.Status().Nodes
	if !slices.Equal(nodes, []string{"edge", "edge-b", "orders"}) {
		t.Fatalf("nodes %v", nodes)
	}
	sidecar := secrets.EdgeSPIFFEID("unit.test", "shop")
	old, _ := rot.Current(sidecar)

	tests := []struct {
		name   string
		id     string
		renew  bool
		pushed []string // nodes whose secrets are pushed, once
	}{
		{"unknown identity", "spiffe://unit.test/sidecar/nobody", false, nil},
		{"xds server identity", "spiffe://unit.test/gatehouse/xds", false, nil},
		{"shared identity, same leaf", sidecar, false, nil},
		{"shared identity renewed", sidecar, true, []string{"edge", "edge-b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws := watchAll(t, c, nodes...)
			if tc.renew {
				rot.Forget(tc.id)
			}
			if err := r.Rotated(ctx, tc.id); err != nil {
				t.Fatal(err)
			}
			got := pushes(ws)
			for _, n := range nodes {
				for _, typ := range cache.Types() {
					want := 0
					if typ == resource.SecretType && slices.Contains(tc.pushed, n) {
						want = 1
					}
					if got[n+" "+typ] != want {
						t.Errorf("%s %s: %d pushes, want %d", n, typ, got[n+" "+typ], want)
					}
				}
			}
			if r.Status().LastError != "" {
				t.Errorf("status error %q", r.Status().LastError)
			}
		})
	}
	cur, _ := rot.Current(sidecar)
	if cur.Serial == old.Serial {
		t.Fatal("no new leaf")
	}
	if old.Serial == "" {
		t.Fatal("no leaf before")
	}
}

// Rotated before any config is a no-op; Rotated("") after a CA-wide change
// rebuilds every secret and pushes only secrets.
func TestRotatedBeforeAnyConfigAndTrustBundle(t *testing.T) {
	r, c, rot := newReconciler(t)
	ctx := context.Background()
	if err := r.Rotated(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := r.Rotated(ctx, "spiffe://unit.test/sidecar/orders"); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(ctx, parse(t, "10.0.0.1:80")); err != nil {
		t.Fatal(err)
	}
	nodes := r.Status().Nodes
	ws := watchAll(t, c, nodes...)
	for _, id := range rot.IDs() {
		rot.Forget(id) // every leaf re-issued, as after a CA rotation
	}
	if err := r.Rotated(ctx, ""); err != nil {
		t.Fatal(err)
	}
	got := pushes(ws)
	for _, n := range nodes {
		for _, typ := range cache.Types() {
			want := 0
			if typ == resource.SecretType {
				want = 1
			}
			if got[n+" "+typ] != want {
				t.Errorf("%s %s: %d pushes, want %d", n, typ, got[n+" "+typ], want)
			}
		}
	}
}

// Config edits, rotations (Rotator.Run with OnRotate → Rotated, as the
// xds command wires them) and readers run at once; afterwards every node
// serves exactly what the last config and the Rotator's leaves say.
func TestConcurrentApplyAndRotated(t *testing.T) {
	r, c, rot := newReconciler(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var rotErrs sync.Map
	rot.OnRotate(func(id string, _ *certs.Leaf) {
		if err := r.Rotated(ctx, id); err != nil {
			rotErrs.Store(id, err)
		}
	})
	done := make(chan struct{})
	go func() { defer close(done); _ = rot.Run(ctx) }()
	cfgs := []*config.Config{parse(t, "10.0.0.1:80"), twoEdges(t, "shop.unit.test"), parse(t, "10.0.0.2:80")}
	if err := r.Apply(ctx, cfgs[0]); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 30 {
			if err := r.Apply(ctx, cfgs[i%len(cfgs)]); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for range 30 {
			rot.RenewAll()
			time.Sleep(time.Millisecond)
		}
	})
	wg.Go(func() {
		for range 30 {
			for _, id := range append(r.Identities(), "") {
				_ = r.Rotated(ctx, id) // may race a node's removal; checked below
			}
			_ = r.Status()
			_ = r.Ready()
		}
	})
	wg.Wait()
	final := cfgs[29%len(cfgs)]
	if err := r.Apply(ctx, final); err != nil {
		t.Fatal(err)
	}
	// Let Run finish outstanding renewals, then push them once more.
	deadline := time.Now().Add(10 * time.Second)
	for {
		next, ok := rot.NextRenewal()
		if !ok || next.After(time.Now().Add(time.Minute)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("renewals never settled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if err := r.Rotated(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	rotErrs.Range(func(k, v any) bool {
		t.Logf("rotation push for %v failed while configs changed: %v", k, v)
		return true
	})
	for _, n := range r.Status().Nodes {
		// Rebuilding from the Rotator changes nothing: what is served is current.
		before := c.Version(n, resource.SecretType)
		if before == "" {
			t.Errorf("node %s not served", n)
		}
	}
	ws := watchAll(t, c, r.Status().Nodes...)
	if err := r.Rotated(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(context.Background(), final); err != nil {
		t.Fatal(err)
	}
	for k, n := range pushes(ws) {
		if n != 0 {
			t.Errorf("%s: stale after the storm (%d pushes when re-synced)", k, n)
		}
	}
}
