package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Mesh declares the proxies, services and routes the xDS control plane
// serves. One section names every hop; xds/translate turns it into Envoy
// resources per proxy.
//
// Identities. Every proxy and every mTLS service has a SPIFFE ID of the form
// the certs package issues, spiffe://<trust_domain>/<role>/<name>:
//
//	spiffe://<td>/sidecar/<service>   the sidecar in front of <service>; the
//	                                  SAN callers of an mTLS service expect
//	spiffe://<td>/edge/<edge>         an edge proxy, as a client of mTLS services
//	spiffe://<td>/grpc/<client>       a proxyless gRPC client
//
// Hops and transport security:
//
//	client  → edge             TLS; the edge presents tls.cert (DNS names)
//	edge    → service          mTLS when the service has mtls: true, else plaintext
//	app     → sidecar outbound plaintext on loopback
//	sidecar → service          mTLS when the service has mtls: true, else plaintext
//	anyone  → sidecar inbound  mTLS required (require_client_certificate)
//	sidecar → local app        plaintext on loopback
//	gRPC client → service      mTLS (certificate provider "gatehouse") when mtls: true
//	Envoy   → ext_authz        plaintext HTTP/2 gRPC
type Mesh struct {
	// TrustDomain of every SPIFFE ID. Default "gatehouse.local".
	TrustDomain string `yaml:"trust_domain"`
	// Authz is the ext_authz service every edge and sidecar calls.
	Authz MeshAuthz `yaml:"authz"`
	// Services are the upstreams proxies route to.
	Services []Service `yaml:"services"`
	// Edges are public entry proxies.
	Edges []Edge `yaml:"edges"`
	// Sidecars each sit in front of one service.
	Sidecars []Sidecar `yaml:"sidecars"`
	// GRPCClients are proxyless gRPC applications using grpc-go's xDS client.
	GRPCClients []GRPCClient `yaml:"grpc_clients"`
	// CertDir holds operator-provided certificates that replace issued ones:
	// <name>.crt and <name>.key, where name is the SPIFFE path with "/" as
	// "." (sidecar.orders, edge.edge, edge-tls.<cert> for an edge's TLS
	// certificate). They must chain to Gatehouse's CA and carry the SPIFFE id
	// their name says. Watched live; a bad file keeps the last good one.
	CertDir string `yaml:"cert_dir"`
}

// MeshAuthz is how Envoy reaches the ext_authz server.
type MeshAuthz struct {
	// Address is the ext_authz gRPC server, host:port. Required when any edge
	// or sidecar exists.
	Address string `yaml:"address"`
	// Timeout of one check as Envoy sees it. Default 1s; keep it above
	// authz.timeout so the server, not Envoy, decides a slow request.
	Timeout time.Duration `yaml:"timeout"`
	// WithRequestBody buffers the request body into the check when set.
	WithRequestBody *RequestBody `yaml:"with_request_body"`
}

// RequestBody bounds the body Envoy sends to ext_authz.
type RequestBody struct {
	MaxBytes uint32 `yaml:"max_bytes"` // required, 1..16 MiB
	// AllowPartial sends the first max_bytes of a larger body instead of
	// answering 413.
	AllowPartial bool `yaml:"allow_partial"`
}

// Protocols a service speaks.
const (
	ProtocolHTTP1 = "http1"
	ProtocolHTTP2 = "http2"
)

// Service is an upstream.
type Service struct {
	Name string `yaml:"name"`
	// Endpoints are the host:port addresses callers dial. For an mTLS service
	// these are its sidecars' inbound listeners. IP literals are served to
	// proxies by EDS; host names are resolved by the proxy (STRICT_DNS for
	// Envoy, LOGICAL_DNS and then exactly one endpoint for gRPC clients).
	Endpoints []string `yaml:"endpoints"`
	// Protocol is http1 (default) or http2; gRPC services need http2.
	Protocol string `yaml:"protocol"`
	// MTLS says the service is reached through its sidecar: callers present
	// their workload certificate and check the peer is
	// spiffe://<td>/sidecar/<name>.
	MTLS bool `yaml:"mtls"`
}

