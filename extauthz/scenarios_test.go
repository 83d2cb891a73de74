package extauthz

import (
	"context"
	"io"
	"log/slog"
	"net/url"
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
)

// verdict is what Envoy does with a CheckResponse: let the request through,
// or answer it with an HTTP status.
type verdict struct {
	allowed bool
	status  int
}

func verdictOf(t *testing.T, resp *authv3.CheckResponse) verdict {
	t.Helper()
	if ok := resp.GetOkResponse(); ok != nil {
		if code.Code(resp.GetStatus().GetCode()) != code.Code_OK {
			t.Fatalf("OK response with status %v", resp.GetStatus())
		}
		return verdict{allowed: true}
	}
	if code.Code(resp.GetStatus().GetCode()) == code.Code_OK {
		t.Fatalf("denied response with an OK gRPC status: %v", resp)
	}
	return verdict{status: int(resp.GetDeniedResponse().GetStatus().GetCode())}
}

// check sends req and fails the test on a gRPC error: Envoy would apply its
// failure mode instead of Gatehouse's answer.
func (f *fixture) check(t *testing.T, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	resp, err := f.client.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check returned a gRPC error: %v", err)
	}
	return resp
}

// usePolicy swaps the fixture's policy for src (a new revision, so an empty
// decision cache) and returns a second server on the same policy directory
// with the decision cache off: the oracle of what every request must get.
func (f *fixture) usePolicy(t *testing.T, src string) *Server {
	t.Helper()
	f.writePolicy(t, src)
	if err := f.engine.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	uncached, err := policy.New(context.Background(), policy.WithDir(f.policyDir), policy.WithQuery("data.envoy.authz.decision"),
		policy.WithLogger(quiet), policy.WithDecisionCache(0))
	if err != nil {
		t.Fatal(err)
	}
	return New(uncached, WithLogger(quiet), WithTokenVerifier(f.server.tokens), WithTimeout(f.server.timeout), WithHeaders(f.server.headers))
}

func withBody(req *authv3.CheckRequest, contentType, body string) *authv3.CheckRequest {
	h := req.Attributes.Request.Http
	h.Headers["content-type"] = contentType
	h.Body = body
	h.Size = int64(len(body))
	return req
}

func withExt(req *authv3.CheckRequest, ext map[string]string) *authv3.CheckRequest {
	req.Attributes.ContextExtensions = ext
	return req
}

// withClaim is a bearer header for alice with claim k set to v.
func withClaim(t *testing.T, f *fixture, k string, v any) string {
	t.Helper()
	c := userClaims(f.idp, "reader")
	c[k] = v
	return "Bearer " + f.idp.Token(t, c)
}

