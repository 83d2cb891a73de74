package extauthz

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/gatehouse-proxy/gatehouse/internal/logging/logtest"
)

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// signRS256 signs raw header and claims JSON with key: the forger's tool
// when it holds the IdP's key but wants a header of its own choosing.
func signRS256(t *testing.T, key *rsa.PrivateKey, hdr, claims []byte) string {
	t.Helper()
	si := b64url(hdr) + "." + b64url(claims)
	sum := sha256.Sum256([]byte(si))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return si + "." + b64url(sig)
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckRejectsForgedTokens sends a handful of the forgeries of
// extauthz/jwt's adversarial table through the whole Check path, on a path
// policy would let an anonymous caller through and on a protected one: a bad
// token must never fall back to anonymous, must be answered 401 with
// `WWW-Authenticate: Bearer error="invalid_token"`, and the decision log line
// must give a reason but never any part of the token.
func TestCheckRejectsForgedTokens(t *testing.T) {
	logs := &logtest.Buffer{}
	f := newFixture(t, WithLogger(slog.New(slog.NewJSONHandler(logs, nil))))
	idp := f.idp
	claims := userClaims(idp, "reader")
	claimsJSON := mustMarshal(t, claims)
	admin := userClaims(idp, "admin")
	admin["sub"] = "mallory"
	adminJSON := mustMarshal(t, admin)
	valid := idp.Token(t, claims)
	parts := strings.Split(valid, ".")
	pubDER, err := x509.MarshalPKIXPublicKey(&idp.Key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hs256 := func(secret []byte) string {
		si := b64url([]byte(`{"alg":"HS256","kid":"`+idp.KeyID+`"}`)) + "." + b64url(adminJSON)
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(si))
		return si + "." + b64url(m.Sum(nil))
	}
	withClaims := func(mod func(map[string]any)) string {
		c := userClaims(idp, "reader")
		mod(c)
		return idp.Token(t, c)
	}
	hdrWith := func(extra string) []byte {
		return []byte(`{"alg":"RS256","kid":"` + idp.KeyID + `"` + extra + `}`)
	}

	tokens := []struct {
		name  string
		token string
	}{
		{"alg none", b64url([]byte(`{"alg":"none"}`)) + "." + b64url(adminJSON) + "."},
		{"alg nOnE keeping the signature", b64url([]byte(`{"alg":"nOnE","kid":"`+idp.KeyID+`"}`)) + "." + parts[1] + "." + parts[2]},
		{"HS256 keyed with the IdP's public key", hs256(pubPEM)},
		{"HS256 with an empty secret", hs256(nil)},
		{"payload swapped under a valid signature", parts[0] + "." + b64url(adminJSON) + "." + parts[2]},
		{"signature stripped", parts[0] + "." + parts[1] + "."},
		{"signature truncated", parts[0] + "." + parts[1] + "." + parts[2][:40]},
		{"padding", parts[0] + "." + parts[1] + "=." + parts[2]},
		{"JWE", parts[0] + "..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA"},
		{"unknown crit", signRS256(t, idp.Key, hdrWith(`,"crit":["urn:x"],"urn:x":1`), claimsJSON)},
		{"embedded jwk", signRS256(t, idp.Key, hdrWith(`,"jwk":{"kty":"oct","k":"AA"}`), claimsJSON)},
		{"kid path traversal", signRS256(t, idp.Key, []byte(`{"alg":"RS256","kid":"../../../../etc/passwd"}`), claimsJSON)},
		{"duplicate sub", signRS256(t, idp.Key, hdrWith(""), []byte(strings.TrimSuffix(string(claimsJSON), "}")+`,"sub":"mallory"}`))},
		{"expired", withClaims(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })},
		{"exp missing", withClaims(func(c map[string]any) { delete(c, "exp") })},
		{"wrong audience", withClaims(func(c map[string]any) { c["aud"] = "someone-else" })},
		{"wrong issuer", withClaims(func(c map[string]any) { c["iss"] = "https://evil.example" })},
		{"oversized", withClaims(func(c map[string]any) { c["pad"] = strings.Repeat("x", 40<<10) })},
	}
	for _, tc := range tokens {
		for _, path := range []string{"/public/logo.png", "/api/orders"} {
			t.Run(tc.name+" "+path, func(t *testing.T) {
				logs.Take()
				resp, err := f.client.Check(context.Background(), request("GET", path, map[string]string{"authorization": "Bearer " + tc.token}))
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				if got := code.Code(resp.GetStatus().GetCode()); got != code.Code_UNAUTHENTICATED {
					t.Fatalf("code = %v, want UNAUTHENTICATED (resp %v)", got, resp)
				}
				denied := resp.GetDeniedResponse()
				if denied.GetStatus().GetCode() != 401 {
					t.Errorf("HTTP status = %d, want 401", denied.GetStatus().GetCode())
				}
				if got := headerMap(denied.GetHeaders())["www-authenticate"]; got != `Bearer error="invalid_token"` {
					t.Errorf("www-authenticate = %q", got)
				}
				line := logs.Take()
				assertDecisionLogClean(t, line, tc.token)
				var entry map[string]any
				if err := json.Unmarshal([]byte(strings.TrimSpace(line)), &entry); err != nil {
					t.Fatalf("decision log is not one JSON line: %q", line)
				}
				if entry["allowed"] != false || !strings.Contains(fmt.Sprint(entry["reason"]), "invalid bearer token") {
					t.Errorf("decision log = %v", entry)
				}
			})
		}
	}

	// An accepted token is not logged either.
	logs.Take()
	resp, err := f.client.Check(context.Background(), request("GET", "/api/orders", map[string]string{"authorization": "Bearer " + valid}))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("valid token: %v %v", resp, err)
	}
	assertDecisionLogClean(t, logs.Take(), valid)
}