// Edge is a public entry proxy terminating TLS from clients.
type Edge struct {
	Name string `yaml:"name"`
	// Listen is the public listener, ip:port. Default "0.0.0.0:8443".
	Listen string  `yaml:"listen"`
	TLS    EdgeTLS `yaml:"tls"`
	// NormalizePath applies RFC 3986 normalisation before routing and authz.
	// Default true.
	NormalizePath *bool `yaml:"normalize_path"`
	// MergeSlashes collapses "//" in paths before routing and authz. Default
	// true. Both defaults keep policy and upstream reading the same path.
	MergeSlashes *bool `yaml:"merge_slashes"`
	// TrustedProxyHops is how many proxies in front of the edge (an L7 load
	// balancer, a CDN) append to X-Forwarded-For: the client address is
	// taken that many entries from its right end. Default 0: nothing in
	// front is trusted and the peer address is the client's. At most 5.
	TrustedProxyHops uint32  `yaml:"trusted_proxy_hops"`
	Routes           []Route `yaml:"routes"`
}

// MaxTrustedProxyHops bounds mesh.edges[].trusted_proxy_hops.
const MaxTrustedProxyHops = 5

// EdgeTLS is the edge's server certificate, issued by Gatehouse's CA.
type EdgeTLS struct {
	// Cert names the certificate; default the edge's name.
	Cert     string   `yaml:"cert"`
	DNSNames []string `yaml:"dns_names"` // at least one
}

// Route sends a host and path prefix to a service.
type Route struct {
	// Host is matched against :authority, port ignored. Default "*".
	Host string `yaml:"host"`
	// PathPrefix matches whole path segments: "/api" matches /api and
	// /api/x but not /apix. Default "/".
	PathPrefix string `yaml:"path_prefix"`
	Service    string `yaml:"service"`
	// Authz asks ext_authz before forwarding. Default true; turn it off only
	// for endpoints such as /healthz.
	Authz *bool `yaml:"authz"`
}

// Sidecar sits in front of one service.
type Sidecar struct {
	// Name is the proxy's node id. Default the service name.
	Name    string `yaml:"name"`
	Service string `yaml:"service"`
	// Listen is the inbound mTLS listener, ip:port. Default 0.0.0.0 and the
	// port of the service's first endpoint.
	Listen string `yaml:"listen"`
	// App is the local application, host:port. Default "127.0.0.1:8080".
	App string `yaml:"app"`
	// SkipAuthz lists path prefixes (whole segments) served without asking
	// ext_authz, e.g. /healthz. mTLS is still required.
	SkipAuthz []string `yaml:"skip_authz"`
	// ForwardClientCert sends the caller's SPIFFE ID to the app in
	// x-forwarded-client-cert (SANITIZE_SET, URI only).
	ForwardClientCert bool `yaml:"forward_client_cert"`
	// Outbound are loopback listeners the app calls other services through.
	Outbound []Outbound `yaml:"outbound"`
}

// Outbound is one loopback listener of a sidecar towards a service.
type Outbound struct {
	Service string `yaml:"service"`
	Listen  string `yaml:"listen"` // ip:port, usually 127.0.0.1:<port>
}

// GRPCClient is a proxyless gRPC application.
type GRPCClient struct {
	Name    string       `yaml:"name"`
	Targets []GRPCTarget `yaml:"targets"`
}

// GRPCTarget maps a dial target to a service.
type GRPCTarget struct {
	// Target is what the application dials, "xds:///<listener>"; the
	// listener name grpc-go asks for is <listener>.
	Target  string `yaml:"target"`
	Service string `yaml:"service"`
}

// Roles of proxies; also the second segment of their SPIFFE IDs.
const (
	RoleEdge    = "edge"
	RoleSidecar = "sidecar"
	RoleGRPC    = "grpc"
)

// SPIFFEID returns spiffe://<trust_domain>/<role>/<name>, the scheme the
// certs package issues.
func (m *Mesh) SPIFFEID(role, name string) string {
	return "spiffe://" + m.TrustDomain + "/" + role + "/" + name
}

