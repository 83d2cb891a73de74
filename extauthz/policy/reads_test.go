package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
)

// readsPolicies exercise every way Rego can reach input: constant paths,
// variable keys, whole documents passed to functions and builtins, with,
// comprehensions, every, imports and result objects built from input.
var readsPolicies = []struct {
	name  string
	rego  string
	reads []string // want Status().Reads
	cache bool     // want the decision cache on
}{
	{"constant paths", `package envoy.authz
default allow := false
allow if {
	input.attributes.request.http.method == "POST"
	input.parsed_path[0] == "api"
	input.attributes.request.http.headers["x-tenant"] == "acme"
}`, []string{"input.attributes.request.http.headers.x-tenant", "input.attributes.request.http.method", "input.parsed_path"}, true},
	{"variable header key", `package envoy.authz
default allow := false
allow if {
	some k
	input.attributes.request.http.headers[k] == "acme"
	startswith(k, "x-")
}`, []string{"input.attributes.request.http.headers"}, false},
	{"local alias", `package envoy.authz
default allow := false
allow if {
	r := input.attributes.request
	r.http.method == "POST"
}`, []string{"input.attributes.request"}, false},
	{"walk whole input", `package envoy.authz
default allow := false
allow if {
	walk(input, [_, v])
	v == "globex"
}`, []string{"input"}, false},
	{"count of headers", `package envoy.authz
default allow := false
allow if count(input.attributes.request.http.headers) > 3`, []string{"input.attributes.request.http.headers"}, false},
	{"object.get on input", `package envoy.authz
default allow := false
allow if object.get(input, ["attributes", "request", "http", "method"], "") == "POST"`, []string{"input"}, false},
	{"identity roles, every", `package envoy.authz
default allow := false
allow if {
	"reader" in input.identity.roles
	every g in input.identity.groups { g != "banned" }
}`, []string{"input.identity.groups", "input.identity.roles"}, true},
	{"function argument", `package envoy.authz
default allow := false
m(req) := req.http.method
allow if m(input.attributes.request) == "POST"`, []string{"input.attributes.request"}, false},
	{"import alias", `package envoy.authz
import input.attributes.request.http as http
default allow := false
allow if {
	http.method == "POST"
	http.host == "inventory.local"
}`, []string{"input.attributes.request.http.host", "input.attributes.request.http.method"}, true},
	{"with keyword", `package envoy.authz
default allow := false
is_post if input.attributes.request.http.method == "POST"
allow if {
	is_post with input.attributes.request.http.method as "POST"
	input.parsed_query.tag[_] == "b"
}`, []string{"input.attributes.request.http.method", "input.parsed_query.tag"}, true},
	{"source address and principal", `package envoy.authz
default allow := false
allow if {
	input.attributes.source.address.socketAddress.address == "10.0.0.7"
	input.source_principal == "spiffe://gatehouse.local/sidecar/orders"
	input.version.encoding == "protojson"
}`, []string{"input.attributes.source.address.socketAddress.address", "input.source_principal", "input.version.encoding"}, true},
	{"body", `package envoy.authz
default allow := false
allow if {
	not input.truncated_body
	input.parsed_body.qty < 5
}`, []string{"input.parsed_body.qty", "input.truncated_body"}, true},
	{"result object from input", `package envoy.authz
default allow := {"allowed": false}
allow := {"allowed": true, "headers": {"x-user": input.identity.subject, "x-tenant": tenant}} if {
	input.identity.kind == "service"
}
tenant := t if t := input.attributes.destination.labels.app
else := "none"`, []string{"input.attributes.destination.labels.app", "input.identity.kind", "input.identity.subject"}, true},
	{"claims and peer", `package envoy.authz
default allow := false
allow if input.identity.peer.spiffe_id == "spiffe://gatehouse.local/sidecar/orders"
allow if input.identity.claims.tenant == "acme"`, []string{"input.identity.claims.tenant", "input.identity.peer.spiffe_id"}, true},
	{"comprehension over query", `package envoy.authz
default allow := false
allow if {
	keys := {k | some k, _ in input.parsed_query}
	"dry_run" in keys
}`, []string{"input.parsed_query"}, true},
	{"dynamic top-level key", `package envoy.authz
default allow := false
k := "parsed_path"
allow if input[k][0] == "api"`, []string{"input"}, false},
	{"request id read", `package envoy.authz
default allow := false
allow if input.attributes.request.http.id != ""`, []string{"input.attributes.request.http.id"}, false},
	{"clock", `package envoy.authz
default allow := false
allow if {
	input.attributes.request.http.method == "POST"
	time.now_ns() > 0
}`, []string{"input.attributes.request.http.method"}, false},
	{"print", `package envoy.authz
default allow := false
allow if {
	print(input.attributes.request.http.method)
	input.attributes.request.http.method == "POST"
}`, []string{"input.attributes.request.http.method"}, false},
	{"context extensions and metadata", `package envoy.authz
default allow := false
allow if input.attributes.contextExtensions.service == "orders"
allow if input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].tenant == "globex"`, []string{"input.attributes.contextExtensions.service", "input.attributes.metadataContext.filterMetadata.envoy.filters.http.jwt_authn.tenant"}, true},
}

