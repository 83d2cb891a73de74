package translate

import (
	"cmp"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
)

const connectTimeout = 5 * time.Second

// Limits from Envoy's "Configuring Envoy as an edge proxy" best practices
// (configuration/best_practices/edge). Envoy's defaults suit a mesh, where
// every peer is a trusted proxy; the edge faces the internet, so it bounds
// what one client can make it buffer or hold open.
const (
	// edgeBufferLimit is per_connection_buffer_limit_bytes of the edge's
	// listener and of its clusters (Envoy's default is 1 MiB).
	edgeBufferLimit = 32 << 10
	// envoyDefaultBufferLimit is Envoy's own default, made explicit on the
	// sidecar inbound listener so a large with_request_body still fits.
	envoyDefaultBufferLimit = 1 << 20
	// HTTP/2 towards clients and the edge's HTTP/2 upstreams.
	edgeMaxConcurrentStreams = 100
	edgeStreamWindow         = 64 << 10
	edgeConnectionWindow     = 1 << 20
	// connectionIdleTimeout closes a downstream connection with no active
	// stream; streamIdleTimeout resets a stream that moves no bytes. Both
	// equal Envoy's defaults and are spelled out so a change is deliberate.
	// request_timeout (whole request) stays off: it would cut gRPC streams
	// and long downloads routed through the edge.
	connectionIdleTimeout = time.Hour
	streamIdleTimeout     = 5 * time.Minute
	// requestHeadersTimeout bounds how long a client may take to send its
	// headers (slowloris); Envoy's default is no limit.
	requestHeadersTimeout = 10 * time.Second
)

// builder holds what one translation shares between nodes.
type builder struct {
	m *config.Mesh
	o options
	// interned maps a resource's type and deterministic encoding to the one
	// object every node gets.
	interned map[string]proto.Message
	// HTTP filter chains, built once.
	authzFilters, routerOnly []*hcmv3.HttpFilter
	// sidecarAuthzFilters keep the propagated assertion for ext_authz to
	// verify; every other identity header is stripped as on the edge.
	sidecarAuthzFilters []*hcmv3.HttpFilter
	// outboundFilters strip identity headers an app sends through its
	// sidecar (all but the assertion it may propagate): a callee without
	// a sidecar of its own would otherwise take them for Gatehouse's.
	outboundFilters []*hcmv3.HttpFilter
	services        map[string]*config.Service
	anyErr          error
}

func newBuilder(m *config.Mesh, o options) *builder {
	b := &builder{m: m, o: o, interned: map[string]proto.Message{}, services: map[string]*config.Service{}}
	for i := range m.Services {
		b.services[m.Services[i].Name] = &m.Services[i]
	}
	router := b.httpFilter(RouterFilterName, &routerv3.Router{})
	b.routerOnly = []*hcmv3.HttpFilter{router}
	b.authzFilters = []*hcmv3.HttpFilter{
		// Strip client-sent identity headers before ext_authz runs: route
		// level request_headers_to_remove would run after ext_authz and
		// remove what it adds.
		b.httpFilter(HeaderMutationFilterName, b.stripIdentityHeaders("")),
		b.httpFilter(ExtAuthzFilterName, b.extAuthz()),
		router,
	}
	keepAssertion := b.httpFilter(HeaderMutationFilterName, b.stripIdentityHeaders(AssertionHeaderSuffix))
	b.sidecarAuthzFilters = []*hcmv3.HttpFilter{keepAssertion, b.authzFilters[1], router}
	b.outboundFilters = []*hcmv3.HttpFilter{keepAssertion, router}
	return b
}

// intern returns the canonical object equal to v.
func intern[T proto.Message](b *builder, v T) T {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(v)
	if err != nil {
		b.fail(fmt.Errorf("translate: encode %s: %w", proto.MessageName(v), err))
		return v
	}
	key := string(proto.MessageName(v)) + "\x00" + string(raw)
	if got, ok := b.interned[key]; ok {
		return got.(T)
	}
	b.interned[key] = v
	return v
}

func (b *builder) fail(err error) {
	if b.anyErr == nil {
		b.anyErr = err
	}
}

// toAny packs m deterministically, so equal configs give equal bytes and the
// cache's content hashes stay put (context_extensions is a map).
func (b *builder) toAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		b.fail(fmt.Errorf("translate: pack %s: %w", proto.MessageName(m), err))
	}
	return a
}

func (b *builder) httpFilter(name string, cfg proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.toAny(cfg)}}
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func sds(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: ads()}
}

