package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCACmd runs "gatehouse ca args..." and returns exit code and outputs.
func runCACmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := runCA(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func parseOneCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCAEndToEnd(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "ca")
	out := filepath.Join(tmp, "edge")

	// init
	code, stdout, stderr := runCACmd(t, "init", "--dir", dir, "--trust-domain", "example.org")
	if code != 0 {
		t.Fatalf("init exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "trust domain example.org") || !strings.Contains(stdout, "spiffe://example.org") {
		t.Errorf("init output:\n%s", stdout)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "ca.key"): 0o600, filepath.Join(dir, "ca.crt"): 0o644} {
		if got := fileMode(t, path); got != want {
			t.Errorf("%s mode %04o, want %04o", path, got, want)
		}
	}
	if code, _, stderr := runCACmd(t, "init", "--dir", dir); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Errorf("second init: exit %d, stderr %q", code, stderr)
	}
	oldCA := parseOneCert(t, filepath.Join(dir, "ca.crt"))

	// issue
	code, stdout, stderr = runCACmd(t, "issue", "--dir", dir, "--role", "proxy", "--name", "edge",
		"--dns", "edge.example,edge.internal", "--ttl", "2h", "--out", out, "--bundle-out", filepath.Join(tmp, "bundle.pem"))
	if code != 0 {
		t.Fatalf("issue exit %d: %s", code, stderr)
	}
	if got := fileMode(t, out+".key"); got != 0o600 {
		t.Errorf("key mode %04o, want 0600", got)
	}
	if got := fileMode(t, out+".crt"); got != 0o644 {
		t.Errorf("cert mode %04o, want 0644", got)
	}
	leaf := parseOneCert(t, out+".crt")
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/proxy/edge" || len(leaf.DNSNames) != 2 {
		t.Fatalf("leaf SANs %v %v", leaf.URIs, leaf.DNSNames)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got != 2*60*60*1e9+60*1e9 {
		t.Errorf("leaf lifetime %s, want 2h plus 1m backdating", got)
	}
	roots := x509.NewCertPool()
	roots.AddCert(oldCA)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("issued leaf does not verify: %v", err)
	}
	if keyPEM, _ := os.ReadFile(out + ".key"); strings.Contains(stdout, string(keyPEM)) || strings.Contains(stdout, "PRIVATE KEY") {
		t.Error("issue printed the private key")
	}

	// inspect, text and JSON; a key file in the list is an error, not echoed.
	code, stdout, stderr = runCACmd(t, "inspect", out+".crt", filepath.Join(dir, "ca.crt"))
	if code != 0 {
		t.Fatalf("inspect exit %d: %s", code, stderr)
	}
	for _, want := range []string{"spiffe://example.org/proxy/edge", "DNS SAN:", "edge.internal", "SHA-256:", "CA:         true", "CA:         false"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, stderr = runCACmd(t, "inspect", out+".key")
	if code != 1 || strings.Contains(stdout+stderr, "BEGIN") {
		t.Errorf("inspect of key file: exit %d, out %q, err %q", code, stdout, stderr)
	}
	code, stdout, _ = runCACmd(t, "inspect", "--json", out+".crt")
	var doc struct {
		File         string
		Certificates []struct {
			Serial string
			URIs   []string `json:"uris"`
			IsCA   bool     `json:"is_ca"`
		}
	}
	if err := json.Unmarshal([]byte(stdout), &doc); code != 0 || err != nil || len(doc.Certificates) != 1 ||
		doc.Certificates[0].Serial != leaf.SerialNumber.Text(16) || doc.Certificates[0].IsCA {
		t.Fatalf("inspect --json exit %d err %v: %s", code, err, stdout)
	}

	// rotate: the old CA moves to previous/, the bundle has both.
	code, stdout, stderr = runCACmd(t, "rotate", "--dir", dir, "--overlap", "24h")
	if code != 0 {
		t.Fatalf("rotate exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "Previous CA "+oldCA.SerialNumber.Text(16)+" trusted until") {
		t.Errorf("rotate output:\n%s", stdout)
	}
	prev := filepath.Join(dir, "previous", oldCA.SerialNumber.Text(16)+".crt")
	if !parseOneCert(t, prev).Equal(oldCA) {
		t.Fatal("previous/<serial>.crt is not the old CA")
	}
	if newCA := parseOneCert(t, filepath.Join(dir, "ca.crt")); newCA.Equal(oldCA) {
		t.Fatal("ca.crt unchanged after rotate")
	}
	if got := fileMode(t, filepath.Join(dir, "ca.key")); got != 0o600 {
		t.Errorf("rotated ca.key mode %04o", got)
	}
	code, _, stderr = runCACmd(t, "issue", "--dir", dir, "--spiffe-id", "spiffe://example.org/proxy/edge", "--out", out, "--bundle-out", filepath.Join(tmp, "bundle.pem"))
	if code != 0 {
		t.Fatalf("issue after rotate exit %d: %s", code, stderr)
	}
	bundle, _ := os.ReadFile(filepath.Join(tmp, "bundle.pem"))
	if n := strings.Count(string(bundle), "BEGIN CERTIFICATE"); n != 2 {
		t.Errorf("bundle after rotate has %d CAs, want 2 during overlap", n)
	}
}

func TestCAUsageErrors(t *testing.T) {
	tmp := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no subcommand", nil, 2, "Usage: gatehouse ca"},
		{"unknown", []string{"frobnicate"}, 2, "unknown command"},
		{"init without dir", []string{"init"}, 2, "--dir is required"},
		{"init help", []string{"init", "--help"}, 0, "-trust-domain"},
		{"issue help explains flags", []string{"issue", "-h"}, 0, "DNS SAN to add"},
		{"issue needs identity", []string{"issue", "--dir", tmp, "--out", "x"}, 2, "give --spiffe-id"},
		{"issue both identities", []string{"issue", "--dir", tmp, "--out", "x", "--spiffe-id", "spiffe://a/b", "--role", "r"}, 2, "not both"},
		{"issue missing CA", []string{"issue", "--dir", filepath.Join(tmp, "none"), "--out", "x", "--role", "r", "--name", "n"}, 1, "ca.crt"},
		{"bad flag", []string{"rotate", "--bogus"}, 2, "flag provided but not defined"},
		{"bad key type", []string{"init", "--dir", tmp, "--key-type", "dsa"}, 2, "unknown key algorithm"},
		{"inspect nothing", []string{"inspect"}, 2, "no files"},
		{"inspect missing file", []string{"inspect", filepath.Join(tmp, "nope.pem")}, 1, "no such file"},
		{"negative overlap", []string{"rotate", "--dir", tmp, "--overlap", "-1h"}, 2, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCACmd(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(stdout+stderr, tt.wantErr) {
				t.Fatalf("exit %d (want %d); output lacks %q:\nstdout: %s\nstderr: %s", code, tt.wantCode, tt.wantErr, stdout, stderr)
			}
		})
	}
}