// TestScenarioDecisionCacheMatchesUncached sends sequences of requests
// that differ in one thing a policy may read to a server with the decision
// cache on, and the same requests to one with it off: every answer must be
// the same, whatever the cache held from earlier requests.
func TestScenarioDecisionCacheMatchesUncached(t *testing.T) {
	f := newFixture(t)
	reader := "Bearer " + f.idp.Token(t, userClaims(f.idp, "reader"))
	readerWriter := "Bearer " + f.idp.Token(t, userClaims(f.idp, "reader", "writer"))
	writerReader := "Bearer " + f.idp.Token(t, userClaims(f.idp, "writer", "reader"))
	auth := func(tok string, extra map[string]string) map[string]string {
		h := map[string]string{"authorization": tok}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}

	// Only identity: path, query and body are not in the cache key.
	const rolesOnly = `package envoy.authz

default decision := {"allowed": false}

decision := {"allowed": true} if "reader" in input.identity.roles
`
	tests := []struct {
		name   string
		policy string
		bug    string // non-empty: a known bug, skipped after the oracle ran
		reqs   []*authv3.CheckRequest
	}{
		{
			name: "header value differing only in case",
			policy: `package envoy.authz

default decision := {"allowed": false}

decision := {"allowed": true} if input.attributes.request.http.headers["x-tenant"] == "acme"
`,
			reqs: []*authv3.CheckRequest{
				request("GET", "/x", map[string]string{"x-tenant": "acme"}),
				request("GET", "/x", map[string]string{"x-tenant": "ACME"}),
				request("GET", "/x", map[string]string{"x-tenant": "acme,acme"}),
				request("GET", "/x", nil),
				request("GET", "/x", map[string]string{"x-tenant": ""}),
			},
		},
		{
			name: "header absent versus present and empty",
			policy: `package envoy.authz

default decision := {"allowed": false}

decision := {"allowed": true} if not input.attributes.request.http.headers["x-block"]
`,
			reqs: []*authv3.CheckRequest{
				request("GET", "/x", nil),
				request("GET", "/x", map[string]string{"x-block": ""}),
				request("GET", "/x", map[string]string{"x-block": "1"}),
			},
		},
		{
			name: "query parameter order and duplicates",
			policy: `package envoy.authz

default decision := {"allowed": false}

decision := {"allowed": true} if input.parsed_query.role == ["viewer"]
`,
			reqs: []*authv3.CheckRequest{
				request("GET", "/x?role=viewer", nil),
				request("GET", "/x?role=viewer&role=admin", nil),
				request("GET", "/x?role=admin&role=viewer", nil),
				request("GET", "/x?a=1&role=viewer", nil),
				request("GET", "/x?role=viewer&a=1", nil),
				request("GET", "/x?role=vie%77er", nil),
				request("GET", "/x?role=viewer#frag", nil),
			},
		},
		{
			name: "path encodings",
			policy: `package envoy.authz

default decision := {"allowed": false}

decision := {"allowed": true} if input.parsed_path == ["public", "x"]
`,
			reqs: []*authv3.CheckRequest{
				request("GET", "/public/x", nil),
				request("GET", "/public%2Fx", nil),
				request("GET", "/public//x", nil),
				request("GET", "/public/x/", nil),
				request("GET", "/Public/x", nil),
				request("GET", "/public/%78", nil),
				request("GET", "/public/x?q=1", nil),
				request("GET", "/public/x%3Fq=1", nil),
				request("GET", "/public/./x", nil),
				request("GET", "/public/x%zz", nil),
			},
		},
		{
			name: "roles order",
			policy: `package envoy.authz

default decision := {"allowed": false}

decision := {"allowed": true} if input.identity.roles[0] == "reader"
`,
			reqs: []*authv3.CheckRequest{
				request("GET", "/x", auth(readerWriter, nil)),
				request("GET", "/x", auth(writerReader, nil)),
				request("GET", "/x", auth(reader, nil)),
				request("GET", "/x", nil),
			},
		},
		{
			name: "peer address, port and context extensions",
			policy: `package envoy.authz

default decision := {"allowed": false}

decision := {"allowed": true} if {
	input.attributes.source.address.socketAddress.address == "203.0.113.7"
	input.attributes.destination.address.socketAddress.portValue == 8443
	input.attributes.contextExtensions.service == "orders"
}
`,
			reqs: []*authv3.CheckRequest{
				withExt(request("GET", "/x", nil), map[string]string{"service": "orders"}),
				withExt(request("GET", "/x", nil), map[string]string{"service": "billing"}),
				withExt(request("GET", "/x", nil), nil),
				func() *authv3.CheckRequest {
					r := withExt(request("GET", "/x", nil), map[string]string{"service": "orders"})
					r.Attributes.Source.Address.GetSocketAddress().Address = "198.51.100.1"
					return r
				}(),
				func() *authv3.CheckRequest {
					r := withExt(request("GET", "/x", nil), map[string]string{"service": "orders"})
					r.Attributes.Destination.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: 8080}
					return r
				}(),
			},
		},
		{
			name: "nested claims",
			policy: `package envoy.authz

default decision := {"allowed": false}

decision := {"allowed": true} if input.identity.claims.org.tier == "gold"
`,
			reqs: []*authv3.CheckRequest{
				request("GET", "/x", auth(withClaim(t, f, "org", map[string]any{"tier": "gold"}), nil)),
				request("GET", "/x", auth(withClaim(t, f, "org", map[string]any{"tier": "free"}), nil)),
				request("GET", "/x", auth(withClaim(t, f, "org", map[string]any{"tier": "gold", "x": 1}), nil)),
				request("GET", "/x", auth(withClaim(t, f, "org", "gold"), nil)),
				request("GET", "/x", auth(reader, nil)),
			},
		},
		{
			name:   "malformed query answered from a cached allow",
			policy: rolesOnly,
			reqs: []*authv3.CheckRequest{
				request("GET", "/x?a=%zz", auth(reader, nil)),
				request("GET", "/x?ok=1", auth(reader, nil)),
				request("GET", "/x?a=%zz", auth(reader, nil)),
				request("GET", "/x?a=1;b=2", auth(reader, nil)),
			},
		},
		{
			name:   "malformed path answered from a cached allow",
			policy: rolesOnly,
			reqs: []*authv3.CheckRequest{
				request("GET", "/admin%zz", auth(reader, nil)),
				request("GET", "/ok", auth(reader, nil)),
				request("GET", "/admin%zz", auth(reader, nil)),
			},
		},
		{
			name:   "malformed JSON body answered from a cached allow",
			policy: rolesOnly,
			reqs: []*authv3.CheckRequest{
				withBody(request("POST", "/x", auth(reader, nil)), "application/json", `{"a":`),
				withBody(request("POST", "/x", auth(reader, nil)), "application/json", `{"a":1}`),
				withBody(request("POST", "/x", auth(reader, nil)), "application/json", `{"a":`),
			},
		},
		{
			name: "body read by policy",
			policy: `package envoy.authz

default decision := {"allowed": false}

decision := {"allowed": true} if input.parsed_body.amount < 100
`,
			reqs: []*authv3.CheckRequest{
				withBody(request("POST", "/x", nil), "application/json", `{"amount":5}`),
				withBody(request("POST", "/x", nil), "application/json", `{"amount":500}`),
				withBody(request("POST", "/x", map[string]string{"x-envoy-auth-partial-body": "true"}), "application/json", `{"amount":5}`),
				withBody(request("POST", "/x", map[string]string{"content-length": "100000"}), "application/json", `{"amount":5}`),
				withBody(request("POST", "/x", nil), "application/x-www-form-urlencoded", `amount=5`),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A comment of its own: a new revision, so an empty cache.
			oracle := f.usePolicy(t, tt.policy+"\n# "+tt.name+"\n")
			if st := f.engine.Status().DecisionCache; !st.Enabled {
				t.Fatalf("decision cache off (%s): the scenario tests nothing", st.Reason)
			}
			var mismatch []string
			seen := map[bool]bool{}
			for i, req := range tt.reqs {
				got := verdictOf(t, f.check(t, req))
				wantResp, err := oracle.Check(context.Background(), req)
				if err != nil {
					t.Fatal(err)
				}
				want := verdictOf(t, wantResp)
				seen[want.allowed] = true
				if got != want {
					mismatch = append(mismatch, req.Attributes.Request.Http.Path)
					if tt.bug == "" {
						t.Errorf("request %d %s %s: cached server %+v, uncached %+v", i, req.Attributes.Request.Http.Method, req.Attributes.Request.Http.Path, got, want)
					}
				}
			}
			if !seen[true] || !seen[false] {
				t.Errorf("the sequence is all allowed or all denied: it cannot tell a shared decision")
			}
			if tt.bug != "" {
				if len(mismatch) == 0 {
					t.Fatalf("known bug no longer reproduces (%s): drop the bug mark", tt.bug)
				}
				t.Skipf("BUG: %s (mismatched: %q)", tt.bug, mismatch)
			}
		})
	}
}

