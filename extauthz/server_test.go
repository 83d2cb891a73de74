package extauthz

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/jwt"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
	"github.com/gatehouse-proxy/gatehouse/test/testidp"
)

// testPolicy exercises every result form: boolean rules via allow, and an
// object decision with headers, status and metadata.
const testPolicy = `package envoy.authz

default decision := {"allowed": false}

decision := {"allowed": true, "headers": {"x-tenant": "acme"}, "dynamic_metadata": {"rule": "public"}} if {
	input.parsed_path[0] == "public"
}

decision := {"allowed": true, "request_headers_to_remove": ["x-debug"]} if {
	input.parsed_path == ["api", "orders"]
	input.attributes.request.http.method == "GET"
	"reader" in input.identity.roles
}

decision := {"allowed": true} if {
	input.parsed_path[0] == "inventory"
	input.identity.kind == "service"
	input.identity.spiffe_id == "spiffe://gatehouse.local/sidecar/orders"
}

decision := {"allowed": false, "http_status": 429, "body": "slow down", "headers": {"retry-after": "1"}} if {
	input.parsed_path[0] == "limited"
}

decision := {"allowed": true} if {
	input.parsed_path[0] == "slow"
	# Work that cannot finish within the Check timeout.
	count([x | some x in numbers.range(1, 100000000)]) > 0
}
`

func userClaims(idp *testidp.IDP, roles ...string) map[string]any {
	return idp.UserClaims("alice", "gatehouse", roles...)
}

// fixture is a Server on a real gRPC listener with a real policy engine and
// a real JWT verifier, as `gatehouse authz` wires them.
type fixture struct {
	server    *Server
	client    authv3.AuthorizationClient
	engine    *policy.Engine
	policyDir string
	idp       *testidp.IDP
}

func newFixture(t testing.TB, opts ...Option) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{policyDir: t.TempDir(), idp: testidp.New(t)}
	f.writePolicy(t, testPolicy)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	engine, err := policy.New(ctx, policy.WithDir(f.policyDir), policy.WithQuery("data.envoy.authz.decision"), policy.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	f.engine = engine
	v, err := jwt.NewVerifier(ctx, []jwt.IssuerConfig{{
		Issuer: f.idp.Issuer(), Audiences: []string{"gatehouse"}, JWKSURI: f.idp.JWKSURI(), Kind: identity.KindUser,
	}}, jwt.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	srv := New(engine, append([]Option{WithLogger(quiet), WithTokenVerifier(JWTTokens(v)), WithTimeout(2 * time.Second),
		WithHeaders(HeaderOptions{Prefix: "x-gatehouse-", StripAuthorization: true})}, opts...)...)
	f.server = srv
	f.client = serveGRPC(t, srv)
	return f
}

// serveGRPC serves srv on a loopback gRPC listener for the test and returns
// a client of it, as Envoy would dial it.
func serveGRPC(t testing.TB, srv *Server) authv3.AuthorizationClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

func (f *fixture) writePolicy(t testing.TB, src string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.policyDir, "authz.rego"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// request is a CheckRequest shaped as Envoy's ext_authz filter sends it:
// lower-case header names including pseudo-headers, source and destination
// addresses, and the peer certificate when include_peer_certificate is on.
func request(method, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{
		":authority": "shop.example.com", ":method": method, ":path": path, ":scheme": "https",
		"user-agent": "curl/8.5.0", "accept": "*/*", "x-forwarded-proto": "https",
		"x-request-id": "7d3c0b5e-1f0e-4a7e-9a51-4a1c0e1d2b3c",
	}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.5", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8443}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1234", Method: method, Path: path, Host: "shop.example.com", Scheme: "https", Protocol: "HTTP/1.1", Headers: h,
		}},
	}}
}

func headerMap(opts []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
		if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			m[o.GetHeader().GetKey()] += " (APPENDED!)"
		}
	}
	return m
}

