package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/xds"

	"github.com/gatehouse-proxy/gatehouse/test/testbackend"
	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/validate"

	"github.com/gatehouse-proxy/gatehouse/test/testkit"
)

// Parts of the configs of the xDS tests (meshTemplate, replicaTemplate)
// that are the same in all of them.
const (
	// xdsListen puts both listeners of `gatehouse xds` on free ports.
	xdsListen = `listen:
  xds: 127.0.0.1:0
  admin: 127.0.0.1:0
`
	// meshTrust opens the mesh section, up to the authz address.
	meshTrust = `mesh:
  trust_domain: e2e.test
  authz:
`
	// greeterService opens the services with greeter (fmt: its endpoint).
	greeterService = `  services:
    - name: greeter
      endpoints: [%q]
      protocol: http2
`
	// ordersService is the mTLS service behind the edge and its sidecar.
	ordersService = `    - name: orders
      endpoints: ["127.0.0.1:15443"]
      mtls: true
`
	// edgeRoutes is the edge, up to its routes.
	edgeRoutes = `  edges:
    - name: edge
      listen: 127.0.0.1:8443
      tls:
        dns_names: [shop.e2e.test]
      routes:
`
	// ordersSidecar and webClient follow the routes.
	ordersSidecar = `  sidecars:
    - service: orders
`
	webClient = `  grpc_clients:
    - name: web
      targets:
        - target: xds:///greeter
          service: greeter
`
)

// meshTemplate is one `gatehouse xds` config (fmt: greeter's endpoint, the
// service of the edge's route, cert_dir). Its bad-edit check names a line
// and column of the route: keep the lines where they are.
const meshTemplate = xdsListen + meshTrust + `    address: 127.0.0.1:9001
` + greeterService + ordersService + edgeRoutes + `        - path_prefix: /
          service: %s
` + ordersSidecar + `  cert_dir: %s
` + webClient

// TestXDSProcess runs `gatehouse xds` on a config file and proves it on real
// peers: grpc-go's xDS client follows live edits of the file, a bad edit is
// rejected before anything is pushed, and a raw ADS stream shaped like
// Envoy's gets SDS certificates rotated by push alone.
func TestXDSProcess(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	addrA, addrB := testbackend.Start(t, "A"), testbackend.Start(t, "B")
	certDir := filepath.Join(dir, "certs")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	mesh := func(endpoint, service string) string { return fmt.Sprintf(meshTemplate, endpoint, service, certDir) }
	cfgPath := writeConfig(t, dir, mesh(addrA, "orders"))

	_, addrs := start(t, "xds", "--config", cfgPath, "--state-dir", state)
	if len(addrs) != 2 {
		t.Fatalf("listening line named %v", addrs)
	}
	xdsAddr, adminAddr := addrs[0], addrs[1]

	t.Run("CA created with private files", func(t *testing.T) {
		for path, want := range map[string]os.FileMode{filepath.Join(state, "ca"): 0o700 | os.ModeDir, filepath.Join(state, "ca", "ca.key"): 0o600} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != want {
				t.Errorf("%s mode %v, want %v", path, fi.Mode(), want)
			}
		}
	})

	// grpc-go's xDS client, bootstrapped by `gatehouse bootstrap`.
	out, err := exec.Command(binary, "bootstrap", "--config", cfgPath, "--node", "web", "--xds", xdsAddr).Output()
	if err != nil {
		t.Fatalf("gatehouse bootstrap: %v", err)
	}
	rb, err := xds.NewXDSResolverWithConfigForTesting(out)
	if err != nil {
		t.Fatalf("grpc-go refuses the bootstrap: %v\n%s", err, out)
	}
	client := testgrpc.NewTestServiceClient(xdsClientConn(t, "xds:///greeter", rb))
	reaches := func(id string) {
		t.Helper()
		eventually(t, "grpc-go reaches backend "+id, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
			if err != nil {
				return err
			}
			if resp.GetServerId() != id {
				return fmt.Errorf("reached %s", resp.GetServerId())
			}
			return nil
		})
	}
	reaches("A")

	writeFile(t, cfgPath, mesh(addrB, "orders"))
	reaches("B")

	// A route to a service that does not exist: rejected with its line, and
	// nothing is pushed — calls keep reaching B.
	writeFile(t, cfgPath, mesh(addrA, "nowhere"))
	eventually(t, "bad edit reported", func() error {
		body := httpGet(t, "http://"+adminAddr+"/debug/mesh")
		if !strings.Contains(body, "gatehouse.yaml:22:11: mesh.edges[0].routes[0].service") || !strings.Contains(body, "nowhere") {
			return fmt.Errorf("/debug/mesh: %s", body)
		}
		return nil
	})
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
		cancel()
		if err != nil || resp.GetServerId() != "B" {
			t.Fatalf("after a rejected edit: %v %v", resp, err)
		}
	}
	writeFile(t, cfgPath, mesh(addrB, "orders"))

	t.Run("certificate expiry exported", func(t *testing.T) {
		m := httpGet(t, "http://"+adminAddr+"/metrics")
		for _, want := range []string{`gatehouse_cert_expiry_timestamp_seconds{kind="leaf",spiffe_id="spiffe://e2e.test/sidecar/orders"}`, `kind="ca"`, `gatehouse_xds_streams`} {
			if !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
	t.Run("SDS rotation by push", func(t *testing.T) { testSDSRotation(t, xdsAddr, adminAddr) })
	t.Run("operator certificates from cert_dir", func(t *testing.T) { testCertDir(t, adminAddr, state, certDir) })
	t.Run("CA rotation with overlap", func(t *testing.T) { testCARotation(t, adminAddr, state) })
}

// heldSerial is the serial label of a secret the cache holds for node.
func heldSerial(t *testing.T, adminAddr, node, secret string) string {
	t.Helper()
	var status struct{ Nodes []cache.NodeStatus }
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+adminAddr+"/debug/xds?node="+node)), &status); err != nil {
		t.Fatal(err)
	}
	if len(status.Nodes) != 1 {
		t.Fatalf("node %s: %+v", node, status)
	}
	return status.Nodes[0].Secrets[secret].Current
}