// TestScenarioIdentityHeadersNeverForwarded: whatever a client sends under
// the identity prefix, an allowed request carries upstream only Gatehouse's
// values — each such name is either set with OVERWRITE_IF_EXISTS_OR_ADD (so
// a client value cannot survive as a second value) or removed.
func TestScenarioIdentityHeadersNeverForwarded(t *testing.T) {
	f := newFixture(t)
	reader := "Bearer " + f.idp.Token(t, userClaims(f.idp, "reader"))
	peer := selfSignedPeer(t, "spiffe://gatehouse.local/sidecar/orders")
	forged := map[string]string{
		"x-gatehouse-subject": "root", "x-gatehouse-roles": "admin", "x-gatehouse-groups": "wheel",
		"x-gatehouse-email": "boss@example.com", "x-gatehouse-kind": "admin", "x-gatehouse-issuer": "https://evil",
		"x-gatehouse-spiffe-id": "spiffe://evil/x", "x-gatehouse-verified-by": "forged", "x-gatehouse-decision-id": "0",
		"x-gatehouse-assertion": "eyJ.forged.sig", "x-gatehouse-on-behalf-of-subject": "root",
		"x-gatehouse-on-behalf-of-roles": "admin", "x-gatehouse-admin": "true", "x-gatehouse-": "empty-suffix",
		"x-gatehouse-roles,x-gatehouse-subject": "odd", "X-Gatehouse-Groups": "wheel", "X-GATEHOUSE-TENANT": "evil",
		"x-gatehouse-subject ": "trailing-space", "x-gatehouse-groups\u212a": "kelvin",
	}
	with := func(extra map[string]string) map[string]string {
		h := map[string]string{}
		for k, v := range forged {
			h[k] = v
		}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	tests := []struct {
		name    string
		req     *authv3.CheckRequest
		subject string // "" when nobody is identified
	}{
		{"anonymous public path", request("GET", "/public/a", with(nil)), ""},
		{"user token", request("GET", "/api/orders", with(map[string]string{"authorization": reader})), "alice"},
		{"mTLS service without roles or email", withPeer(request("GET", "/inventory/1", with(nil)), peer, "spiffe://gatehouse.local/sidecar/orders"), "spiffe://gatehouse.local/sidecar/orders"},
		{"sidecar hop without assertion verification", func() *authv3.CheckRequest {
			r := request("GET", "/public/a", with(nil))
			delete(r.Attributes.Request.Http.Headers, "x-gatehouse-assertion")
			r.Attributes.ContextExtensions = map[string]string{"role": "sidecar", "service": "orders"}
			return r
		}(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := f.check(t, tt.req)
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Fatalf("denied: %v", resp)
			}
			set := map[string]*corev3.HeaderValueOption{}
			for _, o := range ok.GetHeaders() {
				k := o.GetHeader().GetKey()
				if k != strings.ToLower(k) {
					t.Errorf("header %q set in mixed case", k)
				}
				if _, dup := set[k]; dup {
					t.Errorf("header %q set twice", k)
				}
				set[k] = o
			}
			removed := map[string]bool{}
			for _, k := range ok.GetHeadersToRemove() {
				removed[k] = true
			}
			for name, v := range tt.req.Attributes.Request.Http.Headers {
				lower := strings.ToLower(name)
				if !strings.HasPrefix(lower, "x-gatehouse-") {
					continue
				}
				o, isSet := set[lower]
				switch {
				case isSet && o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
					t.Errorf("%s set with %v: the client's %q would survive beside it", lower, o.GetAppendAction(), v)
				case isSet && o.GetHeader().GetValue() == v:
					t.Errorf("%s forwarded with the client's value %q", lower, v)
				case !isSet && !removed[lower]:
					t.Errorf("client header %q (%q) neither overwritten nor removed; set %v, removed %v", name, v, headerMap(ok.GetHeaders()), ok.GetHeadersToRemove())
				}
			}
			if got := headerMap(ok.GetHeaders())["x-gatehouse-subject"]; got != tt.subject {
				t.Errorf("x-gatehouse-subject = %q, want %q", got, tt.subject)
			}
		})
	}
}