// ServiceSPIFFEID is the identity an mTLS service's sidecar presents.
func (m *Mesh) ServiceSPIFFEID(service string) string {
	return m.SPIFFEID(RoleSidecar, service)
}

// Service returns the named service, or nil.
func (m *Mesh) Service(name string) *Service {
	for i := range m.Services {
		if m.Services[i].Name == name {
			return &m.Services[i]
		}
	}
	return nil
}

// GRPCListenerName is the LDS resource name grpc-go requests for target
// ("xds:///greeter" → "greeter"), or "" when target is not of that form.
func GRPCListenerName(target string) string {
	name, ok := strings.CutPrefix(target, "xds:///")
	if !ok {
		return ""
	}
	return name
}

// Enabled reports a *bool option, true when unset.
func Enabled(b *bool) bool { return b == nil || *b }

// Defaults fills unset mesh fields.
func (m *Mesh) Defaults() {
	setDefault(&m.TrustDomain, "gatehouse.local")
	if m.Authz.Timeout == 0 {
		m.Authz.Timeout = time.Second
	}
	for i := range m.Services {
		setDefault(&m.Services[i].Protocol, ProtocolHTTP1)
	}
	for i := range m.Edges {
		e := &m.Edges[i]
		setDefault(&e.Listen, "0.0.0.0:8443")
		setDefault(&e.TLS.Cert, e.Name)
		for j := range e.Routes {
			setDefault(&e.Routes[j].Host, "*")
			setDefault(&e.Routes[j].PathPrefix, "/")
		}
	}
	for i := range m.Sidecars {
		s := &m.Sidecars[i]
		setDefault(&s.Name, s.Service)
		setDefault(&s.App, "127.0.0.1:8080")
		if s.Listen == "" {
			if svc := m.Service(s.Service); svc != nil && len(svc.Endpoints) > 0 {
				if _, port, err := net.SplitHostPort(svc.Endpoints[0]); err == nil {
					s.Listen = net.JoinHostPort("0.0.0.0", port)
				}
			}
		}
	}
}

// Validate records problems in the mesh section.
func (m *Mesh) Validate(p *Problems) {
	m.Defaults()
	if err := checkTrustDomain(m.TrustDomain); err != nil {
		p.Addf("mesh.trust_domain", "%v", err)
	}
	m.validateAuthz(p)

	services := map[string]int{}
	for i := range m.Services {
		m.validateService(p, i, services)
	}
	sidecarOf := map[string]int{} // service → sidecar index
	nodes := map[string]string{}  // node id → field path of its first use
	addNode := func(at, name string) {
		if name == "" {
			return
		}
		if prev, dup := nodes[name]; dup {
			p.Addf(at+".name", "proxy name %q is already used by %s (names are node ids and must be unique)", name, prev)
			return
		}
		nodes[name] = at
	}
	certOf := map[string]int{} // tls.cert → first edge using it
	for i := range m.Edges {
		at := fmt.Sprintf("mesh.edges[%d]", i)
		e := &m.Edges[i]
		m.validateEdge(p, at, e, services)
		addNode(at, e.Name)
		// One certificate is one secret: edges sharing it must agree on
		// its names, or the last edge's would silently win for all.
		if j, shared := certOf[e.TLS.Cert]; !shared {
			certOf[e.TLS.Cert] = i
		} else if first := m.Edges[j].TLS.DNSNames; !sameNames(first, e.TLS.DNSNames) {
			p.Addf(at+".tls.dns_names", "certificate %q is also used by mesh.edges[%d] with dns_names %v: edges sharing a certificate must list the same names", e.TLS.Cert, j, first)
		}
	}
	for i := range m.Sidecars {
		at := fmt.Sprintf("mesh.sidecars[%d]", i)
		s := &m.Sidecars[i]
		m.validateSidecar(p, at, s, services)
		if j, dup := sidecarOf[s.Service]; dup && s.Service != "" {
			p.Addf(at+".service", "service %q already has a sidecar (mesh.sidecars[%d]); replicas share one sidecar entry", s.Service, j)
		} else {
			sidecarOf[s.Service] = i
		}
		addNode(at, s.Name)
	}
	for i := range m.GRPCClients {
		at := fmt.Sprintf("mesh.grpc_clients[%d]", i)
		m.validateGRPCClient(p, at, &m.GRPCClients[i], services)
		addNode(at, m.GRPCClients[i].Name)
	}
	for i, s := range m.Services {
		if _, ok := sidecarOf[s.Name]; s.MTLS && !ok && s.Name != "" {
			p.Addf(fmt.Sprintf("mesh.services[%d].mtls", i), "service %q is reached over mTLS but no sidecar serves it (add one under mesh.sidecars)", s.Name)
		}
	}
}