// stripIdentityHeaders removes every header under the identity prefix
// except prefix+keep (none when keep is ""). RE2, Envoy's regex engine, has
// no lookahead, so "all but one name" is spelled out by exclusionRegex.
func (b *builder) stripIdentityHeaders(keep string) *headermutationv3.HeaderMutation {
	matcher := &matcherv3.StringMatcher{
		MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: b.o.headerPrefix},
		IgnoreCase:   true,
	}
	if keep != "" {
		// Header names reach filters in lower case, so no case folding is needed.
		matcher = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
			SafeRegex: &matcherv3.RegexMatcher{Regex: exclusionRegex(b.o.headerPrefix, keep)},
		}}
	}
	muts := []*mutationv3.HeaderMutation{{
		Action: &mutationv3.HeaderMutation_RemoveOnMatch_{RemoveOnMatch: &mutationv3.HeaderMutation_RemoveOnMatch{KeyMatcher: matcher}},
	}}
	for _, h := range IdentityHeaders {
		suffix := h[len(DefaultIdentityHeaderPrefix):]
		if suffix == keep {
			continue
		}
		muts = append(muts, &mutationv3.HeaderMutation{Action: &mutationv3.HeaderMutation_Remove{Remove: b.o.headerPrefix + suffix}})
	}
	return &headermutationv3.HeaderMutation{Mutations: &headermutationv3.Mutations{RequestMutations: muts}}
}

// exclusionRegex matches every header name that starts with prefix except
// exactly prefix+word, without lookahead: after the prefix, the name stops
// short of word, leaves it at some character, or runs past its end. Header
// names are visible ASCII, so the classes are ASCII ranges: RE2 compiles
// "any character" to many UTF-8 byte ranges, and Envoy rejects a regex
// whose program is too large (re2.max_program_size, default 100).
func exclusionRegex(prefix, word string) string {
	const any = "[!-~]"
	tail := any + "+" // past the whole word: a longer name
	for i := len(word) - 1; i >= 0; i-- {
		c := word[i]
		tail = "(?:" + asciiExcept(c) + any + "*|" + regexp.QuoteMeta(string(c)) + tail + ")?"
	}
	return "^" + regexp.QuoteMeta(prefix) + tail + "$"
}

// asciiExcept is a class of the visible ASCII characters other than c.
func asciiExcept(c byte) string {
	esc := func(b byte) string { return `\x` + strconv.FormatUint(uint64(b), 16) }
	return "[" + esc('!') + "-" + esc(c-1) + esc(c+1) + "-" + esc('~') + "]"
}

func (b *builder) extAuthz() *extauthzv3.ExtAuthz {
	a := b.m.Authz
	ea := &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: AuthzClusterName}},
			Timeout:         durationpb.New(a.Timeout),
		}},
		TransportApiVersion:    corev3.ApiVersion_V3,
		FailureModeAllow:       false,
		IncludePeerCertificate: true,
		// An unreachable authorizer is an outage, not a denial: say so.
		StatusOnError: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
	}
	if rb := a.WithRequestBody; rb != nil {
		// pack_as_bytes: as a string a binary body makes the CheckRequest
		// invalid protobuf (proto3 strings are UTF-8), failing every binary
		// upload closed; the authz server shows UTF-8 raw bodies as body.
		ea.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: rb.MaxBytes, AllowPartialMessage: rb.AllowPartial, PackAsBytes: true}
	}
	return ea
}

// authzPerRoute is the ext_authz override of one route: off, or on with
// context for policy.
func (b *builder) authzPerRoute(enabled bool, role Role, proxy, service string) map[string]*anypb.Any {
	var per *extauthzv3.ExtAuthzPerRoute
	if enabled {
		per = &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{
			ContextExtensions: map[string]string{ContextRole: string(role), ContextProxy: proxy, ContextService: service},
		}}}
	} else {
		per = &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}}
	}
	return map[string]*anypb.Any{ExtAuthzFilterName: b.toAny(per)}
}

// pathMatch matches whole segments: "/api" matches /api and /api/x, not /apix.
func pathMatch(prefix string) *routev3.RouteMatch {
	if prefix == "/" {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	}
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: prefix}}
}

func toCluster(cluster string) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
	}}
}

func socketAddress(hostport string) (*corev3.Address, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", hostport, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return nil, fmt.Errorf("address %q: bad port", hostport)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}, nil
}