// TestScenarioBearerParsing sends Authorization headers as Envoy would
// forward them: only exactly one bearer token, scheme in any case, may
// authenticate; ambiguous ones are rejected, other schemes are anonymous.
func TestScenarioBearerParsing(t *testing.T) {
	f := newFixture(t)
	tok := f.idp.Token(t, userClaims(f.idp, "reader"))
	type want int
	const (
		asAlice want = iota
		anonymous
		invalid
	)
	tests := []struct {
		name    string
		headers map[string]string
		path    string
		want    want
	}{
		{"canonical", map[string]string{"authorization": "Bearer " + tok}, "", asAlice},
		{"lower-case scheme", map[string]string{"authorization": "bearer " + tok}, "", asAlice},
		{"upper-case scheme", map[string]string{"authorization": "BEARER " + tok}, "", asAlice},
		{"two spaces", map[string]string{"authorization": "Bearer  " + tok}, "", invalid},
		{"trailing junk", map[string]string{"authorization": "Bearer " + tok + " x"}, "", invalid},
		{"repeated header joined by Envoy", map[string]string{"authorization": "Bearer " + tok + ",Bearer " + tok}, "", invalid},
		{"bearer then basic joined", map[string]string{"authorization": "Bearer " + tok + ",Basic dXNlcjpwdw=="}, "", invalid},
		{"basic then bearer joined", map[string]string{"authorization": "Basic dXNlcjpwdw==,Bearer " + tok}, "", anonymous},
		{"tab separator", map[string]string{"authorization": "Bearer\t" + tok}, "", invalid},
		{"scheme only", map[string]string{"authorization": "Bearer"}, "", anonymous},
		{"basic", map[string]string{"authorization": "Basic dXNlcjpwdw=="}, "", anonymous},
		{"token in query", nil, "?access_token=" + tok, anonymous},
		{"token in another header", map[string]string{"x-access-token": tok}, "", anonymous},
		{"mixed-case header name from a direct caller", map[string]string{"Authorization": "Bearer " + tok}, "", anonymous},
		{"huge token", map[string]string{"authorization": "Bearer " + strings.Repeat("A", 256<<10)}, "", invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// /public allows anyone: only the identity headers tell who Gatehouse saw.
			resp := f.check(t, request("GET", "/public/a"+tt.path, tt.headers))
			v := verdictOf(t, resp)
			switch tt.want {
			case invalid:
				if v.allowed || v.status != 401 {
					t.Fatalf("verdict %+v, want 401", v)
				}
				if got := headerMap(resp.GetDeniedResponse().GetHeaders())["www-authenticate"]; got != `Bearer error="invalid_token"` {
					t.Errorf("www-authenticate = %q", got)
				}
				if strings.Contains(resp.String(), tok[:20]) {
					t.Error("deny response carries the token")
				}
			default:
				if !v.allowed {
					t.Fatalf("denied %+v: %v", v, resp)
				}
				sub := headerMap(resp.GetOkResponse().GetHeaders())["x-gatehouse-subject"]
				if wantSub := map[want]string{asAlice: "alice", anonymous: ""}[tt.want]; sub != wantSub {
					t.Errorf("subject = %q, want %q", sub, wantSub)
				}
			}
		})
	}
}

