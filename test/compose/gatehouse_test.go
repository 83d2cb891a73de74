package compose

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/xds/bootstrap"
	"github.com/gatehouse-proxy/gatehouse/xds/translate"
	"github.com/gatehouse-proxy/gatehouse/xds/validate"
)

// TestGatehouseConfigTranslates loads compose/gatehouse.yaml the way
// `gatehouse serve` does and translates and validates every node's
// resources, so Envoy is never offered what it would NACK.
func TestGatehouseConfigTranslates(t *testing.T) {
	cfg := loadGatehouse(t)
	res, err := translate.Translate(&cfg.Mesh, translate.WithIdentityHeaderPrefix(cfg.Authz.Headers.Prefix))
	if err != nil {
		t.Fatalf("translate: %v", err)
	}
	var secrets []string
	for name := range res.Secrets {
		secrets = append(secrets, name)
	}
	wantNodes := []string{"edge", "inventory", "orders"}
	var nodes []string
	for name, nr := range res.Nodes {
		nodes = append(nodes, name)
		if err := validate.Validate(nr, secrets...); err != nil {
			t.Errorf("node %s: %v", name, err)
		}
	}
	sort.Strings(nodes)
	if !slices.Equal(nodes, wantNodes) {
		t.Errorf("nodes %v, want %v", nodes, wantNodes)
	}
	// Certificates: the edge's server certificate names localhost (the
	// scripts and the Dex redirect URI use it), sidecars get SPIFFE ids.
	var edgeDNS []string
	var ids []string
	for _, spec := range res.Secrets {
		switch spec.Kind {
		case translate.SecretEdgeServer:
			edgeDNS = append(edgeDNS, spec.DNSNames...)
		case translate.SecretWorkload:
			ids = append(ids, spec.SPIFFEID)
		}
	}
	if !slices.Contains(edgeDNS, "localhost") {
		t.Errorf("edge certificate DNS names %v lack localhost", edgeDNS)
	}
	for _, want := range []string{cfg.Mesh.ServiceSPIFFEID("orders"), cfg.Mesh.ServiceSPIFFEID("inventory")} {
		if !slices.Contains(ids, want) {
			t.Errorf("no workload certificate for %s (have %v)", want, ids)
		}
	}
	// Policies are read from the bind mount of policies/; the files loaded
	// are checked in TestPolicyExpectations.
	if !filepath.IsAbs(cfg.Authz.Policies.Dir) {
		t.Errorf("authz.policies.dir %q: use the absolute path of the mount", cfg.Authz.Policies.Dir)
	}
}

// wantBootstraps renders every proxy's bootstrap for compose/gatehouse.yaml
// with xds/bootstrap, the control plane being the gatehouse service.
func wantBootstraps(t *testing.T) map[string][]byte {
	t.Helper()
	cfg := loadGatehouse(t)
	cp := []string{net.JoinHostPort(gatehouseService, port(t, cfg.Listen.XDS))}
	out := map[string][]byte{}
	add := func(role, name string) {
		b, err := bootstrap.Render(bootstrap.Options{NodeID: name, Cluster: role, ControlPlane: cp})
		if err != nil {
			t.Fatal(err)
		}
		out[bootstrapFile(role, name)] = b
	}
	for _, e := range cfg.Mesh.Edges {
		add(config.RoleEdge, e.Name)
	}
	for _, s := range cfg.Mesh.Sidecars {
		add(config.RoleSidecar, s.Name)
	}
	return out
}

