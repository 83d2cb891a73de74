package oidc_test

import (
	"net/http"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/extauthz/oidc"
)

// TestRPTokenEndpointAuth: the client authenticates at the token endpoint
// the one way discovery allows, so a refused code is posted once. With
// oauth2's auto-detection the first exchange against a new token endpoint
// that refuses the code (header credentials) is sent again with the
// credentials in the form: a refused code reaches the IdP twice.
func TestRPTokenEndpointAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		methods   any // token_endpoint_auth_methods_supported; nil: absent
		wantBasic bool
	}{
		{"not advertised: client_secret_basic", nil, true},
		{"basic and post", []string{"client_secret_post", "client_secret_basic"}, true},
		{"post only", []string{"client_secret_post"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A new IdP per case: a token endpoint oauth2 has not seen.
			idp, e := rpWithMetadata(t, "token_endpoint_auth_methods_supported", tt.methods)

			refusedAt := e.browserFor(t)
			back := refusedAt.startLogin("/app/x")
			q := back.Query()
			q.Set("code", "a-code-the-idp-never-issued")
			if r := refusedAt.check("GET", callbackWith(q)); r.status != http.StatusBadRequest || len(sessionSet(r)) != 0 {
				t.Fatalf("callback with a refused code: status %d, session %v", r.status, sessionSet(r))
			}
			if n := len(idp.TokenRequests()); n != 1 {
				t.Fatalf("a refused code was posted %d times, want once", n)
			}

			b := e.browserFor(t)
			if r := b.check("GET", b.startLogin("/app/x").RequestURI()); r.status != http.StatusFound || len(sessionSet(r)) == 0 {
				t.Fatalf("login: status %d body %q", r.status, r.body)
			}
			for i, tr := range idp.TokenRequests() {
				basic, inForm := tr.Get("basic_client_id") != "", tr.Has("client_secret")
				if basic != tt.wantBasic || inForm == tt.wantBasic {
					t.Errorf("token request %d: basic auth %v, secret in the form %v; want basic %v", i, basic, inForm, tt.wantBasic)
				}
			}
		})
	}

	t.Run("no method a client secret can use", func(t *testing.T) {
		t.Parallel()
		idp, e := rpWithMetadata(t, "token_endpoint_auth_methods_supported", []string{"private_key_jwt"})
		b := e.browserFor(t)
		if r := b.check("GET", "/app/x"); r.status != http.StatusServiceUnavailable {
			t.Errorf("login start: status %d, want 503 (provider unusable)", r.status)
		}
		if len(idp.AuthRequests()) != 0 {
			t.Error("the browser was sent to an IdP the client cannot authenticate to")
		}
	})
}

// rpWithMetadata starts an rpIdP whose discovery document carries key:
// value (nothing when value is nil) and a Gatehouse flow using it on "/".
func rpWithMetadata(t *testing.T, key string, value any) (*rpIdP, *env) {
	t.Helper()
	var disc map[string]any
	if value != nil {
		disc = map[string]any{key: value}
	}
	idp := newRPIdP(t, "a", disc)
	return idp, newEnv(t, []oidc.ProviderConfig{idp.provider("a", "/")})
}