// TestScenarioDeniesLeakNothing: deny responses name a decision id and a
// status, never the token, its claims, the policy's reason or identity
// headers.
func TestScenarioDeniesLeakNothing(t *testing.T) {
	f := newFixture(t)
	claims := userClaims(f.idp, "reader")
	claims["secret_claim"] = "s3cr3t-value"
	tok := f.idp.Token(t, claims)
	expired := userClaims(f.idp, "reader")
	expired["exp"] = 1000
	expiredTok := f.idp.Token(t, expired)
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		want int
	}{
		{"policy deny of a valid token", request("POST", "/api/orders", map[string]string{"authorization": "Bearer " + tok}), 403},
		{"expired token", request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + expiredTok}), 401},
		{"token from the wrong audience", request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + f.idp.Token(t, f.idp.UserClaims("alice", "other"))}), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := f.check(t, tt.req)
			if v := verdictOf(t, resp); v.allowed || v.status != tt.want {
				t.Fatalf("verdict %+v, want %d", v, tt.want)
			}
			// Dynamic metadata stays in Envoy; the client sees status, headers, body.
			all := resp.GetDeniedResponse().String()
			for _, secret := range []string{"s3cr3t", "alice", "reader", strings.Split(tok, ".")[1][:16], strings.Split(expiredTok, ".")[2][:16], "policy", "exp"} {
				if strings.Contains(all, secret) {
					t.Errorf("deny response contains %q: %s", secret, all)
				}
			}
			for _, h := range resp.GetDeniedResponse().GetHeaders() {
				if strings.HasPrefix(h.GetHeader().GetKey(), "x-gatehouse-") {
					t.Errorf("deny response sets identity header %s", h.GetHeader().GetKey())
				}
			}
		})
	}
}

