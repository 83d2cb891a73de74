package secrets_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/certs/certstest"
	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/secrets"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
)

const td = "unit.test"

var (
	t0      = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	discard = slog.New(slog.DiscardHandler)
)

// fixture is a real CA and Rotator sharing a fake clock set to t0.
type fixture struct {
	clk *certstest.Clock
	ca  *certs.CA
	rot *certs.Rotator
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	clk := certstest.NewClock(t0)
	ca := newCA(t, clk)
	return &fixture{clk: clk, ca: ca, rot: certs.NewRotator(ca, certs.WithRotatorClock(clk), certs.WithRotatorLogger(discard))}
}

func newCA(t *testing.T, clk certs.Clock) *certs.CA {
	t.Helper()
	ca, err := certs.Init(filepath.Join(t.TempDir(), "ca"), certs.WithTrustDomain(td), certs.WithClock(clk), certs.WithLogger(discard))
	if err != nil {
		t.Fatalf("certs.Init: %v", err)
	}
	return ca
}

func workload(id string) translate.SecretSpec {
	return translate.SecretSpec{Name: translate.WorkloadSecretName(id), Kind: translate.SecretWorkload, SPIFFEID: id}
}

func edge(cert string, dns ...string) translate.SecretSpec {
	return translate.SecretSpec{Name: translate.EdgeServerSecretName(cert), Kind: translate.SecretEdgeServer, DNSNames: dns}
}

var bundleSpec = translate.SecretSpec{Name: translate.TrustBundleSecretName, Kind: translate.SecretTrustBundle}

// wire sends s through its protobuf wire form, as the cache does, and checks
// it against Envoy's validation rules.
func wire(t *testing.T, s cache.Secret) *tlsv3.Secret {
	t.Helper()
	a, err := anypb.New(s.Resource)
	if err != nil {
		t.Fatalf("secret %q: marshal: %v", s.Resource.GetName(), err)
	}
	var got tlsv3.Secret
	if err := a.UnmarshalTo(&got); err != nil {
		t.Fatalf("secret %q: unmarshal: %v", s.Resource.GetName(), err)
	}
	if err := got.ValidateAll(); err != nil {
		t.Fatalf("secret %q fails Envoy validation: %v", got.GetName(), err)
	}
	return &got
}

// servedTLS is a decoded TLS certificate secret.
type servedTLS struct {
	leaf       *x509.Certificate
	chain, key []byte
}

// decodeTLS checks that s is a TLS certificate secret whose chain is one
// CA-issued certificate matching the private key, and returns it.
func decodeTLS(t *testing.T, s cache.Secret) servedTLS {
	t.Helper()
	sec := wire(t, s)
	tc := sec.GetTlsCertificate()
	if tc == nil {
		t.Fatalf("secret %q has type %T, want a TLS certificate", sec.GetName(), sec.GetType())
	}
	chain, key := tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes()
	certsIn := parsePEMCerts(t, chain)
	if len(certsIn) != 1 {
		t.Fatalf("secret %q chain holds %d certificates, want the leaf alone", sec.GetName(), len(certsIn))
	}
	leaf := certsIn[0]
	pair, err := tls.X509KeyPair(chain, key)
	if err != nil {
		t.Fatalf("secret %q: chain and key do not form a pair: %v", sec.GetName(), err)
	}
	pub, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub.Public()) {
		t.Fatalf("secret %q: private key does not match the certificate", sec.GetName())
	}
	if leaf.IsCA {
		t.Errorf("secret %q serves a CA certificate", sec.GetName())
	}
	if want := leaf.SerialNumber.Text(16); s.Serial != want {
		t.Errorf("secret %q labelled with serial %q, its certificate has %q", sec.GetName(), s.Serial, want)
	}
	return servedTLS{leaf: leaf, chain: chain, key: key}
}

func parsePEMCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for rest := data; len(bytes.TrimSpace(rest)) > 0; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil || b.Type != "CERTIFICATE" {
			t.Fatalf("not a PEM certificate list: %q", data)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func uris(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}

// verify checks leaf chains to roots at now for both TLS directions.
func verify(t *testing.T, leaf *x509.Certificate, roots *x509.CertPool, now time.Time) {
	t.Helper()
	for _, ku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{ku}}); err != nil {
			t.Errorf("certificate %v does not verify for usage %v: %v", uris(leaf), ku, err)
		}
	}
}

func buildOne(t *testing.T, p *secrets.Provider, spec translate.SecretSpec) cache.Secret {
	t.Helper()
	out, err := p.Build([]translate.SecretSpec{spec})
	if err != nil {
		t.Fatalf("Build(%s): %v", spec.Name, err)
	}
	if len(out) != 1 || out[0].Resource.GetName() != spec.Name {
		t.Fatalf("Build(%s) = %d secrets, want the one named", spec.Name, len(out))
	}
	return out[0]
}

func TestBuildLeafSecrets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    translate.SecretSpec
		wantURI string
		wantDNS []string
		wantCN  string
	}{
		{
			name:    "workload",
			spec:    workload("spiffe://unit.test/sidecar/orders"),
			wantURI: "spiffe://unit.test/sidecar/orders",
			wantCN:  "orders",
		},
		{
			name:    "edge server with DNS names",
			spec:    edge("public", "www.example.com", "*.api.example.com"),
			wantURI: "spiffe://unit.test/edge-tls/public",
			wantDNS: []string{"www.example.com", "*.api.example.com"},
			wantCN:  "www.example.com",
		},
		{
			name:    "edge server without DNS names",
			spec:    edge("internal"),
			wantURI: "spiffe://unit.test/edge-tls/internal",
			wantCN:  "internal",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			p := secrets.New(f.ca, f.rot)
			got := decodeTLS(t, buildOne(t, p, tc.spec))

			if u := uris(got.leaf); !slices.Equal(u, []string{tc.wantURI}) {
				t.Errorf("URI SANs %v, want [%s]", u, tc.wantURI)
			}
			if !slices.Equal(got.leaf.DNSNames, tc.wantDNS) {
				t.Errorf("DNS SANs %v, want %v", got.leaf.DNSNames, tc.wantDNS)
			}
			if got.leaf.Subject.CommonName != tc.wantCN {
				t.Errorf("CN %q, want %q", got.leaf.Subject.CommonName, tc.wantCN)
			}
			if id := p.IdentityOf(tc.spec); id != tc.wantURI {
				t.Errorf("IdentityOf = %q, the certificate is for %q", id, tc.wantURI)
			}
			// Default lifetime: 24h from now, backdated by the clock skew.
			if want := t0.Add(-certs.ClockSkew); !got.leaf.NotBefore.Equal(want) {
				t.Errorf("NotBefore %s, want %s", got.leaf.NotBefore, want)
			}
			if want := t0.Add(certs.DefaultLeafTTL); !got.leaf.NotAfter.Equal(want) {
				t.Errorf("NotAfter %s, want %s", got.leaf.NotAfter, want)
			}
			verify(t, got.leaf, f.ca.TrustPool(), t0)
			// The Rotator now keeps (and will renew) exactly this leaf.
			held, ok := f.rot.Current(tc.wantURI)
			if !ok || !bytes.Equal(held.Cert.Raw, got.leaf.Raw) || !bytes.Equal(held.KeyPEM, got.key) {
				t.Errorf("the Rotator does not hold the served leaf for %s", tc.wantURI)
			}
		})
	}
}