// readsRequests are the requests every readsPolicies entry is decided on.
func readsRequests(t *testing.T) []struct {
	req *authv3.CheckRequest
	id  *identity.Identity
} {
	base := realisticRequest(t)
	variant := func(f func(h *authv3.AttributeContext_HttpRequest)) *authv3.CheckRequest {
		r := proto.Clone(base).(*authv3.CheckRequest)
		f(r.GetAttributes().GetRequest().GetHttp())
		return r
	}
	acme := variant(func(h *authv3.AttributeContext_HttpRequest) { h.Headers["x-tenant"] = "acme" })
	get := variant(func(h *authv3.AttributeContext_HttpRequest) {
		h.Method, h.Path, h.Body, h.Id = "GET", "/public/x", "", ""
		h.Headers = map[string]string{":method": "GET", ":path": "/public/x"}
	})
	get.Attributes.Source.Address.GetSocketAddress().Address = "10.0.0.8"
	get.Attributes.Source.Principal = ""
	big := variant(func(h *authv3.AttributeContext_HttpRequest) {
		h.Body = `{"qty": 9}`
		h.Headers["content-length"] = "10"
		h.Headers["x-tenant"] = "globex"
	})
	big.Attributes.ContextExtensions = map[string]string{"service": "orders"}
	tenant := &identity.Identity{Kind: identity.KindUser, Subject: "alice", Method: identity.MethodJWKS, Roles: []string{"reader"},
		Groups: []string{"staff"}, Claims: map[string]any{"tenant": "acme", "other": "x"}}
	banned := &identity.Identity{Kind: identity.KindUser, Subject: "bob", Method: identity.MethodJWKS, Roles: []string{"reader"}, Groups: []string{"banned"}}
	return []struct {
		req *authv3.CheckRequest
		id  *identity.Identity
	}{
		{base, nil}, {base, serviceIdentity()}, {acme, tenant}, {acme, nil}, {get, nil}, {get, tenant}, {big, banned}, {big, nil},
	}
}

// TestPrunedInputDecidesAlike holds the pruned input (and the decision
// cache) to the whole one: every policy decides every request exactly as it
// would on the document BuildInput builds in full, first and second time.
func TestPrunedInputDecidesAlike(t *testing.T) {
	for _, p := range readsPolicies {
		t.Run(p.name, func(t *testing.T) {
			e, _, err := newTestEngine(t, map[string]string{"p.rego": p.rego})
			if err != nil {
				t.Fatal(err)
			}
			st := e.Status()
			if !slices.Equal(st.Reads, p.reads) {
				t.Errorf("reads = %q, want %q", st.Reads, p.reads)
			}
			if st.DecisionCache.Enabled != p.cache {
				t.Errorf("decision cache enabled = %v (%s), want %v", st.DecisionCache.Enabled, st.DecisionCache.Reason, p.cache)
			}
			allowed := 0
			for i, rq := range readsRequests(t) {
				full, err := BuildInput(rq.req, rq.id)
				if err != nil {
					t.Fatal(err)
				}
				want, werr := e.Evaluate(t.Context(), full)
				for pass := range 2 {
					got, gerr := e.EvaluateRequest(t.Context(), rq.req, rq.id)
					if (gerr == nil) != (werr == nil) {
						t.Fatalf("request %d pass %d: error %v, whole input gave %v", i, pass, gerr, werr)
					}
					g, w := *got, *want
					g.ID, w.ID = "", ""
					if !decisionsEqual(g, w) {
						t.Errorf("request %d pass %d: pruned input decided\n%+v\nwhole input\n%+v", i, pass, g, w)
					}
				}
				if want.Allowed {
					allowed++
				}
			}
			if allowed == 0 || allowed == len(readsRequests(t)) {
				t.Errorf("policy allowed %d of %d requests: the table must exercise both answers", allowed, len(readsRequests(t)))
			}
		})
	}
}

