package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/secretfile/secretfiletest"
)

// TestRedisPasswordFileRefused: a password file others may read, or an
// empty one, is refused before anything is dialled, and the error names
// redis.password_file and the path.
func TestRedisPasswordFileRefused(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		mode    os.FileMode
		content string
		want    string
	}{
		{"0644", 0o644, "s3cret\n", "mode 0644"},
		{"0604", 0o604, "s3cret\n", "mode 0604"},
		{"group writable", 0o620, "s3cret\n", "mode 0620"},
		{"only a newline", 0o600, "\n", "only whitespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			secretfiletest.Write(t, path, tc.content, tc.mode)
			s, err := New(context.Background(), Config{Backend: BackendRedis, Redis: Redis{Address: "127.0.0.1:1", PasswordFile: path}})
			if err == nil {
				s.Close()
				t.Fatal("accepted")
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "store: redis.password_file: ") || !strings.Contains(msg, path) || !strings.Contains(msg, tc.want) {
				t.Fatalf("err = %v; want store: redis.password_file, %s and %q", err, path, tc.want)
			}
		})
	}
}
