package policy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

const testCert = "-----BEGIN%20CERTIFICATE-----%0AMIIB...%0A-----END%20CERTIFICATE-----%0A"

// realisticRequest is a CheckRequest as Envoy sends it for a JSON POST over
// mTLS, with a query string, route context extensions and filter metadata.
func realisticRequest(tb testing.TB) *authv3.CheckRequest {
	tb.Helper()
	md, err := structpb.NewStruct(map[string]any{"tenant": "acme", "weight": 1.5, "tags": []any{"a", nil, true}})
	if err != nil {
		tb.Fatal(err)
	}
	typed, err := anypb.New(wrapperspb.String("typed"))
	if err != nil {
		tb.Fatal(err)
	}
	body := `{"item":"sku-1","qty":2,"price":12.50,"meta":{"gift":true}}`
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 53124},
			}}},
			Principal:   "spiffe://gatehouse.local/sidecar/orders",
			Certificate: testCert,
		},
		Destination: &authv3.AttributeContext_Peer{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Protocol: corev3.SocketAddress_UDP, Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8443},
			}}},
			Labels: map[string]string{"app": "inventory"},
		},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Date(2026, 3, 1, 12, 30, 45, 120_000_000, time.UTC)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:     "1234567890",
				Method: "POST",
				Headers: map[string]string{
					":authority":     "inventory.local",
					":method":        "POST",
					":path":          "/api/inventory/reservations?dry_run=true&tag=a&tag=b",
					"content-type":   "application/json; charset=utf-8",
					"content-length": "58",
					"authorization":  "Bearer abc",
				},
				Path:     "/api/inventory/reservations?dry_run=true&tag=a&tag=b",
				Host:     "inventory.local",
				Scheme:   "https",
				Protocol: "HTTP/2",
				Size:     58,
				Body:     body,
				RawBody:  []byte{0, 1, 2},
			},
		},
		ContextExtensions: map[string]string{"service": "inventory"},
		MetadataContext: &corev3.Metadata{
			FilterMetadata:      map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": md},
			TypedFilterMetadata: map[string]*anypb.Any{"x": typed},
		},
	}}
}

// wantRealisticInput is the expected input document, written out in full:
// protojson names for attributes, plus the plugin's parsed_* fields.
const wantRealisticInput = `{
  "attributes": {
    "source": {
      "address": {"socketAddress": {"address": "10.0.0.7", "portValue": 53124}},
      "principal": "spiffe://gatehouse.local/sidecar/orders",
      "certificate": "` + testCert + `"
    },
    "destination": {
      "address": {"socketAddress": {"protocol": "UDP", "address": "10.0.0.1", "portValue": 8443}},
      "labels": {"app": "inventory"}
    },
    "request": {
      "time": "2026-03-01T12:30:45.120Z",
      "http": {
        "id": "1234567890",
        "method": "POST",
        "headers": {
          ":authority": "inventory.local",
          ":method": "POST",
          ":path": "/api/inventory/reservations?dry_run=true&tag=a&tag=b",
          "content-type": "application/json; charset=utf-8",
          "content-length": "58",
          "authorization": "Bearer abc"
        },
        "path": "/api/inventory/reservations?dry_run=true&tag=a&tag=b",
        "host": "inventory.local",
        "scheme": "https",
        "protocol": "HTTP/2",
        "size": "58",
        "body": "{\"item\":\"sku-1\",\"qty\":2,\"price\":12.50,\"meta\":{\"gift\":true}}",
        "rawBody": "AAEC"
      }
    },
    "contextExtensions": {"service": "inventory"},
    "metadataContext": {
      "filterMetadata": {"envoy.filters.http.jwt_authn": {"tenant": "acme", "weight": 1.5, "tags": ["a", null, true]}},
      "typedFilterMetadata": {"x": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "typed"}}
    }
  },
  "parsed_path": ["api", "inventory", "reservations"],
  "parsed_query": {"dry_run": ["true"], "tag": ["a", "b"]},
  "parsed_body": {"item": "sku-1", "qty": 2, "price": 12.5, "meta": {"gift": true}},
  "truncated_body": false,
  "source_principal": "spiffe://gatehouse.local/sidecar/orders",
  "version": {"ext_authz": "v3", "encoding": "protojson"},
  "identity": {
    "kind": "service",
    "subject": "spiffe://gatehouse.local/sidecar/orders",
    "verified_by": "mtls",
    "spiffe_id": "spiffe://gatehouse.local/sidecar/orders",
    "peer": {
      "principal": "spiffe://gatehouse.local/sidecar/orders",
      "spiffe_id": "spiffe://gatehouse.local/sidecar/orders",
      "uri_sans": ["spiffe://gatehouse.local/sidecar/orders"],
      "sha256_fingerprint": "ab12",
      "not_after": "2027-01-01T00:00:00Z"
    }
  }
}`

