package main

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/internal/store"

	"github.com/gatehouse-proxy/gatehouse/internal/secretfile/secretfiletest"
)

// TestBuildOIDCSecretFileModes: a cookie key or client secret file others
// may read is refused at start, and the error names the config field and
// the file; the same files at 0600 (or 0440, a Secret with fsGroup) load.
func TestBuildOIDCSecretFileModes(t *testing.T) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name       string
		keyMode    fs.FileMode
		secretMode fs.FileMode
		wantErr    string // "" means accepted
	}{
		{"0600", 0o600, 0o600, ""},
		{"0440", 0o440, 0o440, ""},
		{"cookie key 0644", 0o644, 0o600, "authz.oidc.cookie_key_files[0]: "},
		{"client secret 0644", 0o600, 0o644, "provider dex: client_secret_file: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			keyFile := secretfiletest.Write(t, filepath.Join(dir, "cookie.key"), base64.StdEncoding.EncodeToString(key)+"\n", tc.keyMode)
			secretFile := secretfiletest.Write(t, filepath.Join(dir, "client-secret"), "s3cret\n", tc.secretMode)
			o := config.OIDC{
				CookieKeyFiles: []string{keyFile},
				Providers: []config.OIDCProvider{{Name: "dex", Issuer: "https://idp.test", ClientID: "c",
					ClientSecretFile: secretFile, ExternalURL: "https://app.test"}},
			}
			_, err := buildOIDC(o, log, nil, nil, store.BackendMemory)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			file := keyFile
			if tc.secretMode != 0o600 {
				file = secretFile
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), file) ||
				!strings.Contains(err.Error(), "mode 0644") {
				t.Fatalf("err = %v; want it to name %q, %s and its mode", err, tc.wantErr, file)
			}
		})
	}
}