func TestCheck(t *testing.T) {
	f := newFixture(t)
	reader := "Bearer " + f.idp.Token(t, userClaims(f.idp, "reader"))
	peerCert := selfSignedPeer(t, "spiffe://gatehouse.local/sidecar/orders")

	tests := []struct {
		name          string
		req           *authv3.CheckRequest
		wantCode      code.Code
		wantStatus    int // HTTP status for denials
		wantHeaders   map[string]string
		wantRemoved   []string
		wantChallenge string
		wantBody      string
	}{
		{
			name:        "anonymous public path",
			req:         request("GET", "/public/logo.png", nil),
			wantCode:    code.Code_OK,
			wantHeaders: map[string]string{"x-tenant": "acme"},
		},
		{
			name:          "anonymous protected path asks to authenticate",
			req:           request("GET", "/api/orders", nil),
			wantCode:      code.Code_UNAUTHENTICATED,
			wantStatus:    401,
			wantChallenge: "Bearer",
		},
		{
			name:          "invalid token is 401 invalid_token even on a public path",
			req:           request("GET", "/public/x", map[string]string{"authorization": "Bearer abc.def.ghi"}),
			wantCode:      code.Code_UNAUTHENTICATED,
			wantStatus:    401,
			wantChallenge: `Bearer error="invalid_token"`,
		},
		{
			name:          "two bearer tokens are malformed",
			req:           request("GET", "/api/orders", map[string]string{"authorization": reader + "," + reader}),
			wantCode:      code.Code_UNAUTHENTICATED,
			wantStatus:    401,
			wantChallenge: `Bearer error="invalid_token"`,
		},
		{
			name: "reader reads orders; forged identity headers overwritten or removed",
			req: request("GET", "/api/orders", map[string]string{
				"authorization": reader, "x-gatehouse-subject": "root", "x-gatehouse-admin": "true", "x-debug": "1",
			}),
			wantCode: code.Code_OK,
			wantHeaders: map[string]string{
				"x-gatehouse-subject": "alice", "x-gatehouse-issuer": f.idp.Issuer(), "x-gatehouse-roles": "reader",
				"x-gatehouse-kind": "user", "x-gatehouse-verified-by": "jwks", "x-gatehouse-email": "alice@example.com",
			},
			wantRemoved: []string{"authorization", "x-debug", "x-gatehouse-admin"},
		},
		{
			name:       "reader may not write: 403 with a JSON body",
			req:        request("POST", "/api/orders", map[string]string{"authorization": reader}),
			wantCode:   code.Code_PERMISSION_DENIED,
			wantStatus: 403,
			wantBody:   `"error":"forbidden"`,
		},
		{
			name:        "SPIFFE peer certificate is a service identity",
			req:         withPeer(request("GET", "/inventory/7", nil), peerCert, "spiffe://gatehouse.local/sidecar/orders"),
			wantCode:    code.Code_OK,
			wantHeaders: map[string]string{"x-gatehouse-spiffe-id": "spiffe://gatehouse.local/sidecar/orders", "x-gatehouse-kind": "service", "x-gatehouse-verified-by": "mtls"},
		},
		{
			name:       "garbage peer certificate fails closed",
			req:        withPeer(request("GET", "/inventory/7", nil), "not-a-cert", ""),
			wantCode:   code.Code_UNAUTHENTICATED,
			wantStatus: 401,
		},
		{
			name:        "policy-chosen status, body and headers",
			req:         request("GET", "/limited", nil),
			wantCode:    code.Code_PERMISSION_DENIED,
			wantStatus:  429,
			wantBody:    "slow down",
			wantHeaders: map[string]string{"retry-after": "1"},
		},
		{
			name:       "policy evaluation past the timeout denies",
			req:        request("GET", "/slow", map[string]string{"authorization": reader}),
			wantCode:   code.Code_PERMISSION_DENIED,
			wantStatus: 403,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := f.client.Check(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("Check returned a gRPC error (Envoy would apply its failure mode): %v", err)
			}
			if got := code.Code(resp.GetStatus().GetCode()); got != tt.wantCode {
				t.Fatalf("code = %v, want %v (resp %v)", got, tt.wantCode, resp)
			}
			if md := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue(); tt.wantCode != code.Code_UNAUTHENTICATED && len(md) != 32 {
				t.Errorf("decision_id metadata = %q", md)
			}
			if tt.wantCode == code.Code_OK {
				ok := resp.GetOkResponse()
				got := headerMap(ok.GetHeaders())
				for k, v := range tt.wantHeaders {
					if got[k] != v {
						t.Errorf("header %s = %q, want %q (all: %v)", k, got[k], v, got)
					}
				}
				if got["x-gatehouse-decision-id"] == "" {
					t.Error("no decision id header")
				}
				for _, r := range tt.wantRemoved {
					if !strings.Contains(strings.Join(ok.GetHeadersToRemove(), ","), r) {
						t.Errorf("%s not in headers_to_remove %v", r, ok.GetHeadersToRemove())
					}
				}
				return
			}
			denied := resp.GetDeniedResponse()
			if int(denied.GetStatus().GetCode()) != tt.wantStatus {
				t.Errorf("HTTP status = %d, want %d", denied.GetStatus().GetCode(), tt.wantStatus)
			}
			got := headerMap(denied.GetHeaders())
			if tt.wantChallenge != "" && got["www-authenticate"] != tt.wantChallenge {
				t.Errorf("www-authenticate = %q, want %q", got["www-authenticate"], tt.wantChallenge)
			}
			for k, v := range tt.wantHeaders {
				if got[k] != v {
					t.Errorf("header %s = %q, want %q", k, got[k], v)
				}
			}
			if !strings.Contains(denied.GetBody(), tt.wantBody) {
				t.Errorf("body %q lacks %q", denied.GetBody(), tt.wantBody)
			}
			if strings.Contains(denied.GetBody(), "policy") || strings.Contains(denied.GetBody(), "token") {
				t.Errorf("body leaks internals: %q", denied.GetBody())
			}
		})
	}
}

