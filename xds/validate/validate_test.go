package validate_test

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
	"github.com/gatehouse-proxy/gatehouse/xds/validate"
)

func example(t *testing.T) *translate.Result {
	t.Helper()
	cfg, err := config.Load[config.Config]("../../examples/gatehouse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res, err := translate.Translate(&cfg.Mesh)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestExampleValid(t *testing.T) {
	for id, nr := range example(t).Nodes {
		if err := validate.Validate(nr); err != nil {
			t.Errorf("node %s: %v", id, err)
		}
	}
}

// TestStrictJSONRoundTrip: every resource survives protojson and strict
// decoding (no unknown fields) unchanged, Any contents included.
func TestStrictJSONRoundTrip(t *testing.T) {
	for id, nr := range example(t).Nodes {
		for _, rs := range [][]types.Resource{nr.Listeners, nr.Routes, nr.Clusters, nr.Endpoints} {
			for _, r := range rs {
				js, err := protojson.Marshal(r)
				if err != nil {
					t.Fatalf("%s: %v", id, err)
				}
				back := r.ProtoReflect().New().Interface()
				if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, back); err != nil {
					t.Fatalf("%s: strict decode: %v\n%s", id, err, js)
				}
				if !proto.Equal(r, back) {
					t.Errorf("%s: round trip changed %s", id, js)
				}
			}
		}
	}
}

// clone deep-copies a node so a test can break it without touching the
// shared resources.
func clone(nr *translate.NodeResources) *translate.NodeResources {
	cp := func(rs []types.Resource) []types.Resource {
		out := make([]types.Resource, len(rs))
		for i, r := range rs {
			out[i] = proto.Clone(r)
		}
		return out
	}
	return &translate.NodeResources{
		Node: nr.Node, Role: nr.Role,
		Listeners: cp(nr.Listeners), Routes: cp(nr.Routes), Clusters: cp(nr.Clusters), Endpoints: cp(nr.Endpoints),
		SecretNames: append([]string(nil), nr.SecretNames...),
	}
}

func named[T interface {
	types.Resource
	GetName() string
}](rs []types.Resource, name string) T {
	for _, r := range rs {
		if v, ok := r.(T); ok && v.GetName() == name {
			return v
		}
	}
	panic("no resource " + name)
}

func without(rs []types.Resource, name string) []types.Resource {
	var out []types.Resource
	for _, r := range rs {
		if r.(interface{ GetName() string }).GetName() != name {
			out = append(out, r)
		}
	}
	return out
}

// rewriteHCM edits the HttpConnectionManager inside a listener.
func rewriteHCM(t *testing.T, l *listenerv3.Listener, edit func(*hcmv3.HttpConnectionManager)) {
	t.Helper()
	f := l.GetFilterChains()[0].GetFilters()[0]
	h := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	edit(h)
	a, err := anypb.New(h)
	if err != nil {
		t.Fatal(err)
	}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
}

