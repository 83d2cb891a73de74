package docs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"

	"github.com/gatehouse-proxy/gatehouse/test/testkit"
)

// Metrics whose series exist only after an event this test does not cause
// (a refresh grant, a Redis operation error, a revocation from Redis):
// for them the test checks the registering code, not a scrape.
var metricsNotScraped = map[string]string{
	"gatehouse_oidc_refresh_grants_total":        "needs an OIDC refresh grant",
	"gatehouse_store_operation_errors_total":     "needs a failing Redis operation",
	"gatehouse_store_revocations_received_total": "needs a revocation received from Redis",
	"gatehouse_store_redis_up":                   "scraped from a Redis-backed process in TestStoreMetricsServed",
}

var (
	metricRef   = regexp.MustCompile("gatehouse_[a-z0-9_]*(?:\\{[a-z0-9_,]+\\}[a-z0-9_]*)?")
	endpointRef = regexp.MustCompile(`^(GET|POST) (/(?:debug|healthz|readyz|metrics|\.well-known)\S*)$`)
	// Where the code names a metric: prometheus Opts or NewDesc.
	definedNSO  = regexp.MustCompile(`Namespace:\s*"(\w+)",\s*Subsystem:\s*"(\w+)",\s*Name:\s*"(\w+)"`)
	definedFull = regexp.MustCompile(`(?:Name:\s*|NewDesc\(\s*)"(gatehouse_\w+)"`)
)

// documentedMetrics is every gatehouse_* name in README.md, with
// `a_{b,c}_d` expanded.
func documentedMetrics(t *testing.T) map[string]string {
	d := readDoc(t, "README.md")
	out := map[string]string{}
	for _, s := range d.spans {
		for _, ref := range metricRef.FindAllString(s.text, -1) {
			for _, name := range expandBraces(ref) {
				out[strings.TrimRight(name, "_")] = s.where()
			}
		}
	}
	return out
}

func expandBraces(s string) []string {
	open := strings.IndexByte(s, '{')
	if open < 0 {
		return []string{s}
	}
	end := strings.IndexByte(s, '}')
	var out []string
	for _, alt := range strings.Split(s[open+1:end], ",") {
		out = append(out, s[:open]+alt+s[end+1:])
	}
	return out
}