func gatehouse(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("gatehouse %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func certSerial(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.Text(16)
}

// testCertDir: a certificate pair dropped into cert_dir replaces the issued
// one by SDS push; a mismatched pair is rejected and the last good stays.
func testCertDir(t *testing.T, adminAddr, state, certDir string) {
	const id = "spiffe://e2e.test/sidecar/orders"
	issued := heldSerial(t, adminAddr, "orders", id)
	if issued == "" {
		t.Fatal("orders holds no workload certificate")
	}
	gatehouse(t, "ca", "issue", "--dir", filepath.Join(state, "ca"), "--spiffe-id", id, "--out", filepath.Join(certDir, "sidecar.orders"))
	want := certSerial(t, filepath.Join(certDir, "sidecar.orders.crt"))
	eventually(t, "operator certificate served", func() error {
		if got := heldSerial(t, adminAddr, "orders", id); got != want {
			return fmt.Errorf("serving %s, want %s", got, want)
		}
		return nil
	})
	// A key that does not belong to the certificate: rejected.
	other := filepath.Join(t.TempDir(), "other")
	gatehouse(t, "ca", "issue", "--dir", filepath.Join(state, "ca"), "--spiffe-id", id, "--out", other)
	key, err := os.ReadFile(other + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certDir, "sidecar.orders.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	// Then a good, unrelated change proves the watcher ran after the bad one.
	gatehouse(t, "ca", "issue", "--dir", filepath.Join(state, "ca"), "--spiffe-id", "spiffe://e2e.test/edge/edge", "--out", filepath.Join(certDir, "edge.edge"))
	edgeWant := certSerial(t, filepath.Join(certDir, "edge.edge.crt"))
	eventually(t, "second operator certificate served", func() error {
		if got := heldSerial(t, adminAddr, "edge", "spiffe://e2e.test/edge/edge"); got != edgeWant {
			return fmt.Errorf("edge serving %s, want %s", got, edgeWant)
		}
		return nil
	})
	if got := heldSerial(t, adminAddr, "orders", id); got != want {
		t.Errorf("after a mismatched key the orders certificate is %s, want the last good %s", got, want)
	}
	for _, f := range []string{"sidecar.orders", "edge.edge"} {
		for _, ext := range []string{".crt", ".key"} {
			os.Remove(filepath.Join(certDir, f+ext))
		}
	}
}

// testCARotation: `gatehouse ca rotate` on the running control plane's CA
// pushes a trust bundle with both CAs and re-issues leaves from the new one.
func testCARotation(t *testing.T, adminAddr, state string) {
	caDir := filepath.Join(state, "ca")
	oldCA := certSerial(t, filepath.Join(caDir, "ca.crt"))
	const workload = "spiffe://e2e.test/sidecar/orders"
	before := heldSerial(t, adminAddr, "orders", workload)
	const bundle = "gatehouse-trust-bundle"
	if got := heldSerial(t, adminAddr, "orders", bundle); got != oldCA {
		t.Fatalf("trust bundle labelled %s, want CA %s", got, oldCA)
	}
	gatehouse(t, "ca", "rotate", "--dir", caDir, "--overlap", "1h")
	newCA := certSerial(t, filepath.Join(caDir, "ca.crt"))
	eventually(t, "new trust bundle pushed", func() error {
		if got := heldSerial(t, adminAddr, "orders", bundle); got != newCA {
			return fmt.Errorf("bundle labelled %s, want %s", got, newCA)
		}
		return nil
	})
	// Every leaf is re-issued, from the new CA.
	eventually(t, "workload certificate re-issued", func() error {
		if got := heldSerial(t, adminAddr, "orders", workload); got == before {
			return fmt.Errorf("still %s", got)
		}
		return nil
	})
}

func httpGet(t *testing.T, url string) string { return testkit.Get(t, url) }

// openADS opens a SotW ADS stream to addr over creds; stop ends the stream
// and its connection. A stream that cannot be opened is an error, for the
// caller to judge.
func openADS(t *testing.T, addr string, creds credentials.TransportCredentials) (s discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient, stop func(), err error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop = func() { cancel(); conn.Close() }
	if s, err = discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx); err != nil {
		stop()
		return nil, nil, err
	}
	return s, stop, nil
}

// adsStream is an Envoy-shaped SotW ADS client for one node.
type adsStream struct {
	t    *testing.T
	s    discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node *corev3.Node
}

func (a *adsStream) request(typ string, version, nonce string, names ...string) {
	a.t.Helper()
	if err := a.s.Send(&discovery.DiscoveryRequest{Node: a.node, TypeUrl: typ, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names}); err != nil {
		a.t.Fatal(err)
	}
}

func (a *adsStream) recv() *discovery.DiscoveryResponse {
	a.t.Helper()
	resp, err := a.s.Recv()
	if err != nil {
		a.t.Fatal(err)
	}
	return resp
}

// unpack decodes every resource of resp and validates it against Envoy's
// protos, typed_config Anys included.
func unpack(t *testing.T, resp *discovery.DiscoveryResponse) []types.Resource {
	t.Helper()
	var out []types.Resource
	for _, a := range resp.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Message(m); err != nil {
			t.Fatalf("%s failed validation: %v", resp.GetTypeUrl(), err)
		}
		out = append(out, m.(types.Resource))
	}
	return out
}

