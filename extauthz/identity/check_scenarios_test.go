package identity_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/gatehouse-proxy/gatehouse/extauthz"
	"github.com/gatehouse-proxy/gatehouse/extauthz/assertion"
	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/jwt"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
)

// recorder is a Policy that allows everything and remembers what it was
// asked: the identity ext_authz established, and how often.
type recorder struct {
	calls int
	id    *identity.Identity
}

func (r *recorder) EvaluateRequest(_ context.Context, _ *authv3.CheckRequest, id *identity.Identity, _ ...policy.InputOption) (*policy.Decision, error) {
	r.calls++
	r.id = id
	return &policy.Decision{Allowed: true, ID: "d"}, nil
}

const (
	scenTD   = "gatehouse.local"
	scenEdge = "spiffe://" + scenTD + "/edge/edge"
)

// scenarioServer is an ext_authz server with real assertion keys, minter and
// verifier, and a recording policy.
func scenarioServer(t *testing.T) (*extauthz.Server, *recorder, string) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := assertion.OpenKeySet(filepath.Join(t.TempDir(), "keys"), assertion.WithRetention(time.Minute), assertion.WithKeyLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(keys.Handler())
	t.Cleanup(jwks.Close)
	iss := "https://gatehouse." + scenTD
	minter, err := assertion.NewMinter(keys, iss, scenTD)
	if err != nil {
		t.Fatal(err)
	}
	ver, err := assertion.NewVerifier(context.Background(), assertion.VerifierConfig{
		Issuer: iss, JWKSURI: jwks.URL + assertion.JWKSPath, TrustDomain: scenTD, Services: []string{"orders"},
	}, jwt.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ver.Close() })
	tok, err := minter.Mint(assertion.Statement{Identity: &identity.Identity{Kind: identity.KindUser, Subject: "alice", Method: identity.MethodJWKS}, Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	return extauthz.New(rec, extauthz.WithLogger(quiet), extauthz.WithAssertions(minter, ver)), rec, tok
}

// TestScenarioClientHeadersAreNotIdentity: identity comes only from what Envoy
// itself fills in (attributes.source), never from request headers a client
// can send: an x-forwarded-client-cert naming an edge, forged x-gatehouse-*
// identity headers, or Envoy-looking peer headers. On a sidecar hop such
// headers do not make a presented assertion acceptable either.
func TestScenarioClientHeadersAreNotIdentity(t *testing.T) {
	srv, rec, tok := scenarioServer(t)
	forged := map[string]string{
		":authority": "orders", ":method": "GET", ":path": "/orders", ":scheme": "https",
		"x-forwarded-client-cert":    "By=spiffe://" + scenTD + "/sidecar/orders;Hash=00;URI=" + scenEdge,
		"x-gatehouse-spiffe-id":      scenEdge,
		"x-gatehouse-subject":        "root",
		"x-gatehouse-kind":           "service",
		"x-gatehouse-verified-by":    "mtls",
		"x-envoy-peer-metadata-id":   scenEdge,
		"x-ssl-client-cert":          identity.ScenarioSelfSigned(t, scenEdge),
		"x-forwarded-client-cert-by": scenEdge,
	}
	req := func(role string, peerCert, principal string, extra map[string]string) *authv3.CheckRequest {
		h := map[string]string{}
		for k, v := range forged {
			h[k] = v
		}
		for k, v := range extra {
			h[k] = v
		}
		r := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source:  &authv3.AttributeContext_Peer{Certificate: peerCert, Principal: principal},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/orders", Host: "orders", Headers: h}},
		}}
		if role != "" {
			r.Attributes.ContextExtensions = map[string]string{"role": role, "service": "orders"}
		}
		return r
	}
	edgeCert := identity.ScenarioSelfSigned(t, scenEdge)
	ordersCert := identity.ScenarioSelfSigned(t, "spiffe://"+scenTD+"/sidecar/orders")

	tests := []struct {
		name       string
		req        *authv3.CheckRequest
		wantStatus int    // 0 = allowed
		wantPolicy bool   // policy asked
		wantID     string // SPIFFE id policy saw; "" = anonymous
	}{
		{"edge route, headers only: anonymous", req("", "", "", nil), 0, true, ""},
		{"edge route, real peer wins over headers", req("", ordersCert, "", nil), 0, true, "spiffe://" + scenTD + "/sidecar/orders"},
		{"sidecar, assertion with XFCC naming an edge, no peer", req("sidecar", "", "", map[string]string{"x-gatehouse-assertion": tok}), 403, false, ""},
		{"sidecar, assertion from a real non-edge peer despite XFCC", req("sidecar", ordersCert, "", map[string]string{"x-gatehouse-assertion": tok}), 403, false, ""},
		{"sidecar, assertion from a real edge peer", req("sidecar", edgeCert, "", map[string]string{"x-gatehouse-assertion": tok}), 0, true, scenEdge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec.calls, rec.id = 0, nil
			resp, err := srv.Check(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			status := int(resp.GetDeniedResponse().GetStatus().GetCode())
			if tc.wantStatus == 0 && resp.GetOkResponse() == nil || tc.wantStatus != 0 && status != tc.wantStatus {
				t.Fatalf("status %d (ok %v), want %d", status, resp.GetOkResponse() != nil, tc.wantStatus)
			}
			if (rec.calls > 0) != tc.wantPolicy {
				t.Fatalf("policy asked %d times, want asked=%v", rec.calls, tc.wantPolicy)
			}
			if !tc.wantPolicy {
				return
			}
			got := ""
			if rec.id != nil {
				got = rec.id.SPIFFEID
				if rec.id.Subject == "root" || (tc.wantID == "" && rec.id != nil) {
					t.Fatalf("identity from headers: %+v", rec.id)
				}
			}
			if got != tc.wantID {
				t.Errorf("policy saw SPIFFE id %q, want %q", got, tc.wantID)
			}
		})
	}
}

// TestScenarioNonCanonicalEdgePeer: through the real Check flow, a peer whose
// certificate's URI SAN only looks like an edge (a dot segment leading out
// of /edge/) must not present an assertion minted for another service.
func TestScenarioNonCanonicalEdgePeer(t *testing.T) {
	srv, rec, tok := scenarioServer(t)
	peer := identity.ScenarioSelfSigned(t, "spiffe://"+scenTD+"/edge/../sidecar/payments")
	resp, err := srv.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:            &authv3.AttributeContext_Peer{Certificate: peer},
		ContextExtensions: map[string]string{"role": "sidecar", "service": "orders"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/orders", Host: "orders",
			Headers: map[string]string{":authority": "orders", ":method": "GET", ":path": "/orders", "x-gatehouse-assertion": tok}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() != nil || rec.calls > 0 {
		t.Fatalf("allowed (policy asked %d times) for peer %+v", rec.calls, rec.id)
	}
}