// sameNames reports whether a and b hold the same names, in any order.
func sameNames(a, b []string) bool {
	return slices.Equal(slices.Compact(slices.Sorted(slices.Values(a))), slices.Compact(slices.Sorted(slices.Values(b))))
}

func (m *Mesh) validateAuthz(p *Problems) {
	a := &m.Authz
	if a.Address == "" {
		if len(m.Edges)+len(m.Sidecars) > 0 {
			p.Addf("mesh.authz.address", "is required: edges and sidecars call ext_authz there")
		}
	} else {
		checkHostPort(p, "mesh.authz.address", a.Address)
	}
	if a.Timeout < 0 || a.Timeout > time.Minute {
		p.Addf("mesh.authz.timeout", "must be between 0 and 1m; got %s", a.Timeout)
	}
	if b := a.WithRequestBody; b != nil && (b.MaxBytes == 0 || b.MaxBytes > 16<<20) {
		p.Addf("mesh.authz.with_request_body.max_bytes", "must be between 1 and 16777216; got %d", b.MaxBytes)
	}
}

func (m *Mesh) validateService(p *Problems, i int, seen map[string]int) {
	s := &m.Services[i]
	at := fmt.Sprintf("mesh.services[%d]", i)
	if err := checkName(s.Name); err != nil {
		p.Addf(at+".name", "%v", err)
	} else if j, dup := seen[s.Name]; dup {
		p.Addf(at+".name", "duplicate service %q (first at mesh.services[%d])", s.Name, j)
	} else {
		seen[s.Name] = i
	}
	if len(s.Endpoints) == 0 {
		p.Addf(at+".endpoints", "at least one host:port endpoint is required")
	}
	eps := map[string]bool{}
	for j, ep := range s.Endpoints {
		eat := fmt.Sprintf("%s.endpoints[%d]", at, j)
		if checkHostPort(p, eat, ep) && eps[ep] {
			p.Addf(eat, "duplicate endpoint %q", ep)
		}
		eps[ep] = true
	}
	if s.Protocol != ProtocolHTTP1 && s.Protocol != ProtocolHTTP2 {
		p.Addf(at+".protocol", "must be http1 or http2; got %q", s.Protocol)
	}
}

func (m *Mesh) validateEdge(p *Problems, at string, e *Edge, services map[string]int) {
	if err := checkName(e.Name); err != nil {
		p.Addf(at+".name", "%v", err)
	}
	checkListen(p, at+".listen", e.Listen)
	if e.TrustedProxyHops > MaxTrustedProxyHops {
		p.Addf(at+".trusted_proxy_hops", "must be 0 to %d; got %d", MaxTrustedProxyHops, e.TrustedProxyHops)
	}
	if err := checkName(e.TLS.Cert); err != nil {
		p.Addf(at+".tls.cert", "%v", err)
	}
	if len(e.TLS.DNSNames) == 0 {
		p.Addf(at+".tls.dns_names", "at least one DNS name is required for the edge certificate")
	}
	for j, d := range e.TLS.DNSNames {
		if err := checkHostname(d, true); err != nil {
			p.Addf(fmt.Sprintf("%s.tls.dns_names[%d]", at, j), "%v", err)
		}
	}
	if len(e.Routes) == 0 {
		p.Addf(at+".routes", "at least one route is required")
	}
	type key struct{ host, prefix string }
	seen := map[key]int{}
	for j, r := range e.Routes {
		rat := fmt.Sprintf("%s.routes[%d]", at, j)
		if r.Host != "*" {
			if err := checkHostname(r.Host, true); err != nil {
				p.Addf(rat+".host", "%v", err)
			}
		}
		if err := checkPathPrefix(r.PathPrefix); err != nil {
			p.Addf(rat+".path_prefix", "%v", err)
		}
		k := key{strings.ToLower(r.Host), r.PathPrefix}
		if prev, dup := seen[k]; dup {
			p.Addf(rat, "duplicate route for host %q and path_prefix %q (first at %s.routes[%d])", r.Host, r.PathPrefix, at, prev)
		} else {
			seen[k] = j
		}
		checkServiceRef(p, rat+".service", r.Service, services)
	}
}

