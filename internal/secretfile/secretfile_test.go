package secretfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/secretfile/secretfiletest"
)

func TestRead(t *testing.T) {
	const secret = "s3cret\n"
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the path to read
		wantErr string                                // "" means accepted
	}{
		{"0600", file(secret, 0o600), ""},
		{"0400", file(secret, 0o400), ""},
		{"0440 (Kubernetes fsGroup)", file(secret, 0o440), ""},
		{"0644", file(secret, 0o644), "mode 0644"},
		{"0604", file(secret, 0o604), "mode 0604"},
		{"0660", file(secret, 0o660), "mode 0660"},
		{"0620", file(secret, 0o620), "mode 0620"},
		{"0666", file(secret, 0o666), "mode 0666"},
		{"0700 (owner exec is harmless)", file(secret, 0o700), ""},
		{"0640", file(secret, 0o640), ""},
		{"0650", file(secret, 0o650), "mode 0650"},
		{"symlink to 0600", func(t *testing.T, dir string) string {
			// As Kubernetes mounts a Secret: key -> ..data/key.
			if err := os.Mkdir(filepath.Join(dir, "..data"), 0o755); err != nil {
				t.Fatal(err)
			}
			secretfiletest.Write(t, filepath.Join(dir, "..data", "key"), secret, 0o600)
			link := filepath.Join(dir, "key")
			if err := os.Symlink(filepath.Join("..data", "key"), link); err != nil {
				t.Fatal(err)
			}
			return link
		}, ""},
		{"symlink to 0644", func(t *testing.T, dir string) string {
			secretfiletest.Write(t, filepath.Join(dir, "target"), secret, 0o644)
			link := filepath.Join(dir, "key")
			if err := os.Symlink("target", link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "mode 0644"},
		{"directory", func(t *testing.T, dir string) string {
			d := filepath.Join(dir, "key")
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			return d
		}, "not a regular file"},
		{"oversized", file(strings.Repeat("x", MaxSize+1), 0o600), "larger than"},
		{"exactly MaxSize", file(strings.Repeat("x", MaxSize), 0o600), ""},
		{"empty", file("", 0o600), "empty"},
		{"only whitespace", file(" \n\r\n", 0o600), "only whitespace"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.setup(t, t.TempDir())
			b, err := Read(path)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				if len(b) == 0 {
					t.Fatal("Read returned nothing")
				}
				return
			}
			if err == nil {
				t.Fatalf("Read accepted it: %q", b)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v; want it to say %q and name %s", err, tc.wantErr, path)
			}
			if strings.Contains(tc.wantErr, "mode") && !strings.Contains(err.Error(), "chmod 600") {
				t.Errorf("err = %v; want the fix (chmod 600)", err)
			}
		})
	}
}

// TestReadUntrimmed: the contents come back as they are; callers trim.
func TestReadUntrimmed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "key")
	secretfiletest.Write(t, p, " s3cret\r\n", 0o600)
	b, err := Read(p)
	if err != nil || string(b) != " s3cret\r\n" {
		t.Fatalf("Read = %q, %v", b, err)
	}
}

func TestReadMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing")
	_, err := Read(p)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v; want fs.ErrNotExist naming %s", err, p)
	}
}

// TestReadDevice: a path at a character device is refused before it is
// read, so /dev/zero cannot fill memory.
func TestReadDevice(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	if _, err := Read("/dev/zero"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v", err)
	}
}

func file(content string, mode fs.FileMode) func(*testing.T, string) string {
	return func(t *testing.T, dir string) string {
		p := filepath.Join(dir, "key")
		secretfiletest.Write(t, p, content, mode)
		return p
	}
}