func serviceIdentity() *identity.Identity {
	id := "spiffe://gatehouse.local/sidecar/orders"
	return &identity.Identity{
		Kind: identity.KindService, Subject: id, Method: identity.MethodMTLS, SPIFFEID: id,
		Expiry: time.Now().Add(time.Hour), // never reaches policy
		Peer: &identity.Peer{
			Principal: id, SPIFFEID: id, URISANs: []string{id}, SHA256Fingerprint: "ab12",
			NotAfter: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		},
	}
}

func mustJSONValue(tb testing.TB, s string) ast.Value {
	tb.Helper()
	v, err := ast.ValueFromReader(strings.NewReader(s))
	if err != nil {
		tb.Fatalf("bad test JSON: %v", err)
	}
	return v
}

func assertValue(tb testing.TB, got, want ast.Value) {
	tb.Helper()
	if got.Compare(want) != 0 {
		tb.Errorf("input mismatch\n got: %s\nwant: %s", got, want)
		if g, ok := got.(ast.Object); ok {
			if w, ok := want.(ast.Object); ok {
				for _, k := range w.Keys() {
					if gv := g.Get(k); gv == nil || gv.Value.Compare(w.Get(k).Value) != 0 {
						tb.Errorf("key %v differs:\n got: %v\nwant: %v", k, gv, w.Get(k))
					}
				}
				for _, k := range g.Keys() {
					if w.Get(k) == nil {
						tb.Errorf("unexpected key %v", k)
					}
				}
			}
		}
	}
}

func TestBuildInputRealistic(t *testing.T) {
	got, err := BuildInput(realisticRequest(t), serviceIdentity())
	if err != nil {
		t.Fatal(err)
	}
	assertValue(t, got, mustJSONValue(t, wantRealisticInput))
}

// buildInputJSON is the straightforward alternative to BuildInput: protojson
// text parsed back into AST. It is the reference the direct conversion must
// equal, and the baseline of BenchmarkInputJSON.
func buildInputJSON(req *authv3.CheckRequest, id *identity.Identity) (ast.Value, error) {
	b, err := protojson.Marshal(req)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := util.UnmarshalJSON(b, &doc); err != nil {
		return nil, err
	}
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		return nil, err
	}
	input := v.(ast.Object)
	h := req.GetAttributes().GetRequest().GetHttp()
	pp, pq, err := parsePathAndQuery(h.GetPath(), readsAll, readsAll)
	if err != nil {
		return nil, err
	}
	body, trunc, err := parseBody(h.GetHeaders(), h.GetBody(), h.GetRawBody(), DefaultMaxBodyBytes, true)
	if err != nil {
		return nil, err
	}
	input.Insert(ast.StringTerm("parsed_path"), ast.NewTerm(pp))
	input.Insert(ast.StringTerm("parsed_query"), ast.NewTerm(pq))
	input.Insert(ast.StringTerm("parsed_body"), ast.NewTerm(body))
	input.Insert(ast.StringTerm("truncated_body"), ast.BooleanTerm(trunc))
	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		input.Insert(ast.StringTerm("source_principal"), ast.StringTerm(p))
	}
	input.Insert(ast.StringTerm("version"), ast.NewTerm(versionValue))
	if id != nil {
		idv, err := identityValueJSON(id)
		if err != nil {
			return nil, err
		}
		input.Insert(ast.StringTerm("identity"), ast.NewTerm(idv))
	}
	return input, nil
}

