package docs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
)

// The README.md sections whose YAML blocks together make one complete
// config (the "full example"), and the OIDC/Redis sections, which make a
// second one: the OIDC example's authz.timeout (5s) is longer than the
// mesh example's mesh.authz.timeout (1s), which the README itself says
// `gatehouse validate` refuses.
var (
	fullExampleSections = []string{"Configuration", "Identity propagation: `authz.assertion`", "The mesh: what the control plane serves"}
	replicaSections     = []string{"Browser login (OIDC)", "Shared state in Redis"}
)

// TestConfigBlocksDecodeStrictly decodes every YAML block of every README
// into the config schema with unknown keys refused, so a misspelt or
// removed field in any example fails here with its README line.
func TestConfigBlocksDecodeStrictly(t *testing.T) {
	n := 0
	for _, rel := range readmes {
		for _, b := range readDoc(t, rel).blocks {
			if b.lang != "yaml" {
				continue
			}
			n++
			dec := yaml.NewDecoder(strings.NewReader(b.text))
			dec.KnownFields(true)
			var c config.Config
			if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
				t.Errorf("%s (%s): not a config fragment: %v\n%s", b.where(), b.heading, err, b.text)
			}
		}
	}
	if n < 6 {
		t.Fatalf("found only %d YAML blocks in the READMEs; did the markdown layout change?", n)
	}
}

// TestReadmeFullExampleValidates merges the blocks of README.md's
// Configuration chapter (main keys, authz.assertion, mesh) into one file
// and runs `gatehouse validate` on it with the repository's policies: the
// examples must work together as written. The OIDC and Redis examples make
// a second valid file, and adding the OIDC example to the mesh example
// must fail on mesh.authz.timeout, as the README says.
func TestReadmeFullExampleValidates(t *testing.T) {
	d := readDoc(t, "README.md")
	full := mergeSections(t, d, fullExampleSections)
	replica := mergeSections(t, d, replicaSections)

	if out, err := validate(t, full); err != nil {
		t.Errorf("README.md Configuration examples (%s) merged do not validate: %v\n%s\n--- merged config:\n%s",
			strings.Join(fullExampleSections, "; "), err, out, full)
	}
	if out, err := validate(t, replica); err != nil {
		t.Errorf("README.md OIDC and Redis examples merged do not validate: %v\n%s\n--- merged config:\n%s", err, out, replica)
	}

	both := mergeSections(t, d, append(append([]string{}, fullExampleSections...), replicaSections[0]))
	out, err := validate(t, both)
	if err == nil || !strings.Contains(out, "mesh.authz.timeout") || !strings.Contains(out, "must be longer than authz.timeout") {
		t.Errorf("README.md says validate refuses mesh.authz.timeout <= authz.timeout (OIDC example + mesh example); got err=%v:\n%s", err, out)
	}
}

// TestPolicyResultExampleCompiles puts the result object of
// policies/README.md into a policy of package envoy.authz and runs
// `gatehouse validate` on it: the documented keys and shapes must compile.
func TestPolicyResultExampleCompiles(t *testing.T) {
	var rego []block
	for _, b := range readDoc(t, "policies/README.md").blocks {
		if b.lang == "rego" {
			rego = append(rego, b)
		}
	}
	if len(rego) == 0 {
		t.Fatal("policies/README.md has no ```rego block any more")
	}
	for _, b := range rego {
		dir := t.TempDir()
		pol := filepath.Join(dir, "policies")
		if err := os.Mkdir(pol, 0o755); err != nil {
			t.Fatal(err)
		}
		src := b.text
		if !strings.Contains(src, "package ") {
			src = "package envoy.authz\n\n" + src
		}
		writeFile(t, filepath.Join(pol, "readme.rego"), src)
		cfg := filepath.Join(dir, "gatehouse.yaml")
		writeFile(t, cfg, "authz:\n  policies:\n    dir: policies\n")
		out, err := exec.Command(binary, "validate", "--config", cfg).CombinedOutput()
		if err != nil {
			t.Errorf("%s: the policy example does not compile: %v\n%s", b.where(), err, out)
		}
	}
}

// mergeSections deep-merges the YAML blocks under the given headings (in
// README order) into one document. Every heading must have a block.
func mergeSections(t *testing.T, d doc, headings []string) string {
	t.Helper()
	merged := map[string]any{}
	for _, h := range headings {
		found := false
		for _, b := range d.blocks {
			if b.lang != "yaml" || b.heading != h {
				continue
			}
			found = true
			var m map[string]any
			if err := yaml.Unmarshal([]byte(b.text), &m); err != nil {
				t.Fatalf("%s: %v", b.where(), err)
			}
			deepMerge(merged, m)
		}
		if !found {
			t.Fatalf("%s: no ```yaml block under the heading %q any more; update this test with the README", d.file, h)
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(merged); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func deepMerge(dst, src map[string]any) {
	for k, v := range src {
		if sub, ok := v.(map[string]any); ok {
			if have, ok := dst[k].(map[string]any); ok {
				deepMerge(have, sub)
				continue
			}
		}
		dst[k] = v
	}
}

// validate writes cfg into a temporary directory and runs `gatehouse
// validate` on it against the repository's policies.
func validate(t *testing.T, cfg string) (string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	writeFile(t, path, cfg)
	out, err := exec.Command(binary, "validate", "--config", path, "--policies", filepath.Join(repoRoot(t), "policies")).CombinedOutput()
	return string(out), err
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
