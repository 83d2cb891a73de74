package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/cache/cachetest"
)

func secretsOf(t *testing.T, resp *discovery.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	out := map[string]*tlsv3.Secret{}
	for _, a := range resp.GetResources() {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		out[s.GetName()] = &s
	}
	return out
}

func rotate(c *cachetest.Certs) []cache.Secret {
	return []cache.Secret{{Resource: c.CertSecret()}, {Resource: c.CASecret()}}
}

// startADS is the start both ADS protocol tests share: a harness whose
// cache holds the full set for nodeID, built on the first of four
// certificates with serials serial to serial+3 (returned in that order), an
// ADS client of it, and the node to subscribe as.
func startADS(t *testing.T, nodeID string, serial int64) (*harness, discovery.AggregatedDiscoveryServiceClient, *corev3.Node, [4]*cachetest.Certs) {
	t.Helper()
	var cs [4]*cachetest.Certs
	for i := range cs {
		cs[i] = certs(t, serial+int64(i))
	}
	h := seededHarness(t, nodeID, cachetest.Set(cs[0], "10.0.0.1:1"))
	return h, discovery.NewAggregatedDiscoveryServiceClient(h.conn(t)), &corev3.Node{Id: nodeID}, cs
}

// TestSotw drives an ADS stream the way Envoy does and checks rotation,
// NACK parking, status and reconnects.
func TestSotw(t *testing.T) {
	const nodeID = "envoy-sotw"
	h, client, node, cs := startADS(t, nodeID, 0x21)
	c2, c3, c4 := cs[1], cs[2], cs[3]
	ctx := context.Background()
	resps, send, scancel := openStream(t, client.StreamAggregatedResources)

	// Subscribe like Envoy: CDS and LDS wildcard, the rest by name; only
	// the first request carries the node.
	reqs := map[string]*discovery.DiscoveryRequest{}
	acked := map[string]string{}
	for i, req := range []*discovery.DiscoveryRequest{
		sotwReq(node, resource.ClusterType),
		sotwReq(nil, resource.EndpointType, cachetest.Name),
		sotwReq(nil, resource.SecretType, cachetest.CertSecret, cachetest.CASecret),
		sotwReq(nil, resource.ListenerType),
		sotwReq(nil, resource.RouteType, cachetest.Name),
	} {
		if i > 0 {
			req.Node = nil
		}
		send(req)
		resp := next(t, resps)
		if resp.GetTypeUrl() != req.GetTypeUrl() || len(resp.GetResources()) == 0 {
			t.Fatalf("subscribe %s: got %s with %d resources", req.GetTypeUrl(), resp.GetTypeUrl(), len(resp.GetResources()))
		}
		if want := h.cache.Version(nodeID, req.GetTypeUrl()); resp.GetVersionInfo() != want {
			t.Fatalf("%s version %q, want cache version %q", req.GetTypeUrl(), resp.GetVersionInfo(), want)
		}
		reqs[req.GetTypeUrl()] = req
		acked[req.GetTypeUrl()] = resp.GetVersionInfo()
		send(ack(req, resp))
	}
	none(t, resps, "after ACKing everything")
	sds := reqs[resource.SecretType]

	// Rotation sends the secrets and nothing else.
	if err := h.cache.SetSecrets(ctx, nodeID, rotate(c2)); err != nil {
		t.Fatal(err)
	}
	resp := next(t, resps)
	if resp.GetTypeUrl() != resource.SecretType {
		t.Fatalf("rotation delivered %s, want only secrets", resp.GetTypeUrl())
	}
	if got := secretsOf(t, resp); len(got) != 2 ||
		string(got[cachetest.CertSecret].GetTlsCertificate().GetCertificateChain().GetInlineBytes()) != string(c2.CertPEM) {
		t.Fatalf("rotation delivered %v, want both secrets with the new certificate", got)
	}
	send(ack(sds, resp))
	acked[resource.SecretType] = resp.GetVersionInfo()
	none(t, resps, "rotation must change only the secret type")

	// A NACK is recorded and not answered with the same config again.
	if err := h.cache.SetSecrets(ctx, nodeID, rotate(c3)); err != nil {
		t.Fatal(err)
	}
	bad := next(t, resps)
	send(&discovery.DiscoveryRequest{
		TypeUrl: resource.SecretType, ResourceNames: sds.GetResourceNames(),
		VersionInfo: acked[resource.SecretType], ResponseNonce: bad.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "bad certificate"},
	})
	none(t, resps, "NACKed secrets must not be resent")
	eventually(t, "NACK in status", func() bool {
		return h.nodeStatus(t, nodeID).Types[resource.SecretType].NackError != ""
	})
	ns := h.nodeStatus(t, nodeID)
	ts := ns.Types[resource.SecretType]
	if ts.NackedVersion != bad.GetVersionInfo() || ts.NackError != "bad certificate" || ts.NackNonce != bad.GetNonce() || ts.NackAt.IsZero() {
		t.Errorf("secret status = %+v, want NACK of %q with its error", ts, bad.GetVersionInfo())
	}
	if ts.Sent != bad.GetVersionInfo() || ts.Acked != acked[resource.SecretType] {
		t.Errorf("secret status sent=%q acked=%q, want %q and %q", ts.Sent, ts.Acked, bad.GetVersionInfo(), acked[resource.SecretType])
	}
	if got := ns.Secrets[cachetest.CertSecret]; got.Sent != c3.Serial || got.Acked != c2.Serial || got.Current != c3.Serial {
		t.Errorf("cert serials = %+v, want current and sent %s, acked %s", got, c3.Serial, c2.Serial)
	}
	if n := h.counter(t, "gatehouse_xds_nacks_total", "Secret"); n != 1 {
		t.Errorf("nacks{Secret} = %v, want 1", n)
	}

	// The next change reaches the parked watch.
	if err := h.cache.SetSecrets(ctx, nodeID, rotate(c4)); err != nil {
		t.Fatal(err)
	}
	resp = next(t, resps)
	if resp.GetTypeUrl() != resource.SecretType || resp.GetVersionInfo() != h.cache.Version(nodeID, resource.SecretType) {
		t.Fatalf("after fix got %s %q, want the new secrets", resp.GetTypeUrl(), resp.GetVersionInfo())
	}
	send(ack(sds, resp))
	acked[resource.SecretType] = resp.GetVersionInfo()
	eventually(t, "ACK of fixed secrets", func() bool {
		return h.nodeStatus(t, nodeID).Secrets[cachetest.CertSecret].Acked == c4.Serial
	})

	// The admin endpoint shows the same.
	rec := httptest.NewRecorder()
	h.srv.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?node="+nodeID, nil))
	var doc struct {
		Nodes []cache.NodeStatus `json:"nodes"`
	}
	if err := json.NewDecoder(rec.Body).Decode(&doc); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("status handler: code %d, %v", rec.Code, err)
	}
	if len(doc.Nodes) != 1 || doc.Nodes[0].Streams != 1 ||
		doc.Nodes[0].Secrets[cachetest.CASecret].Acked != c4.Serial ||
		doc.Nodes[0].Types[resource.SecretType].NackError != "bad certificate" ||
		doc.Nodes[0].Types[resource.ClusterType].Acked != acked[resource.ClusterType] {
		t.Errorf("status document = %+v", doc)
	}

	// Reconnect with the ACKed versions: the wildcard types (CDS, LDS) are
	// not resent; the named ones (EDS, SDS, RDS) are, at the same version,
	// since a version does not say which names the client held. The route
	// type is also reported stale.
	scancel()
	for range resps {
	}
	eventually(t, "stream close", func() bool { return h.nodeStatus(t, nodeID).Streams == 0 })

	resps2, send2, _ := openStream(t, client.StreamAggregatedResources)
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.SecretType, resource.ListenerType, resource.RouteType} {
		req := sotwReq(nil, typ, reqs[typ].GetResourceNames()...)
		req.VersionInfo = acked[typ]
		if typ == resource.ClusterType {
			req.Node = node
		}
		if typ == resource.RouteType {
			req.VersionInfo = "stale"
		}
		send2(req)
		switch typ {
		case resource.ClusterType, resource.ListenerType:
			continue
		}
		resp = next(t, resps2)
		if resp.GetTypeUrl() != typ {
			t.Fatalf("reconnect answered %s, want %s", resp.GetTypeUrl(), typ)
		}
		if want := h.cache.Version(nodeID, typ); resp.GetVersionInfo() != want {
			t.Fatalf("reconnect resent %s at %q, want the current %q", typ, resp.GetVersionInfo(), want)
		}
		req = sotwReq(nil, typ, reqs[typ].GetResourceNames()...)
		req.VersionInfo, req.ResponseNonce = resp.GetVersionInfo(), resp.GetNonce()
		send2(req)
	}
	none(t, resps2, "reconnect with current versions")

	// The reconnected watches are live: an endpoint change arrives alone.
	if err := h.cache.SetResources(ctx, nodeID, map[resource.Type][]types.Resource{resource.EndpointType: {cachetest.Endpoints("10.0.0.2:2")}}); err != nil {
		t.Fatal(err)
	}
	if resp = next(t, resps2); resp.GetTypeUrl() != resource.EndpointType {
		t.Fatalf("after endpoint change got %s", resp.GetTypeUrl())
	}
	none(t, resps2, "endpoint change must not resend other types")
}