// assertDecisionLogClean fails if the log contains the token or any of its
// parts long enough to be meaningful.
func assertDecisionLogClean(t *testing.T, log, token string) {
	t.Helper()
	if strings.TrimSpace(log) == "" {
		t.Fatal("no decision logged")
	}
	if strings.Count(strings.TrimSpace(log), "\n") != 0 {
		t.Errorf("want exactly one log line, got %q", log)
	}
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(log, part) {
			t.Fatalf("decision log contains part of the token: %q", log)
		}
	}
}

// TestClientIdentityHeadersNeverTrusted: whatever x-gatehouse-* headers a
// client sends (Envoy's header_mutation strips them at the edge; this is
// the second line), an allowed response either overwrites each one with
// Gatehouse's value or lists it in headers_to_remove — for anonymous
// requests too, where Gatehouse sets no identity headers at all.
func TestClientIdentityHeadersNeverTrusted(t *testing.T) {
	f := newFixture(t)
	reader := "Bearer " + f.idp.Token(t, userClaims(f.idp, "reader"))
	forged := map[string]string{
		"x-gatehouse-subject": "root", "x-gatehouse-issuer": "https://evil.example", "x-gatehouse-kind": "service",
		"x-gatehouse-roles": "admin", "x-gatehouse-groups": "wheel", "x-gatehouse-email": "root@example.com",
		"x-gatehouse-spiffe-id": "spiffe://gatehouse.local/sidecar/orders", "x-gatehouse-verified-by": "mtls",
		"x-gatehouse-decision-id": "00000000000000000000000000000000", "x-gatehouse-anything-else": "1",
		// Envoy lower-cases names; a caller reaching the authz port
		// directly may not. Names are case-insensitive either way.
		"X-Gatehouse-Admin": "true",
	}
	tests := []struct {
		name string
		path string
		auth string
	}{
		{"anonymous on a public path", "/public/logo.png", ""},
		{"authenticated reader", "/api/orders", reader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			for k, v := range forged {
				h[k] = v
			}
			if tt.auth != "" {
				h["authorization"] = tt.auth
			}
			resp, err := f.client.Check(context.Background(), request("GET", tt.path, h))
			if err != nil {
				t.Fatal(err)
			}
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Fatalf("not allowed: %v", resp)
			}
			set := headerMap(ok.GetHeaders())
			removed := map[string]bool{}
			for _, r := range ok.GetHeadersToRemove() {
				removed[r] = true
			}
			for name, bad := range forged {
				name = strings.ToLower(name)
				v, overwritten := set[name]
				switch {
				case overwritten && removed[name]:
					t.Errorf("%s both set and removed", name)
				case overwritten && v == bad:
					t.Errorf("%s passed on with the client's value %q", name, v)
				case !overwritten && !removed[name]:
					t.Errorf("client-sent %s neither overwritten nor removed (set %v, removed %v)", name, set, ok.GetHeadersToRemove())
				}
			}
		})
	}
}