func TestValidateCatches(t *testing.T) {
	edgeRoute := translate.EdgeRouteName("edge")
	tests := []struct {
		name      string
		node      string
		available []string
		breakIt   func(t *testing.T, nr *translate.NodeResources)
		want      []string // all must appear in the error
	}{
		{
			name: "cluster with empty name", node: "edge",
			breakIt: func(t *testing.T, nr *translate.NodeResources) {
				named[*clusterv3.Cluster](nr.Clusters, translate.AuthzClusterName).Name = ""
			},
			want: []string{"node edge", "cluster[0]: empty name"},
		},
		{
			name: "listener refers to a missing route configuration", node: "edge",
			breakIt: func(t *testing.T, nr *translate.NodeResources) { nr.Routes = without(nr.Routes, edgeRoute) },
			want:    []string{"node edge", `listener "https"`, "rds.route_config_name", `route configuration "edge/edge" is not in the node's routes`},
		},
		{
			name: "Any of an unregistered type", node: "edge",
			breakIt: func(t *testing.T, nr *translate.NodeResources) {
				rewriteHCM(t, named[*listenerv3.Listener](nr.Listeners, translate.EdgeListenerName), func(h *hcmv3.HttpConnectionManager) {
					h.HttpFilters[1].ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/acme.NoSuchFilter"}}
				})
			},
			want: []string{`listener "https"`, "http_filters[1].typed_config", `cannot unpack "type.googleapis.com/acme.NoSuchFilter"`},
		},
		{
			name: "invalid contents inside a nested Any", node: "edge",
			breakIt: func(t *testing.T, nr *translate.NodeResources) {
				rewriteHCM(t, named[*listenerv3.Listener](nr.Listeners, translate.EdgeListenerName), func(h *hcmv3.HttpConnectionManager) {
					ea := &extauthzv3.ExtAuthz{}
					if err := h.HttpFilters[1].GetTypedConfig().UnmarshalTo(ea); err != nil {
						t.Fatal(err)
					}
					ea.GetGrpcService().GetEnvoyGrpc().ClusterName = ""
					a, _ := anypb.New(ea)
					h.HttpFilters[1].ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}
				})
			},
			want: []string{"http_filters[1].typed_config(ExtAuthz)", "ClusterName"},
		},
		{
			name: "unknown fields inside an Any", node: "edge",
			breakIt: func(t *testing.T, nr *translate.NodeResources) {
				l := named[*listenerv3.Listener](nr.Listeners, translate.EdgeListenerName)
				tc := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
				tc.Value = append(tc.Value, 0xf8, 0xff, 0x7f, 0x01) // field 2097151, varint 1
			},
			want: []string{"unknown fields in envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"},
		},
		{
			name: "route names a missing cluster", node: "orders",
			breakIt: func(t *testing.T, nr *translate.NodeResources) {
				nr.Clusters = without(nr.Clusters, translate.ServiceClusterName("inventory"))
			},
			want: []string{`route "outbound/inventory"`, "route.cluster", `cluster "service/inventory" is not in the node's clusters`},
		},
		{
			name: "ext_authz names a missing cluster", node: "orders",
			breakIt: func(t *testing.T, nr *translate.NodeResources) {
				nr.Clusters = without(nr.Clusters, translate.AuthzClusterName)
			},
			want: []string{`listener "inbound"`, "envoy_grpc.cluster_name", `cluster "gatehouse-authz" is not in the node's clusters`},
		},
		{
			name: "EDS cluster without endpoints", node: "web",
			breakIt: func(t *testing.T, nr *translate.NodeResources) { nr.Endpoints = nil },
			want:    []string{`cluster "service/greeter": eds_cluster_config`, `ClusterLoadAssignment "service/greeter" is not in the node's endpoints`},
		},
		{
			name: "SDS secret not in SecretNames", node: "orders",
			breakIt: func(t *testing.T, nr *translate.NodeResources) {
				nr.SecretNames = []string{translate.TrustBundleSecretName}
			},
			want: []string{`listener "inbound"`, "tls_certificate_sds_secret_configs[0].name", `secret "spiffe://gatehouse.local/sidecar/orders" is not in the node's SecretNames`},
		},
		{
			name: "unreferenced secret", node: "inventory",
			breakIt: func(t *testing.T, nr *translate.NodeResources) {
				nr.SecretNames = append(nr.SecretNames, "spiffe://gatehouse.local/sidecar/zzz")
			},
			want: []string{`secret "spiffe://gatehouse.local/sidecar/zzz": nothing references it`},
		},
		{
			name: "unreferenced route configuration", node: "inventory",
			breakIt: func(t *testing.T, nr *translate.NodeResources) {
				nr.Routes = append(nr.Routes, &routev3.RouteConfiguration{Name: "stray"})
			},
			want: []string{`route configuration "stray": nothing references it`},
		},
		{
			name: "secret not available", node: "inventory", available: []string{translate.TrustBundleSecretName},
			breakIt: func(t *testing.T, nr *translate.NodeResources) {},
			want:    []string{`secret "spiffe://gatehouse.local/sidecar/inventory": not available`},
		},
		{
			name: "config source not ADS", node: "web",
			breakIt: func(t *testing.T, nr *translate.NodeResources) {
				c := named[*clusterv3.Cluster](nr.Clusters, translate.ServiceClusterName("greeter"))
				c.EdsClusterConfig.EdsConfig.ConfigSourceSpecifier = &corev3.ConfigSource_Path{Path: "/etc/eds.yaml"}
			},
			want: []string{`cluster "service/greeter"`, "eds_cluster_config.eds_config: config source must be ADS"},
		},
		{
			name: "wrong type in a list", node: "web",
			breakIt: func(t *testing.T, nr *translate.NodeResources) { nr.Clusters = append(nr.Clusters, nr.Routes[0]) },
			want:    []string{"cluster[1]", "is a envoy.config.route.v3.RouteConfiguration"},
		},
		{
			name: "duplicate names", node: "web",
			breakIt: func(t *testing.T, nr *translate.NodeResources) { nr.Clusters = append(nr.Clusters, nr.Clusters[0]) },
			want:    []string{`cluster "service/greeter": duplicate name`},
		},
		{
			name: "invalid top-level field", node: "web",
			breakIt: func(t *testing.T, nr *translate.NodeResources) {
				named[*clusterv3.Cluster](nr.Clusters, translate.ServiceClusterName("greeter")).LbPolicy = 99
			},
			want: []string{`cluster "service/greeter": (resource)`, "LbPolicy"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := example(t)
			nr := clone(res.Nodes[tt.node])
			if err := validate.Validate(nr); err != nil {
				t.Fatalf("valid before breaking: %v", err)
			}
			tt.breakIt(t, nr)
			err := validate.Validate(nr, tt.available...)
			if err == nil {
				t.Fatal("broken node passed validation")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			// Breaking a clone must not touch the shared originals.
			if err := validate.Validate(res.Nodes[tt.node]); err != nil {
				t.Errorf("original changed: %v", err)
			}
		})
	}
}