// TestScenarioOddRequestsAndResults: requests Envoy would not normally send
// and policy results of the wrong shape all deny, with a response, never an
// allow or a gRPC error.
func TestScenarioOddRequestsAndResults(t *testing.T) {
	f := newFixture(t)
	t.Run("requests", func(t *testing.T) {
		f.usePolicy(t, "package envoy.authz\n\ndefault decision := {\"allowed\": false}\n\ndecision := {\"allowed\": true} if input.parsed_path[0] == \"public\"\n")
		noHTTP := request("GET", "/public/a", nil)
		noHTTP.Attributes.Request = nil
		tests := []struct {
			name string
			req  *authv3.CheckRequest
		}{
			{"empty CheckRequest", &authv3.CheckRequest{}},
			{"no http attributes", noHTTP},
			{"empty path", request("GET", "", nil)},
			{"huge identity header from the client", request("GET", "/api/orders", map[string]string{"x-gatehouse-groups": strings.Repeat("g,", 200<<10)})},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if v := verdictOf(t, f.check(t, tt.req)); v.allowed {
					t.Fatalf("allowed: %+v", v)
				}
			})
		}
	})
	results := []struct {
		name, rule string
	}{
		{"string", `decision := "true"`},
		{"number", `decision := 1`},
		{"allowed as string", `decision := {"allowed": "true"}`},
		{"allowed as number", `decision := {"allowed": 1}`},
		{"allowed as array", `decision := {"allowed": [true]}`},
		{"no allowed key", `decision := {"allow": true}`},
		{"set", `decision := {true}`},
		{"null", `decision := null`},
		{"undefined", `decision if false`},
		{"headers of the wrong type", `decision := {"allowed": true, "headers": ["x-a"]}`},
		{"http_status as string", `decision := {"allowed": false, "http_status": "200"}`},
		{"conflicting values", "decision := {\"allowed\": true} if input.parsed_path[0] == \"public\"\n\ndecision := {\"allowed\": false} if input.attributes.request.http.method == \"GET\""},
	}
	for _, tt := range results {
		t.Run("result "+tt.name, func(t *testing.T) {
			f.writePolicy(t, "package envoy.authz\n\n"+tt.rule+"\n")
			if err := f.engine.Reload(context.Background()); err != nil {
				return // refused at load: the previous policy keeps serving
			}
			if v := verdictOf(t, f.check(t, request("GET", "/public/a", nil))); v.allowed {
				t.Fatalf("result %s allowed the request", tt.rule)
			}
		})
	}
	t.Run("allowed false with 2xx status still denies", func(t *testing.T) {
		f.usePolicy(t, "package envoy.authz\n\ndecision := {\"allowed\": false, \"http_status\": 200}\n")
		if v := verdictOf(t, f.check(t, request("GET", "/public/a", nil))); v.allowed || v.status != 403 {
			t.Fatalf("verdict %+v, want 403", v)
		}
	})
	t.Run("policy headers cannot overwrite identity", func(t *testing.T) {
		f.usePolicy(t, "package envoy.authz\n\ndecision := {\"allowed\": true, \"headers\": {\"X-Gatehouse-Subject\": \"root\", \"x-gatehouse-roles\": \"admin\"}}\n")
		tok := f.idp.Token(t, userClaims(f.idp, "reader"))
		resp := f.check(t, request("GET", "/x", map[string]string{"authorization": "Bearer " + tok}))
		got := headerMap(resp.GetOkResponse().GetHeaders())
		if got["x-gatehouse-subject"] != "alice" || got["x-gatehouse-roles"] != "reader" {
			t.Fatalf("identity headers %v", got)
		}
	})
}