// TestHugeRequestsAreBounded: a CheckRequest with 10,000 headers, or a body
// far over the parse limit, is answered per policy (no gRPC error, which
// Envoy would turn into its failure mode) and the body is not parsed.
//
// What bounds these today: the gRPC server's MaxRecvMsgSize (4 MiB in
// cmd/gatehouse, the grpc-go default here) caps the whole CheckRequest, and
// Envoy caps headers (max_request_headers_count, default 100) and the body
// it forwards (with_request_body.max_bytes). BuildInput itself has no bound
// on the number of headers and copies attributes.request.http.body into the
// input whole; only parsed_body is limited (WithMaxBodyBytes).
func TestHugeRequestsAreBounded(t *testing.T) {
	f := newFixture(t)

	t.Run("10,000 headers over gRPC", func(t *testing.T) {
		h := map[string]string{}
		for i := range 10000 {
			h[fmt.Sprintf("x-junk-%05d", i)] = "v"
			if i%10 == 0 {
				h[fmt.Sprintf("x-gatehouse-fake-%05d", i)] = "root"
			}
		}
		for _, tc := range []struct {
			path  string
			allow bool
		}{{"/public/x", true}, {"/api/orders", false}} {
			resp, err := f.client.Check(context.Background(), request("GET", tc.path, h))
			if err != nil {
				t.Fatalf("%s: Check: %v", tc.path, err)
			}
			if (resp.GetOkResponse() != nil) != tc.allow {
				t.Fatalf("%s: allowed = %v, want %v", tc.path, resp.GetOkResponse() != nil, tc.allow)
			}
			if !tc.allow {
				continue
			}
			n := 0
			for _, r := range resp.GetOkResponse().GetHeadersToRemove() {
				if strings.HasPrefix(r, "x-gatehouse-fake-") {
					n++
				}
			}
			if n != 1000 {
				t.Errorf("headers_to_remove has %d forged x-gatehouse-* headers, want all 1000", n)
			}
		}
	})

	body := `{"a":"` + strings.Repeat("x", 10<<20) + `"}`
	bigBody := func(path string) *authv3.CheckRequest {
		r := request("POST", path, map[string]string{"content-type": "application/json"})
		r.Attributes.Request.Http.Body = body
		return r
	}
	t.Run("10 MB body in process", func(t *testing.T) {
		for _, tc := range []struct {
			path  string
			allow bool
		}{{"/public/x", true}, {"/api/orders", false}} {
			resp, err := f.server.Check(context.Background(), bigBody(tc.path))
			if err != nil {
				t.Fatalf("%s: Check: %v", tc.path, err)
			}
			if (resp.GetOkResponse() != nil) != tc.allow {
				t.Fatalf("%s: allowed = %v, want %v (%v)", tc.path, resp.GetOkResponse() != nil, tc.allow, resp.GetStatus())
			}
		}
	})
	t.Run("10 MB body over gRPC is refused by the transport", func(t *testing.T) {
		// Over MaxRecvMsgSize: grpc-go answers ResourceExhausted before
		// Check runs. Envoy (failure_mode_allow: false) then denies with 403.
		_, err := f.client.Check(context.Background(), bigBody("/public/x"))
		if err == nil {
			t.Fatal("a 10 MB CheckRequest was accepted by the gRPC server")
		}
		if !strings.Contains(err.Error(), "ResourceExhausted") && !strings.Contains(err.Error(), "larger than max") {
			t.Errorf("err = %v, want ResourceExhausted", err)
		}
	})
}