func TestMessage(t *testing.T) {
	bad := &clusterv3.Cluster{Name: "x", TypedExtensionProtocolOptions: map[string]*anypb.Any{"k": {TypeUrl: "type.googleapis.com/acme.Nope"}}}
	if err := validate.Message(bad); err == nil || !strings.Contains(err.Error(), `typed_extension_protocol_options["k"]`) {
		t.Errorf("Message = %v, want the unknown Any named by its map key", err)
	}
	if err := validate.Message(&clusterv3.Cluster{Name: "x"}); err != nil {
		t.Errorf("Message(valid) = %v", err)
	}
}

// TestMemo: a Memo gives Validate's answers while deep-checking each
// resource object once. A rejected resource stays rejected, for every node
// serving it and in later generations; a broken copy of a resource that
// passed is checked, not taken for the original; node-level checks run
// every time.
func TestMemo(t *testing.T) {
	breakListener := func(t *testing.T, nr *translate.NodeResources) {
		l := proto.Clone(named[*listenerv3.Listener](nr.Listeners, translate.EdgeListenerName)).(*listenerv3.Listener)
		rewriteHCM(t, l, func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters[1].ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/acme.NoSuchFilter"}}
		})
		nr.Listeners = append(without(nr.Listeners, translate.EdgeListenerName), l)
	}
	// sameBroken serves one broken listener object every time it runs.
	var broken []types.Resource
	sameBroken := func(t *testing.T, nr *translate.NodeResources) {
		if broken == nil {
			breakListener(t, nr)
			broken = nr.Listeners
		}
		nr.Listeners = broken
	}
	tests := []struct {
		name string
		// steps run in order on one Memo, each on a fresh shallow copy of
		// the edge node (resource objects shared), with Next between.
		steps []func(t *testing.T, nr *translate.NodeResources)
		// wantErr per step: "" valid, else a substring of the error.
		wantErr []string
		// wantNew per step: resources deep-checked in that step, -1 = all.
		wantNew []int
	}{
		{
			name:    "unchanged resources are checked once",
			steps:   []func(*testing.T, *translate.NodeResources){nil, nil, nil},
			wantErr: []string{"", "", ""},
			wantNew: []int{-1, 0, 0},
		},
		{
			name:    "a bad resource is rejected every time",
			steps:   []func(*testing.T, *translate.NodeResources){breakListener, nil, breakListener},
			wantErr: []string{`cannot unpack "type.googleapis.com/acme.NoSuchFilter"`, "", `cannot unpack "type.googleapis.com/acme.NoSuchFilter"`},
			wantNew: []int{-1, 1, 1}, // the good listener, then a new broken copy
		},
		{
			name:    "a remembered rejection still rejects",
			steps:   []func(*testing.T, *translate.NodeResources){sameBroken, sameBroken, sameBroken},
			wantErr: []string{`cannot unpack "type.googleapis.com/acme.NoSuchFilter"`, `cannot unpack "type.googleapis.com/acme.NoSuchFilter"`, `cannot unpack "type.googleapis.com/acme.NoSuchFilter"`},
			wantNew: []int{-1, 0, 0},
		},
		{
			name: "node-level checks are not remembered",
			steps: []func(*testing.T, *translate.NodeResources){nil, func(t *testing.T, nr *translate.NodeResources) {
				nr.Routes = without(nr.Routes, translate.EdgeRouteName("edge"))
			}},
			wantErr: []string{"", `route configuration "edge/edge" is not in the node's routes`},
			wantNew: []int{-1, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			edge := example(t).Nodes["edge"]
			all := len(edge.Listeners) + len(edge.Routes) + len(edge.Clusters) + len(edge.Endpoints)
			m := validate.NewMemo()
			for i, step := range tt.steps {
				m.Next()
				nr := *edge
				if step != nil {
					step(t, &nr)
				}
				before := m.Checks()
				err := m.Validate(&nr)
				switch {
				case tt.wantErr[i] == "" && err != nil:
					t.Fatalf("step %d: %v", i, err)
				case tt.wantErr[i] != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr[i])):
					t.Fatalf("step %d: error %v, want %q", i, err, tt.wantErr[i])
				}
				if plain := validate.Validate(&nr); (plain == nil) != (err == nil) || (err != nil && plain.Error() != err.Error()) {
					t.Errorf("step %d: memo says %v, Validate says %v", i, err, plain)
				}
				want := tt.wantNew[i]
				if want < 0 {
					want = all
				}
				if got := m.Checks() - before; got != want {
					t.Errorf("step %d: %d resources deep-checked, want %d", i, got, want)
				}
			}
		})
	}
}
