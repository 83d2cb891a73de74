package oidc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/secretfile/secretfiletest"
)

// TestClientSecretFile: the secret is read trimmed from a private file; a
// file others may read is refused at New with the provider and the path.
func TestClientSecretFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		mode    os.FileMode
		content string
		wantErr string // "" means accepted
	}{
		{"0600", 0o600, " s3cret\n", ""},
		{"0440", 0o440, "s3cret\n", ""},
		{"0644", 0o644, "s3cret\n", "mode 0644"},
		{"empty", 0o600, "", "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			secretfiletest.Write(t, path, tc.content, tc.mode)
			c := validConfig(t)
			c.Providers[0].ClientSecret, c.Providers[0].ClientSecretFile = "", path
			f, err := New(c)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := f.providers[0].secret; got != "s3cret" {
					t.Fatalf("secret = %q, want it trimmed", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "provider corp: client_secret_file: ") ||
				!strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v; want provider corp: client_secret_file, %s and %q", err, path, tc.wantErr)
			}
		})
	}
}