// TestScenarioClockPoliciesAreNotCached: a decision that depends on the
// clock, randomness or the network must never be answered from the cache,
// or it would outlive a token's expiry or a changed remote answer.
func TestScenarioClockPoliciesAreNotCached(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name, rules string
		bug         string
	}{
		{"time.now_ns", `decision := {"allowed": time.now_ns() < input.identity.claims.exp * 1000000000}`, ""},
		{"print", `decision := {"allowed": true} if print(input.parsed_path)`, ""},
		{"io.jwt.decode_verify", `decision := {"allowed": v[0]} if v := io.jwt.decode_verify(input.parsed_query.t[0], {"secret": "k"})`, ""},
		{"uuid.rfc4122", `decision := {"allowed": true, "headers": {"x-nonce": uuid.rfc4122(input.parsed_path[0])}}`, ""},
		{"nondeterministic builtin as a function mock", "g(x) := x\n\ndecision := {\"allowed\": true, \"headers\": {\"x-nonce\": n}} if n := g(input.parsed_path[0]) with g as uuid.rfc4122", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.usePolicy(t, "package envoy.authz\n\n"+tt.rules+"\n")
			st := f.engine.Status().DecisionCache
			if !st.Enabled {
				return
			}
			// Cached: two requests get the same nonce.
			a := headerMap(f.check(t, request("GET", "/p", nil)).GetOkResponse().GetHeaders())["x-nonce"]
			b := headerMap(f.check(t, request("GET", "/p", nil)).GetOkResponse().GetHeaders())["x-nonce"]
			if tt.bug != "" && a == b {
				t.Skipf("BUG: %s (both requests got x-nonce %q)", tt.bug, a)
			}
			t.Errorf("decision cache on for a policy calling %s (nonces %q, %q)", tt.name, a, b)
		})
	}
}

// TestScenarioListHeadersAreUnambiguous: x-gatehouse-roles and -groups join
// a list with ","; two different lists must not give the same header, or an
// upstream that splits it grants a role nobody was given.
func TestScenarioListHeadersAreUnambiguous(t *testing.T) {
	f := newFixture(t)
	f.usePolicy(t, "package envoy.authz\n\ndecision := {\"allowed\": true}\n")
	tests := []struct {
		name         string
		claim        string
		listA, listB []any
	}{
		{"roles", "roles", []any{"reader", "eng,admin"}, []any{"reader", "eng", "admin"}},
		{"groups", "groups", []any{"team a,wheel"}, []any{"team a", "wheel"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			send := func(list []any) string {
				c := userClaims(f.idp)
				c[tt.claim] = list
				resp := f.check(t, request("GET", "/x", map[string]string{"authorization": "Bearer " + f.idp.Token(t, c)}))
				return headerMap(resp.GetOkResponse().GetHeaders())["x-gatehouse-"+tt.claim]
			}
			a, b := send(tt.listA), send(tt.listB)
			if a == "" || b == "" {
				t.Fatalf("no %s header: %q, %q", tt.claim, a, b)
			}
			if a == b {
				t.Errorf("%v and %v both give x-gatehouse-%s: %q", tt.listA, tt.listB, tt.claim, a)
			}
			// Split on "," and unescaped, the header gives back the list.
			var got []any
			for _, part := range strings.Split(a, ",") {
				v, err := url.PathUnescape(part)
				if err != nil {
					t.Fatalf("%q: %v", part, err)
				}
				got = append(got, v)
			}
			if !reflect.DeepEqual(got, tt.listA) {
				t.Errorf("x-gatehouse-%s %q splits and unescapes to %v, want %v", tt.claim, a, got, tt.listA)
			}
		})
	}
}