// TestBootstraps keeps compose/envoy/*.yaml equal to what xds/bootstrap
// renders for compose/gatehouse.yaml (what `gatehouse bootstrap` prints).
// Regenerate with:
//
//	go test ./test/compose -run TestBootstraps -update
func TestBootstraps(t *testing.T) {
	want := wantBootstraps(t)
	if *update {
		for file, b := range want {
			if err := os.WriteFile(filepath.Join(envoyDir, file), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, err := filepath.Glob(filepath.Join(envoyDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, f := range files {
		have = append(have, filepath.Base(f))
	}
	var wantNames []string
	for f := range want {
		wantNames = append(wantNames, f)
	}
	sort.Strings(wantNames)
	if !slices.Equal(have, wantNames) {
		t.Errorf("compose/envoy holds %v, want %v (run with -update)", have, wantNames)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if w, ok := want[filepath.Base(f)]; ok && !bytes.Equal(data, w) {
				t.Errorf("differs from bootstrap.Render's output (run with -update)")
			}
			bs := parseBootstrapStrict(t, data)
			if bs.GetAdmin().GetAddress().GetSocketAddress().GetAddress() != "127.0.0.1" {
				t.Errorf("Envoy admin must stay on loopback: %v", bs.GetAdmin())
			}
		})
	}
}

// parseBootstrapStrict decodes an Envoy bootstrap as Envoy would reject it:
// YAML → JSON → protojson with unknown fields refused, then the proto's
// validation rules and validate.Message (every Any unpacked and checked).
func parseBootstrapStrict(t *testing.T, data []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	bs, err := bootstrap.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// dexConfig is the part of Dex's configuration compose/dex/config.yaml uses.
type dexConfig struct {
	Issuer  string `yaml:"issuer"`
	Storage struct {
		Type string `yaml:"type"`
	} `yaml:"storage"`
	Web struct {
		HTTP string `yaml:"http"`
	} `yaml:"web"`
	Telemetry struct {
		HTTP string `yaml:"http"`
	} `yaml:"telemetry"`
	Logger struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"logger"`
	OAuth2 struct {
		ResponseTypes      []string `yaml:"responseTypes"`
		SkipApprovalScreen bool     `yaml:"skipApprovalScreen"`
		PasswordConnector  string   `yaml:"passwordConnector"`
	} `yaml:"oauth2"`
	EnablePasswordDB bool `yaml:"enablePasswordDB"`
	StaticClients    []struct {
		ID           string   `yaml:"id"`
		Name         string   `yaml:"name"`
		Secret       string   `yaml:"secret"`
		RedirectURIs []string `yaml:"redirectURIs"`
	} `yaml:"staticClients"`
	StaticPasswords []struct {
		Email    string   `yaml:"email"`
		Username string   `yaml:"username"`
		Hash     string   `yaml:"hash"`
		UserID   string   `yaml:"userID"`
		Groups   []string `yaml:"groups"`
	} `yaml:"staticPasswords"`
}

func TestDexConfig(t *testing.T) {
	var dex dexConfig
	strictDecode(t, dexFile, &dex)
	cfg := loadGatehouse(t)
	defaults := scriptDefaults(t)
	s := loadStack(t)

	if strings.Contains(readFile(t, dexFile), "{{") {
		t.Error("the Dex image runs its config through gomplate; do not use {{ }}")
	}
	if dex.Storage.Type != "memory" || !dex.EnablePasswordDB || !dex.OAuth2.SkipApprovalScreen {
		t.Errorf("want memory storage, enablePasswordDB and skipApprovalScreen: %+v", dex)
	}
	// The password grant the scripts use for tokens.
	if dex.OAuth2.PasswordConnector != "local" {
		t.Errorf("oauth2.passwordConnector = %q, want local (scripts use grant_type=password)", dex.OAuth2.PasswordConnector)
	}
	if dex.Issuer != defaults["DEX"] {
		t.Errorf("Dex issuer %s, scripts use %s", dex.Issuer, defaults["DEX"])
	}
	// Dex's port is published by the service whose network namespace it
	// shares, on the port of its issuer URL.
	iu, err := url.Parse(dex.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	if port(t, dex.Web.HTTP) != iu.Port() {
		t.Errorf("Dex listens on %s, its issuer says port %s", dex.Web.HTTP, iu.Port())
	}
	owner, _ := strings.CutPrefix(s.Services[dexService].NetworkMode, "service:")
	if !slices.Contains(s.Services[owner].Ports, "127.0.0.1:"+iu.Port()+":"+iu.Port()) {
		t.Errorf("Dex's port %s is not published by %q, whose network namespace it shares", iu.Port(), owner)
	}
	if owner != gatehouseService || iu.Hostname() != "localhost" {
		t.Errorf("Dex must share gatehouse's network namespace for issuer %s to mean the same to Gatehouse and to the host", dex.Issuer)
	}
	if hc := s.Services[dexService].Healthcheck; hc == nil || !strings.Contains(strings.Join(hc.Test, " "), ":"+port(t, dex.Telemetry.HTTP)+"/healthz") {
		t.Errorf("Dex's healthcheck does not probe its telemetry port %s", dex.Telemetry.HTTP)
	}
	if !strings.HasPrefix(s.Services[dexService].Image, dexImageRepo+":") {
		t.Errorf("Dex image %q", s.Services[dexService].Image)
	}

	// Gatehouse trusts Dex's tokens for the client the scripts use.
	var issuer *config.Issuer
	for i := range cfg.Authz.JWT.Issuers {
		if cfg.Authz.JWT.Issuers[i].Issuer == dex.Issuer {
			issuer = &cfg.Authz.JWT.Issuers[i]
		}
	}
	if issuer == nil {
		t.Fatalf("compose/gatehouse.yaml does not trust issuer %s", dex.Issuer)
	}
	if len(dex.StaticClients) != 1 {
		t.Fatalf("want one static client, have %d", len(dex.StaticClients))
	}
	client := dex.StaticClients[0]
	if client.ID != defaults["CLIENT_ID"] || client.Secret != defaults["CLIENT_SECRET"] {
		t.Errorf("Dex client %s/%s, scripts use %s/%s", client.ID, client.Secret, defaults["CLIENT_ID"], defaults["CLIENT_SECRET"])
	}
	if !slices.Contains(issuer.Audiences, client.ID) {
		t.Errorf("Gatehouse audiences %v lack Dex's client id %s (Dex's aud)", issuer.Audiences, client.ID)
	}
	if issuer.RolesClaim != "groups" {
		t.Errorf("roles_claim %q: Dex's tokens carry roles only as groups", issuer.RolesClaim)
	}

	// The login: redirect URI on the edge, the static user and its role.
	edge := cfg.Mesh.Edges[0]
	callback := "https://" + edge.TLS.DNSNames[0] + ":" + port(t, edge.Listen) + "/oauth2/callback"
	if !slices.Equal(client.RedirectURIs, []string{callback}) {
		t.Errorf("redirectURIs %v, want [%s]", client.RedirectURIs, callback)
	}
	found := false
	for _, u := range dex.StaticPasswords {
		if u.Email != defaults["USER_LOGIN"] {
			continue
		}
		found = true
		if err := bcrypt.CompareHashAndPassword([]byte(u.Hash), []byte(defaults["USER_PASSWORD"])); err != nil {
			t.Errorf("%s's hash does not match the scripts' password: %v", u.Email, err)
		}
		if !slices.Contains(u.Groups, "reader") {
			t.Errorf("%s's groups %v lack reader, which the scripts rely on", u.Email, u.Groups)
		}
	}
	if !found {
		t.Errorf("Dex has no static user %s", defaults["USER_LOGIN"])
	}

	t.Run("oidc", func(t *testing.T) { checkOIDC(t, dex.Issuer, client.ID, callback) })
}

// checkOIDC compares the authz.oidc section of compose/gatehouse.yaml, when
// the schema has one (extauthz/oidc: providers with issuer, client_id,
// external_url; redirect_uri = external_url + callback_path), with Dex: the
// provider for Dex's issuer must use Dex's client, its redirect URI must be
// the one registered at Dex, and it must ask for the groups scope and read
// roles from groups, or alice is no reader after a browser login.
func checkOIDC(t *testing.T, issuer, clientID, callback string) {
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, gatehouseFile)), &raw); err != nil {
		t.Fatal(err)
	}
	authz, _ := raw["authz"].(map[string]any)
	oidc, ok := authz["oidc"].(map[string]any)
	if !ok {
		t.Skip("SKIP ################ compose/gatehouse.yaml has no authz.oidc section (not in the config schema yet): the browser login of user.sh cannot work until it is added ################")
	}
	callbackPath := "/oauth2/callback"
	if p, ok := oidc["callback_path"].(string); ok && p != "" {
		callbackPath = p
	}
	providers, _ := oidc["providers"].([]any)
	var dexProvider map[string]any
	for _, p := range providers {
		if m, ok := p.(map[string]any); ok && m["issuer"] == issuer {
			dexProvider = m
		}
	}
	if dexProvider == nil {
		t.Fatalf("authz.oidc.providers has no provider with issuer %s", issuer)
	}
	if dexProvider["client_id"] != clientID {
		t.Errorf("provider client_id %v, Dex's client is %s", dexProvider["client_id"], clientID)
	}
	ext, _ := dexProvider["external_url"].(string)
	if got := strings.TrimSuffix(ext, "/") + callbackPath; got != callback {
		t.Errorf("redirect URI %s (external_url + callback_path), Dex has %s registered", got, callback)
	}
	if dexProvider["roles_claim"] != "groups" {
		t.Errorf("provider roles_claim %v: Dex carries roles only as groups (the policies need role reader)", dexProvider["roles_claim"])
	}
	scopes, _ := dexProvider["scopes"].([]any)
	if !slices.Contains(scopes, any("groups")) {
		t.Errorf("provider scopes %v lack groups: Dex sends the groups claim only for that scope", scopes)
	}
}

// TestPolicyExpectations evaluates policies/ (as mounted into gatehouse)
// with the identities the scripts present, so the statuses the scripts
// expect are the policies' real answers; and the same with
// scripts/demo_override.rego added, as policy.sh does live.
func TestPolicyExpectations(t *testing.T) {
	cfg := loadGatehouse(t)
	base := t.TempDir()
	copyRego(t, policiesDir, base)
	withOverride := t.TempDir()
	copyRego(t, policiesDir, withOverride)
	data, err := os.ReadFile(overridePolicy)
	if err != nil {
		t.Fatal(err)
	}
	// policy.sh copies it to policies/envoy/authz/demo_override.rego.
	if err := os.WriteFile(filepath.Join(withOverride, "envoy", "authz", "demo_override.rego"), data, 0o644); err != nil {
		t.Fatal(err)
	}

	alice := &identity.Identity{Kind: identity.KindUser, Subject: "alice", Issuer: "http://localhost:5556/dex", Method: identity.MethodJWKS, Roles: []string{"reader"}, Groups: []string{"reader"}}
	session := &identity.Identity{Kind: identity.KindUser, Subject: "alice", Method: identity.MethodSession, Roles: []string{"reader"}, Groups: []string{"reader"}}
	orders := cfg.Mesh.ServiceSPIFFEID("orders")
	ordersPeer := &identity.Identity{Kind: identity.KindService, Subject: orders, SPIFFEID: orders, Method: identity.MethodMTLS, Peer: &identity.Peer{SPIFFEID: orders}}

	tests := []struct {
		name         string
		method, path string
		id           *identity.Identity
		want         bool // without the override
		wantOverride bool // with it
	}{
		{"user.sh: reader reads an order (token)", "GET", "/api/orders/1", alice, true, true},
		{"user.sh: reader reads an order (session)", "GET", "/api/orders/1", session, true, true},
		{"user.sh: reader is no admin", "POST", "/admin/x", session, false, false},
		{"user.sh: anonymous", "GET", "/api/orders/1", nil, false, false},
		{"service.sh: orders reads inventory by SPIFFE id", "GET", "/api/inventory/1", ordersPeer, true, true},
		{"service.sh/policy.sh: reader reads inventory only with the override", "GET", "/api/inventory/1", alice, false, true},
		{"policy.sh: the override grants reads only", "POST", "/api/inventory/1", alice, false, false},
		{"all.sh: health through the edge", "GET", "/healthz", nil, true, true},
	}
	engines := map[bool]*policy.Engine{}
	for withOv, dir := range map[bool]string{false: base, true: withOverride} {
		e, err := policy.New(context.Background(), policy.WithDir(dir), policy.WithQuery(cfg.Authz.Policies.Query),
			policy.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatalf("policies (override %v): %v", withOv, err)
		}
		engines[withOv] = e
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for withOv, want := range map[bool]bool{false: tt.want, true: tt.wantOverride} {
				req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
					Http: &authv3.AttributeContext_HttpRequest{Method: tt.method, Path: tt.path, Host: "localhost:8443", Headers: map[string]string{":method": tt.method, ":path": tt.path}},
				}}}
				d, err := engines[withOv].EvaluateRequest(context.Background(), req, tt.id)
				if err != nil {
					t.Fatalf("override %v: %v", withOv, err)
				}
				if d.Allowed != want {
					t.Errorf("override %v: allowed = %v, want %v (reason %q)", withOv, d.Allowed, want, d.Reason)
				}
			}
		})
	}
}

// copyRego copies the non-test .rego files below src to dst, keeping paths.
func copyRego(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".rego") || strings.HasSuffix(p, "_test.rego") {
			return err
		}
		if filepath.Base(p) == "demo_override.rego" {
			t.Errorf("%s exists: a policy.sh run did not clean up", p)
			return nil
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, in); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}