func TestBuildTrustBundle(t *testing.T) {
	f := newFixture(t)
	p := secrets.New(f.ca, f.rot)
	s := buildOne(t, p, bundleSpec)
	if s.Serial != "" {
		t.Errorf("trust bundle labelled with serial %q", s.Serial)
	}
	vc := wire(t, s).GetValidationContext()
	if vc == nil {
		t.Fatalf("trust bundle secret has type %T, want a validation context", s.Resource.GetType())
	}
	bundle := vc.GetTrustedCa().GetInlineBytes()
	if !bytes.Equal(bundle, f.ca.TrustBundle()) {
		t.Fatalf("trusted CA bytes differ from the CA's trust bundle")
	}
	cas := parsePEMCerts(t, bundle)
	if len(cas) != 1 || !cas[0].Equal(f.ca.Certificate()) {
		t.Fatalf("bundle holds %d certificates, want the CA's own", len(cas))
	}
	if ids := f.rot.IDs(); len(ids) != 0 {
		t.Errorf("building the trust bundle issued leaves for %v", ids)
	}
	// A leaf served next to it is trusted by it: what a peer checks.
	leaf := decodeTLS(t, buildOne(t, p, workload("spiffe://unit.test/sidecar/a"))).leaf
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	verify(t, leaf, pool, t0)
}

// TestBuildSortsAndReuses: Build returns secrets sorted by name, issues one
// leaf per identity, and a second Build serves the same leaves.
func TestBuildSortsAndReuses(t *testing.T) {
	f := newFixture(t)
	p := secrets.New(f.ca, f.rot)
	specs := []translate.SecretSpec{
		workload("spiffe://unit.test/sidecar/orders"),
		bundleSpec,
		edge("edge", "edge.example"),
		workload("spiffe://unit.test/edge/edge"),
	}
	first, err := p.Build(specs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range first {
		names = append(names, s.Resource.GetName())
	}
	want := []string{"gatehouse-edge/edge", "gatehouse-trust-bundle", "spiffe://unit.test/edge/edge", "spiffe://unit.test/sidecar/orders"}
	if !slices.Equal(names, want) {
		t.Fatalf("Build names %v, want %v", names, want)
	}
	wantIDs := []string{"spiffe://unit.test/edge-tls/edge", "spiffe://unit.test/edge/edge", "spiffe://unit.test/sidecar/orders"}
	if ids := f.rot.IDs(); !slices.Equal(ids, wantIDs) {
		t.Errorf("Rotator keeps %v, want %v", ids, wantIDs)
	}
	slices.Reverse(specs)
	second, err := p.Build(specs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if !proto.Equal(first[i].Resource, second[i].Resource) || first[i].Serial != second[i].Serial {
			t.Errorf("secret %q changed between two Builds without a rotation", first[i].Resource.GetName())
		}
	}
	// The edge's server certificate and its workload certificate are two
	// leaves: the public DNS names never end up in the mTLS identity.
	if a, b := decodeTLS(t, first[0]), decodeTLS(t, first[2]); a.leaf.SerialNumber.Cmp(b.leaf.SerialNumber) == 0 || len(b.leaf.DNSNames) != 0 {
		t.Errorf("edge server and workload certificates share a leaf or DNS names: %v / %v", a.leaf.DNSNames, b.leaf.DNSNames)
	}
}

func TestBuildErrors(t *testing.T) {
	good := workload("spiffe://unit.test/sidecar/ok")
	for _, tc := range []struct {
		name    string
		opts    []secrets.Option
		spec    translate.SecretSpec
		wantErr string
	}{
		{"unknown kind", nil, translate.SecretSpec{Name: "x", Kind: "bogus"}, `unknown secret kind "bogus"`},
		{"empty kind", nil, translate.SecretSpec{Name: "x"}, `unknown secret kind ""`},
		{"workload without id", nil, translate.SecretSpec{Name: "w", Kind: translate.SecretWorkload}, "SPIFFE"},
		{"workload in another trust domain", nil, workload("spiffe://other.test/sidecar/orders"), `outside trust domain "unit.test"`},
		{"workload naming a trust domain", nil, workload("spiffe://unit.test"), "names a trust domain"},
		{"workload not a SPIFFE id", nil, workload("https://unit.test/sidecar/orders"), "spiffe"},
		{"edge server with an invalid DNS name", nil, edge("edge", "-bad.example"), `DNS name "-bad.example"`},
		{"edge server with an empty certificate name", nil, edge(""), "edge-tls/"},
		{"TTL below the minimum", []secrets.Option{secrets.WithTTL(time.Minute)}, good, "TTL 1m0s outside"},
		{"TTL above the maximum", []secrets.Option{secrets.WithTTL(certs.MaxLeafTTL + time.Hour)}, good, "outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			p := secrets.New(f.ca, f.rot, tc.opts...)
			specs := []translate.SecretSpec{bundleSpec, tc.spec}
			if tc.spec.Name != good.Name {
				specs = append(specs, good)
			}
			out, err := p.Build(specs)
			if err == nil {
				t.Fatalf("Build succeeded with %d secrets, want an error", len(out))
			}
			if out != nil {
				t.Errorf("Build returned %d secrets with its error, want none", len(out))
			}
			if prefix := `secret "` + tc.spec.Name + `": `; !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
			if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.wantErr)) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestWithTTL(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []secrets.Option
		want time.Duration
	}{
		{"default", nil, 24 * time.Hour},
		{"minimum", []secrets.Option{secrets.WithTTL(certs.MinLeafTTL)}, certs.MinLeafTTL},
		{"one hour", []secrets.Option{secrets.WithTTL(time.Hour)}, time.Hour},
		{"a week", []secrets.Option{secrets.WithTTL(7 * 24 * time.Hour)}, 7 * 24 * time.Hour},
		{"maximum", []secrets.Option{secrets.WithTTL(certs.MaxLeafTTL)}, certs.MaxLeafTTL},
		{"last option wins", []secrets.Option{secrets.WithTTL(time.Hour), secrets.WithTTL(2 * time.Hour)}, 2 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			p := secrets.New(f.ca, f.rot, tc.opts...)
			for _, spec := range []translate.SecretSpec{workload("spiffe://unit.test/sidecar/a"), edge("e", "e.example")} {
				leaf := decodeTLS(t, buildOne(t, p, spec)).leaf
				if got := leaf.NotAfter.Sub(t0); got != tc.want {
					t.Errorf("%s: leaf lives %s after issue, want %s", spec.Name, got, tc.want)
				}
			}
		})
	}
}