func testSDSRotation(t *testing.T, xdsAddr, adminAddr string) {
	s, stop, err := openADS(t, xdsAddr, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	a := &adsStream{t: t, s: s, node: &corev3.Node{Id: "edge", Cluster: "edge"}}

	// Like Envoy: wildcard CDS and LDS first, then what they name.
	a.request(resource.ClusterType, "", "")
	cds := a.recv()
	a.request(resource.ClusterType, cds.GetVersionInfo(), cds.GetNonce())
	a.request(resource.ListenerType, "", "")
	lds := a.recv()
	a.request(resource.ListenerType, lds.GetVersionInfo(), lds.GetNonce())
	names, err := cache.ReferencedSecrets(unpack(t, lds), unpack(t, cds))
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 2 {
		t.Fatalf("edge references secrets %v", names)
	}
	a.request(resource.SecretType, "", "", names...)
	var sds *discovery.DiscoveryResponse
	for sds == nil {
		// RDS/EDS are not requested; only the secret answer can arrive.
		if r := a.recv(); r.GetTypeUrl() == resource.SecretType {
			sds = r
		}
	}
	a.request(resource.SecretType, sds.GetVersionInfo(), sds.GetNonce(), names...)
	before := serials(t, unpack(t, sds))
	if len(before) == 0 {
		t.Fatal("no certificates in the secrets")
	}

	resp, err := http.Post("http://"+adminAddr+"/debug/rotate", "", nil)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /debug/rotate: %v %v", resp, err)
	}
	resp.Body.Close()

	// The next push is the secrets, with new serials; listeners and
	// clusters are not resent.
	next := a.recv()
	if next.GetTypeUrl() != resource.SecretType {
		t.Fatalf("rotation pushed %s, want only secrets", next.GetTypeUrl())
	}
	a.request(resource.SecretType, next.GetVersionInfo(), next.GetNonce(), names...)
	after := serials(t, unpack(t, next))
	for name, serial := range before {
		if after[name] == serial {
			t.Errorf("secret %s kept serial %s after rotation", name, serial)
		}
	}

	// The admin page shows what the node was sent and accepted.
	eventually(t, "ACK of the rotated secrets visible", func() error {
		var status struct{ Nodes []cache.NodeStatus }
		if err := json.Unmarshal([]byte(httpGet(t, "http://"+adminAddr+"/debug/xds?node=edge")), &status); err != nil {
			return err
		}
		for _, n := range status.Nodes {
			if n.NodeID != "edge" {
				continue
			}
			for name, serial := range after {
				if n.Secrets[name].Acked != serial {
					return fmt.Errorf("secret %s acked %q, want %q", name, n.Secrets[name].Acked, serial)
				}
			}
			return nil
		}
		return fmt.Errorf("edge not in /debug/xds")
	})
}

