package cache_test

import (
	"context"
	"maps"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/cache/cachetest"
)

const node = "node-a"

func certs(t *testing.T, serial int64) *cachetest.Certs {
	t.Helper()
	c, err := cachetest.NewCerts(serial)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func versions(c *cache.Cache, nodeID string) map[string]string {
	out := map[string]string{}
	for _, t := range cache.Types() {
		out[t] = c.Version(nodeID, t)
	}
	return out
}

func TestVersionsAreContentHashes(t *testing.T) {
	ctx := context.Background()
	cs := certs(t, 7)
	a, b := cache.New(nil), cache.New(nil)
	// Built twice from scratch, endpoints in another order in b.
	if err := a.SetResources(ctx, node, cachetest.Set(cs, "10.0.0.1:1", "10.0.0.2:2")); err != nil {
		t.Fatal(err)
	}
	setB := cachetest.Set(cs, "10.0.0.1:1", "10.0.0.2:2")
	setB[resource.SecretType] = []types.Resource{cs.CASecret(), cs.CertSecret()}
	if err := b.SetResources(ctx, "node-b", setB); err != nil {
		t.Fatal(err)
	}
	va, vb := versions(a, node), versions(b, "node-b")
	for _, typ := range cache.Types() {
		if va[typ] == "" {
			t.Errorf("%s: empty version", typ)
		}
		if va[typ] != vb[typ] {
			t.Errorf("%s: replicas disagree: %q vs %q", typ, va[typ], vb[typ])
		}
	}

	// Only the endpoint content changes: only its version moves.
	if err := a.SetResources(ctx, node, cachetest.Set(cs, "10.0.0.3:3")); err != nil {
		t.Fatal(err)
	}
	after := versions(a, node)
	for _, typ := range cache.Types() {
		changed := after[typ] != va[typ]
		if want := typ == resource.EndpointType; changed != want {
			t.Errorf("%s: changed=%v, want %v", typ, changed, want)
		}
	}

	// Types absent from the map are kept.
	if err := a.SetResources(ctx, node, map[resource.Type][]types.Resource{
		resource.EndpointType: {cachetest.Endpoints("10.0.0.1:1", "10.0.0.2:2")},
	}); err != nil {
		t.Fatal(err)
	}
	if got := versions(a, node); !maps.Equal(got, va) {
		t.Errorf("after restoring endpoints versions = %v, want the original %v", got, va)
	}
}

func TestTypeVersionRejectsDuplicates(t *testing.T) {
	if _, err := cache.TypeVersion([]types.Resource{cachetest.Route(), cachetest.Route()}); err == nil {
		t.Fatal("duplicate names accepted")
	}
}

func TestSetResourcesRefusesInconsistent(t *testing.T) {
	ctx := context.Background()
	cs := certs(t, 1)
	other := cachetest.Endpoints("10.0.0.9:9")
	other.ClusterName = "other"
	strangerSecret := cs.CertSecret()
	strangerSecret.Name = "stranger"

	tests := []struct {
		name   string
		mutate func(map[resource.Type][]types.Resource)
		want   string
	}{
		{"route missing", func(m map[resource.Type][]types.Resource) { m[resource.RouteType] = nil }, "inconsistent"},
		{"endpoints missing", func(m map[resource.Type][]types.Resource) { m[resource.EndpointType] = nil }, "inconsistent"},
		{"unreferenced endpoints", func(m map[resource.Type][]types.Resource) {
			m[resource.EndpointType] = append(m[resource.EndpointType], other)
		}, "inconsistent"},
		{"secret missing", func(m map[resource.Type][]types.Resource) {
			m[resource.SecretType] = m[resource.SecretType][:1]
		}, "missing"},
		{"unreferenced secret", func(m map[resource.Type][]types.Resource) {
			m[resource.SecretType] = append(m[resource.SecretType], strangerSecret)
		}, "unreferenced"},
		{"duplicate cluster", func(m map[resource.Type][]types.Resource) {
			m[resource.ClusterType] = append(m[resource.ClusterType], cachetest.Cluster(true))
		}, "duplicate"},
		{"unsupported type", func(m map[resource.Type][]types.Resource) {
			m[resource.RuntimeType] = nil
		}, "unsupported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cache.New(nil)
			if err := c.SetResources(ctx, node, cachetest.Set(cs, "10.0.0.1:1")); err != nil {
				t.Fatal(err)
			}
			good := versions(c, node)
			bad := cachetest.Set(cs, "10.0.0.2:2")
			tt.mutate(bad)
			err := c.SetResources(ctx, node, bad)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if got := versions(c, node); !maps.Equal(got, good) {
				t.Errorf("versions after refusal = %v, want last good %v", got, good)
			}
		})
	}
}

