package server_test

import (
	"context"
	"encoding/hex"
	"encoding/pem"
	"log/slog"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/cache/cachetest"
	"github.com/gatehouse-proxy/gatehouse/xds/server"

	"github.com/gatehouse-proxy/gatehouse/internal/logging/logtest"
)

// debugHarness is newHarness with the cache, go-control-plane (through
// cache.GCPLogger, which server.New installs) and the server logging at
// DEBUG into one buffer.
func debugHarness(t *testing.T, nodeID string, c *cachetest.Certs) (*harness, *logtest.Buffer) {
	t.Helper()
	logs := &logtest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cc := cache.New(log)
	if err := cc.SetResources(context.Background(), nodeID, cachetest.Set(c, "10.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := server.New(cc, server.WithRegisterer(reg), server.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	return &harness{cache: cc, srv: s, reg: reg, addr: serve(t, s)}, logs
}

// keyLeak returns a 16-byte window of c's private key — of any PEM line,
// of the DER, or of its hex — found in logs, or "".
func keyLeak(logs string, c *cachetest.Certs) string {
	blk, _ := pem.Decode(c.KeyPEM)
	var forms []string
	for line := range strings.Lines(string(c.KeyPEM)) {
		if line = strings.TrimSpace(line); !strings.HasPrefix(line, "-----") {
			forms = append(forms, line)
		}
	}
	forms = append(forms, string(blk.Bytes), hex.EncodeToString(blk.Bytes))
	for _, f := range forms {
		for i := 0; i+16 <= len(f); i++ {
			if strings.Contains(logs, f[i:i+16]) {
				return f[i : i+16]
			}
		}
	}
	return ""
}

// TestLogLeakSDS: SotW and delta ADS streams subscribe to the SDS secrets,
// the certificate rotates, and a push of secrets is NACKed, all at DEBUG.
// No window of any private key pushed may appear in the log.
func TestLogLeakSDS(t *testing.T) {
	const nodeID = "envoy-logleak"
	cs := []*cachetest.Certs{certs(t, 0x51), certs(t, 0x52), certs(t, 0x53), certs(t, 0x54)}
	h, logs := debugHarness(t, nodeID, cs[0])
	client := discovery.NewAggregatedDiscoveryServiceClient(h.conn(t))
	ctx := context.Background()
	names := []string{cachetest.CertSecret, cachetest.CASecret}

	// SotW: subscribe, ACK, rotate, NACK the next rotation.
	resps, send, cancel := openStream(t, client.StreamAggregatedResources)
	sds := sotwReq(&corev3.Node{Id: nodeID}, resource.SecretType, names...)
	send(sds)
	send(ack(sds, next(t, resps)))
	if err := h.cache.SetSecrets(ctx, nodeID, rotate(cs[1])); err != nil {
		t.Fatal(err)
	}
	r := next(t, resps)
	send(ack(sds, r))
	if err := h.cache.SetSecrets(ctx, nodeID, rotate(cs[2])); err != nil {
		t.Fatal(err)
	}
	bad := next(t, resps)
	send(&discovery.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: names, VersionInfo: r.GetVersionInfo(),
		ResponseNonce: bad.GetNonce(), ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "Failed to load private key"}})
	eventually(t, "NACK recorded", func() bool { return h.nodeStatus(t, nodeID).Types[resource.SecretType].NackError != "" })
	cancel()

	// Delta: subscribe, ACK, rotate, NACK.
	dresps, dsend, dcancel := openStream(t, client.DeltaAggregatedResources)
	dsend(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: nodeID}, TypeUrl: resource.SecretType, ResourceNamesSubscribe: names})
	d := next(t, dresps)
	dsend(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: d.GetNonce()})
	if err := h.cache.SetSecrets(ctx, nodeID, rotate(cs[3])); err != nil {
		t.Fatal(err)
	}
	d = next(t, dresps)
	dsend(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: d.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "Failed to load private key"}})
	eventually(t, "delta NACK logged", func() bool { return strings.Count(logs.String(), "xds NACK") >= 2 })
	dcancel()

	out := logs.String()
	if !strings.Contains(out, "level=DEBUG") {
		t.Fatalf("nothing at DEBUG was logged:\n%s", out)
	}
	for i, c := range cs {
		if w := keyLeak(out, c); w != "" {
			t.Fatalf("private key %d leaked (window %q):\n%s", i, w, out)
		}
	}
}