// identityValueJSON is the reference for input.identity: the identity's
// JSON encoding, as its struct tags define it.
func identityValueJSON(id *identity.Identity) (ast.Value, error) {
	b, err := json.Marshal(id)
	if err != nil {
		return nil, err
	}
	return ast.ValueFromReader(bytes.NewReader(b))
}

// TestIdentityValueMatchesJSON holds the direct AST builder to the JSON tags
// of identity.Identity, for every field and omission rule.
func TestIdentityValueMatchesJSON(t *testing.T) {
	tests := []struct {
		name string
		id   *identity.Identity
	}{
		{"minimal", &identity.Identity{Kind: identity.KindPeer, Method: identity.MethodMTLS}},
		{"user with claims", &identity.Identity{
			Kind: identity.KindUser, Subject: "alice", Issuer: "https://idp", Method: identity.MethodJWKS,
			Email: "a@example.com", Roles: []string{"reader", "writer"}, Groups: []string{"devs"},
			Expiry: time.Unix(1700000000, 0),
			Claims: map[string]any{
				"exp": json.Number("1700000000"), "ratio": 0.25, "big": json.Number("12345678901234567890"),
				"ok": true, "none": nil, "aud": []any{"a", "b"}, "nested": map[string]any{"x": []any{json.Number("1"), "y", false}},
			},
		}},
		{"service with peer", &identity.Identity{
			Kind: identity.KindService, Subject: "spiffe://td/sidecar/orders", SPIFFEID: "spiffe://td/sidecar/orders",
			Method: identity.MethodMTLS,
			Peer: &identity.Peer{
				Principal: "spiffe://td/sidecar/orders", SPIFFEID: "spiffe://td/sidecar/orders", Subject: "CN=orders",
				Issuer: "CN=ca", URISANs: []string{"spiffe://td/sidecar/orders"}, DNSSANs: []string{"orders"},
				SHA256Fingerprint: "ab", Serial: "1f", NotAfter: time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC),
			},
		}},
		{"peer without certificate", &identity.Identity{Kind: identity.KindService, Peer: &identity.Peer{Principal: "p"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := identityValue(tt.id, readsAll)
			if err != nil {
				t.Fatal(err)
			}
			want, err := identityValueJSON(tt.id)
			if err != nil {
				t.Fatal(err)
			}
			assertValue(t, got, want)
		})
	}
}