func loadAssignment(name string, endpoints []string) (*endpointv3.ClusterLoadAssignment, error) {
	lbs := make([]*endpointv3.LbEndpoint, 0, len(endpoints))
	for _, ep := range endpoints {
		addr, err := socketAddress(ep)
		if err != nil {
			return nil, fmt.Errorf("translate: cluster %s: %w", name, err)
		}
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: addr},
		}})
	}
	// grpc-go drops a locality without an ID or weight; Envoy ignores both
	// unless locality-weighted balancing is on.
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality:            &corev3.Locality{},
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints:         lbs,
		}},
	}, nil
}

// flavour is who consumes a cluster.
type flavour int

const (
	forEnvoy flavour = iota
	forGRPC
)

// upstream describes one cluster to build.
type upstream struct {
	name      string
	endpoints []string
	http2     bool
	// peerID, when set, makes the hop mTLS: present clientID's certificate
	// and require the peer to be peerID.
	peerID, clientID string
	// edge applies the edge-proxy limits (buffer and HTTP/2 windows) of
	// Envoy's best practices: the edge's own clusters.
	edge bool
}

// cluster builds an upstream's cluster and, for EDS, its load assignment.
// IP endpoints go by EDS; host names are left to the proxy's resolver
// (EDS endpoints must be IP addresses).
func (b *builder) cluster(n *node, u upstream, f flavour) error {
	c := &clusterv3.Cluster{
		Name:           u.name,
		ConnectTimeout: durationpb.New(connectTimeout),
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
	}
	cla, err := loadAssignment(u.name, u.endpoints)
	if err != nil {
		return err
	}
	switch {
	case config.AllIPs(u.endpoints):
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()}
		cla = intern(b, cla)
		n.endpoints[cla.GetClusterName()] = cla
	case f == forGRPC:
		if len(u.endpoints) != 1 {
			return fmt.Errorf("translate: cluster %s: gRPC clients resolve exactly one DNS name, got %d endpoints", u.name, len(u.endpoints))
		}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
		c.LoadAssignment = cla
	default:
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
		c.LoadAssignment = cla
	}
	if u.edge && f == forEnvoy {
		c.PerConnectionBufferLimitBytes = wrapperspb.UInt32(edgeBufferLimit)
	}
	if u.http2 && f == forEnvoy {
		h2 := &corev3.Http2ProtocolOptions{}
		if u.edge {
			h2.InitialStreamWindowSize = wrapperspb.UInt32(edgeStreamWindow)
			h2.InitialConnectionWindowSize = wrapperspb.UInt32(edgeConnectionWindow)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
			httpProtocolOptionsKey: b.toAny(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2},
				}},
			}),
		}
	}
	if u.peerID != "" {
		var tctx *tlsv3.UpstreamTlsContext
		if f == forGRPC {
			tctx = grpcUpstreamTLS(u.peerID)
		} else {
			tctx = envoyUpstreamTLS(u, n)
		}
		c.TransportSocket = &corev3.TransportSocket{
			Name:       tlsTransportSocketName,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.toAny(tctx)},
		}
	}
	c = intern(b, c)
	n.clusters[c.GetName()] = c
	return nil
}

// envoyUpstreamTLS presents the client's workload certificate and accepts
// only the peer sidecar's SPIFFE ID, chained to the trust bundle.
func envoyUpstreamTLS(u upstream, n *node) *tlsv3.UpstreamTlsContext {
	alpn := "http/1.1"
	if u.http2 {
		alpn = "h2"
	}
	n.useWorkload(u.clientID)
	n.useTrustBundle()
	return &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsParams:                      meshTLSParams(),
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds(WorkloadSecretName(u.clientID))},
		AlpnProtocols:                  []string{alpn},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: u.peerID}},
				}},
			},
			ValidationContextSdsSecretConfig: sds(TrustBundleSecretName),
		}},
	}}
}

// grpcUpstreamTLS is the shape grpc-go accepts: certificate provider
// instances (no SDS) and match_subject_alt_names.
func grpcUpstreamTLS(peerID string) *tlsv3.UpstreamTlsContext {
	return &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: GRPCCertProviderInstance},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: GRPCCertProviderInstance},
			MatchSubjectAltNames: []*matcherv3.StringMatcher{{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: peerID},
			}},
		}},
	}}
}

// publicTLSParams is the edge's listener: TLS 1.2 or later, as public
// clients may not all speak 1.3 (Envoy's server maximum is 1.3).
func publicTLSParams() *tlsv3.TlsParameters {
	return &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}
}

