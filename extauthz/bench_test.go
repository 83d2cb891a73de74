package extauthz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/url"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/code"
)

// realisticRequest is GET /api/orders/42 with ~1 KB of headers, as a
// browser-originated request reaches the edge.
func realisticRequest(authz string) *authv3.CheckRequest {
	h := map[string]string{
		"accept":          "application/json, text/plain, */*",
		"accept-encoding": "gzip, deflate, br",
		"accept-language": "en-US,en;q=0.9,de;q=0.8",
		"cookie":          "theme=dark; _ga=GA1.2.1234567890.1700000000; consent=necessary%2Canalytics",
		"referer":         "https://shop.example.com/orders",
		"sec-ch-ua":       `"Chromium";v="156", "Not-A.Brand";v="24"`,
		"user-agent":      "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
		"x-forwarded-for": "203.0.113.7",
		"traceparent":     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	if authz != "" {
		h["authorization"] = authz
	}
	return request("GET", "/api/orders/42", h)
}

// The fixture queries data.envoy.authz.decision; a boolean there is the
// plain allow/deny result form.
const benchRBAC = `package envoy.authz

decision := allow

default allow := false

allow if input.parsed_path[0] == "public"

allow if {
	input.attributes.request.http.method == "GET"
	array.slice(input.parsed_path, 0, 2) == ["api", "orders"]
	"reader" in input.identity.roles
}
`

// BenchmarkCheck measures one Check in process (no gRPC), per path of the
// request pipeline. Compare the sub-benchmarks side by side in one run.
// Like `gatehouse authz` in the load harness (test/bench), the server logs
// at level warn (no decision lines) and records metrics; the
// "+decision-log" case logs every decision at info to a discarding handler.
func BenchmarkCheck(b *testing.B) {
	cases := []struct {
		name   string
		policy string
		token  bool
		peer   bool // the caller's mTLS certificate, as a sidecar hop sees it
		level  slog.Level
		want   code.Code
	}{
		{name: "noop", policy: "package envoy.authz\n\ndecision := true\n", level: slog.LevelWarn, want: code.Code_OK},
		{name: "rego-only", policy: benchRBAC, level: slog.LevelWarn, want: code.Code_UNAUTHENTICATED},
		{name: "rs256-jwt+rego", policy: benchRBAC, token: true, level: slog.LevelWarn, want: code.Code_OK},
		{name: "mtls-peer+rego", policy: benchRBAC, peer: true, level: slog.LevelWarn, want: code.Code_PERMISSION_DENIED},
		{name: "rs256-jwt+rego+decision-log", policy: benchRBAC, token: true, level: slog.LevelInfo, want: code.Code_OK},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: c.level}))
			f := newFixture(b, WithLogger(log), WithMetrics(NewMetrics(prometheus.NewRegistry())))
			f.writePolicy(b, c.policy)
			if err := f.engine.Reload(context.Background()); err != nil {
				b.Fatal(err)
			}
			authz := ""
			if c.token {
				authz = "Bearer " + f.idp.Token(b, userClaims(f.idp, "reader"))
			}
			req := realisticRequest(authz)
			if c.peer {
				req.Attributes.Source = &authv3.AttributeContext_Peer{
					Principal: "spiffe://gatehouse.local/sidecar/orders", Certificate: benchPeerCert(b, "spiffe://gatehouse.local/sidecar/orders"),
				}
			}
			check := func() {
				resp, err := f.server.Check(context.Background(), req)
				if err != nil || code.Code(resp.GetStatus().GetCode()) != c.want {
					b.Fatalf("unexpected answer %v %v", resp.GetStatus(), err)
				}
			}
			check()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					check()
				}
			})
		})
	}
}

// benchPeerCert is the URL-encoded PEM of a workload certificate with one
// SPIFFE URI SAN, as Envoy forwards it with include_peer_certificate.
func benchPeerCert(b *testing.B, spiffeID string) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	u, err := url.Parse(spiffeID)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

// BenchmarkCheckDistinctTokens verifies a new RS256 token on every call, so
// the verified-token cache cannot hide the signature cost.
func BenchmarkCheckDistinctTokens(b *testing.B) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := newFixture(b, WithLogger(quiet))
	f.writePolicy(b, benchRBAC)
	if err := f.engine.Reload(context.Background()); err != nil {
		b.Fatal(err)
	}
	reqs := make([]*authv3.CheckRequest, 2000)
	for i := range reqs {
		cl := userClaims(f.idp, "reader")
		cl["jti"] = fmt.Sprint(i)
		cl["exp"] = time.Now().Add(time.Hour).Unix() + int64(i)
		reqs[i] = realisticRequest("Bearer " + f.idp.Token(b, cl))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := f.server.Check(context.Background(), reqs[i%len(reqs)])
		if err != nil || resp.GetOkResponse() == nil {
			b.Fatalf("unexpected answer %v %v", resp, err)
		}
		if i%len(reqs) == len(reqs)-1 {
			b.StopTimer()
			f.server.tokens.(jwtTokens).v.Purge()
			b.StartTimer()
		}
	}
}