// serials maps each certificate secret to its leaf's serial (hex).
func serials(t *testing.T, rs []types.Resource) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range rs {
		s := r.(*tlsv3.Secret)
		tc := s.GetTlsCertificate()
		if tc == nil {
			continue
		}
		block, _ := pem.Decode(tc.GetCertificateChain().GetInlineBytes())
		if block == nil {
			t.Fatalf("secret %s: no PEM", s.GetName())
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out[s.GetName()] = c.SerialNumber.Text(16)
	}
	return out
}

// TestGRPCClientDialsOneOfTwoTargets: grpc-go subscribes to listeners one
// dial target at a time, so a client node with two targets that dials only
// one must still be answered (go-control-plane's ADS rule would wait for a
// request naming both, for ever).
func TestGRPCClientDialsOneOfTwoTargets(t *testing.T) {
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, fmt.Sprintf(xdsListen+`mesh:
  services:
    - {name: greeter, endpoints: [%q], protocol: http2}
    - {name: other, endpoints: [%q], protocol: http2}
  grpc_clients:
    - name: web
      targets:
        - {target: "xds:///greeter", service: greeter}
        - {target: "xds:///other", service: other}
`, testbackend.Start(t, "G"), testbackend.Start(t, "O")))
	_, addrs := start(t, "xds", "--config", cfgPath, "--state-dir", filepath.Join(dir, "state"))
	out := gatehouse(t, "bootstrap", "--config", cfgPath, "--node", "web", "--xds", addrs[0])
	rb, err := xds.NewXDSResolverWithConfigForTesting([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	client := testgrpc.NewTestServiceClient(xdsClientConn(t, "xds:///greeter", rb))
	eventually(t, "grpc-go reaches greeter", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
		if err != nil {
			return err
		}
		if resp.GetServerId() != "G" {
			return fmt.Errorf("reached %s", resp.GetServerId())
		}
		return nil
	})
}