// meshTLSParams is every mTLS hop inside the mesh, where both ends are
// Gatehouse's (sidecar or edge Envoy, grpc-go via certificate providers):
// TLS 1.3 only. The maximum is set too: Envoy's client maximum defaults
// to 1.2, and a minimum above the maximum would not connect at all.
func meshTLSParams() *tlsv3.TlsParameters {
	return &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
	}
}

func (n *node) useWorkload(id string) {
	n.secrets[WorkloadSecretName(id)] = SecretSpec{Name: WorkloadSecretName(id), Kind: SecretWorkload, SPIFFEID: id}
}

func (n *node) useTrustBundle() {
	n.secrets[TrustBundleSecretName] = SecretSpec{Name: TrustBundleSecretName, Kind: SecretTrustBundle}
}

// serviceCluster adds the cluster towards a mesh service as seen by a
// client with identity clientID.
func (b *builder) serviceCluster(n *node, service, clientID string, f flavour) error {
	svc := b.services[service]
	if svc == nil {
		return fmt.Errorf("translate: node %s: unknown service %q", n.id, service)
	}
	u := upstream{name: ServiceClusterName(svc.Name), endpoints: svc.Endpoints, http2: svc.Protocol == config.ProtocolHTTP2, edge: n.role == RoleEdge}
	if svc.MTLS {
		u.peerID, u.clientID = b.m.ServiceSPIFFEID(svc.Name), clientID
	}
	return b.cluster(n, u, f)
}

func (b *builder) authzCluster(n *node) error {
	return b.cluster(n, upstream{name: AuthzClusterName, endpoints: []string{b.m.Authz.Address}, http2: true}, forEnvoy)
}

// hcm is the connection manager shared by every Envoy listener; harden
// tightens it for listeners that authorise requests.
func (b *builder) hcm(statPrefix, routeName string, filters []*hcmv3.HttpFilter) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		StatPrefix: statPrefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    ads(),
			RouteConfigName: routeName,
		}},
		HttpFilters: filters,
	}
}

// harden sets what an authorising listener needs so that policy, routing
// and the upstream all see the same path and host:
//   - normalize_path and merge_slashes (edge: configurable, default on);
//   - escaped slashes (%2F, %5C) are rejected with 400: a path the policy
//     and the upstream could split differently is refused rather than
//     rewritten (UNESCAPE_AND_REDIRECT would also be safe, but changes
//     URLs behind clients' backs);
//   - the host's port is ignored for virtual host matching;
//   - headers with underscores are dropped (some frameworks read
//     x_gatehouse_subject as x-gatehouse-subject); hardenEdge rejects them;
//   - the peer address, not X-Forwarded-For, is the client address
//     (xff_num_trusted_hops stays 0: nothing in front is trusted);
//   - slow or idle clients are cut off (request headers, idle stream,
//     idle connection timeouts).
func harden(h *hcmv3.HttpConnectionManager, normalize, merge bool) {
	h.UseRemoteAddress = wrapperspb.Bool(true)
	h.NormalizePath = wrapperspb.Bool(normalize)
	h.MergeSlashes = merge
	h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_REJECT_REQUEST
	h.StripPortMode = &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true}
	h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE
	h.RequestHeadersTimeout = durationpb.New(requestHeadersTimeout)
	h.StreamIdleTimeout = durationpb.New(streamIdleTimeout)
	h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{
		IdleTimeout:                  durationpb.New(connectionIdleTimeout),
		HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_DROP_HEADER,
	}
}

// hardenEdge adds what Envoy's edge best practices ask of a listener that
// faces the internet, on top of harden:
//   - a request with an underscore in a header name is refused (400), not
//     just stripped: the best practice, and no legitimate browser or API
//     client needs one;
//   - HTTP/2 clients get at most 100 concurrent streams and 64 KiB stream /
//     1 MiB connection windows (Envoy's defaults: 1024 streams, 16 MiB
//     and 24 MiB windows), bounding what one connection can pin.
func hardenEdge(h *hcmv3.HttpConnectionManager) {
	h.CommonHttpProtocolOptions.HeadersWithUnderscoresAction = corev3.HttpProtocolOptions_REJECT_REQUEST
	h.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{
		MaxConcurrentStreams:        wrapperspb.UInt32(edgeMaxConcurrentStreams),
		InitialStreamWindowSize:     wrapperspb.UInt32(edgeStreamWindow),
		InitialConnectionWindowSize: wrapperspb.UInt32(edgeConnectionWindow),
	}
}