func TestDecisionCacheStatusAndReasons(t *testing.T) {
	const pol = `package envoy.authz
default allow := false
allow if input.attributes.request.http.method == "POST"`
	tests := []struct {
		name   string
		opts   []Option
		rego   string
		reason string
	}{
		{"on", nil, pol, ""},
		{"off by option", []Option{WithDecisionCache(0)}, pol, "disabled by configuration"},
		{"http.send", nil, `package envoy.authz
allow if http.send({"method": "GET", "url": "http://127.0.0.1:1"}).status_code == 200`, "policy calls http.send, which is not deterministic"},
		{"io.jwt.decode_verify reads the clock", nil, `package envoy.authz
allow if {
	[ok, _, _] := io.jwt.decode_verify(input.attributes.request.http.headers.authorization, {"secret": "s"})
	ok
}`, "policy calls io.jwt.decode_verify, which is not deterministic"},
		{"x509 verification reads the clock", nil, `package envoy.authz
allow if {
	[ok, _] := crypto.x509.parse_and_verify_certificates(input.attributes.source.certificate)
	ok
}`, "policy calls crypto.x509.parse_and_verify_certificates, which is not deterministic"},
		{"time.now_ns", nil, `package envoy.authz
allow if time.now_ns() > 0`, "policy calls time.now_ns, which is not deterministic"},
		{"print", nil, `package envoy.authz
allow if print("x")`, "policy calls print()"},
		{"whole headers", nil, `package envoy.authz
allow if input.attributes.request.http.headers`, "policy reads all of input.attributes.request.http.headers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _, err := newTestEngine(t, map[string]string{"p.rego": tt.rego}, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			st := e.Status().DecisionCache
			if st.Enabled != (tt.reason == "") || st.Reason != tt.reason {
				t.Fatalf("decision cache %+v, want reason %q", st, tt.reason)
			}
		})
	}

	e, dir, err := newTestEngine(t, map[string]string{"p.rego": pol})
	if err != nil {
		t.Fatal(err)
	}
	req := realisticRequest(t)
	for range 3 {
		if d, err := e.EvaluateRequest(t.Context(), req, nil); err != nil || !d.Allowed {
			t.Fatalf("decision %+v %v", d, err)
		}
	}
	if st := e.Status().DecisionCache; st.Hits != 2 || st.Misses != 1 || st.Entries != 1 {
		t.Fatalf("after 3 equal requests: %+v, want 2 hits, 1 miss, 1 entry", st)
	}
	// A new revision starts empty and decides by its own rules at once.
	writeFiles(t, dir, map[string]string{"p.rego": strings.Replace(pol, `"POST"`, `"GET"`, 1)})
	if err := e.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d, _ := e.EvaluateRequest(t.Context(), req, nil); d.Allowed {
		t.Fatal("a cached decision of the previous revision answered")
	}
	if st := e.Status().DecisionCache; st.Hits != 2 || st.Misses != 2 || st.Entries != 1 {
		t.Fatalf("new revision cache %+v, want 1 entry and the counters grown by one miss", st)
	}
}

