package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings that must all appear
	}{
		{
			name: "unknown key names its line",
			yaml: "authz:\n  timeout: 1s\n  polices:\n    dir: x\n",
			want: []string{"test.yaml:3: field polices not found"},
		},
		{
			name: "syntax error",
			yaml: "authz:\n  timeout: [1s\n",
			want: []string{"test.yaml:"},
		},
		{
			name: "wrong type",
			yaml: "authz:\n  timeout: soon\n",
			want: []string{"test.yaml:2:"},
		},
		{
			name: "issuer without audience is located",
			yaml: "authz:\n  jwt:\n    issuers:\n      - issuer: https://idp.example\n        discovery: true\n",
			want: []string{"test.yaml:4:", "authz.jwt.issuers[0]: audiences is required"},
		},
		{
			name: "every problem reported",
			yaml: "log:\n  level: loud\nauthz:\n  jwt:\n    issuers:\n      - issuer: a\n        audiences: [x]\n        algorithms: [HS256]\n        strategies: [x5t, magic]\n",
			want: []string{
				"test.yaml:2:3: log.level: must be one of",
				"test.yaml:8:22: authz.jwt.issuers[0].algorithms[0]: \"HS256\" is not allowed",
				"authz.jwt.issuers[0].strategies[0]: strategy x5t needs authz.jwt.trust_store",
				"authz.jwt.issuers[0].strategies[1]: unknown strategy \"magic\"",
			},
		},
		{
			name: "duplicate issuer",
			yaml: "authz:\n  jwt:\n    issuers:\n      - {issuer: https://a.example, audiences: [x], jwks_uri: https://a.example/k}\n      - {issuer: https://a.example, audiences: [x], jwks_uri: https://a.example/k}\n",
			want: []string{"test.yaml:5:", "duplicate of authz.jwt.issuers[0]"},
		},
		{name: "empty file", yaml: "", want: []string{"test.yaml: file is empty"}},
		{
			name: "oidc provider problems are located",
			yaml: "authz:\n  oidc:\n    callback_path: cb\n    providers:\n      - name: dex\n        client_id: gh\n        issuer: not a url\n        external_url: http://app.example.com/x\n",
			want: []string{
				"test.yaml:3:5: authz.oidc.callback_path: must be an absolute path",
				"test.yaml:7:9: authz.oidc.providers[0].issuer: must be an absolute http(s) URL",
				"test.yaml:8:9: authz.oidc.providers[0].external_url: must be an https origin",
			},
		},
		{
			name: "Envoy's check timeout must outlast Gatehouse's",
			yaml: "authz:\n  timeout: 2s\nmesh:\n  authz:\n    address: 127.0.0.1:9001\n    timeout: 1s\n  services:\n    - {name: a, endpoints: [\"127.0.0.1:1\"]}\n  edges:\n    - name: edge\n      routes: [{service: a}]\n",
			want: []string{"test.yaml:6:5: mesh.authz.timeout: must be longer than authz.timeout (2s)"},
		},
		{name: "two documents", yaml: "log: {level: info}\n---\nlog: {level: info}\n", want: []string{"only one YAML document"}},
		{
			name: "assertion problems are located",
			yaml: "authz:\n  jwt:\n    issuers:\n      - {issuer: https://gatehouse.gatehouse.local, audiences: [x], jwks_uri: https://a.example/k}\n" +
				"  assertion:\n    enabled: true\n    ttl: 2m\n    rotation: 1m\n    clock_skew: 1m\n    jwks_uri: http://gatehouse:9901/jwks\n" +
				"    chains:\n      - {from: orders, to: inventory}\n      - {from: orders, to: orders}\n      - {from: orders, to: inventory}\n" +
				"mesh:\n  services:\n    - {name: orders, endpoints: [\"orders:15443\"], mtls: true}\n",
			want: []string{
				"test.yaml:4:", "authz.jwt.issuers[0].issuer: is the assertion issuer",
				"test.yaml:7:5: authz.assertion.ttl: must be above 1s and at most 60s",
				"test.yaml:8:5: authz.assertion.rotation: must be at least 10m",
				"test.yaml:9:5: authz.assertion.clock_skew: must be between 0 and 30s",
				"test.yaml:10:5: authz.assertion.jwks_uri: must be an https URL, or http to a loopback host",
				"test.yaml:12:", "authz.assertion.chains[0].to: unknown service \"inventory\"",
				"test.yaml:13:", "authz.assertion.chains[1]: from and to must be two different services",
				"test.yaml:14:", "authz.assertion.chains[2]: duplicate of authz.assertion.chains[0]",
			},
		},
		{
			name: "assertion needs services",
			yaml: "authz:\n  assertion:\n    enabled: true\n",
			want: []string{"test.yaml:2:3: authz.assertion: needs mesh.services"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse[Config]("test.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\nlacks %q", err, w)
				}
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a *config.Error", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse[Config]("test.yaml", []byte("authz:\n  jwt:\n    issuers:\n      - {issuer: https://a.example, audiences: [api], discovery: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	is := c.Authz.JWT.Issuers[0]
	if c.Listen.Authz != ":9001" || c.Authz.Policies.Dir != "policies" || is.Kind != "user" ||
		len(is.Strategies) != 1 || is.Strategies[0] != StrategyJWKS || is.ClockSkew.Seconds() != 60 {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestAssertionDefaults(t *testing.T) {
	c, err := Parse[Config]("test.yaml", []byte("authz:\n  assertion:\n    enabled: true\n    chains: [{from: orders, to: inventory}]\n"+
		"mesh:\n  trust_domain: example.org\n  services:\n    - {name: orders, endpoints: [\"orders:1\"]}\n    - {name: inventory, endpoints: [\"inventory:1\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	as := c.Authz.Assertion
	if as.Issuer != "https://gatehouse.example.org" || as.TTL.Seconds() != 30 || as.Rotation.Hours() != 24 || as.ClockSkew.Seconds() != 5 || as.JWKSURI != "" {
		t.Errorf("assertion defaults: %+v", as)
	}
	off, err := Parse[Config]("test.yaml", []byte("log: {level: info}\n"))
	if err != nil || off.Authz.Assertion.Enabled || off.Authz.Assertion.Issuer != "" {
		t.Errorf("disabled assertion got defaults: %+v, %v", off.Authz.Assertion, err)
	}
}

func TestLoadBounded(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(p, []byte("log: {level: info}\n"+strings.Repeat("#", MaxFileBytes)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load[Config](p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Load[Config](filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("err = %v", err)
	}
}

// TestLoadResolvesPathsAgainstTheFile: relative paths in a config mean the
// same wherever the process starts; absolute ones are kept.
func TestLoadResolvesPathsAgainstTheFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "gatehouse.yaml")
	data := "authz:\n  policies:\n    dir: rego\n  jwt:\n    trust_store: /abs/trust\n    issuers:\n      - {issuer: https://a.example, audiences: [x], strategies: [x5c], trusted_cas: [cas/root.pem]}\nmesh:\n  cert_dir: certs\n"
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load[Config](p)
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		c.Authz.Policies.Dir:                 filepath.Join(dir, "rego"),
		c.Authz.JWT.TrustStore:               "/abs/trust",
		c.Authz.JWT.Issuers[0].TrustedCAs[0]: filepath.Join(dir, "cas/root.pem"),
		c.Mesh.CertDir:                       filepath.Join(dir, "certs"),
	} {
		if got != want {
			t.Errorf("path %q, want %q", got, want)
		}
	}
}

func TestStoreSection(t *testing.T) {
	c, err := Parse[Config]("test.yaml", []byte("log: {level: info}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.Backend != "memory" {
		t.Errorf("default store backend %q, want memory", c.Store.Backend)
	}
	_, err = Parse[Config]("test.yaml", []byte("store:\n  backend: redis\n  redis:\n    on_down: sideways\n"))
	if err == nil || !strings.Contains(err.Error(), "test.yaml:4:5: store.redis.on_down") {
		t.Errorf("err = %v", err)
	}
}

func TestShutdownSection(t *testing.T) {
	c, err := Parse[Config]("test.yaml", []byte("log: {level: info}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Shutdown.Delay != 0 || c.Shutdown.Grace != 10*time.Second {
		t.Errorf("shutdown defaults = %+v, want delay 0, grace 10s", c.Shutdown)
	}
	c, err = Parse[Config]("test.yaml", []byte("shutdown:\n  delay: 5s\n  grace: 20s\n"))
	if err != nil || c.Shutdown.Delay != 5*time.Second || c.Shutdown.Grace != 20*time.Second {
		t.Errorf("shutdown = %+v, %v", c.Shutdown, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"shutdown:\n  delay: -1s\n", "test.yaml:2:3: shutdown.delay: must be between 0 and 5m0s; got -1s"},
		{"shutdown:\n  delay: 6m\n", "shutdown.delay: must be between 0 and 5m0s; got 6m0s"},
		{"shutdown:\n  grace: -1s\n", "test.yaml:2:3: shutdown.grace: must be above 0"},
		{"shutdown:\n  grace: 1h\n", "shutdown.grace: must be above 0 and at most 5m0s; got 1h0m0s"},
	} {
		if _, err := Parse[Config]("test.yaml", []byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