// TestBuildInputMatchesProtojson checks the direct AST conversion against
// protojson itself on messages exercising every encoding rule that matters.
func TestBuildInputMatchesProtojson(t *testing.T) {
	tests := []struct {
		name string
		req  func(testing.TB) *authv3.CheckRequest
		id   *identity.Identity
	}{
		{"realistic", realisticRequest, serviceIdentity()},
		{"empty attributes", func(testing.TB) *authv3.CheckRequest { return &authv3.CheckRequest{} }, nil},
		{"timestamp precision", func(testing.TB) *authv3.CheckRequest {
			return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Time: &timestamppb.Timestamp{Seconds: 1, Nanos: 1},
				Http: &authv3.AttributeContext_HttpRequest{Path: "/", Size: -1},
			}}}
		}, nil},
		{"timestamp micros and header map", func(testing.TB) *authv3.CheckRequest {
			return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Request: &authv3.AttributeContext_Request{
					Time: &timestamppb.Timestamp{Seconds: 1700000000, Nanos: 123456000},
					Http: &authv3.AttributeContext_HttpRequest{
						Path: "/x",
						HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
							{Key: "a", Value: "1"}, {Key: "b", RawValue: []byte("raw\xff")},
						}},
					},
				},
				TlsSession: &authv3.AttributeContext_TLSSession{Sni: "svc.local"},
			}}
		}, &identity.Identity{Kind: identity.KindUser, Subject: "u", Method: identity.MethodJWKS,
			Roles: []string{"reader"}, Claims: map[string]any{"n": 1.5, "nested": map[string]any{"x": []any{"y"}}}}},
	}
	// httpRequestValue writes HttpRequest out by hand: a new field in the
	// proto must be added there, and to the case below.
	if n := (&authv3.AttributeContext_HttpRequest{}).ProtoReflect().Descriptor().Fields().Len(); n != 13 {
		t.Fatalf("AttributeContext.HttpRequest has %d fields; httpRequestValue handles 13", n)
	}
	tests = append(tests, struct {
		name string
		req  func(testing.TB) *authv3.CheckRequest
		id   *identity.Identity
	}{"every HttpRequest field", func(testing.TB) *authv3.CheckRequest {
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "i", Method: "PUT", Headers: map[string]string{"a": "1", "content-type": "text/plain"},
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "a", Value: "1"}}},
				Path:      "/p?q=1", Host: "h", Scheme: "https", Query: "q=1", Fragment: "f", Size: 1 << 40,
				Protocol: "HTTP/2", Body: "b", RawBody: []byte{0, 1, 0xff},
			},
		}}}
	}, nil})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req(t)
			got, err := BuildInput(req, tt.id)
			if err != nil {
				t.Fatal(err)
			}
			want, err := buildInputJSON(req, tt.id)
			if err != nil {
				t.Fatal(err)
			}
			assertValue(t, got, want)
		})
	}
}

func TestBuildInputAnonymous(t *testing.T) {
	got, err := BuildInput(&authv3.CheckRequest{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := mustJSONValue(t, `{"parsed_path": [""], "parsed_query": {}, "parsed_body": null, "truncated_body": false,
		"version": {"ext_authz": "v3", "encoding": "protojson"}}`)
	assertValue(t, got, want)
	if _, err := BuildInput(nil, nil); err == nil {
		t.Error("nil request: want error")
	}
}

func httpRequest(path string, headers map[string]string, body string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Path: path, Headers: headers, Body: body},
	}}}
}

func TestParsedPathAndQuery(t *testing.T) {
	tests := []struct {
		path      string
		wantPath  string
		wantQuery string
		wantErr   bool
	}{
		{path: "", wantPath: `[""]`, wantQuery: `{}`},
		{path: "/", wantPath: `[""]`, wantQuery: `{}`},
		{path: "/api/orders", wantPath: `["api","orders"]`, wantQuery: `{}`},
		{path: "/api/orders/", wantPath: `["api","orders",""]`, wantQuery: `{}`},
		{path: "//admin", wantPath: `["admin"]`, wantQuery: `{}`},
		{path: "/api//orders", wantPath: `["api","","orders"]`, wantQuery: `{}`},
		{path: "/%61dmin", wantPath: `["admin"]`, wantQuery: `{}`},
		{path: "/a%2Fb", wantPath: `["a","b"]`, wantQuery: `{}`},
		{path: "/a/%2e%2e/b", wantPath: `["a","..","b"]`, wantQuery: `{}`},
		{path: "/a/%252e", wantPath: `["a","%2e"]`, wantQuery: `{}`},
		{path: "/a+b%20c", wantPath: `["a+b c"]`, wantQuery: `{}`},
		{path: "/admin;x=1/y", wantPath: `["admin;x=1","y"]`, wantQuery: `{}`},
		{path: "/p?x=1&x=2&y&z=a+b%26c", wantPath: `["p"]`, wantQuery: `{"x":["1","2"],"y":[""],"z":["a b&c"]}`},
		{path: "/p?", wantPath: `["p"]`, wantQuery: `{}`},
		{path: "/p?a=/admin?b", wantPath: `["p"]`, wantQuery: `{"a":["/admin?b"]}`},
		{path: "/%zz", wantErr: true},
		{path: "/p?x=%zz", wantErr: true},
		{path: "/p?x=1;y=2", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := BuildInput(httpRequest(tt.path, nil, ""), nil)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("want error, got input %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			obj := got.(ast.Object)
			assertValue(t, obj.Get(ast.StringTerm("parsed_path")).Value, mustJSONValue(t, tt.wantPath))
			assertValue(t, obj.Get(ast.StringTerm("parsed_query")).Value, mustJSONValue(t, tt.wantQuery))
		})
	}
}

