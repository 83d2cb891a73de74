package translate_test

import (
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
	"github.com/gatehouse-proxy/gatehouse/xds/validate"
)

func loadExample(t testing.TB) *config.Config {
	t.Helper()
	cfg, err := config.Load[config.Config]("../../examples/gatehouse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func translateExample(t testing.TB, opts ...translate.Option) *translate.Result {
	t.Helper()
	cfg := loadExample(t)
	res, err := translate.Translate(&cfg.Mesh, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func parseMesh(t testing.TB, yaml string) *config.Mesh {
	t.Helper()
	cfg, err := config.Parse[config.Config]("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return &cfg.Mesh
}

func node(t testing.TB, res *translate.Result, id string) *translate.NodeResources {
	t.Helper()
	nr, ok := res.Nodes[id]
	if !ok {
		t.Fatalf("no node %q", id)
	}
	return nr
}

func find[T types.Resource](t testing.TB, rs []types.Resource, name string) T {
	t.Helper()
	for _, r := range rs {
		if n, ok := r.(interface{ GetName() string }); ok && n.GetName() == name {
			return r.(T)
		}
		if c, ok := r.(*endpointv3.ClusterLoadAssignment); ok && c.GetClusterName() == name {
			return r.(T)
		}
	}
	var zero T
	t.Fatalf("no resource %q in %s", name, names(rs))
	return zero
}

func names(rs []types.Resource) []string {
	var out []string
	for _, r := range rs {
		switch r := r.(type) {
		case *endpointv3.ClusterLoadAssignment:
			out = append(out, r.GetClusterName())
		case interface{ GetName() string }:
			out = append(out, r.GetName())
		}
	}
	return out
}

func unpack[T proto.Message](t testing.TB, a *anypb.Any) T {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	v, ok := m.(T)
	if !ok {
		t.Fatalf("Any holds %T", m)
	}
	return v
}

func hcmOf(t testing.TB, l *listenerv3.Listener) *hcmv3.HttpConnectionManager {
	t.Helper()
	if l.GetApiListener() != nil {
		return unpack[*hcmv3.HttpConnectionManager](t, l.GetApiListener().GetApiListener())
	}
	return unpack[*hcmv3.HttpConnectionManager](t, l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
}

func filterNames(h *hcmv3.HttpConnectionManager) []string {
	var out []string
	for _, f := range h.GetHttpFilters() {
		out = append(out, f.GetName())
	}
	return out
}

func filterConfig[T proto.Message](t testing.TB, h *hcmv3.HttpConnectionManager, name string) T {
	t.Helper()
	for _, f := range h.GetHttpFilters() {
		if f.GetName() == name {
			return unpack[T](t, f.GetTypedConfig())
		}
	}
	t.Fatalf("no filter %s in %v", name, filterNames(h))
	panic("unreachable")
}

func downstreamTLS(t testing.TB, l *listenerv3.Listener) *tlsv3.DownstreamTlsContext {
	t.Helper()
	ts := l.GetFilterChains()[0].GetTransportSocket()
	if ts == nil {
		t.Fatalf("listener %s has no transport socket", l.GetName())
	}
	return unpack[*tlsv3.DownstreamTlsContext](t, ts.GetTypedConfig())
}

func upstreamTLS(t testing.TB, c *clusterv3.Cluster) *tlsv3.UpstreamTlsContext {
	t.Helper()
	if c.GetTransportSocket() == nil {
		t.Fatalf("cluster %s has no transport socket", c.GetName())
	}
	return unpack[*tlsv3.UpstreamTlsContext](t, c.GetTransportSocket().GetTypedConfig())
}

const (
	edgeID      = "spiffe://gatehouse.local/edge/edge"
	ordersID    = "spiffe://gatehouse.local/sidecar/orders"
	inventoryID = "spiffe://gatehouse.local/sidecar/inventory"
)

func TestExampleNodesValidate(t *testing.T) {
	res := translateExample(t)
	if got := slices.Sorted(mapsKeys(res.Nodes)); !slices.Equal(got, []string{"edge", "inventory", "orders", "web"}) {
		t.Fatalf("nodes = %v", got)
	}
	for id, nr := range res.Nodes {
		if err := validate.Validate(nr); err != nil {
			t.Errorf("node %s: %v", id, err)
		}
		// go-control-plane's own consistency check: every RDS/EDS name
		// referenced is in the snapshot. It does not look inside
		// api_listeners (v0.14.0 getListenerReferences reads filter chains
		// only), so it cannot judge gRPC nodes; validate.Validate does.
		if nr.Role == translate.RoleGRPC {
			continue
		}
		snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{
			resource.ListenerType: nr.Listeners, resource.RouteType: nr.Routes,
			resource.ClusterType: nr.Clusters, resource.EndpointType: nr.Endpoints,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := snap.Consistent(); err != nil {
			t.Errorf("node %s: snapshot inconsistent: %v", id, err)
		}
	}
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestFilterOrder(t *testing.T) {
	res := translateExample(t)
	authz := []string{translate.HeaderMutationFilterName, translate.ExtAuthzFilterName, translate.RouterFilterName}
	router := []string{translate.RouterFilterName}
	// Outbound: identity headers an app sends are stripped on the way out.
	outbound := []string{translate.HeaderMutationFilterName, translate.RouterFilterName}
	tests := []struct {
		node, listener string
		want           []string
	}{
		{"edge", translate.EdgeListenerName, authz},
		{"orders", translate.InboundListenerName, authz},
		{"inventory", translate.InboundListenerName, authz},
		{"orders", translate.OutboundListenerName("inventory"), outbound},
		{"web", "greeter", router},
	}
	for _, tt := range tests {
		t.Run(tt.node+"/"+tt.listener, func(t *testing.T) {
			l := find[*listenerv3.Listener](t, node(t, res, tt.node).Listeners, tt.listener)
			if got := filterNames(hcmOf(t, l)); !slices.Equal(got, tt.want) {
				t.Errorf("http filters = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHeaderMutationStripsIdentityHeaders(t *testing.T) {
	tests := []struct {
		name   string
		opts   []translate.Option
		prefix string
	}{
		{"default prefix", nil, "x-gatehouse-"},
		{"configured prefix", []translate.Option{translate.WithIdentityHeaderPrefix("X-Corp-")}, "x-corp-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := translateExample(t, tt.opts...)
			l := find[*listenerv3.Listener](t, node(t, res, "edge").Listeners, translate.EdgeListenerName)
			hm := filterConfig[*headermutationv3.HeaderMutation](t, hcmOf(t, l), translate.HeaderMutationFilterName)
			muts := hm.GetMutations().GetRequestMutations()
			if len(muts) != 1+len(translate.IdentityHeaders) {
				t.Fatalf("%d request mutations, want %d", len(muts), 1+len(translate.IdentityHeaders))
			}
			km := muts[0].GetRemoveOnMatch().GetKeyMatcher()
			if km.GetPrefix() != tt.prefix || !km.GetIgnoreCase() {
				t.Errorf("remove_on_match = %v, want case-insensitive prefix %q", km, tt.prefix)
			}
			for i, h := range translate.IdentityHeaders {
				want := tt.prefix + strings.TrimPrefix(h, "x-gatehouse-")
				if got := muts[i+1].GetRemove(); got != want {
					t.Errorf("mutation %d removes %q, want %q", i+1, got, want)
				}
			}
			if len(hm.GetMutations().GetResponseMutations()) != 0 {
				t.Errorf("response mutations present")
			}
		})
	}
	if _, err := translate.Translate(&config.Mesh{}, translate.WithIdentityHeaderPrefix("gatehouse-")); err == nil {
		t.Error("a prefix without x- was accepted")
	}
}

// TestSidecarKeepsTheAssertion: a sidecar strips client identity headers
// like the edge, except the signed assertion its ext_authz must verify. The
// regex is RE2 (Envoy's engine and Go's), so Go's regexp checks it exactly.
func TestSidecarKeepsTheAssertion(t *testing.T) {
	res := translateExample(t)
	l := find[*listenerv3.Listener](t, node(t, res, "orders").Listeners, translate.InboundListenerName)
	hm := filterConfig[*headermutationv3.HeaderMutation](t, hcmOf(t, l), translate.HeaderMutationFilterName)
	muts := hm.GetMutations().GetRequestMutations()
	expr := muts[0].GetRemoveOnMatch().GetKeyMatcher().GetSafeRegex().GetRegex()
	re := regexp.MustCompile(expr)
	// Envoy refuses regexes whose RE2 program exceeds 100 instructions. This
	// one measured 61 with libre2's ProgramSize (72 in Go's count); a
	// UTF-8 "any character" version measured 185. Keep it ASCII and small.
	parsed, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(prog.Inst); n > 80 {
		t.Errorf("regex program has %d instructions; Envoy may reject it", n)
	}
	if strings.Contains(expr, "[^") || strings.Contains(expr, ".") {
		t.Errorf("regex %q uses a UTF-8 class; use ASCII ranges", expr)
	}
	for _, name := range []string{"x-gatehouse-subject", "x-gatehouse-", "x-gatehouse-a", "x-gatehouse-assertio",
		"x-gatehouse-assertions", "x-gatehouse-assertion-2", "x-gatehouse-bssertion", "x-gatehouse-roles"} {
		if !re.MatchString(name) {
			t.Errorf("sidecar keeps %q; only the assertion may pass", name)
		}
	}
	for _, name := range []string{"x-gatehouse-assertion", "x-other", "authorization"} {
		if re.MatchString(name) {
			t.Errorf("sidecar strips %q", name)
		}
	}
	for _, m := range muts[1:] {
		if m.GetRemove() == "x-gatehouse-assertion" {
			t.Error("sidecar removes the assertion by name")
		}
	}
	if len(muts) != len(translate.IdentityHeaders) {
		t.Errorf("%d mutations, want the regex plus every identity header but the assertion", len(muts))
	}
}

func TestExtAuthzFilter(t *testing.T) {
	res := translateExample(t)
	for _, id := range []string{"edge", "orders"} {
		nr := node(t, res, id)
		name := translate.EdgeListenerName
		if id != "edge" {
			name = translate.InboundListenerName
		}
		ea := filterConfig[*extauthzv3.ExtAuthz](t, hcmOf(t, find[*listenerv3.Listener](t, nr.Listeners, name)), translate.ExtAuthzFilterName)
		gs := ea.GetGrpcService()
		if gs.GetEnvoyGrpc().GetClusterName() != translate.AuthzClusterName {
			t.Errorf("%s: ext_authz cluster = %q", id, gs.GetEnvoyGrpc().GetClusterName())
		}
		if gs.GetTimeout().AsDuration().String() != "1s" {
			t.Errorf("%s: timeout = %v", id, gs.GetTimeout().AsDuration())
		}
		if ea.GetTransportApiVersion().String() != "V3" || ea.GetFailureModeAllow() || !ea.GetIncludePeerCertificate() {
			t.Errorf("%s: ext_authz = %v", id, ea)
		}
		// Fail closed, and say an unreachable authorizer is an outage (503),
		// not a denial. Routes do not match on what ext_authz adds, so the
		// route cache is not cleared.
		if ea.GetStatusOnError().GetCode() != 503 || ea.GetClearRouteCache() {
			t.Errorf("%s: status_on_error=%v clear_route_cache=%v", id, ea.GetStatusOnError(), ea.GetClearRouteCache())
		}
		if b := ea.GetWithRequestBody(); b.GetMaxRequestBytes() != 8192 || !b.GetAllowPartialMessage() || !b.GetPackAsBytes() {
			t.Errorf("%s: with_request_body = %v", id, b)
		}
		// The authz cluster speaks HTTP/2: gRPC needs it.
		c := find[*clusterv3.Cluster](t, nr.Clusters, translate.AuthzClusterName)
		po := unpack[*httpv3.HttpProtocolOptions](t, c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"])
		if po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
			t.Errorf("%s: authz cluster is not HTTP/2: %v", id, po)
		}
		if c.GetType() != clusterv3.Cluster_STRICT_DNS {
			t.Errorf("%s: authz at a host name should resolve by DNS, got %v", id, c.GetType())
		}
	}
}

func TestPerRouteAuthz(t *testing.T) {
	res := translateExample(t)
	type want struct {
		disabled bool
		service  string
	}
	tests := []struct {
		node, route, path string
		want              want
	}{
		{"edge", translate.EdgeRouteName("edge"), "/healthz", want{disabled: true}},
		{"edge", translate.EdgeRouteName("edge"), "/api/inventory", want{service: "inventory"}},
		{"edge", translate.EdgeRouteName("edge"), "/", want{service: "orders"}},
		{"orders", translate.InboundRouteName("orders"), "/healthz", want{disabled: true}},
		{"orders", translate.InboundRouteName("orders"), "/", want{service: "orders"}},
	}
	for _, tt := range tests {
		t.Run(tt.node+tt.path, func(t *testing.T) {
			rc := find[*routev3.RouteConfiguration](t, node(t, res, tt.node).Routes, tt.route)
			var r *routev3.Route
			for _, vh := range rc.GetVirtualHosts() {
				for _, cand := range vh.GetRoutes() {
					m := cand.GetMatch()
					if m.GetPathSeparatedPrefix() == tt.path || m.GetPrefix() == tt.path {
						r = cand
					}
				}
			}
			if r == nil {
				t.Fatalf("no route for %s", tt.path)
			}
			per := unpack[*extauthzv3.ExtAuthzPerRoute](t, r.GetTypedPerFilterConfig()[translate.ExtAuthzFilterName])
			if per.GetDisabled() != tt.want.disabled {
				t.Errorf("disabled = %v, want %v", per.GetDisabled(), tt.want.disabled)
			}
			if !tt.want.disabled {
				ce := per.GetCheckSettings().GetContextExtensions()
				role := "edge"
				if tt.node != "edge" {
					role = "sidecar"
				}
				if ce[translate.ContextService] != tt.want.service || ce[translate.ContextProxy] != tt.node || ce[translate.ContextRole] != role {
					t.Errorf("context_extensions = %v", ce)
				}
			}
		})
	}
}

func TestEdgeRoutesMostSpecificFirst(t *testing.T) {
	res := translateExample(t)
	rc := find[*routev3.RouteConfiguration](t, node(t, res, "edge").Routes, translate.EdgeRouteName("edge"))
	vh := rc.GetVirtualHosts()
	if len(vh) != 1 || !slices.Equal(vh[0].GetDomains(), []string{"shop.example.com"}) {
		t.Fatalf("virtual hosts = %v", vh)
	}
	var got []string
	for _, r := range vh[0].GetRoutes() {
		got = append(got, r.GetMatch().GetPathSeparatedPrefix()+r.GetMatch().GetPrefix()+"→"+r.GetRoute().GetCluster())
	}
	want := []string{"/api/inventory→service/inventory", "/healthz→service/orders", "/→service/orders"}
	if !slices.Equal(got, want) {
		t.Errorf("routes = %v, want %v", got, want)
	}
}

func TestEdgeHTTPHardening(t *testing.T) {
	tests := []struct {
		name                     string
		extra                    string
		wantNormalize, wantMerge bool
	}{
		{"defaults", "", true, true},
		{"turned off", "      normalize_path: false\n      merge_slashes: false\n", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := parseMesh(t, `mesh:
  authz: {address: "10.0.0.9:9001"}
  services:
    - {name: web, endpoints: ["10.0.0.1:8080"]}
  edges:
    - name: edge
      tls: {dns_names: [example.com]}
      routes: [{service: web}]
`+tt.extra)
			res, err := translate.Translate(m)
			if err != nil {
				t.Fatal(err)
			}
			h := hcmOf(t, find[*listenerv3.Listener](t, node(t, res, "edge").Listeners, translate.EdgeListenerName))
			if h.GetNormalizePath().GetValue() != tt.wantNormalize || h.GetMergeSlashes() != tt.wantMerge {
				t.Errorf("normalize_path=%v merge_slashes=%v", h.GetNormalizePath(), h.GetMergeSlashes())
			}
			if h.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_REJECT_REQUEST {
				t.Errorf("path_with_escaped_slashes_action = %v", h.GetPathWithEscapedSlashesAction())
			}
			if !h.GetUseRemoteAddress().GetValue() || !h.GetStripAnyHostPort() {
				t.Errorf("use_remote_address=%v strip_any_host_port=%v", h.GetUseRemoteAddress(), h.GetStripAnyHostPort())
			}
			if h.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_SANITIZE {
				t.Errorf("forward_client_cert_details = %v", h.GetForwardClientCertDetails())
			}
			rds := h.GetRds()
			if rds.GetConfigSource().GetAds() == nil || rds.GetConfigSource().GetResourceApiVersion().String() != "V3" {
				t.Errorf("RDS config source = %v", rds.GetConfigSource())
			}
			// Plaintext upstream: no client cert, so no workload secret.
			if got := node(t, res, "edge").SecretNames; !slices.Equal(got, []string{translate.EdgeServerSecretName("edge")}) {
				t.Errorf("secrets = %v", got)
			}
			c := find[*clusterv3.Cluster](t, node(t, res, "edge").Clusters, translate.ServiceClusterName("web"))
			if c.GetType() != clusterv3.Cluster_EDS || c.GetTransportSocket() != nil {
				t.Errorf("IP endpoints, no mTLS: want plaintext EDS, got %v", c)
			}
		})
	}
}

func TestEdgeTLS(t *testing.T) {
	res := translateExample(t)
	ts := downstreamTLS(t, find[*listenerv3.Listener](t, node(t, res, "edge").Listeners, translate.EdgeListenerName))
	if ts.GetRequireClientCertificate().GetValue() {
		t.Error("edge must not require client certificates from the public")
	}
	sds := ts.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()
	if len(sds) != 1 || sds[0].GetName() != translate.EdgeServerSecretName("edge") || sds[0].GetSdsConfig().GetAds() == nil {
		t.Errorf("edge certificate SDS = %v", sds)
	}
	spec := res.Secrets[translate.EdgeServerSecretName("edge")]
	if spec.Kind != translate.SecretEdgeServer || !slices.Equal(spec.DNSNames, []string{"shop.example.com"}) {
		t.Errorf("edge secret spec = %+v", spec)
	}
}

func TestSidecarInbound(t *testing.T) {
	res := translateExample(t)
	for _, svc := range []string{"orders", "inventory"} {
		t.Run(svc, func(t *testing.T) {
			nr := node(t, res, svc)
			l := find[*listenerv3.Listener](t, nr.Listeners, translate.InboundListenerName)
			if sa := l.GetAddress().GetSocketAddress(); sa.GetAddress() != "0.0.0.0" || sa.GetPortValue() != 15443 {
				t.Errorf("inbound address = %v", sa)
			}
			ts := downstreamTLS(t, l)
			if !ts.GetRequireClientCertificate().GetValue() {
				t.Error("inbound must require client certificates")
			}
			ctc := ts.GetCommonTlsContext()
			id := "spiffe://gatehouse.local/sidecar/" + svc
			if got := ctc.GetTlsCertificateSdsSecretConfigs(); len(got) != 1 || got[0].GetName() != translate.WorkloadSecretName(id) {
				t.Errorf("certificate SDS = %v", got)
			}
			if got := ctc.GetValidationContextSdsSecretConfig().GetName(); got != translate.TrustBundleSecretName {
				t.Errorf("validation context SDS = %q", got)
			}
			h := hcmOf(t, l)
			if h.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_SANITIZE_SET || !h.GetSetCurrentClientCertDetails().GetUri() {
				t.Errorf("XFCC = %v %v, want SANITIZE_SET with uri", h.GetForwardClientCertDetails(), h.GetSetCurrentClientCertDetails())
			}
			if !h.GetNormalizePath().GetValue() || !h.GetMergeSlashes() {
				t.Error("inbound must normalise paths before authz")
			}
			local := find[*clusterv3.Cluster](t, nr.Clusters, translate.LocalClusterName(svc))
			if local.GetTransportSocket() != nil || local.GetType() != clusterv3.Cluster_EDS {
				t.Errorf("local app cluster = %v", local)
			}
			cla := find[*endpointv3.ClusterLoadAssignment](t, nr.Endpoints, translate.LocalClusterName(svc))
			sa := cla.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			if sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 8080 {
				t.Errorf("local app endpoint = %v", sa)
			}
		})
	}
}

func TestOutboundMTLS(t *testing.T) {
	res := translateExample(t)
	tests := []struct {
		node, cluster, client, peer string
	}{
		{"orders", translate.ServiceClusterName("inventory"), ordersID, inventoryID},
		{"edge", translate.ServiceClusterName("inventory"), edgeID, inventoryID},
		{"edge", translate.ServiceClusterName("orders"), edgeID, ordersID},
	}
	for _, tt := range tests {
		t.Run(tt.node+"→"+tt.cluster, func(t *testing.T) {
			c := find[*clusterv3.Cluster](t, node(t, res, tt.node).Clusters, tt.cluster)
			ctc := upstreamTLS(t, c).GetCommonTlsContext()
			if got := ctc.GetTlsCertificateSdsSecretConfigs(); len(got) != 1 || got[0].GetName() != tt.client {
				t.Errorf("client certificate SDS = %v, want %s", got, tt.client)
			}
			cvc := ctc.GetCombinedValidationContext()
			if cvc.GetValidationContextSdsSecretConfig().GetName() != translate.TrustBundleSecretName {
				t.Errorf("validation SDS = %v", cvc.GetValidationContextSdsSecretConfig())
			}
			sans := cvc.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
			if len(sans) != 1 || sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_URI || sans[0].GetMatcher().GetExact() != tt.peer {
				t.Errorf("SAN matchers = %v, want URI %s", sans, tt.peer)
			}
			if c.GetType() != clusterv3.Cluster_STRICT_DNS {
				t.Errorf("host name endpoints should be STRICT_DNS, got %v", c.GetType())
			}
		})
	}
	l := find[*listenerv3.Listener](t, node(t, res, "orders").Listeners, translate.OutboundListenerName("inventory"))
	if l.GetFilterChains()[0].GetTransportSocket() != nil {
		t.Error("outbound listener takes plaintext from the local app")
	}
	if sa := l.GetAddress().GetSocketAddress(); sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 15001 {
		t.Errorf("outbound address = %v", sa)
	}
}

func TestSecretNamesPerNode(t *testing.T) {
	res := translateExample(t)
	want := map[string][]string{
		"edge":      {translate.EdgeServerSecretName("edge"), translate.TrustBundleSecretName, edgeID},
		"orders":    {translate.TrustBundleSecretName, ordersID},
		"inventory": {translate.TrustBundleSecretName, inventoryID},
		"web":       nil,
	}
	for id, w := range want {
		if got := node(t, res, id).SecretNames; !slices.Equal(got, w) {
			t.Errorf("%s: secrets = %v, want %v", id, got, w)
		}
	}
	if got := res.Secrets[ordersID]; got.Kind != translate.SecretWorkload || got.SPIFFEID != ordersID {
		t.Errorf("orders secret spec = %+v", got)
	}
	if len(res.Secrets) != 5 {
		t.Errorf("Result.Secrets has %d entries, want 5: %v", len(res.Secrets), res.Secrets)
	}
}

func TestSharedObjects(t *testing.T) {
	res := translateExample(t)
	authz := func(id string) types.Resource {
		return find[*clusterv3.Cluster](t, node(t, res, id).Clusters, translate.AuthzClusterName)
	}
	if authz("orders") != authz("inventory") || authz("orders") != authz("edge") {
		t.Error("the ext_authz cluster is rebuilt per node")
	}
	// Two gRPC clients and two sidecars of the same shape share everything
	// but what names them.
	m := parseMesh(t, `mesh:
  authz: {address: "10.0.0.9:9001"}
  services:
    - {name: greeter, endpoints: ["10.0.0.1:50051", "10.0.0.2:50051"], protocol: http2}
    - {name: a, endpoints: ["10.0.1.1:15443"], mtls: true}
    - {name: b, endpoints: ["10.0.1.2:15443"], mtls: true}
  sidecars:
    - {service: a, outbound: [{service: greeter, listen: "127.0.0.1:15001"}]}
    - {service: b, outbound: [{service: greeter, listen: "127.0.0.1:15001"}]}
  grpc_clients:
    - {name: one, targets: [{target: "xds:///greeter", service: greeter}]}
    - {name: two, targets: [{target: "xds:///greeter", service: greeter}]}
`)
	r2, err := translate.Translate(m)
	if err != nil {
		t.Fatal(err)
	}
	one, two := node(t, r2, "one"), node(t, r2, "two")
	for i := range one.Listeners {
		if one.Listeners[i] != two.Listeners[i] || one.Routes[i] != two.Routes[i] || one.Clusters[i] != two.Clusters[i] || one.Endpoints[i] != two.Endpoints[i] {
			t.Error("gRPC clients of the same shape do not share resources")
		}
	}
	a, b := node(t, r2, "a"), node(t, r2, "b")
	same := func(kind string, x, y types.Resource) {
		if x != y {
			t.Errorf("%s not shared between sidecars", kind)
		}
	}
	same("outbound listener", find[*listenerv3.Listener](t, a.Listeners, translate.OutboundListenerName("greeter")), find[*listenerv3.Listener](t, b.Listeners, translate.OutboundListenerName("greeter")))
	same("outbound route", find[*routev3.RouteConfiguration](t, a.Routes, translate.OutboundRouteName("greeter")), find[*routev3.RouteConfiguration](t, b.Routes, translate.OutboundRouteName("greeter")))
	same("plaintext service cluster", find[*clusterv3.Cluster](t, a.Clusters, translate.ServiceClusterName("greeter")), find[*clusterv3.Cluster](t, b.Clusters, translate.ServiceClusterName("greeter")))
	same("endpoints", find[*endpointv3.ClusterLoadAssignment](t, a.Endpoints, translate.ServiceClusterName("greeter")), find[*endpointv3.ClusterLoadAssignment](t, one.Endpoints, translate.ServiceClusterName("greeter")))
	same("authz cluster", find[*clusterv3.Cluster](t, a.Clusters, translate.AuthzClusterName), find[*clusterv3.Cluster](t, b.Clusters, translate.AuthzClusterName))
	// Inbound listeners differ by identity: they must not be shared.
	if find[*listenerv3.Listener](t, a.Listeners, translate.InboundListenerName) == find[*listenerv3.Listener](t, b.Listeners, translate.InboundListenerName) {
		t.Error("inbound listeners with different certificates are shared")
	}
	// The Envoy and gRPC flavours of one cluster differ (HTTP/2 options).
	if find[*clusterv3.Cluster](t, a.Clusters, translate.ServiceClusterName("greeter")) == find[*clusterv3.Cluster](t, one.Clusters, translate.ServiceClusterName("greeter")) {
		t.Error("Envoy and gRPC clusters are shared but must differ")
	}
}

func TestGRPCClientResources(t *testing.T) {
	res := translateExample(t)
	nr := node(t, res, "web")
	l := find[*listenerv3.Listener](t, nr.Listeners, "greeter")
	if l.GetApiListener() == nil || len(l.GetFilterChains()) != 0 || l.GetAddress() != nil {
		t.Fatalf("not an api_listener: %v", l)
	}
	h := hcmOf(t, l)
	if h.GetRds().GetRouteConfigName() != "greeter" || h.GetRds().GetConfigSource().GetAds() == nil {
		t.Errorf("RDS = %v", h.GetRds())
	}
	rc := find[*routev3.RouteConfiguration](t, nr.Routes, "greeter")
	if got := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster(); got != translate.ServiceClusterName("greeter") {
		t.Errorf("route cluster = %q", got)
	}
	c := find[*clusterv3.Cluster](t, nr.Clusters, translate.ServiceClusterName("greeter"))
	if c.GetType() != clusterv3.Cluster_EDS || c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN || c.GetTransportSocket() != nil {
		t.Errorf("cluster = %v", c)
	}
	cla := find[*endpointv3.ClusterLoadAssignment](t, nr.Endpoints, translate.ServiceClusterName("greeter"))
	var addrs []string
	for _, e := range cla.GetEndpoints()[0].GetLbEndpoints() {
		sa := e.GetEndpoint().GetAddress().GetSocketAddress()
		addrs = append(addrs, sa.GetAddress()+":"+itoa(sa.GetPortValue()))
	}
	if !slices.Equal(addrs, []string{"10.0.0.20:50051", "10.0.0.21:50051"}) {
		t.Errorf("endpoints = %v", addrs)
	}
}

func TestGRPCClientMTLSUsesCertificateProviders(t *testing.T) {
	m := parseMesh(t, `mesh:
  authz: {address: "10.0.0.9:9001"}
  services:
    - {name: greeter, endpoints: ["10.0.0.1:15443"], protocol: http2, mtls: true}
  sidecars:
    - {service: greeter}
  grpc_clients:
    - {name: web, targets: [{target: "xds:///greeter", service: greeter}]}
`)
	res, err := translate.Translate(m)
	if err != nil {
		t.Fatal(err)
	}
	nr := node(t, res, "web")
	ctc := upstreamTLS(t, find[*clusterv3.Cluster](t, nr.Clusters, translate.ServiceClusterName("greeter"))).GetCommonTlsContext()
	if ctc.GetTlsCertificateProviderInstance().GetInstanceName() != translate.GRPCCertProviderInstance ||
		ctc.GetValidationContext().GetCaCertificateProviderInstance().GetInstanceName() != translate.GRPCCertProviderInstance {
		t.Errorf("gRPC TLS must use certificate providers: %v", ctc)
	}
	if len(ctc.GetTlsCertificateSdsSecretConfigs()) != 0 {
		t.Error("grpc-go does not speak SDS")
	}
	if sans := ctc.GetValidationContext().GetMatchSubjectAltNames(); len(sans) != 1 || sans[0].GetExact() != "spiffe://gatehouse.local/sidecar/greeter" {
		t.Errorf("SAN matchers = %v", sans)
	}
	if len(nr.SecretNames) != 0 {
		t.Errorf("gRPC node lists SDS secrets %v", nr.SecretNames)
	}
	if err := validate.Validate(nr); err != nil {
		t.Error(err)
	}
}

func TestDeterministic(t *testing.T) {
	a, b := translateExample(t), translateExample(t)
	for id, na := range a.Nodes {
		nb := b.Nodes[id]
		for _, pair := range [][2][]types.Resource{{na.Listeners, nb.Listeners}, {na.Routes, nb.Routes}, {na.Clusters, nb.Clusters}, {na.Endpoints, nb.Endpoints}} {
			if len(pair[0]) != len(pair[1]) {
				t.Fatalf("%s: different resource counts", id)
			}
			for i := range pair[0] {
				x, _ := proto.MarshalOptions{Deterministic: true}.Marshal(pair[0][i])
				y, _ := proto.MarshalOptions{Deterministic: true}.Marshal(pair[1][i])
				if string(x) != string(y) {
					t.Errorf("%s: %s encodes differently across runs", id, names(pair[0])[i])
				}
			}
		}
	}
}

func itoa(n uint32) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{digits[n%10]}, b...)
	}
	return string(b)
}