// definedMetrics scans the module's non-test Go sources for metric names.
func definedMetrics(t *testing.T) map[string]string {
	root := repoRoot(t)
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || rel == "test" || rel == "deploy") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range definedNSO.FindAllStringSubmatch(string(src), -1) {
			out[m[1]+"_"+m[2]+"_"+m[3]] = rel
		}
		for _, m := range definedFull.FindAllStringSubmatch(string(src), -1) {
			out[m[1]] = rel
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMetricsDocumentedAreDefined: every gatehouse_* metric README.md names
// is defined by the code, and every one the code defines is documented.
func TestMetricsDocumentedAreDefined(t *testing.T) {
	documented, defined := documentedMetrics(t), definedMetrics(t)
	if len(defined) < 10 {
		t.Fatalf("found only %d metric definitions in the code: %v", len(defined), defined)
	}
	for _, name := range slices.Sorted(maps.Keys(documented)) {
		if _, ok := defined[name]; !ok {
			t.Errorf("%s: README.md documents metric %s, which no code defines", documented[name], name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(defined)) {
		if _, ok := documented[name]; !ok {
			t.Errorf("%s defines metric %s, which README.md (Operations) does not mention", defined[name], name)
		}
	}
}

// TestOperationsServed starts `gatehouse serve`, makes one Check and opens
// one ADS stream, and then requires every admin endpoint of README.md to
// answer and every documented metric (but those of metricsNotScraped) to be
// in /metrics, with the Go runtime's.
func TestOperationsServed(t *testing.T) {
	dir := t.TempDir()
	jwks := jwksServer(t)
	cfg := filepath.Join(dir, "gatehouse.yaml")
	writeFile(t, cfg, fmt.Sprintf(`listen: {authz: "127.0.0.1:0", xds: "127.0.0.1:0", admin: "127.0.0.1:0"}
authz:
  jwt:
    issuers:
      - {issuer: https://idp.example.com, audiences: [shop], jwks_uri: %q}
  assertion: {enabled: true}
mesh:
  authz: {address: "127.0.0.1:9001"}
  services:
    - {name: orders, endpoints: ["127.0.0.1:8080"]}
  edges:
    - name: edge
      tls: {dns_names: [localhost]}
      routes:
        - {path_prefix: /, service: orders}
`, jwks))
	_, addrs := startGatehouse(t, "serve", "--config", cfg, "--policies", filepath.Join(repoRoot(t), "policies"),
		"--state-dir", filepath.Join(dir, "state"))
	admin, authzAddr, xdsAddr := addrs["admin HTTP"], addrs["ext_authz gRPC"], addrs["xDS gRPC"]
	if admin == "" || authzAddr == "" || xdsAddr == "" {
		t.Fatalf("start banner addresses: %v", addrs)
	}
	base := "http://" + admin
	waitReady(t, base)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// One Check, as Envoy sends it.
	ac, err := grpc.NewClient(authzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	if _, err := authv3.NewAuthorizationClient(ac).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/healthz", Host: "localhost", Scheme: "https", Protocol: "HTTP/1.1",
			Headers: map[string]string{":method": "GET", ":path": "/healthz", ":authority": "localhost"},
		}},
	}}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	// One ADS stream, kept open while /metrics is read.
	xc, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer xc.Close()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(xc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: "edge"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("ADS: %v", err)
	}

	// Every admin endpoint README.md names.
	d := readDoc(t, "README.md")
	endpoints := 0
	for _, s := range d.spans {
		m := endpointRef.FindStringSubmatch(s.text)
		if m == nil {
			continue
		}
		paths := []string{m[2]}
		if p, q, ok := strings.Cut(m[2], "[?"); ok { // /debug/xds[?node=N]
			paths = []string{p, p + "?" + strings.Replace(strings.TrimSuffix(q, "]"), "=N", "=edge", 1)}
		}
		for _, p := range paths {
			endpoints++
			req, _ := http.NewRequestWithContext(ctx, m[1], base+p, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("%s: %s %s: %v", s.where(), m[1], p, err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 300 {
				t.Errorf("%s: %s %s answers %d: %s", s.where(), m[1], p, resp.StatusCode, body)
			}
		}
	}
	if endpoints < 8 {
		t.Errorf("found only %d admin endpoints in README.md", endpoints)
	}

	// Every documented metric.
	scraped := scrape(t, base)
	if !scraped["go_goroutines"] {
		t.Error("/metrics has no Go runtime metrics (go_goroutines), which README.md promises")
	}
	for name, where := range documentedMetrics(t) {
		if _, skip := metricsNotScraped[name]; skip {
			continue
		}
		if !scraped[name] {
			t.Errorf("%s: README.md documents %s; /metrics of gatehouse serve after a Check and an ADS stream lacks it", where, name)
		}
	}
}

// TestStoreMetricsServed starts `gatehouse authz` with store.backend redis
// on a real redis-server and requires gatehouse_store_redis_up to be 1.
func TestStoreMetricsServed(t *testing.T) {
	red := redistest.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gatehouse.yaml")
	writeFile(t, cfg, fmt.Sprintf(`listen: {authz: "127.0.0.1:0", admin: "127.0.0.1:0"}
store:
  backend: redis
  redis: {address: %q}
`, red.Addr()))
	_, addrs := startGatehouse(t, "authz", "--config", cfg, "--policies", filepath.Join(repoRoot(t), "policies"),
		"--state-dir", filepath.Join(dir, "state"))
	base := "http://" + addrs["admin HTTP"]
	waitReady(t, base)
	deadline := time.Now().Add(10 * time.Second)
	for {
		body := get(t, base+"/metrics")
		if strings.Contains(body, "\ngatehouse_store_redis_up 1\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gatehouse_store_redis_up never became 1:\n%s", grepLines(body, "gatehouse_store"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz never answered 200 (last: %v)", base, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, url string) string { return testkit.Get(t, url) }

// scrape returns the metric family names /metrics shows.
func scrape(t *testing.T, base string) map[string]bool {
	names := map[string]bool{}
	for _, l := range strings.Split(get(t, base+"/metrics"), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
		}
	}
	return names
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// jwksServer serves a one-key JWKS, so the issuer's first fetch succeeds.
func jwksServer(t *testing.T) string {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	body := fmt.Sprintf(`{"keys":[{"kty":"EC","crv":"P-256","kid":"docs","alg":"ES256","use":"sig","x":%q,"y":%q}]}`,
		enc(pub[1:33]), enc(pub[33:]))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/jwks.json"
}