func withPeer(req *authv3.CheckRequest, urlPEM, principal string) *authv3.CheckRequest {
	req.Attributes.Source.Certificate = urlPEM
	req.Attributes.Source.Principal = principal
	return req
}

// TestNoPolicyDenies: a server whose policy directory never held a policy
// denies everything, public paths included.
func TestNoPolicyDenies(t *testing.T) {
	engine, err := policy.New(context.Background(), policy.WithDir(t.TempDir()))
	if engine == nil {
		t.Fatal(err)
	}
	srv := New(engine)
	resp, err := srv.Check(context.Background(), request("GET", "/public/x", nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() != nil {
		t.Fatalf("allowed without a policy: %v", resp)
	}
}

// TestConcurrentReloads runs Checks while the policy flips between allowing
// and denying and while broken edits arrive; every answer must be one of the
// two good policies' answers, never an error or an allow from a broken one.
func TestConcurrentReloads(t *testing.T) {
	f := newFixture(t)
	allowAll := "package envoy.authz\n\ndecision := {\"allowed\": true}\n"
	denyAll := "package envoy.authz\n\ndecision := {\"allowed\": false}\n"
	broken := "package envoy.authz\n\ndecision := {\"allowed\": true\n"
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := f.client.Check(context.Background(), request("GET", "/x", nil))
				if err != nil {
					errs <- err
					return
				}
				if resp.GetStatus() == nil {
					errs <- fmt.Errorf("response without status: %v", resp)
					return
				}
			}
		}()
	}
	for i := range 30 {
		src := []string{allowAll, broken, denyAll}[i%3]
		f.writePolicy(t, src)
		err := f.engine.Reload(context.Background())
		if (src == broken) != (err != nil) {
			t.Fatalf("reload %d: err = %v", i, err)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The last good policy (denyAll) is active, not the broken one.
	f.writePolicy(t, broken)
	if err := f.engine.Reload(context.Background()); err == nil {
		t.Fatal("broken policy accepted")
	}
	resp, _ := f.client.Check(context.Background(), request("GET", "/x", nil))
	if resp.GetOkResponse() != nil {
		t.Fatal("allowed after a broken edit on top of deny-all")
	}
}