func TestIdentityOf(t *testing.T) {
	p := secrets.New(newCA(t, certstest.NewClock(t0)), nil)
	for _, tc := range []struct {
		spec translate.SecretSpec
		want string
	}{
		{workload("spiffe://unit.test/sidecar/orders"), "spiffe://unit.test/sidecar/orders"},
		// The SPIFFE id, not the name, decides a workload's identity.
		{translate.SecretSpec{Name: "anything", Kind: translate.SecretWorkload, SPIFFEID: "spiffe://unit.test/edge/e"}, "spiffe://unit.test/edge/e"},
		{edge("edge", "a.example"), "spiffe://unit.test/edge-tls/edge"},
		{edge("front-door"), "spiffe://unit.test/edge-tls/front-door"},
		{bundleSpec, ""},
		{translate.SecretSpec{Name: "x", Kind: "bogus", SPIFFEID: "spiffe://unit.test/a/b"}, ""},
	} {
		if got := p.IdentityOf(tc.spec); got != tc.want {
			t.Errorf("IdentityOf(%+v) = %q, want %q", tc.spec, got, tc.want)
		}
	}
}

func TestEdgeSPIFFEIDAndOverrideName(t *testing.T) {
	for _, tc := range []struct {
		td, cert     string
		wantID       string
		wantOverride string
	}{
		{"gatehouse.local", "edge", "spiffe://gatehouse.local/edge-tls/edge", "edge-tls.edge"},
		{"unit.test", "public-api", "spiffe://unit.test/edge-tls/public-api", "edge-tls.public-api"},
	} {
		id := secrets.EdgeSPIFFEID(tc.td, tc.cert)
		if id != tc.wantID {
			t.Errorf("EdgeSPIFFEID(%q, %q) = %q, want %q", tc.td, tc.cert, id, tc.wantID)
		}
		if err := certs.ValidateWorkloadID(id, tc.td); err != nil {
			t.Errorf("EdgeSPIFFEID(%q, %q) is not a workload id: %v", tc.td, tc.cert, err)
		}
		if got := secrets.OverrideName(id); got != tc.wantOverride {
			t.Errorf("OverrideName(%q) = %q, want %q", id, got, tc.wantOverride)
		}
	}
	for id, want := range map[string]string{
		"spiffe://td/sidecar/orders":        "sidecar.orders",
		"spiffe://gatehouse.local/edge/e1":  "edge.e1",
		"spiffe://td/ns/prod/sa/orders-api": "ns.prod.sa.orders-api",
		"spiffe://td/single":                "single",
		"spiffe://td":                       "",
	} {
		if got := secrets.OverrideName(id); got != want {
			t.Errorf("OverrideName(%q) = %q, want %q", id, got, want)
		}
	}
}

