package oidc

import (
	"testing"

	"golang.org/x/oauth2"
)

func TestTokenAuthStyle(t *testing.T) {
	tests := []struct {
		name         string
		confidential bool
		methods      []string
		want         oauth2.AuthStyle
		wantErr      bool
	}{
		{"public client", false, []string{"client_secret_basic"}, oauth2.AuthStyleInParams, false},
		{"public client, IdP lists none", false, nil, oauth2.AuthStyleInParams, false},
		{"not advertised: the spec's default", true, nil, oauth2.AuthStyleInHeader, false},
		{"basic only", true, []string{"client_secret_basic"}, oauth2.AuthStyleInHeader, false},
		{"both: basic first", true, []string{"client_secret_post", "client_secret_basic"}, oauth2.AuthStyleInHeader, false},
		{"post only", true, []string{"client_secret_post"}, oauth2.AuthStyleInParams, false},
		{"post and private_key_jwt", true, []string{"private_key_jwt", "client_secret_post"}, oauth2.AuthStyleInParams, false},
		{"private_key_jwt only", true, []string{"private_key_jwt"}, 0, true},
		{"tls_client_auth only", true, []string{"tls_client_auth", "none"}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tokenAuthStyle(tt.confidential, tt.methods)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("style = %v, want %v", got, tt.want)
			}
			if got == oauth2.AuthStyleAutoDetect && err == nil {
				t.Error("auto-detection chosen: it posts a refused code twice")
			}
		})
	}
}
