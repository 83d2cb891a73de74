package translate

import "strings"

// Node ids. A proxy's node id (Envoy's --service-node / node.id, the gRPC
// bootstrap's node.id) is its name in the mesh section: the edge's name, the
// sidecar's name (default: its service's name) or the gRPC client's name.
// Replicas of one proxy share the node id and so one set of resources.

// Secret names. SDS secrets are named so that one name means one
// certificate everywhere; xds/secrets serves them by these names.
const (
	// TrustBundleSecretName is the CA bundle every mTLS hop validates peers
	// against (a validation context secret).
	TrustBundleSecretName = "gatehouse-trust-bundle"
	edgeServerPrefix      = "gatehouse-edge/"
)

// WorkloadSecretName names the certificate and key of a SPIFFE identity: the
// SPIFFE ID itself, e.g. "spiffe://gatehouse.local/sidecar/orders".
func WorkloadSecretName(spiffeID string) string { return spiffeID }

// EdgeServerSecretName names an edge's public server certificate, e.g.
// "gatehouse-edge/edge" for tls.cert "edge".
func EdgeServerSecretName(cert string) string { return edgeServerPrefix + cert }

// IsEdgeServerSecretName reports whether name came from EdgeServerSecretName
// and returns the certificate name.
func IsEdgeServerSecretName(name string) (cert string, ok bool) {
	return strings.CutPrefix(name, edgeServerPrefix)
}

// GRPCCertProviderInstance is the certificate provider instance name gRPC
// clients' clusters refer to for mTLS. grpc-go does not speak SDS: the
// client's bootstrap must declare certificate_providers.gatehouse (e.g. a
// file_watcher of its workload certificate and the trust bundle).
const GRPCCertProviderInstance = "gatehouse"

// Resource names inside one node.
const (
	// AuthzClusterName is the HTTP/2 cluster of the ext_authz server.
	AuthzClusterName = "gatehouse-authz"
	// EdgeListenerName is an edge's public listener.
	EdgeListenerName = "https"
	// InboundListenerName is a sidecar's mTLS listener.
	InboundListenerName = "inbound"
)

// ServiceClusterName is the cluster (and its ClusterLoadAssignment) of a
// mesh service.
func ServiceClusterName(service string) string { return "service/" + service }

// LocalClusterName is a sidecar's cluster of its own application.
func LocalClusterName(service string) string { return "local/" + service }

// OutboundListenerName is a sidecar's loopback listener towards service.
func OutboundListenerName(service string) string { return "outbound/" + service }

// EdgeRouteName is the route configuration of an edge's listener.
func EdgeRouteName(edge string) string { return "edge/" + edge }

// InboundRouteName is the route configuration of a sidecar's inbound listener.
func InboundRouteName(service string) string { return "inbound/" + service }

// OutboundRouteName is the route configuration of an outbound listener.
func OutboundRouteName(service string) string { return "outbound/" + service }

// Keys of the context_extensions every authorised route sends to ext_authz
// (CheckRequest.attributes.context_extensions), for policy to use.
const (
	ContextRole    = "role"    // edge | sidecar
	ContextProxy   = "proxy"   // node id
	ContextService = "service" // the service the request is routed to
)

// HTTP filter names as Envoy documents them.
const (
	HeaderMutationFilterName = "envoy.filters.http.header_mutation"
	ExtAuthzFilterName       = "envoy.filters.http.ext_authz"
	RouterFilterName         = "envoy.filters.http.router"
	hcmFilterName            = "envoy.filters.network.http_connection_manager"
	tlsTransportSocketName   = "envoy.transport_sockets.tls"
	httpProtocolOptionsKey   = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// DefaultIdentityHeaderPrefix is the prefix of the headers ext_authz adds on
// allow; every client-sent header with it is removed before ext_authz runs.
const DefaultIdentityHeaderPrefix = "x-gatehouse-"

// AssertionHeaderSuffix names the signed assertion header (after the
// identity prefix) that the edge's ext_authz adds and sidecars verify: the
// one identity header a sidecar's filters let through to ext_authz.
const AssertionHeaderSuffix = "assertion"

// IdentityHeaders are the identity headers ext_authz sets, under the default
// prefix. The header_mutation filter removes every header with the prefix
// (remove_on_match); it also removes these by exact name, so the list is the
// one place that says which names matter.
var IdentityHeaders = []string{
	"x-gatehouse-subject",
	"x-gatehouse-issuer",
	"x-gatehouse-roles",
	"x-gatehouse-groups",
	"x-gatehouse-kind",
	"x-gatehouse-spiffe-id",
	"x-gatehouse-assertion",
	"x-gatehouse-decision-id",
}