// TestDecisionCacheBounded fills the cache far past its size: it stays
// within bounds and keeps answering correctly; oversize inputs are never
// stored.
func TestDecisionCacheBounded(t *testing.T) {
	e, _, err := newTestEngine(t, map[string]string{"p.rego": `package envoy.authz
default allow := false
allow if endswith(input.attributes.request.http.headers["x-n"], "7")`}, WithDecisionCache(64))
	if err != nil {
		t.Fatal(err)
	}
	req := realisticRequest(t)
	h := req.GetAttributes().GetRequest().GetHttp().GetHeaders()
	for i := range 2000 {
		h["x-n"] = fmt.Sprint(i)
		d, err := e.EvaluateRequest(t.Context(), req, nil)
		if err != nil || d.Allowed != (i%10 == 7) {
			t.Fatalf("request %d: %+v %v", i, d, err)
		}
	}
	if n := e.Status().DecisionCache.Entries; n > 64 || n == 0 {
		t.Fatalf("%d entries in a cache of 64", n)
	}
	h["x-n"] = strings.Repeat("7", 2*maxCacheKeyBytes)
	before := e.Status().DecisionCache.Entries
	for range 2 {
		if d, _ := e.EvaluateRequest(t.Context(), req, nil); !d.Allowed {
			t.Fatal("oversize input decided wrongly")
		}
	}
	if st := e.Status().DecisionCache; st.Entries > before {
		t.Fatalf("an oversize input was cached: %+v", st)
	}
}

// TestPrunedInputStillRejectsBadRequests: a path, query or body that cannot
// be decoded is denied even when the policy never reads it.
func TestPrunedInputStillRejectsBadRequests(t *testing.T) {
	e, _, err := newTestEngine(t, map[string]string{"p.rego": "package envoy.authz\n\nallow := true\n"})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.Status().Reads; len(r) != 0 {
		t.Fatalf("constant policy reads %q", r)
	}
	tests := []struct {
		name, path, ctype, body string
	}{
		{"bad path escape", "/a%zz", "", ""},
		{"bad query", "/a?x=%zz", "", ""},
		{"bad json body", "/a", "application/json", `{"a":`},
		{"bad form body", "/a", "application/x-www-form-urlencoded", "a=%zz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httpRequest(tt.path, map[string]string{"content-type": tt.ctype}, tt.body)
			d, err := e.EvaluateRequest(t.Context(), req, nil)
			if d.Allowed || err == nil {
				t.Fatalf("allowed=%v err=%v, want an input error and a deny", d.Allowed, err)
			}
		})
	}
	if d, err := e.EvaluateRequest(t.Context(), httpRequest("/a?x=1", map[string]string{"content-type": "application/json"}, `{"a":1}`), nil); err != nil || !d.Allowed {
		t.Fatalf("good request: %+v %v", d, err)
	}
}

// keyPolicies add shapes to readsPolicies that read whole sub-documents.
var keyPolicies = []string{
	`package envoy.authz
allow if input.identity`,
	`package envoy.authz
allow if input.attributes.source
allow if input.identity.claims`,
	`package envoy.authz
allow if input.on_behalf_of.subject
allow if input.attributes.request.http.headers["X-Tenant"]
allow if input.attributes.destination.labels
allow if input.attributes.request.http.size`,
}

