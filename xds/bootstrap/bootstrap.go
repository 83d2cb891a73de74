// Package bootstrap renders the static configuration a proxy starts with:
// Envoy bootstrap YAML (node identity, ADS to the control plane, admin) and
// the grpc-go xDS bootstrap JSON for proxyless gRPC clients. Everything else
// a proxy runs comes over ADS from xds/server.
package bootstrap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	downstreamconnsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gatehouse-proxy/gatehouse/xds/validate"
)

// ControlPlaneCluster is the static cluster of the ADS server.
const ControlPlaneCluster = "gatehouse-xds"

// Options describe one Envoy node's bootstrap.
type Options struct {
	// NodeID is the proxy's name in the mesh section (required).
	NodeID string
	// Cluster is node.cluster; default "gatehouse". The role is a good value.
	Cluster string
	// ControlPlane lists host:port addresses of Gatehouse's ADS server; at
	// least one. They form one STRICT_DNS cluster, so names resolving to
	// several replicas are fine too.
	ControlPlane []string
	// TLS, when set, makes the ADS connection mTLS from files.
	TLS *TLS
	// AdminAddress is the admin listener, ip:port; default "127.0.0.1:9901".
	// Keep it on loopback: admin can stop the proxy.
	AdminAddress string
	// MaxDownstreamConnections caps the proxy's open downstream connections
	// across all listeners (overload manager); default
	// DefaultMaxDownstreamConnections.
	MaxDownstreamConnections int64
	// MaxHeapBytes is the heap size the overload manager measures against:
	// at 95% Envoy releases free memory, at 98% it answers new requests
	// with 503 instead of running out of memory. Default
	// DefaultMaxHeapBytes; set it a little under the container's memory
	// limit.
	MaxHeapBytes uint64
}

// Overload manager defaults, from Envoy's edge proxy best practices
// (configuration/best_practices/edge). Without a connection limit Envoy
// accepts connections until it runs out of file descriptors or memory,
// and warns at start that none is configured.
const (
	DefaultMaxDownstreamConnections = 50000
	DefaultMaxHeapBytes             = 2 << 30
	// Resource monitor names as Envoy registers them.
	DownstreamConnectionsMonitor = "envoy.resource_monitors.global_downstream_max_connections"
	FixedHeapMonitor             = "envoy.resource_monitors.fixed_heap"
	// Overload actions on the heap monitor and their thresholds.
	ShrinkHeapAction            = "envoy.overload_actions.shrink_heap"
	StopAcceptingRequestsAction = "envoy.overload_actions.stop_accepting_requests"
	shrinkHeapThreshold         = 0.95
	stopAcceptingRequestsAtHeap = 0.98
	overloadRefreshInterval     = 250 * time.Millisecond
)

// TLS is the proxy's client certificate for the control plane and the CA it
// trusts, as files mounted into the proxy.
type TLS struct {
	CertFile, KeyFile, CAFile string
	// ServerSAN, when set, is the SPIFFE ID (URI SAN) the control plane
	// must present.
	ServerSAN string
}

