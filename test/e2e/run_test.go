package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeRunCheck runs what `make run` runs — Gatehouse, Dex and the demo
// services as separate processes on their fixed loopback ports — and its
// smoke check, which must see an allowed and a denied decision.
func TestMakeRunCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dex and the demo services on fixed ports; skipped with -short")
	}
	script := filepath.Join(repoRoot(t), "test", "local", "run.sh")
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command(sc, script).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s:\n%s", script, out)
		}
	}
	out, err := exec.Command("bash", script, "--check").CombinedOutput()
	if err != nil {
		t.Fatalf("run.sh --check: %v\n%s", err, out)
	}
	for _, want := range []string{"PASS reader reads an order", "PASS reader may not create one", "PASS protected path, anonymous"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("smoke output lacks %q:\n%s", want, out)
		}
	}
}