// TestCacheKeyDeterminesInput: over many request variants, two requests
// with equal decision-cache keys always have equal pruned inputs — the key
// may be more specific than the input, never less.
func TestCacheKeyDeterminesInput(t *testing.T) {
	base := realisticRequest(t)
	type mut func(r *authv3.CheckRequest)
	hreq := func(r *authv3.CheckRequest) *authv3.AttributeContext_HttpRequest {
		return r.GetAttributes().GetRequest().GetHttp()
	}
	muts := []mut{
		func(r *authv3.CheckRequest) { hreq(r).Method = "GET" },
		func(r *authv3.CheckRequest) { hreq(r).Path = "/api/inventory/reservations?tag=b&tag=a&dry_run=true" },
		func(r *authv3.CheckRequest) { hreq(r).Path = "/api/%69nventory/reservations?dry_run=true&tag=a&tag=b" },
		func(r *authv3.CheckRequest) { hreq(r).Path = "/public/x" },
		func(r *authv3.CheckRequest) { hreq(r).Headers["x-tenant"] = "acme" },
		func(r *authv3.CheckRequest) { hreq(r).Headers["x-tenant"] = "globex" },
		func(r *authv3.CheckRequest) { hreq(r).Headers["X-Tenant"] = "acme" },
		func(r *authv3.CheckRequest) { delete(hreq(r).Headers, "content-type") },
		func(r *authv3.CheckRequest) { hreq(r).Body = `{"qty": 1}`; hreq(r).Headers["content-length"] = "10" },
		func(r *authv3.CheckRequest) { hreq(r).Headers["x-envoy-auth-partial-body"] = "true" },
		// Envoy with pack_as_bytes: raw_body only, text or binary.
		func(r *authv3.CheckRequest) { hreq(r).Body, hreq(r).RawBody = "", []byte(`{"qty": 2}`) },
		func(r *authv3.CheckRequest) { hreq(r).Body, hreq(r).RawBody = "", []byte{0xff, 0x00, '{'} },
		func(r *authv3.CheckRequest) { hreq(r).Id = "other" },
		func(r *authv3.CheckRequest) { hreq(r).Size = 7 },
		func(r *authv3.CheckRequest) { hreq(r).Host = "other.local" },
		func(r *authv3.CheckRequest) { r.Attributes.Source.Principal = "" },
		func(r *authv3.CheckRequest) { r.Attributes.Source.Address.GetSocketAddress().Address = "10.0.0.9" },
		func(r *authv3.CheckRequest) { r.Attributes.ContextExtensions = map[string]string{"service": "orders"} },
		func(r *authv3.CheckRequest) { r.Attributes.Destination.Labels["app"] = "orders" },
		func(r *authv3.CheckRequest) { r.Attributes.Destination.Labels["tier"] = "1" },
		func(r *authv3.CheckRequest) {
			r.Attributes.MetadataContext.FilterMetadata["envoy.filters.http.jwt_authn"].Fields["tenant"] = structpb.NewStringValue("globex")
		},
	}
	var reqs []*authv3.CheckRequest
	for i := range muts {
		for j := i; j < len(muts); j++ {
			r := proto.Clone(base).(*authv3.CheckRequest)
			muts[i](r)
			muts[j](r)
			reqs = append(reqs, r)
		}
	}
	reqs = append(reqs, base)
	ids := []*identity.Identity{nil, serviceIdentity(),
		{Kind: identity.KindUser, Subject: "alice", Method: identity.MethodJWKS, Roles: []string{"reader"}, Claims: map[string]any{"tenant": "acme", "n": 1.0}},
		{Kind: identity.KindUser, Subject: "alice", Method: identity.MethodJWKS, Roles: []string{"reader"}, Claims: map[string]any{"tenant": "acme", "n": 2.0}},
		{Kind: identity.KindUser, Subject: "alice", Method: identity.MethodJWKS, Roles: []string{"reader", "writer"}},
		{Kind: identity.KindUser, Subject: "bob", Method: identity.MethodSession, Roles: []string{"reader"}, Groups: []string{"staff"}},
	}
	obos := [][]InputOption{nil, {WithOnBehalfOf(map[string]any{"subject": "alice"})}, {WithOnBehalfOf(map[string]any{"subject": "bob", "roles": []any{"x"}})}}

	sources := keyPolicies
	for _, p := range readsPolicies {
		sources = append(sources, p.rego)
	}
	for pi, src := range sources {
		e, _, err := newTestEngine(t, map[string]string{"p.rego": src})
		if err != nil {
			t.Fatal(err)
		}
		r := e.current.Load().reads
		if r.all {
			continue
		}
		seen := map[string]ast.Value{} // key -> input
		distinct := map[string]bool{}
		for _, req := range reqs {
			for _, id := range ids {
				for _, obo := range obos {
					cfg := newInputConfig(obo)
					key, ok := appendKey(nil, req, id, r, &cfg)
					input, err := buildInput(req, id, r, &cfg)
					if !ok || err != nil {
						continue
					}
					distinct[input.String()] = true
					if prev, dup := seen[string(key)]; dup && prev.Compare(input) != 0 {
						t.Fatalf("policy %d (reads %q): one key for two inputs:\n%v\n%v", pi, r.paths(), prev, input)
					}
					seen[string(key)] = input
				}
			}
		}
		if len(distinct) < 2 {
			t.Errorf("policy %d (reads %q): the variants produced one input only; the test shows nothing", pi, r.paths())
		}
	}
}