func TestParsedBody(t *testing.T) {
	const jsonCT = "application/json"
	tests := []struct {
		name          string
		headers       map[string]string
		body          string
		raw           []byte
		opts          []InputOption
		wantBody      string // JSON; "" means key absent
		wantTruncated string
		wantErr       bool
	}{
		{name: "json", headers: map[string]string{"content-type": jsonCT}, body: `{"a":[1,"x"]}`,
			wantBody: `{"a":[1,"x"]}`, wantTruncated: "false"},
		{name: "json raw body", headers: map[string]string{"content-type": jsonCT}, raw: []byte(`[true]`),
			wantBody: `[true]`, wantTruncated: "false"},
		{name: "json with matching length", headers: map[string]string{"content-type": jsonCT, "content-length": "2"}, body: `{}`,
			wantBody: `{}`, wantTruncated: "false"},
		{name: "content-length says more was sent", headers: map[string]string{"content-type": jsonCT, "content-length": "100"}, body: `{"a":`,
			wantBody: `null`, wantTruncated: "true"},
		{name: "envoy partial body", headers: map[string]string{"content-type": jsonCT, "x-envoy-auth-partial-body": "true"}, body: `{"a":`,
			wantBody: `null`, wantTruncated: "true"},
		{name: "over size bound", headers: map[string]string{"content-type": jsonCT}, body: `{"a":"0123456789"}`,
			opts: []InputOption{WithMaxBodyBytes(8)}, wantBody: `null`, wantTruncated: "true"},
		{name: "form", headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}, body: "a=1&a=2&b=x+y",
			wantBody: `{"a":["1","2"],"b":["x y"]}`, wantTruncated: "false"},
		{name: "no content type", body: `{"a":1}`, wantBody: `null`, wantTruncated: "false"},
		{name: "other content type", headers: map[string]string{"content-type": "text/plain"}, body: `{"a":1}`,
			wantBody: `null`, wantTruncated: "false"},
		{name: "json without body", headers: map[string]string{"content-type": jsonCT}, wantBody: `null`, wantTruncated: "false"},
		{name: "skip parse", headers: map[string]string{"content-type": jsonCT}, body: `{"a":1}`, opts: []InputOption{WithSkipBodyParse()}},
		{name: "invalid json", headers: map[string]string{"content-type": jsonCT}, body: `{"a":`, wantErr: true},
		{name: "bad content-length", headers: map[string]string{"content-type": jsonCT, "content-length": "x"}, body: `{}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httpRequest("/", tt.headers, tt.body)
			req.Attributes.Request.Http.RawBody = tt.raw
			got, err := BuildInput(req, nil, tt.opts...)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("want error, got %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			obj := got.(ast.Object)
			for key, want := range map[string]string{"parsed_body": tt.wantBody, "truncated_body": tt.wantTruncated} {
				term := obj.Get(ast.StringTerm(key))
				if want == "" {
					if term != nil {
						t.Errorf("%s = %v, want absent", key, term)
					}
					continue
				}
				if term == nil {
					t.Fatalf("%s absent, want %s", key, want)
				}
				assertValue(t, term.Value, mustJSONValue(t, want))
			}
		})
	}
}

func BenchmarkInputAST(b *testing.B) {
	req, id := realisticRequest(b), serviceIdentity()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildInput(req, id); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInputJSON(b *testing.B) {
	req, id := realisticRequest(b), serviceIdentity()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := buildInputJSON(req, id); err != nil {
			b.Fatal(err)
		}
	}
}
