// Package compose checks the docker compose stack in compose/ without
// Docker or Envoy: the files it mounts exist, its cross-references resolve,
// its Gatehouse config loads and translates, its Envoy bootstraps are what
// xds/bootstrap renders and parse strictly, Dex's config agrees with
// Gatehouse's and the scripts', the scripts pass bash -n and shellcheck,
// and the policy decisions the scripts expect are the ones the policies in
// policies/ make. Running the stack itself is `make e2e`.
package compose

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
)

var update = flag.Bool("update", false, "rewrite compose/envoy/*.yaml from compose/gatehouse.yaml")

// Paths, relative to this package's directory.
const (
	repoDir        = "../.."
	composeDir     = repoDir + "/compose"
	composeFile    = composeDir + "/docker-compose.yaml"
	gatehouseFile  = composeDir + "/gatehouse.yaml"
	dexFile        = composeDir + "/dex/config.yaml"
	dockerfile     = composeDir + "/Dockerfile"
	envoyDir       = composeDir + "/envoy"
	scriptsDir     = composeDir + "/scripts"
	policiesDir    = repoDir + "/policies"
	overridePolicy = scriptsDir + "/demo_override.rego"
)

// Where things are inside the containers (docker-compose.yaml).
const (
	gatehouseService    = "gatehouse"
	gatehouseConfigPath = "/etc/gatehouse/gatehouse.yaml"
	envoyConfigPath     = "/etc/envoy/envoy.yaml"
	envoyImageRepo      = "envoyproxy/envoy"
	dexImageRepo        = "ghcr.io/dexidp/dex"
	edgeService         = "edge"
	dexService          = "dex"
)

// strictDecode decodes exactly one YAML document into v, refusing unknown
// keys.
func strictDecode(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		t.Fatalf("%s: more than one YAML document", path)
	}
}

func loadGatehouse(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load[config.Config](gatehouseFile)
	if err != nil {
		t.Fatalf("compose/gatehouse.yaml: %v", err)
	}
	return cfg
}

func port(t *testing.T, hostport string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	return p
}

// scriptDefaults reads the NAME="${GATEHOUSE_X:-default}" lines of
// compose/scripts/lib.sh, so the tests can check the scripts talk to the
// addresses and accounts the stack really has.
func scriptDefaults(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(scriptsDir, "lib.sh"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^([A-Z_]+)="\$\{GATEHOUSE_[A-Z_]+:-([^}]*)\}"$`)
	out := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(string(data), -1) {
		out[m[1]] = m[2]
	}
	for _, k := range []string{"EDGE", "DEX", "ADMIN", "INVENTORY_SIDECAR", "EDGE_ADDR", "CLIENT_ID", "CLIENT_SECRET", "USER_LOGIN", "USER_PASSWORD", "TRUST_DOMAIN"} {
		if out[k] == "" {
			t.Fatalf("lib.sh: no default for %s", k)
		}
	}
	return out
}

// lookPathOrSkip finds a tool; without it the test fails when CI=true (CI
// installs it) and is skipped loudly elsewhere.
func lookPathOrSkip(t *testing.T, tool, why string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found: %s", tool, why)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: CI must install it)", msg)
	}
	t.Skipf("SKIP ################ %s ################", msg)
	return ""
}

func scripts(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(scriptsDir, "*.sh"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts in %s: %v", scriptsDir, err)
	}
	return files
}

func TestScriptsParse(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is required: %v", err)
	}
	want := []string{"all.sh", "lib.sh", "policy.sh", "rotate.sh", "service.sh", "user.sh"}
	var have []string
	for _, f := range scripts(t) {
		have = append(have, filepath.Base(f))
	}
	if !slices.Equal(have, want) {
		t.Errorf("scripts = %v, want %v", have, want)
	}
	for _, f := range scripts(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if out, err := exec.Command(bash, "-n", f).CombinedOutput(); err != nil {
				t.Fatalf("bash -n: %v\n%s", err, out)
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(f) == "lib.sh" {
				return // sourced, not run
			}
			st, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode()&0o111 == 0 {
				t.Error("not executable")
			}
			if !bytes.HasPrefix(data, []byte("#!/usr/bin/env bash\n")) {
				t.Error("does not start with #!/usr/bin/env bash")
			}
			if !bytes.Contains(data, []byte("\nset -euo pipefail\n")) {
				t.Error("does not set -euo pipefail")
			}
			if bytes.Contains(data, []byte("curl -k ")) || bytes.Contains(data, []byte("--insecure")) {
				t.Error("uses curl -k/--insecure; trust Gatehouse's CA with --cacert")
			}
		})
	}
}

func TestShellcheck(t *testing.T) {
	sc := lookPathOrSkip(t, "shellcheck", "the compose scripts are not linted (apt-get install shellcheck)")
	args := []string{"--external-sources", "--source-path=SCRIPTDIR", "--severity=style"}
	for _, f := range scripts(t) {
		args = append(args, filepath.Base(f))
	}
	cmd := exec.Command(sc, args...)
	cmd.Dir = scriptsDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
}

func TestDockerComposeConfig(t *testing.T) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Skip("SKIP ################ docker CLI not found: docker compose config not run ################")
	}
	if out, err := exec.Command(docker, "compose", "version").CombinedOutput(); err != nil {
		t.Skipf("SKIP ################ the docker compose plugin is missing (%s): docker compose config not run; the strict checks in this package still ran ################", strings.TrimSpace(string(out)))
	}
	out, err := exec.Command(docker, "compose", "-f", composeFile, "config", "-q").CombinedOutput()
	if err != nil {
		t.Fatalf("docker compose config: %v\n%s", err, out)
	}
}