func (m *Mesh) validateSidecar(p *Problems, at string, s *Sidecar, services map[string]int) {
	if err := checkName(s.Name); err != nil {
		p.Addf(at+".name", "%v", err)
	}
	if checkServiceRef(p, at+".service", s.Service, services) {
		if svc := m.Service(s.Service); !svc.MTLS {
			p.Addf(at+".service", "service %q has a sidecar, so it must set mtls: true (its callers would otherwise speak plaintext to an mTLS listener)", s.Service)
		}
	}
	listens := map[string]string{}
	useListen := func(field, addr string) {
		if !checkListen(p, field, addr) {
			return
		}
		_, port, _ := net.SplitHostPort(addr)
		if prev, dup := listens[port]; dup {
			p.Addf(field, "port %s is already used by %s", port, prev)
		}
		listens[port] = field
	}
	if s.Listen == "" {
		p.Addf(at+".listen", "is required (no service endpoint to take the port from)")
	} else {
		useListen(at+".listen", s.Listen)
	}
	checkHostPort(p, at+".app", s.App)
	for j, pre := range s.SkipAuthz {
		if err := checkPathPrefix(pre); err != nil {
			p.Addf(fmt.Sprintf("%s.skip_authz[%d]", at, j), "%v", err)
		} else if pre == "/" {
			p.Addf(fmt.Sprintf("%s.skip_authz[%d]", at, j), `"/" would turn authz off for every path`)
		}
	}
	outs := map[string]int{}
	for j, o := range s.Outbound {
		oat := fmt.Sprintf("%s.outbound[%d]", at, j)
		if checkServiceRef(p, oat+".service", o.Service, services) {
			if o.Service == s.Service {
				p.Addf(oat+".service", "a sidecar does not need an outbound listener to its own service")
			} else if k, dup := outs[o.Service]; dup {
				p.Addf(oat+".service", "duplicate outbound to %q (first at %s.outbound[%d])", o.Service, at, k)
			}
			outs[o.Service] = j
		}
		if o.Listen == "" {
			p.Addf(oat+".listen", "is required, e.g. 127.0.0.1:15001")
		} else {
			useListen(oat+".listen", o.Listen)
		}
	}
	// An app on loopback shares the sidecar's network namespace: a port
	// Envoy listens on cannot be the app's too.
	if host, port, err := net.SplitHostPort(s.App); err == nil && (host == "localhost" || net.ParseIP(host).IsLoopback()) {
		if prev, dup := listens[port]; dup {
			p.Addf(at+".app", "port %s is the sidecar's own listener (%s): Envoy would proxy to itself or fail to bind", port, prev)
		}
	}
}

func (m *Mesh) validateGRPCClient(p *Problems, at string, c *GRPCClient, services map[string]int) {
	if err := checkName(c.Name); err != nil {
		p.Addf(at+".name", "%v", err)
	}
	if len(c.Targets) == 0 {
		p.Addf(at+".targets", "at least one target is required")
	}
	seen := map[string]int{}
	for j, t := range c.Targets {
		tat := fmt.Sprintf("%s.targets[%d]", at, j)
		name := GRPCListenerName(t.Target)
		if name == "" || strings.ContainsAny(name, "/?#") || strings.TrimSpace(name) != name {
			p.Addf(tat+".target", `must be "xds:///<name>" with a non-empty name and no authority; got %q`, t.Target)
		} else if k, dup := seen[name]; dup {
			p.Addf(tat+".target", "duplicate target %q (first at %s.targets[%d])", t.Target, at, k)
		} else {
			seen[name] = j
		}
		if !checkServiceRef(p, tat+".service", t.Service, services) {
			continue
		}
		svc := m.Service(t.Service)
		if svc.Protocol != ProtocolHTTP2 {
			p.Addf(tat+".service", "service %q must have protocol: http2 to be called by gRPC", t.Service)
		}
		if !allIPs(svc.Endpoints) && len(svc.Endpoints) != 1 {
			p.Addf(tat+".service", "service %q mixes or repeats DNS names; gRPC clients need IP endpoints or exactly one DNS name", t.Service)
		}
	}
}