// listenerBufferLimit is per_connection_buffer_limit_bytes for a listener
// whose normal limit is floor. It is also the limit of each HTTP request
// body a filter buffers, and ext_authz with allow_partial buffers up to
// max_bytes within it (only without allow_partial does ext_authz raise
// the limit itself): a smaller limit would answer 413 to bodies between
// the two instead of sending the first max_bytes. So it never goes below
// mesh.authz.with_request_body.max_bytes.
func (b *builder) listenerBufferLimit(floor uint32) uint32 {
	if rb := b.m.Authz.WithRequestBody; rb != nil && rb.MaxBytes > floor {
		return rb.MaxBytes
	}
	return floor
}

// listener builds a one-filter-chain listener; bufferLimit, when not 0, is
// its per_connection_buffer_limit_bytes.
func (b *builder) listener(name, addr string, h *hcmv3.HttpConnectionManager, ts *tlsv3.DownstreamTlsContext, bufferLimit uint32) (*listenerv3.Listener, error) {
	a, err := socketAddress(addr)
	if err != nil {
		return nil, fmt.Errorf("translate: listener %s: %w", name, err)
	}
	fc := &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{
		Name:       hcmFilterName,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.toAny(h)},
	}}}
	if ts != nil {
		fc.TransportSocket = &corev3.TransportSocket{
			Name:       tlsTransportSocketName,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.toAny(ts)},
		}
	}
	l := &listenerv3.Listener{Name: name, Address: a, FilterChains: []*listenerv3.FilterChain{fc}}
	if bufferLimit != 0 {
		l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(bufferLimit)
	}
	return intern(b, l), nil
}

func (b *builder) edge(e *config.Edge) (*node, error) {
	n := newNode(e.Name, RoleEdge)
	clientID := b.m.SPIFFEID(config.RoleEdge, e.Name)
	n.identity = clientID

	// One virtual host per host, in order of first appearance; within it,
	// the longest prefix first so the most specific route wins whatever
	// the file's order.
	var hosts []string
	byHost := map[string][]config.Route{}
	for _, r := range e.Routes {
		h := strings.ToLower(r.Host)
		if _, ok := byHost[h]; !ok {
			hosts = append(hosts, h)
		}
		byHost[h] = append(byHost[h], r)
	}
	rc := &routev3.RouteConfiguration{Name: EdgeRouteName(e.Name)}
	for _, h := range hosts {
		rs := byHost[h]
		slices.SortStableFunc(rs, func(x, y config.Route) int { return cmp.Compare(len(y.PathPrefix), len(x.PathPrefix)) })
		vh := &routev3.VirtualHost{Name: h, Domains: []string{h}}
		for _, r := range rs {
			if err := b.serviceCluster(n, r.Service, clientID, forEnvoy); err != nil {
				return nil, err
			}
			vh.Routes = append(vh.Routes, &routev3.Route{
				Match:                pathMatch(r.PathPrefix),
				Action:               toCluster(ServiceClusterName(r.Service)),
				TypedPerFilterConfig: b.authzPerRoute(config.Enabled(r.Authz), RoleEdge, e.Name, r.Service),
			})
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	put(n.routes, intern(b, rc))

	h := b.hcm("edge_"+e.Name, rc.GetName(), b.authzFilters)
	harden(h, config.Enabled(e.NormalizePath), config.Enabled(e.MergeSlashes))
	hardenEdge(h)
	// Proxies in front of the edge that the operator vouches for: Envoy
	// then takes the client address from X-Forwarded-For, that many hops
	// from the right (what it also passes to ext_authz as the source).
	h.XffNumTrustedHops = e.TrustedProxyHops
	secret := EdgeServerSecretName(e.TLS.Cert)
	n.secrets[secret] = SecretSpec{Name: secret, Kind: SecretEdgeServer, DNSNames: slices.Clone(e.TLS.DNSNames)}
	ts := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsParams:                      publicTLSParams(),
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds(secret)},
		AlpnProtocols:                  []string{"h2", "http/1.1"},
	}}
	l, err := b.listener(EdgeListenerName, e.Listen, h, ts, b.listenerBufferLimit(edgeBufferLimit))
	if err != nil {
		return nil, err
	}
	put(n.listeners, l)
	if err := b.authzCluster(n); err != nil {
		return nil, err
	}
	return n, b.anyErr
}