// TestDelta checks the same behaviour on the incremental protocol, where
// a rotation carries only the secret that changed.
func TestDelta(t *testing.T) {
	const nodeID = "envoy-delta"
	h, client, node, cs := startADS(t, nodeID, 0x31)
	c1, c2, c3, c4 := cs[0], cs[1], cs[2], cs[3]
	ctx := context.Background()
	resps, send, scancel := openStream(t, client.DeltaAggregatedResources)
	have := map[string]string{} // what the client holds: name → version
	names := func(r *discovery.DeltaDiscoveryResponse) []string {
		var out []string
		for _, res := range r.GetResources() {
			out = append(out, res.GetName())
		}
		slices.Sort(out)
		return out
	}
	accept := func(r *discovery.DeltaDiscoveryResponse) {
		for _, res := range r.GetResources() {
			have[res.GetName()] = res.GetVersion()
		}
		send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}

	send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"*"}})
	r := next(t, resps)
	if r.GetTypeUrl() != resource.ClusterType || len(r.GetResources()) != 1 {
		t.Fatalf("CDS: got %s with %v", r.GetTypeUrl(), names(r))
	}
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r.GetNonce()})
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.SecretType,
		ResourceNamesSubscribe: []string{cachetest.CertSecret, cachetest.CASecret}})
	r = next(t, resps)
	if got := names(r); r.GetTypeUrl() != resource.SecretType || len(got) != 2 {
		t.Fatalf("SDS: got %s with %v", r.GetTypeUrl(), got)
	}
	accept(r)
	none(t, resps, "after ACKs")

	// Rotating only the certificate sends only that secret.
	if err := h.cache.SetSecrets(ctx, nodeID, []cache.Secret{{Resource: c2.CertSecret()}, {Resource: c1.CASecret()}}); err != nil {
		t.Fatal(err)
	}
	r = next(t, resps)
	if got := names(r); r.GetTypeUrl() != resource.SecretType || !slices.Equal(got, []string{cachetest.CertSecret}) || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("rotation delivered %s %v removed %v, want only %s", r.GetTypeUrl(), got, r.GetRemovedResources(), cachetest.CertSecret)
	}
	accept(r)
	none(t, resps, "rotation must change only the certificate")

	// A NACK parks.
	if err := h.cache.SetSecrets(ctx, nodeID, []cache.Secret{{Resource: c3.CertSecret()}, {Resource: c1.CASecret()}}); err != nil {
		t.Fatal(err)
	}
	bad := next(t, resps)
	send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: bad.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "bad delta certificate"}})
	none(t, resps, "NACKed secret must not be resent")
	eventually(t, "NACK in status", func() bool {
		return h.nodeStatus(t, nodeID).Types[resource.SecretType].NackError == "bad delta certificate"
	})
	ns := h.nodeStatus(t, nodeID)
	if ts := ns.Types[resource.SecretType]; ts.NackedVersion != bad.GetSystemVersionInfo() {
		t.Errorf("NACKed version %q, want %q", ts.NackedVersion, bad.GetSystemVersionInfo())
	}
	if got := ns.Secrets[cachetest.CertSecret]; got.Sent != c3.Serial || got.Acked != c2.Serial {
		t.Errorf("cert serials = %+v, want sent %s acked %s", got, c3.Serial, c2.Serial)
	}
	if got := ns.Secrets[cachetest.CASecret]; got.Sent != c1.Serial || got.Acked != c1.Serial {
		t.Errorf("CA serials = %+v, want %s throughout", got, c1.Serial)
	}
	if err := h.cache.SetSecrets(ctx, nodeID, []cache.Secret{{Resource: c4.CertSecret()}, {Resource: c1.CASecret()}}); err != nil {
		t.Fatal(err)
	}
	r = next(t, resps)
	if got := names(r); !slices.Equal(got, []string{cachetest.CertSecret}) {
		t.Fatalf("after fix got %v", got)
	}
	accept(r)
	eventually(t, "ACK in status", func() bool {
		return h.nodeStatus(t, nodeID).Secrets[cachetest.CertSecret].Acked == c4.Serial
	})

	// Reconnect with initial_resource_versions: nothing is resent.
	scancel()
	for range resps {
	}
	resps2, send2, _ := openStream(t, client.DeltaAggregatedResources)
	send2(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.SecretType,
		ResourceNamesSubscribe:  []string{cachetest.CertSecret, cachetest.CASecret},
		InitialResourceVersions: have})
	none(t, resps2, "reconnect with current versions")

	// Its watch is live: rotating the CA sends only the CA.
	if err := h.cache.SetSecrets(ctx, nodeID, []cache.Secret{{Resource: c4.CertSecret()}, {Resource: c4.CASecret()}}); err != nil {
		t.Fatal(err)
	}
	if r = next(t, resps2); !slices.Equal(names(r), []string{cachetest.CASecret}) {
		t.Fatalf("CA rotation after reconnect sent %v", names(r))
	}
}