// Build returns the bootstrap proto for o, validated.
func Build(o Options) (*bootstrapv3.Bootstrap, error) {
	if o.NodeID == "" {
		return nil, fmt.Errorf("bootstrap: NodeID is required")
	}
	if len(o.ControlPlane) == 0 {
		return nil, fmt.Errorf("bootstrap: node %s: at least one control plane address is required", o.NodeID)
	}
	if o.Cluster == "" {
		o.Cluster = "gatehouse"
	}
	if o.AdminAddress == "" {
		o.AdminAddress = "127.0.0.1:9901"
	}
	admin, err := address(o.AdminAddress)
	if err == nil && net.ParseIP(admin.GetSocketAddress().GetAddress()) == nil {
		// Envoy binds its admin listener to an IP address; a name is
		// refused at start ("malformed IP address").
		err = fmt.Errorf("%q: the admin listener binds an IP address, not a name", o.AdminAddress)
	}
	if err != nil {
		return nil, fmt.Errorf("bootstrap: node %s: admin address: %w", o.NodeID, err)
	}
	var lbs []*endpointv3.LbEndpoint
	for i, cp := range o.ControlPlane {
		a, err := address(cp)
		if err != nil {
			return nil, fmt.Errorf("bootstrap: node %s: control plane [%d]: %w", o.NodeID, i, err)
		}
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: a}}})
	}
	h2, err := anyOf(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
				// ADS streams live for hours; notice a dead peer.
				ConnectionKeepalive: &corev3.KeepaliveSettings{
					Interval: durationpb.New(30 * time.Second),
					Timeout:  durationpb.New(5 * time.Second),
				},
			}},
		}},
	})
	if err != nil {
		return nil, err
	}
	xds := &clusterv3.Cluster{
		Name:                 ControlPlaneCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		DnsLookupFamily:      clusterv3.Cluster_V4_PREFERRED,
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: ControlPlaneCluster,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
	}
	if t := o.TLS; t != nil {
		if t.CertFile == "" || t.KeyFile == "" || t.CAFile == "" {
			return nil, fmt.Errorf("bootstrap: node %s: TLS needs CertFile, KeyFile and CAFile", o.NodeID)
		}
		vc := &tlsv3.CertificateValidationContext{TrustedCa: file(t.CAFile)}
		if t.ServerSAN != "" {
			vc.MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: t.ServerSAN}},
			}}
		}
		ctx, err := anyOf(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			// Gatehouse's xDS server accepts TLS 1.3 only; Envoy's client
			// maximum defaults to 1.2, so both ends are pinned to 1.3.
			TlsParams: &tlsv3.TlsParameters{
				TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
				TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			},
			TlsCertificates:       []*tlsv3.TlsCertificate{{CertificateChain: file(t.CertFile), PrivateKey: file(t.KeyFile)}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc},
			AlpnProtocols:         []string{"h2"},
		}})
		if err != nil {
			return nil, err
		}
		xds.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ctx}}
	}
	ads := func() *corev3.ConfigSource {
		return &corev3.ConfigSource{
			ResourceApiVersion:    corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}
	}
	bs := &bootstrapv3.Bootstrap{
		Node:  &corev3.Node{Id: o.NodeID, Cluster: o.Cluster},
		Admin: &bootstrapv3.Admin{Address: admin},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   corev3.ApiConfigSource_GRPC,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ControlPlaneCluster},
				}}},
			},
			LdsConfig: ads(),
			CdsConfig: ads(),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{xds}},
	}
	if bs.OverloadManager, err = overloadManager(o); err != nil {
		return nil, fmt.Errorf("bootstrap: node %s: %w", o.NodeID, err)
	}
	if err := validate.Message(bs); err != nil {
		return nil, fmt.Errorf("bootstrap: node %s: %w", o.NodeID, err)
	}
	return bs, nil
}

// overloadManager is the best practices' overload manager: a global cap on
// downstream connections (the downstream_connections monitor, which
// replaces the deprecated overload.global_downstream_max_connections
// runtime key, so no layered_runtime is needed), and the fixed_heap
// monitor's shrink_heap at 95% and stop_accepting_requests at 98%.
func overloadManager(o Options) (*overloadv3.OverloadManager, error) {
	conns, heap := o.MaxDownstreamConnections, o.MaxHeapBytes
	if conns == 0 {
		conns = DefaultMaxDownstreamConnections
	}
	if heap == 0 {
		heap = DefaultMaxHeapBytes
	}
	if conns < 0 {
		return nil, fmt.Errorf("MaxDownstreamConnections %d: must be positive", conns)
	}
	connCfg, err := anyOf(&downstreamconnsv3.DownstreamConnectionsConfig{MaxActiveDownstreamConnections: conns})
	if err != nil {
		return nil, err
	}
	heapCfg, err := anyOf(&fixedheapv3.FixedHeapConfig{MaxHeapSizeBytes: heap})
	if err != nil {
		return nil, err
	}
	onHeap := func(action string, at float64) *overloadv3.OverloadAction {
		return &overloadv3.OverloadAction{Name: action, Triggers: []*overloadv3.Trigger{{
			Name:         FixedHeapMonitor,
			TriggerOneof: &overloadv3.Trigger_Threshold{Threshold: &overloadv3.ThresholdTrigger{Value: at}},
		}}}
	}
	return &overloadv3.OverloadManager{
		RefreshInterval: durationpb.New(overloadRefreshInterval),
		ResourceMonitors: []*overloadv3.ResourceMonitor{
			{Name: DownstreamConnectionsMonitor, ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: connCfg}},
			{Name: FixedHeapMonitor, ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: heapCfg}},
		},
		Actions: []*overloadv3.OverloadAction{
			onHeap(ShrinkHeapAction, shrinkHeapThreshold),
			onHeap(StopAcceptingRequestsAction, stopAcceptingRequestsAtHeap),
		},
	}, nil
}

