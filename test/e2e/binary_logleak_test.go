package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"
	"github.com/gatehouse-proxy/gatehouse/test/testbackend"
	"github.com/gatehouse-proxy/gatehouse/test/testidp"
	"github.com/gatehouse-proxy/gatehouse/xds/cache"
)

// stderrLeak returns a 16-byte window of secret (the whole of a shorter
// one) found in the process's stderr, or "".
func stderrLeak(stderr, secret string) string {
	n := min(16, len(secret))
	for i := 0; n > 0 && i+n <= len(secret); i++ {
		if strings.Contains(stderr, secret[i:i+n]) {
			return secret[i : i+n]
		}
	}
	return ""
}

// pemBodies is every base64 line of the PEM blocks in b.
func pemBodies(b []byte) []string {
	var out []string
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	return out
}

// TestLogLeakAuthzBinary: `gatehouse authz --log-level debug` with the
// shipped policies answers Checks carrying a valid, an expired and a
// forged JWT, Basic credentials and cookies; its stderr may hold none of
// them.
func TestLogLeakAuthzBinary(t *testing.T) {
	dir := t.TempDir()
	idp := testidp.New(t)
	policyDir := filepath.Join(dir, "policies")
	copyDir(t, filepath.Join(repoRoot(t), "policies"), policyDir)
	cfg := writeConfig(t, dir, fmt.Sprintf(authzListen+`authz:
  policies:
    dir: %s
`+jwtIssuer, policyDir, idp.Issuer(), idp.JWKSURI()))
	p, client, _ := startAuthzProc(t, cfg, "--log-level", "debug")
	e := &authzEnv{client: client, idp: idp, proc: p}

	claims := idp.UserClaims("alice", "gatehouse", "reader")
	valid := idp.Token(t, claims)
	claims["exp"] = 1000
	expired := idp.Token(t, claims)
	other := idp.Token(t, idp.UserClaims("bob", "gatehouse", "admin"))
	forged := valid[:strings.LastIndexByte(valid, '.')+1] + other[strings.LastIndexByte(other, '.')+1:]
	basic := base64.StdEncoding.EncodeToString([]byte("alice:basic-password-9d8c7b6a5f4e"))
	cookie := "sid=cookie-value-1e2d3c4b5a69788796a5"
	for _, h := range []map[string]string{
		{"authorization": "Bearer " + valid},
		{"authorization": "Bearer " + valid, "cookie": cookie},
		{"authorization": "Bearer " + expired},
		{"authorization": "Bearer " + forged},
		{"authorization": "Basic " + basic, "cookie": cookie},
		{"cookie": cookie},
	} {
		for _, path := range []string{"/api/orders", "/admin/x", "/public/x"} {
			e.check(t, checkRequest("GET", path, h))
		}
	}
	eventually(t, "decisions logged", func() error {
		if n := strings.Count(p.logs(), `"msg":"decision"`); n < 18 {
			return fmt.Errorf("%d decision lines", n)
		}
		return nil
	})
	logs := p.logs()
	if !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Fatalf("no DEBUG record: --log-level debug had no effect?\n%s", logs)
	}
	for name, s := range map[string]string{
		"valid token signature": valid[strings.LastIndexByte(valid, '.')+1:], "valid token payload": strings.Split(valid, ".")[1],
		"expired token signature": expired[strings.LastIndexByte(expired, '.')+1:],
		"forged token signature":  forged[strings.LastIndexByte(forged, '.')+1:],
		"Basic credentials":       basic, "cookie value": cookie,
	} {
		if w := stderrLeak(logs, s); w != "" {
			t.Errorf("%s leaked into stderr (window %q)", name, w)
		}
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", logs)
	}
	t.Run("undecodable path with a token in the query", func(t *testing.T) {
		q := idp.Token(t, idp.UserClaims("carol", "gatehouse", "reader"))
		e.check(t, checkRequest("GET", "/api/%zz?access_token="+q, map[string]string{"authorization": "Bearer " + valid}))
		eventually(t, "decision logged", func() error {
			if !strings.Contains(p.logs(), `"path":"/api/%zz"`) {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		if w := stderrLeak(p.logs(), q[strings.LastIndexByte(q, '.')+1:]); w != "" {
			t.Errorf("a query-string token leaked to stderr (window %q)", w)
		}
	})
}

// TestLogLeakXDSBinary: `gatehouse xds --log-level debug` creates its CA,
// pushes SDS secrets to an Envoy-shaped ADS stream, rotates them, and
// gets a NACK; no window of the CA key or of any pushed private key may
// appear on its stderr.
func TestLogLeakXDSBinary(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	certDir := filepath.Join(dir, "certs")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfgPath := writeConfig(t, dir, fmt.Sprintf(meshTemplate, testbackend.Start(t, "A"), "orders", certDir))
	p, addrs := start(t, "xds", "--config", cfgPath, "--state-dir", state, "--log-level", "debug")
	xdsAddr, adminAddr := addrs[0], addrs[1]

	// A stream of our own collects every secret pushed to the edge: the
	// first answer, the rotation (testSDSRotation drives it on its own
	// stream), and a NACK of it.
	a, names, keys, secrets := edgeSecrets(t, xdsAddr)
	a.request(resource.SecretType, "", "", names...)
	first := secrets()
	a.request(resource.SecretType, first.GetVersionInfo(), first.GetNonce(), names...)
	testSDSRotation(t, xdsAddr, adminAddr)
	rotated := secrets()
	if err := a.s.Send(&discovery.DiscoveryRequest{Node: a.node, TypeUrl: resource.SecretType, VersionInfo: first.GetVersionInfo(),
		ResponseNonce: rotated.GetNonce(), ResourceNames: names, ErrorDetail: &statuspb.Status{Code: 3, Message: "Failed to load private key"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "NACK logged", func() error {
		if !strings.Contains(p.logs(), "xds NACK") {
			return fmt.Errorf("no NACK in stderr yet")
		}
		return nil
	})
	if len(*keys) < 2 {
		t.Fatalf("collected %d private keys, want the first and the rotated", len(*keys))
	}
	caKey, err := os.ReadFile(filepath.Join(state, "ca", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	assertNoKeys(t, p.logs(), append(*keys, caKey))
}

// edgeSecrets opens an Envoy-shaped ADS stream as node edge, subscribes to
// CDS, LDS and the secrets they name, and returns the stream, the secret
// names, the private keys seen so far and a function that waits for the
// next SDS answer and adds its keys.
func edgeSecrets(t *testing.T, xdsAddr string) (*adsStream, []string, *[][]byte, func() *discovery.DiscoveryResponse) {
	t.Helper()
	s, stop, err := openADS(t, xdsAddr, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	a := &adsStream{t: t, s: s, node: &corev3.Node{Id: "edge", Cluster: "edge"}}
	a.request(resource.ClusterType, "", "")
	cds := a.recv()
	a.request(resource.ListenerType, "", "")
	lds := a.recv()
	names, err := cache.ReferencedSecrets(unpack(t, lds), unpack(t, cds))
	if err != nil {
		t.Fatal(err)
	}
	keys := &[][]byte{}
	return a, names, keys, func() *discovery.DiscoveryResponse {
		for {
			if r := a.recv(); r.GetTypeUrl() == resource.SecretType {
				for _, res := range unpack(t, r) {
					if k := res.(*tlsv3.Secret).GetTlsCertificate().GetPrivateKey().GetInlineBytes(); len(k) > 0 {
						*keys = append(*keys, k)
					}
				}
				return r
			}
		}
	}
}

// assertNoKeys fails t if any 16-byte window of a PEM line or of the DER
// of any of keys is in logs, which must hold DEBUG records.
func assertNoKeys(t *testing.T, logs string, keys [][]byte) {
	t.Helper()
	if !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Fatalf("no DEBUG record: --log-level debug had no effect?\n%s", logs)
	}
	for i, k := range keys {
		blk, _ := pem.Decode(k)
		if blk == nil || !strings.Contains(blk.Type, "PRIVATE KEY") {
			t.Fatalf("key %d is not a PEM private key", i)
		}
		for _, line := range append(pemBodies(k), string(blk.Bytes)) {
			if w := stderrLeak(logs, line); w != "" {
				t.Errorf("private key %d leaked into stderr (window %q)", i, w)
			}
		}
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", logs)
	}
}

// TestLogLeakXDSReplicaRedis: `gatehouse xds --log-level debug` on a
// shared CA and a Redis with requirepass (password_file), issuing the
// fleet's leaves into Redis, losing Redis and getting it back. Neither the
// Redis password nor the CA key nor a pushed private key may appear on
// stderr (go-redis logs through store.RedisLog in the binary).
func TestLogLeakXDSReplicaRedis(t *testing.T) {
	dir := t.TempDir()
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	password := "redis-pw-" + hex.EncodeToString(b)
	red := redistest.StartWith(t, redistest.Options{Args: []string{"--requirepass", password}})
	pwFile := filepath.Join(dir, "redis-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	gatehouse(t, "ca", "init", "--dir", filepath.Join(state, "ca"), "--trust-domain", "e2e.test")
	cfg := fmt.Sprintf(replicaTemplate, red.Addr(), testbackend.Start(t, "A"), testbackend.Start(t, "B"))
	cfg = strings.Replace(cfg, "    address: "+red.Addr()+"\n", "    address: "+red.Addr()+"\n    password_file: "+pwFile+"\n", 1)
	cfgPath := writeConfig(t, dir, cfg)
	p, addrs := start(t, "xds", "--config", cfgPath, "--state-dir", state, "--log-level", "debug")

	a, names, keys, secrets := edgeSecrets(t, addrs[0])
	a.request(resource.SecretType, "", "", names...)
	secrets()
	red.Stop()
	eventually(t, "redis loss logged", func() error {
		if !strings.Contains(p.logs(), "redis unreachable") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	red.Restart()
	eventually(t, "redis back logged", func() error {
		if strings.Count(p.logs(), "redis connected and synchronised") < 2 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	caKey, err := os.ReadFile(filepath.Join(state, "ca", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	logs := p.logs()
	if w := stderrLeak(logs, password); w != "" {
		t.Errorf("the Redis password leaked into stderr (window %q)", w)
	}
	assertNoKeys(t, logs, append(*keys, caKey))
}