func TestSetSecrets(t *testing.T) {
	ctx := context.Background()
	old, rotated := certs(t, 0x10), certs(t, 0x11)
	c := cache.New(nil)
	if err := c.SetSecrets(ctx, node, nil); err == nil {
		t.Fatal("secrets accepted for a node without resources")
	}
	if err := c.SetResources(ctx, node, cachetest.Set(old, "10.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	before := versions(c, node)
	st := c.Status()
	if len(st) != 1 || st[0].Secrets[cachetest.CertSecret].Current != "10" {
		t.Fatalf("status before rotation = %+v, want cert serial 10 derived from the certificate", st)
	}

	tests := []struct {
		name    string
		secrets []cache.Secret
		wantErr bool
	}{
		{"missing ca", []cache.Secret{{Resource: rotated.CertSecret()}}, true},
		{"extra", []cache.Secret{{Resource: rotated.CertSecret()}, {Resource: rotated.CASecret()},
			{Resource: &tlsv3.Secret{Name: "extra"}}}, true},
		{"rotation", []cache.Secret{{Resource: rotated.CertSecret(), Serial: "label-11"}, {Resource: rotated.CASecret()}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.SetSecrets(ctx, node, tt.secrets)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			after := versions(c, node)
			for _, typ := range cache.Types() {
				changed := after[typ] != before[typ]
				if want := !tt.wantErr && typ == resource.SecretType; changed != want {
					t.Errorf("%s: changed=%v, want %v", typ, changed, want)
				}
			}
		})
	}
	sec := c.Status()[0].Secrets
	if sec[cachetest.CertSecret].Current != "label-11" || sec[cachetest.CASecret].Current != "11" {
		t.Errorf("serials after rotation = %+v, want caller label and derived serial", sec)
	}
}

func TestReferencedSecrets(t *testing.T) {
	mk := func(name string, src *corev3.ConfigSource) *listenerv3.Listener {
		a, err := anypb.New(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: name, SdsConfig: src}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return &listenerv3.Listener{Name: name, FilterChains: []*listenerv3.FilterChain{{
			TransportSocket: &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}},
		}}}
	}
	adsSrc := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	got, err := cache.ReferencedSecrets(
		[]types.Resource{mk("server-cert", adsSrc), mk("static-cert", nil)},
		[]types.Resource{cachetest.Cluster(true), cachetest.Cluster(false)},
	)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{cachetest.CASecret, cachetest.CertSecret, "server-cert"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ReferencedSecrets = %v, want %v", got, want)
	}
}

// The stock cache answers a NACK with the rejected snapshot at once; ours
// must hold the watch until the type changes. CreateWatch answers
// synchronously, so an empty channel right after it returns means parked.
func TestNackParksWatch(t *testing.T) {
	ctx := context.Background()
	c := cache.New(nil)
	if err := c.SetResources(ctx, node, cachetest.Set(nil, "10.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	n := &corev3.Node{Id: node}
	req := &discovery.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType, ResourceNames: []string{cachetest.Name}}
	sub := stream.NewSotwSubscription(req.ResourceNames, false)
	ch := make(chan gcache.Response, 1)
	if _, err := c.CreateWatch(req, &sub, ch); err != nil {
		t.Fatal(err)
	}
	resp := <-ch
	sub.SetReturnedResources(resp.GetReturnedResources())
	rejected := resp.GetResponseVersion()

	tests := []struct {
		name    string
		req     *discovery.DiscoveryRequest
		respond bool
	}{
		{"nack of current version parks", &discovery.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType,
			ResourceNames: []string{cachetest.Name}, ResponseNonce: "1",
			ErrorDetail: &statuspb.Status{Message: "bad cluster"}}, false},
		{"ack parks", &discovery.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType,
			ResourceNames: []string{cachetest.Name}, ResponseNonce: "1", VersionInfo: rejected}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := make(chan gcache.Response, 1)
			cancel, err := c.CreateWatch(tt.req, &sub, ch)
			if err != nil {
				t.Fatal(err)
			}
			defer cancel()
			if got := len(ch) == 1; got != tt.respond {
				t.Fatalf("responded=%v, want %v", got, tt.respond)
			}
		})
	}

	// A parked NACK is answered by the next change of its type.
	ch = make(chan gcache.Response, 1)
	cancel, err := c.CreateWatch(tests[0].req, &sub, ch)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	changed := cachetest.Cluster(false)
	changed.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	if err := c.SetResources(ctx, node, map[resource.Type][]types.Resource{resource.ClusterType: {changed}}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if r.GetResponseVersion() == rejected {
			t.Fatalf("parked watch answered with the rejected version %q", rejected)
		}
	default:
		t.Fatal("parked watch not answered after the cluster changed")
	}
}
