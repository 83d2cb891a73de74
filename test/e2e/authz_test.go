package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatehouse-proxy/gatehouse/test/testidp"
)

// authzEnv is a running `gatehouse authz` with the shipped policies, a real
// JWKS issuer and a gRPC client.
type authzEnv struct {
	client    authv3.AuthorizationClient
	admin     string
	policyDir string
	idp       *testidp.IDP
	proc      *proc
}

func startAuthz(t *testing.T) *authzEnv {
	t.Helper()
	dir := t.TempDir()
	env := &authzEnv{policyDir: filepath.Join(dir, "policies"), idp: testidp.New(t)}
	copyDir(t, filepath.Join(repoRoot(t), "policies"), env.policyDir)
	cfg := writeConfig(t, dir, fmt.Sprintf(authzListen+`log:
  level: info
authz:
  policies:
    dir: %s
  headers:
    strip_authorization: true
`+jwtIssuer, env.policyDir, env.idp.Issuer(), env.idp.JWKSURI()))
	env.proc, env.client, env.admin = startAuthzProc(t, cfg)
	return env
}

// startAuthzProc runs `gatehouse authz --config cfg` with the extra args
// and returns the process, an ext_authz client of its first listener
// (closed with the test) and the address of its admin listener.
func startAuthzProc(t *testing.T, cfg string, extra ...string) (*proc, authv3.AuthorizationClient, string) {
	t.Helper()
	p, addrs := start(t, append([]string{"authz", "--config", cfg}, extra...)...)
	if len(addrs) != 2 {
		t.Fatalf("listening line named %v", addrs)
	}
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return p, authv3.NewAuthorizationClient(conn), addrs[1]
}

// authzListen puts both listeners of `gatehouse authz` on free ports.
const authzListen = `listen:
  authz: 127.0.0.1:0
  admin: 127.0.0.1:0
`

// jwtIssuer is the jwt section of an authz config that trusts one issuer
// for the audience gatehouse (fmt: the issuer, its JWKS URI).
const jwtIssuer = `  jwt:
    issuers:
      - issuer: %s
        audiences: [gatehouse]
        jwks_uri: %s
`

// writeConfig writes content to gatehouse.yaml in dir and returns its path.
func writeConfig(t *testing.T, dir, content string) string {
	t.Helper()
	path := filepath.Join(dir, "gatehouse.yaml")
	writeFile(t, path, content)
	return path
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkRequest is shaped as Envoy's ext_authz filter sends it.
func checkRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":authority": "shop.example.com", ":method": method, ":path": path, ":scheme": "https",
		"user-agent": "curl/8.5.0", "x-request-id": "0f6d2a3e-0000-4000-8000-000000000001"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "198.51.100.4", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: method, Path: path, Host: "shop.example.com", Scheme: "https", Protocol: "HTTP/2", Headers: h,
		}},
	}}
}