// Render returns the Envoy bootstrap for o as YAML, headed by a comment
// saying what it is.
func Render(o Options) ([]byte, error) {
	bs, err := Build(o)
	if err != nil {
		return nil, err
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(bs)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: node %s: %w", o.NodeID, err)
	}
	// JSON is YAML; re-encode it in block style for humans.
	var doc yaml.Node
	if err := yaml.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("bootstrap: node %s: %w", o.NodeID, err)
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Envoy bootstrap for Gatehouse node %q, generated by xds/bootstrap.\n", o.NodeID)
	fmt.Fprintf(&buf, "# Listeners, routes, clusters and certificates come over ADS from %s.\n", ControlPlaneCluster)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("bootstrap: node %s: %w", o.NodeID, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("bootstrap: node %s: %w", o.NodeID, err)
	}
	return buf.Bytes(), nil
}

func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

func address(hostport string) (*corev3.Address, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || host == "" {
		return nil, fmt.Errorf("%q: want host:port with a port 1-65535", hostport)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}, nil
}

func file(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

func anyOf(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("bootstrap: pack %s: %w", proto.MessageName(m), err)
	}
	return a, nil
}

// GRPCOptions describe a proxyless gRPC client's xDS bootstrap.
type GRPCOptions struct {
	NodeID string
	// ControlPlane is the ADS server, host:port.
	ControlPlane string
	// Fallbacks are further control plane replicas, host:port, listed after
	// ControlPlane in xds_servers. grpc-go (gRFC A71) uses the first server
	// it can reach and falls back to the next only when the stream fails
	// before any response while a watched resource is not cached; resources
	// it already has keep being used while it reconnects to the first.
	Fallbacks []string
	// Insecure uses plaintext to the control plane; otherwise the client
	// dials it with TLS from its certificate provider files.
	Insecure bool
	// CertFile, KeyFile, CAFile feed the "gatehouse" file_watcher certificate
	// provider the translated clusters name for mTLS to services (and, unless
	// Insecure, the control plane connection). Optional when Insecure and no
	// target needs mTLS.
	CertFile, KeyFile, CAFile string
}

// RenderGRPC returns grpc-go's xDS bootstrap JSON (GRPC_XDS_BOOTSTRAP).
func RenderGRPC(o GRPCOptions) ([]byte, error) {
	if o.NodeID == "" || o.ControlPlane == "" {
		return nil, fmt.Errorf("bootstrap: grpc: NodeID and ControlPlane are required")
	}
	cps := append([]string{o.ControlPlane}, o.Fallbacks...)
	for _, cp := range cps {
		if _, err := address(cp); err != nil {
			return nil, fmt.Errorf("bootstrap: grpc node %s: control plane: %w", o.NodeID, err)
		}
	}
	haveFiles := o.CertFile != "" && o.KeyFile != "" && o.CAFile != ""
	creds := []map[string]any{{"type": "insecure"}}
	if !o.Insecure {
		if !haveFiles {
			return nil, fmt.Errorf("bootstrap: grpc node %s: TLS to the control plane needs CertFile, KeyFile and CAFile", o.NodeID)
		}
		creds = []map[string]any{{"type": "tls", "config": map[string]any{
			"certificate_file": o.CertFile, "private_key_file": o.KeyFile, "ca_certificate_file": o.CAFile,
		}}}
	}
	servers := make([]map[string]any, 0, len(cps))
	for _, cp := range cps {
		servers = append(servers, map[string]any{
			"server_uri":      cp,
			"channel_creds":   creds,
			"server_features": []string{"xds_v3"},
		})
	}
	doc := map[string]any{
		"xds_servers": servers,
		"node":        map[string]any{"id": o.NodeID, "cluster": "grpc"},
	}
	if haveFiles {
		doc["certificate_providers"] = map[string]any{
			"gatehouse": map[string]any{"plugin_name": "file_watcher", "config": map[string]any{
				"certificate_file": o.CertFile, "private_key_file": o.KeyFile, "ca_certificate_file": o.CAFile,
				"refresh_interval": "60s",
			}},
		}
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bootstrap: grpc node %s: %w", o.NodeID, err)
	}
	return append(out, '\n'), nil
}

// Parse reads an Envoy bootstrap (YAML or JSON) strictly: unknown fields
// are errors, then the proto's validation rules and a deep validation with
// every typed_config Any unpacked. It is how shipped and rendered
// bootstraps are checked without an Envoy binary.
func Parse(data []byte) (*bootstrapv3.Bootstrap, error) {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, bs); err != nil {
		return nil, fmt.Errorf("bootstrap: strict decode: %w", err)
	}
	if err := bs.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := validate.Message(bs); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return bs, nil
}