// TestOverrides serves operator certificates through a real DirSource.
func TestOverrides(t *testing.T) {
	const (
		orders   = "spiffe://unit.test/sidecar/orders"
		payments = "spiffe://unit.test/sidecar/payments"
	)
	edgeID := secrets.EdgeSPIFFEID(td, "edge")
	for _, tc := range []struct {
		name string
		spec translate.SecretSpec
		// files maps a pair name in the directory to the identity its
		// certificate is issued for ("" for a certificate of another CA).
		files        map[string]string
		wantOverride bool   // the served leaf is the operator's
		wantLog      string // logged by the Provider, if anything
	}{
		{
			name:         "workload override is served",
			spec:         workload(orders),
			files:        map[string]string{"sidecar.orders": orders},
			wantOverride: true,
		},
		{
			name:         "edge server override is served",
			spec:         edge("edge", "edge.example"),
			files:        map[string]string{"edge-tls.edge": edgeID},
			wantOverride: true,
		},
		{
			name:  "no override for this identity: issued",
			spec:  workload(orders),
			files: map[string]string{"sidecar.payments": payments, "edge-tls.edge": edgeID},
		},
		{
			name:    "override for another identity is ignored",
			spec:    workload(orders),
			files:   map[string]string{"sidecar.orders": payments},
			wantLog: `file=sidecar.orders want=spiffe://unit.test/sidecar/orders got=spiffe://unit.test/sidecar/payments`,
		},
		{
			name:  "override the source rejected (foreign CA): issued",
			spec:  workload(orders),
			files: map[string]string{"sidecar.orders": ""},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			dir := t.TempDir()
			for name, id := range tc.files {
				iss := f.ca
				if id == "" {
					iss, id = newCA(t, f.clk), orders
				}
				l, err := iss.Issue(id, certs.WithTTL(48*time.Hour))
				if err != nil {
					t.Fatal(err)
				}
				if err := certs.WriteLeaf(filepath.Join(dir, name), l); err != nil {
					t.Fatal(err)
				}
			}
			src := certs.NewDirSource(dir, f.ca.TrustPool(), certs.WithSourceClock(f.clk), certs.WithSourceLogger(discard))
			_ = src.Reload() // a rejected pair is a case here, not a failure
			var logs bytes.Buffer
			p := secrets.New(f.ca, f.rot, secrets.WithOverrides(src), secrets.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))

			id := p.IdentityOf(tc.spec)
			got := decodeTLS(t, buildOne(t, p, tc.spec))
			if u := uris(got.leaf); !slices.Equal(u, []string{id}) {
				t.Errorf("served certificate is for %v, want %s", u, id)
			}
			op, hasOp := src.Get(secrets.OverrideName(id))
			isOp := hasOp && bytes.Equal(got.leaf.Raw, op.Cert.Raw) && bytes.Equal(got.key, op.KeyPEM) && bytes.Equal(got.chain, op.ChainPEM)
			_, issued := f.rot.Current(id)
			switch {
			case tc.wantOverride && (!isOp || issued):
				t.Errorf("operator certificate not served (served it: %v, issued one: %v)", isOp, issued)
			case !tc.wantOverride && (isOp || !issued):
				t.Errorf("want an issued certificate (served the operator's: %v, issued one: %v)", isOp, issued)
			}
			if tc.wantOverride && got.leaf.NotAfter.Sub(t0) != 48*time.Hour {
				t.Errorf("served leaf expires at %s, not the operator certificate's", got.leaf.NotAfter)
			}
			switch out := logs.String(); {
			case tc.wantLog == "" && out != "":
				t.Errorf("unexpected log: %s", out)
			case tc.wantLog != "" && (!strings.Contains(out, "level=ERROR") || !strings.Contains(out, tc.wantLog)):
				t.Errorf("log %q does not report %q at ERROR", out, tc.wantLog)
			}
		})
	}
}

