package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/internal/store"
)

// TestBuildOIDCCookieKeys: a random per-process cookie key is fine for one
// replica and refused with the Redis store, where other replicas could not
// open this one's cookies.
func TestBuildOIDCCookieKeys(t *testing.T) {
	o := config.OIDC{Providers: []config.OIDCProvider{{Name: "dex", Issuer: "https://idp.test", ClientID: "c",
		ClientSecret: "s", ExternalURL: "https://app.test"}}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		backend string
		wantErr string
	}{
		{store.BackendMemory, ""},
		{"", ""},
		{store.BackendRedis, "cannot work across replicas"},
	} {
		t.Run("backend "+tc.backend, func(t *testing.T) {
			_, err := buildOIDC(o, log, nil, nil, tc.backend)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