func (e *authzEnv) check(t *testing.T, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	resp, err := e.client.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

func httpStatus(resp *authv3.CheckResponse) int {
	if resp.GetOkResponse() != nil {
		return 200
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

func (e *authzEnv) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + e.admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAuthzProcess drives a running `gatehouse authz` the way Envoy does and
// edits its policy files the way an operator does.
func TestAuthzProcess(t *testing.T) {
	env := startAuthz(t)
	reader := "Bearer " + env.idp.Token(t, env.idp.UserClaims("alice", "gatehouse", "reader"))
	admin := "Bearer " + env.idp.Token(t, env.idp.UserClaims("root", "gatehouse", "admin"))

	t.Run("decisions", func(t *testing.T) {
		tests := []struct {
			name       string
			req        *authv3.CheckRequest
			wantStatus int
		}{
			{"health is public", checkRequest("GET", "/healthz", nil), 200},
			{"anonymous orders", checkRequest("GET", "/api/orders/42", nil), 401},
			{"reader reads an order", checkRequest("GET", "/api/orders/42", map[string]string{"authorization": reader}), 200},
			{"reader may not create", checkRequest("POST", "/api/orders", map[string]string{"authorization": reader}), 403},
			{"reader is no admin", checkRequest("GET", "/admin/users", map[string]string{"authorization": reader}), 403},
			{"admin is", checkRequest("GET", "/admin/users", map[string]string{"authorization": admin}), 200},
			{"encoded path bypass", checkRequest("GET", "/%61dmin/users", map[string]string{"authorization": reader}), 403},
			{"double slash bypass", checkRequest("GET", "//admin/users", map[string]string{"authorization": reader}), 403},
			{"tampered token", checkRequest("GET", "/api/orders/42", map[string]string{"authorization": reader + "x"}), 401},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := httpStatus(env.check(t, tt.req)); got != tt.wantStatus {
					t.Fatalf("status = %d, want %d", got, tt.wantStatus)
				}
			})
		}
		resp := env.check(t, checkRequest("GET", "/api/orders/42", map[string]string{"authorization": reader, "x-gatehouse-roles": "admin"}))
		hs := map[string]string{}
		for _, h := range resp.GetOkResponse().GetHeaders() {
			hs[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		if hs["x-gatehouse-subject"] != "alice" || hs["x-gatehouse-roles"] != "reader" {
			t.Errorf("identity headers = %v", hs)
		}
		if !strings.Contains(strings.Join(resp.GetOkResponse().GetHeadersToRemove(), " "), "authorization") {
			t.Errorf("authorization not stripped: %v", resp.GetOkResponse().GetHeadersToRemove())
		}
	})

	t.Run("health and readiness", func(t *testing.T) {
		if code, _ := env.get(t, "/healthz"); code != 200 {
			t.Errorf("/healthz = %d", code)
		}
		if code, body := env.get(t, "/readyz"); code != 200 || !strings.Contains(body, `"policy":"ok"`) {
			t.Errorf("/readyz = %d %s", code, body)
		}
	})

	t.Run("live policy edit applies", func(t *testing.T) {
		req := checkRequest("GET", "/api/reports/q3", map[string]string{"authorization": reader})
		if got := httpStatus(env.check(t, req)); got != 403 {
			t.Fatalf("before the edit: %d", got)
		}
		writeFile(t, filepath.Join(env.policyDir, "envoy", "authz", "reports.rego"), `package envoy.authz

allow if {
	input.identity.kind == "user"
	"reader" in input.identity.roles
	path_under(["api", "reports"])
}
`)
		eventually(t, "edit applied", func() error {
			if got := httpStatus(env.check(t, req)); got != 200 {
				return fmt.Errorf("status %d", got)
			}
			return nil
		})
	})

	t.Run("broken edit keeps the last good policy", func(t *testing.T) {
		_, before := env.get(t, "/debug/policy")
		writeFile(t, filepath.Join(env.policyDir, "envoy", "authz", "reports.rego"), "package envoy.authz\n\nallow if {\n")
		eventually(t, "error reported", func() error {
			_, body := env.get(t, "/debug/policy")
			if !strings.Contains(body, "reports.rego:") {
				return fmt.Errorf("status page: %s", body)
			}
			return nil
		})
		_, after := env.get(t, "/debug/policy")
		if revision(before) != revision(after) {
			t.Errorf("revision changed from %s to %s on a broken edit", revision(before), revision(after))
		}
		// The reports rule from the last good revision still serves.
		req := checkRequest("GET", "/api/reports/q3", map[string]string{"authorization": reader})
		if got := httpStatus(env.check(t, req)); got != 200 {
			t.Errorf("after a broken edit: %d", got)
		}
		_, metrics := env.get(t, "/metrics")
		for _, want := range []string{
			`gatehouse_policy_reloads_total{result="failure"}`,
			`gatehouse_jwt_jwks_fetches_total{issuer="` + env.idp.Issuer() + `",result="success"}`,
			`gatehouse_authz_decisions_total{result="deny",status="403"}`,
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})

	t.Run("deleting every policy denies everything", func(t *testing.T) {
		if err := os.RemoveAll(filepath.Join(env.policyDir, "envoy")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "deny all", func() error {
			if got := httpStatus(env.check(t, checkRequest("GET", "/healthz", nil))); got == 200 {
				return fmt.Errorf("still allowed")
			}
			return nil
		})
	})

	// Decision logs name subjects but never carry credentials.
	logs := env.proc.logs()
	if !strings.Contains(logs, `"msg":"decision"`) || !strings.Contains(logs, `"subject":"alice"`) {
		t.Errorf("no decision log lines")
	}
	if tok := strings.TrimPrefix(reader, "Bearer "); strings.Contains(logs, tok[len(tok)-20:]) {
		t.Error("a token reached the logs")
	}
}

func revision(statusJSON string) string {
	i := strings.Index(statusJSON, `"revision": "`)
	if i < 0 {
		return ""
	}
	rest := statusJSON[i+len(`"revision": "`):]
	return rest[:strings.IndexByte(rest, '"')]
}

// TestValidateCommand: `gatehouse validate` reports file:line problems and
// its exit code says whether there were any.
func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	policies := filepath.Join(dir, "policies")
	copyDir(t, filepath.Join(repoRoot(t), "policies"), policies)
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, "authz:\n  policies:\n    dir: "+policies+"\n")
	badCfg := filepath.Join(dir, "bad.yaml")
	writeFile(t, badCfg, "authz:\n  policies:\n    dir: "+policies+"\n  timout: 1s\n")

	run := func(args ...string) (int, string) {
		out, err := exec.Command(binary, args...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := run("validate", "--config", good); code != 0 || !strings.Contains(out, "ok:") ||
		!strings.Contains(out, "policy reads: input.attributes.request.http.method, ") || !strings.Contains(out, "decision cache: on") {
		t.Errorf("valid config: exit %d\n%s", code, out)
	}
	// A policy that reads the clock is valid, and told to have no cache.
	writeFile(t, filepath.Join(policies, "envoy", "authz", "clock.rego"), "package envoy.authz\n\nlate if time.now_ns() > 0\n")
	if code, out := run("validate", "--config", good); code != 0 || !strings.Contains(out, "decision cache: off (policy calls time.now_ns, which is not deterministic)") {
		t.Errorf("clock policy: exit %d\n%s", code, out)
	}
	if err := os.Remove(filepath.Join(policies, "envoy", "authz", "clock.rego")); err != nil {
		t.Fatal(err)
	}
	if code, out := run("validate", "--config", badCfg); code != 1 || !strings.Contains(out, "bad.yaml:4: field timout not found") {
		t.Errorf("bad config: exit %d\n%s", code, out)
	}
	writeFile(t, filepath.Join(policies, "envoy", "authz", "broken.rego"), "package envoy.authz\n\nallow if {\n  input.x ==\n}\n")
	if code, out := run("validate", "--config", good); code != 1 || !strings.Contains(out, "broken.rego:") {
		t.Errorf("broken policy: exit %d\n%s", code, out)
	}
	if code, _ := run("validate", "--help"); code != 0 {
		t.Errorf("--help exit %d", code)
	}
}

// TestAuthzLargeBinaryBody: Envoy sends bodies as bytes (pack_as_bytes) up
// to with_request_body.max_bytes (≤ 16 MiB): a 5 MiB binary upload is
// decided, not refused by gRPC's default 4 MiB message limit.
func TestAuthzLargeBinaryBody(t *testing.T) {
	e := startAuthz(t)
	req := checkRequest("POST", "/public/upload", map[string]string{"content-type": "application/octet-stream"})
	body := make([]byte, 5<<20)
	for i := range body {
		body[i] = byte(i * 7)
	}
	req.GetAttributes().GetRequest().GetHttp().RawBody = body
	resp, err := e.client.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check with a 5 MiB body: %v", err)
	}
	if s := httpStatus(resp); s != 401 && s != 403 && s != 200 {
		t.Fatalf("status %d", s)
	}
}