// TestExpiredOverrideFallsBackToIssued: an operator certificate is served
// while valid; when it expires its DirSource drops it (Run) and the next
// Build issues a leaf from the CA instead of serving an expired one.
func TestExpiredOverrideFallsBackToIssued(t *testing.T) {
	f := newFixture(t)
	const id = "spiffe://unit.test/sidecar/orders"
	op, err := f.ca.Issue(id, certs.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := certs.WriteLeaf(filepath.Join(dir, secrets.OverrideName(id)), op); err != nil {
		t.Fatal(err)
	}
	src := certs.NewDirSource(dir, f.ca.TrustPool(), certs.WithSourceClock(f.clk), certs.WithSourceLogger(discard))
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	p := secrets.New(f.ca, f.rot, secrets.WithOverrides(src))
	if got := decodeTLS(t, buildOne(t, p, workload(id))); !bytes.Equal(got.leaf.Raw, op.Cert.Raw) {
		t.Fatal("the valid operator certificate is not served")
	}
	dropped := make(chan struct{}, 1)
	src.OnChange(func(_ string, l *certs.Leaf) {
		if l == nil {
			dropped <- struct{}{}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { _ = src.Run(ctx) }()
	if err := f.clk.WaitForDeadline(ctx, op.NotAfter); err != nil {
		t.Fatal(err)
	}
	f.clk.Set(op.NotAfter)
	select {
	case <-dropped:
	case <-ctx.Done():
		t.Fatal("the expired operator certificate was not dropped")
	}
	got := decodeTLS(t, buildOne(t, p, workload(id)))
	if bytes.Equal(got.leaf.Raw, op.Cert.Raw) {
		t.Fatal("an expired operator certificate is still served")
	}
	if issued, ok := f.rot.Current(id); !ok || !bytes.Equal(issued.Cert.Raw, got.leaf.Raw) {
		t.Error("the fallback is not the leaf the Rotator issued and keeps")
	}
	if !f.clk.Now().Before(got.leaf.NotAfter) {
		t.Error("the fallback leaf is expired too")
	}
}

// TestRotationChangesSecrets: once the Rotator re-issues a leaf, the next
// Build serves the new certificate and key (a different cache hash, so it
// is pushed), for the same identity and names; the trust bundle stays.
func TestRotationChangesSecrets(t *testing.T) {
	f := newFixture(t)
	p := secrets.New(f.ca, f.rot, secrets.WithTTL(3*time.Hour))
	specs := []translate.SecretSpec{bundleSpec, edge("edge", "edge.example"), workload("spiffe://unit.test/sidecar/orders")}
	before, err := p.Build(specs)
	if err != nil {
		t.Fatal(err)
	}

	rotated := make(chan string, 4)
	f.rot.OnRotate(func(id string, _ *certs.Leaf) { rotated <- id })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	done := make(chan error, 1)
	go func() { done <- f.rot.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	due, err := f.clk.WaitForTimer(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	f.clk.Set(due)
	var ids []string
	for range 2 {
		select {
		case id := <-rotated:
			ids = append(ids, id)
		case <-ctx.Done():
			t.Fatalf("rotations seen: %v, want both leaves re-issued", ids)
		}
	}

	after, err := p.Build(specs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range before {
		name := before[i].Resource.GetName()
		hb, err := cache.EncodeSecret(before[i])
		if err != nil {
			t.Fatal(err)
		}
		ha, err := cache.EncodeSecret(after[i])
		if err != nil {
			t.Fatal(err)
		}
		if name == translate.TrustBundleSecretName {
			if !proto.Equal(before[i].Resource, after[i].Resource) || hb.Hash() != ha.Hash() {
				t.Errorf("trust bundle changed on a leaf rotation")
			}
			continue
		}
		old, cur := decodeTLS(t, before[i]), decodeTLS(t, after[i])
		if before[i].Serial == after[i].Serial || bytes.Equal(old.chain, cur.chain) || bytes.Equal(old.key, cur.key) || hb.Hash() == ha.Hash() {
			t.Errorf("%s: secret unchanged after rotation (serial %s)", name, after[i].Serial)
		}
		if !slices.Equal(uris(cur.leaf), uris(old.leaf)) || !slices.Equal(cur.leaf.DNSNames, old.leaf.DNSNames) {
			t.Errorf("%s: renewed for %v %v, was %v %v", name, uris(cur.leaf), cur.leaf.DNSNames, uris(old.leaf), old.leaf.DNSNames)
		}
		if want := due.Add(3 * time.Hour); !cur.leaf.NotAfter.Equal(want) {
			t.Errorf("%s: renewed leaf expires %s, want %s", name, cur.leaf.NotAfter, want)
		}
		verify(t, cur.leaf, f.ca.TrustPool(), due)
	}
}

// TestBuildFollowsEdgeDNSNameChange is a regression test for a known bug
// (see the skip message); remove the Skip once Build re-issues a leaf whose
// DNS names no longer match its spec.
func TestBuildFollowsEdgeDNSNameChange(t *testing.T) {
	f := newFixture(t)
	p := secrets.New(f.ca, f.rot)
	first := decodeTLS(t, buildOne(t, p, edge("edge", "a.example", "b.example"))).leaf
	tests := []struct {
		name    string
		dns     []string
		reissue bool
	}{
		{"same names in another order: same leaf", []string{"b.example", "a.example"}, false},
		{"a name changed", []string{"a.example", "new.example"}, true},
		{"unchanged since", []string{"a.example", "new.example"}, false},
		{"every name removed", nil, true},
		{"a name added back", []string{"back.example"}, true},
	}
	prev := first
	for _, tt := range tests {
		got := decodeTLS(t, buildOne(t, p, edge("edge", tt.dns...))).leaf
		if !slices.Equal(sorted(got.DNSNames), sorted(tt.dns)) {
			t.Errorf("%s: certificate for %v, want %v", tt.name, got.DNSNames, tt.dns)
		}
		if reissued := got.SerialNumber.Cmp(prev.SerialNumber) != 0; reissued != tt.reissue {
			t.Errorf("%s: re-issued %v, want %v", tt.name, reissued, tt.reissue)
		}
		prev = got
	}
	// The Rotator re-issues with the options of the last edit, not the
	// first: past expiry, a Get without options issues from what it kept.
	f.clk.Set(f.clk.Now().Add(25 * time.Hour))
	renewed, err := f.rot.Get(secrets.EdgeSPIFFEID(f.ca.TrustDomain(), "edge"))
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Cert.SerialNumber.Cmp(prev.SerialNumber) == 0 || !slices.Equal(renewed.Cert.DNSNames, []string{"back.example"}) {
		t.Errorf("re-issued leaf: serial %s (held %s), names %v; want a new leaf for [back.example]", renewed.Cert.SerialNumber, prev.SerialNumber, renewed.Cert.DNSNames)
	}
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }
