package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestScenarioParseEdges(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		ok   bool
		want string // substring of the error when !ok
	}{
		{name: "minimal", yaml: "log:\n  level: info\n", ok: true},
		{name: "unknown top-level key", yaml: "logg:\n  level: info\n", want: "field logg not found"},
		{name: "unknown nested key", yaml: "log:\n  levle: info\n", want: "field levle not found"},
		{name: "duplicate key", yaml: "log:\n  level: info\n  level: debug\n", want: "already defined"},
		{name: "duplicate section", yaml: "log:\n  level: info\nlog:\n  format: text\n", want: "already defined"},
		{name: "two documents", yaml: "log:\n  level: info\n---\nlog:\n  level: debug\n", want: "only one YAML document"},
		{name: "tab indentation", yaml: "log:\n\tlevel: info\n", want: "test.yaml:"},
		{name: "BOM", yaml: "\ufefflog:\n  level: info\n", ok: true},
		{name: "comments only", yaml: "# nothing\n", want: "file is empty"},
		{name: "alias reuse", yaml: "log: &l\n  level: info\nlisten:\n  admin: 127.0.0.1:9901\n", ok: true},
		{name: "merge key into known fields", yaml: "x: &d {level: info}\n", want: "field x not found"},
		{name: "bad level via alias", yaml: "log:\n  level: &v loud\n  format: *v\n", want: "log.level"},
		{name: "scalar root", yaml: "hello\n", want: "test.yaml"},
		// A document that is just null decodes as an all-defaults config,
		// unlike an empty file; recorded as current behaviour.
		{name: "null root", yaml: "~\n", ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse[Config]("test.yaml", []byte(tc.yaml))
			if tc.ok {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %q", tc.yaml)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
}

func TestScenarioBillionLaughsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("a: &a [x,x,x,x,x,x,x,x,x,x]\n")
	prev := "a"
	for i := range 9 {
		name := string(rune('b' + i))
		b.WriteString(name + ": &" + name + " [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(",")
			}
			b.WriteString("*" + prev)
		}
		b.WriteString("]\n")
		prev = name
	}
	done := make(chan error, 1)
	go func() {
		_, err := Parse[Config]("bomb.yaml", []byte(b.String()))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("alias bomb accepted")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("alias bomb not bounded")
	}
}

func TestScenarioLoadTooLarge(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "big.yaml")
	data := []byte("log:\n  level: info\n" + "#" + strings.Repeat("x", MaxFileBytes) + "\n")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load[Config](p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Load of oversized file: %v", err)
	}
}

func TestScenarioResolvePathsAgainstConfigDir(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "gatehouse.yaml")
	yml := `authz:
  policies:
    dir: pol
  jwt:
    trust_store: ts
  assertion:
    keys_dir: akeys
mesh:
  cert_dir: mc
store:
  redis:
    password_file: rp
    ca_file: rca
`
	if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load[Config](p)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for _, f := range []struct{ field, got, want string }{
		{"authz.policies.dir", c.Authz.Policies.Dir, "pol"},
		{"authz.jwt.trust_store", c.Authz.JWT.TrustStore, "ts"},
		{"mesh.cert_dir", c.Mesh.CertDir, "mc"},
		{"store.redis.password_file", c.Store.Redis.PasswordFile, "rp"},
		{"store.redis.ca_file", c.Store.Redis.CAFile, "rca"},
		{"authz.assertion.keys_dir", c.Authz.Assertion.KeysDir, "akeys"},
	} {
		if want := filepath.Join(dir, f.want); f.got != want {
			t.Errorf("%s = %q, want %q", f.field, f.got, want)
		}
	}
}

func TestScenarioResolvePathsDefaultsAndAbsolute(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(p, []byte("authz:\n  jwt:\n    trust_store: /abs/ts\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load[Config](p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Authz.JWT.TrustStore != "/abs/ts" {
		t.Errorf("absolute path rewritten: %q", c.Authz.JWT.TrustStore)
	}
	if c.Authz.Policies.Dir != filepath.Join(dir, "policies") {
		t.Errorf("default policies dir %q not resolved against %q", c.Authz.Policies.Dir, dir)
	}
}

// A header prefix long enough to push the sidecar's regex past Envoy's
// RE2 program size limit is refused where it is written.
func TestScenarioHeaderPrefixBounded(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		ok     bool
	}{
		{"x-acme-corporation-identity-propagation-", true},                   // 40
		{"x-acme-corporation-platform-team-identity-propagation-v2-", false}, // 57
	} {
		_, err := Parse[Config]("gatehouse.yaml", []byte("authz:\n  headers:\n    prefix: "+tc.prefix+"\n"))
		if tc.ok != (err == nil) || !tc.ok && !strings.Contains(err.Error(), "gatehouse.yaml:3") {
			t.Errorf("prefix of %d characters: err = %v, want accepted %v (refusal naming gatehouse.yaml:3)", len(tc.prefix), err, tc.ok)
		}
	}
}