func (b *builder) sidecar(s *config.Sidecar) (*node, error) {
	n := newNode(s.Name, RoleSidecar)
	svc := b.services[s.Service]
	if svc == nil {
		return nil, fmt.Errorf("translate: sidecar %s: unknown service %q", s.Name, s.Service)
	}
	id := b.m.ServiceSPIFFEID(svc.Name)
	n.identity = id
	n.useWorkload(id)
	n.useTrustBundle()

	// Inbound: mTLS required, ext_authz on every path but skip_authz.
	vh := &routev3.VirtualHost{Name: svc.Name, Domains: []string{"*"}}
	local := LocalClusterName(svc.Name)
	for _, pre := range s.SkipAuthz {
		vh.Routes = append(vh.Routes, &routev3.Route{
			Match: pathMatch(pre), Action: toCluster(local),
			TypedPerFilterConfig: b.authzPerRoute(false, RoleSidecar, s.Name, svc.Name),
		})
	}
	vh.Routes = append(vh.Routes, &routev3.Route{
		Match: pathMatch("/"), Action: toCluster(local),
		TypedPerFilterConfig: b.authzPerRoute(true, RoleSidecar, s.Name, svc.Name),
	})
	rc := intern(b, &routev3.RouteConfiguration{Name: InboundRouteName(svc.Name), VirtualHosts: []*routev3.VirtualHost{vh}})
	put(n.routes, rc)
	h := b.hcm("inbound_"+svc.Name, rc.GetName(), b.sidecarAuthzFilters)
	harden(h, true, true)
	if s.ForwardClientCert {
		// The app learns its caller's SPIFFE ID; a client-sent header is
		// replaced, never trusted.
		h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	}
	ts := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      meshTLSParams(),
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds(WorkloadSecretName(id))},
			ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: sds(TrustBundleSecretName)},
			AlpnProtocols:                  []string{"h2", "http/1.1"},
		},
	}
	l, err := b.listener(InboundListenerName, s.Listen, h, ts, b.listenerBufferLimit(envoyDefaultBufferLimit))
	if err != nil {
		return nil, err
	}
	put(n.listeners, l)
	if err := b.cluster(n, upstream{name: local, endpoints: []string{s.App}, http2: svc.Protocol == config.ProtocolHTTP2}, forEnvoy); err != nil {
		return nil, err
	}
	if err := b.authzCluster(n); err != nil {
		return nil, err
	}

	// Outbound: plaintext from the app on loopback, mTLS onwards. The
	// callee's sidecar authorises; the outbound listener only routes.
	for _, o := range s.Outbound {
		if err := b.serviceCluster(n, o.Service, id, forEnvoy); err != nil {
			return nil, err
		}
		orc := intern(b, &routev3.RouteConfiguration{Name: OutboundRouteName(o.Service), VirtualHosts: []*routev3.VirtualHost{{
			Name: o.Service, Domains: []string{"*"},
			Routes: []*routev3.Route{{Match: pathMatch("/"), Action: toCluster(ServiceClusterName(o.Service))}},
		}}})
		put(n.routes, orc)
		ol, err := b.listener(OutboundListenerName(o.Service), o.Listen, b.hcm("outbound_"+o.Service, orc.GetName(), b.outboundFilters), nil, 0)
		if err != nil {
			return nil, err
		}
		put(n.listeners, ol)
	}
	return n, b.anyErr
}

// grpcClient builds api_listeners for grpc-go: the listener name is the
// dial target's name, routes by RDS over ADS, router filter only (grpc-go
// rejects HTTP filters it does not implement).
func (b *builder) grpcClient(c *config.GRPCClient) (*node, error) {
	n := newNode(c.Name, RoleGRPC)
	id := b.m.SPIFFEID(config.RoleGRPC, c.Name)
	n.identity = id
	for _, t := range c.Targets {
		name := config.GRPCListenerName(t.Target)
		if name == "" {
			return nil, fmt.Errorf("translate: grpc client %s: target %q is not xds:///<name>", c.Name, t.Target)
		}
		if err := b.serviceCluster(n, t.Service, id, forGRPC); err != nil {
			return nil, err
		}
		rc := intern(b, &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
			Name: name, Domains: []string{"*"},
			Routes: []*routev3.Route{{Match: pathMatch("/"), Action: toCluster(ServiceClusterName(t.Service))}},
		}}})
		put(n.routes, rc)
		h := b.hcm("grpc_"+name, name, b.routerOnly)
		l := intern(b, &listenerv3.Listener{
			Name:        name,
			ApiListener: &listenerv3.ApiListener{ApiListener: b.toAny(h)},
		})
		put(n.listeners, l)
	}
	return n, b.anyErr
}