// AllIPs reports whether every endpoint's host is an IP literal, so the
// service can be served by EDS.
func AllIPs(endpoints []string) bool { return allIPs(endpoints) }

func allIPs(endpoints []string) bool {
	for _, ep := range endpoints {
		host, _, err := net.SplitHostPort(ep)
		if err != nil {
			return false
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return false
		}
	}
	return true
}

func checkServiceRef(p *Problems, field, name string, services map[string]int) bool {
	if name == "" {
		p.Addf(field, "is required")
		return false
	}
	if _, ok := services[name]; !ok {
		p.Addf(field, "unknown service %q (not in mesh.services)", name)
		return false
	}
	return true
}

// checkName accepts names that work as SPIFFE path segments, Envoy node ids
// and resource name parts alike: lower-case DNS labels.
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("name is required")
	}
	if len(name) > 63 {
		return fmt.Errorf("%q is longer than 63 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(name)-1
		if !ok {
			return fmt.Errorf("%q: want lower-case letters, digits and inner '-' (a DNS label)", name)
		}
	}
	return nil
}

func checkTrustDomain(td string) error {
	if td == "" || len(td) > 255 {
		return fmt.Errorf("trust domain must be 1-255 characters")
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("trust domain %q: character %q not allowed (want [a-z0-9.-_])", td, c)
		}
	}
	return nil
}

// checkHostname accepts DNS names, optionally with a leading "*." wildcard.
func checkHostname(h string, wildcard bool) error {
	name := h
	if wildcard {
		name = strings.TrimPrefix(h, "*.")
	}
	if name == "" || len(name) > 253 {
		return fmt.Errorf("%q is not a DNS name", h)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a DNS name", h)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%q is not a DNS name (character %q)", h, c)
			}
		}
	}
	return nil
}

// checkHostPort accepts host:port where host is an IP literal or DNS name.
func checkHostPort(p *Problems, field, addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.Addf(field, "not a host:port address: %v", err)
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		p.Addf(field, "port must be 1-65535; got %q", port)
		return false
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if err := checkHostname(host, false); err != nil {
			p.Addf(field, "host: %v", err)
			return false
		}
	}
	return true
}

// checkListen accepts ip:port: Envoy listeners bind IP literals only.
func checkListen(p *Problems, field, addr string) bool {
	if !checkHostPort(p, field, addr) {
		return false
	}
	host, _, _ := net.SplitHostPort(addr)
	if _, err := netip.ParseAddr(host); err != nil {
		p.Addf(field, "listeners bind an IP address, e.g. 0.0.0.0:%s; got %q", addr[strings.LastIndexByte(addr, ':')+1:], addr)
		return false
	}
	return true
}

// checkPathPrefix accepts an absolute, already-normalised path prefix: what
// Envoy compares after normalize_path and merge_slashes.
func checkPathPrefix(pre string) error {
	switch {
	case !strings.HasPrefix(pre, "/"):
		return fmt.Errorf("%q must start with /", pre)
	case pre != "/" && strings.HasSuffix(pre, "/"):
		return fmt.Errorf("%q must not end with / (prefixes match whole segments)", pre)
	case strings.Contains(pre, "//"):
		return fmt.Errorf("%q contains // (never matches after merge_slashes)", pre)
	case strings.ContainsAny(pre, "?#%\\ \t"):
		return fmt.Errorf("%q must not contain ?, #, %%, \\ or spaces", pre)
	}
	for _, seg := range strings.Split(pre[1:], "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%q contains a %q segment (never matches after normalize_path)", pre, seg)
		}
	}
	return nil
}
