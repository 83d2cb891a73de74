package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeWithoutConfig: `gatehouse serve` with no config writes the
// embedded one-machine example and its policies into the state directory,
// creates the CA there, and becomes ready.
func TestServeWithoutConfig(t *testing.T) {
	dir := t.TempDir()
	p, addrs := startIn(t, dir, "serve", "--state-dir", "state",
		"--listen", "127.0.0.1:0", "--xds-listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	if len(addrs) != 3 {
		t.Fatalf("listening line named %v", addrs)
	}
	for _, f := range []string{"state/gatehouse.yaml", "state/policies/envoy/authz/authz.rego", "state/ca/ca.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("first start did not create %s: %v", f, err)
		}
	}
	eventually(t, "ready", func() error {
		body := httpGet(t, "http://"+addrs[2]+"/readyz")
		if !strings.Contains(body, `"ready":true`) {
			return errorString(body)
		}
		return nil
	})
	p.mu.Lock()
	out := p.stdout.String()
	p.mu.Unlock()
	if !strings.Contains(out, "gatehouse bootstrap --config state/gatehouse.yaml --node edge") {
		t.Errorf("no hint how to start Envoy:\n%s", out)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
