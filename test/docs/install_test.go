package docs

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var (
	fromFile     = regexp.MustCompile(`--from-file=(\S+)`)
	setFile      = regexp.MustCompile(`--set-file[ =](\S+)`)
	secretCreate = regexp.MustCompile(`create secret generic (\S+)`)
	deploymentRe = regexp.MustCompile(`deployment/(\S+)`)
	secretNameRe = regexp.MustCompile(`(?m)^\s*secretName: (\S+)`)
)

// TestInstallBlocksRun runs the shell blocks of the READMEs that use
// `gatehouse ca`, each in a fresh directory, as a user would: every
// gatehouse line must succeed, every file kubectl or helm then reads
// (--from-file, --set-file) must exist, and each `helm install` must render
// (`helm template`, same arguments) with every Secret it mounts either
// rendered by the chart or created by the block's kubectl lines. Secret
// and Deployment names a helm README kubectl line uses must be those the
// chart renders for the release the README installs.
func TestInstallBlocksRun(t *testing.T) {
	root := repoRoot(t)
	helm := findHelm(root)
	ran := 0
	for _, rel := range readmes {
		d := readDoc(t, rel)
		var rendered []string // releases rendered from this README's blocks
		var kubectl []span
		for _, b := range d.blocks {
			if !isShell(b.lang) {
				continue
			}
			lines := shellLines(b)
			for _, l := range lines {
				if strings.HasPrefix(l.text, "kubectl ") {
					kubectl = append(kubectl, l)
				}
			}
			if !strings.Contains(b.text, "gatehouse ca ") {
				continue
			}
			ran++
			dir := t.TempDir()
			// The blocks name the chart by its path in the repository.
			if err := os.Symlink(filepath.Join(root, "deploy"), filepath.Join(dir, "deploy")); err != nil {
				t.Fatal(err)
			}
			created := map[string]bool{}
			for _, l := range lines {
				switch {
				case gatehouseCmd.MatchString(l.text) && !strings.Contains(l.text, "<"):
					cmd := exec.Command(binary, commandArgs(l.text)...)
					cmd.Dir = dir
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Errorf("%s: `%s` failed: %v\n%s", l.where(), l.text, err, out)
					}
				case strings.HasPrefix(l.text, "kubectl "):
					for _, m := range fromFile.FindAllStringSubmatch(l.text, -1) {
						checkInput(t, dir, l, m[1])
					}
					for _, m := range secretCreate.FindAllStringSubmatch(l.text, -1) {
						created[m[1]] = true
					}
				case strings.HasPrefix(l.text, "helm install "):
					for _, m := range setFile.FindAllStringSubmatch(l.text, -1) {
						checkInput(t, dir, l, m[1])
					}
					if helm == "" {
						continue
					}
					out := helmTemplate(t, helm, dir, l)
					rendered = append(rendered, out)
					ownSecrets := renderedNames(out, "Secret")
					for _, m := range secretNameRe.FindAllStringSubmatch(out, -1) {
						if !created[m[1]] && !ownSecrets[m[1]] {
							t.Errorf("%s: `%s` renders pods mounting Secret %q, which neither the chart nor the block's kubectl lines create (they create %v)",
								l.where(), l.text, m[1], keys(created))
						}
					}
				}
			}
		}
		// Inline `helm install ... -f values-ha.yaml` must render too.
		if helm != "" {
			for _, s := range d.spans {
				if strings.HasPrefix(s.text, "helm install ") {
					helmTemplate(t, helm, root, s)
				}
			}
		}
		if len(rendered) == 0 {
			continue
		}
		// kubectl lines of later blocks (CA rotation) name objects of the
		// release the first install created.
		secrets := map[string]bool{}
		for _, m := range secretNameRe.FindAllStringSubmatch(rendered[0], -1) {
			secrets[m[1]] = true
		}
		deployments := renderedNames(rendered[0], "Deployment")
		for _, l := range kubectl {
			for _, m := range secretCreate.FindAllStringSubmatch(l.text, -1) {
				if !secrets[m[1]] {
					t.Errorf("%s: `%s` creates Secret %q; the chart installed above mounts %v", l.where(), l.text, m[1], keys(secrets))
				}
			}
			for _, m := range deploymentRe.FindAllStringSubmatch(l.text, -1) {
				if !deployments[m[1]] {
					t.Errorf("%s: `%s` names deployment %q; the chart installed above renders %v", l.where(), l.text, m[1], keys(deployments))
				}
			}
		}
	}
	if ran < 2 {
		t.Fatalf("found only %d shell blocks running `gatehouse ca`", ran)
	}
	if helm == "" {
		t.Log("SKIP (part): no helm on PATH or in .cache/bin; the helm install commands were not rendered (cd deploy/helm/test && go test builds it)")
	}
}

// checkInput fails when a file a command reads (the value after the last
// "=", as in --from-file=key=path) does not exist in dir.
func checkInput(t *testing.T, dir string, l span, arg string) {
	t.Helper()
	if strings.ContainsAny(arg, "$\"") {
		return // a shell loop variable
	}
	path := arg[strings.LastIndex(arg, "=")+1:]
	if _, err := os.Stat(filepath.Join(dir, path)); err != nil {
		t.Errorf("%s: `%s` reads %s, which the commands before it did not create", l.where(), l.text, path)
	}
}

// helmTemplate runs `helm template` with the arguments of a documented
// `helm install` line, in dir.
func helmTemplate(t *testing.T, helm, dir string, l span) string {
	t.Helper()
	args := append([]string{"template"}, strings.Fields(l.text)[2:]...)
	cmd := exec.Command(helm, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Errorf("%s: `%s` does not render: %v\n%s", l.where(), l.text, err, stderrOf(err))
	}
	return string(out)
}

// renderedNames returns the metadata.name of every rendered object of kind.
func renderedNames(manifests, kind string) map[string]bool {
	names := map[string]bool{}
	name := regexp.MustCompile(`(?m)^metadata:\n(?:  .*\n)*?  name: (\S+)`)
	for _, doc := range strings.Split(manifests, "\n---") {
		if !regexp.MustCompile(`(?m)^kind: ` + kind + `$`).MatchString(doc) {
			continue
		}
		if m := name.FindStringSubmatch(doc); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// findHelm is helm on PATH, else the one deploy/helm/test builds into
// .cache/bin, else "".
func findHelm(root string) string {
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	p := filepath.Join(root, ".cache", "bin", "helm")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

func keys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// TestHelmRedisSnippetMatchesRender renders the chart with every
// redis.mode=external value set and compares the keys of the rendered
// store section with the snippet the chart README shows for it.
func TestHelmRedisSnippetMatchesRender(t *testing.T) {
	root := repoRoot(t)
	helm := findHelm(root)
	if helm == "" {
		t.Skip("SKIP: no helm on PATH or in .cache/bin (cd deploy/helm/test && go test builds it)")
	}
	var snippet map[string]any
	for _, b := range readDoc(t, "deploy/helm/gatehouse/README.md").blocks {
		if b.lang == "yaml" && strings.HasPrefix(b.text, "store:") {
			if err := yaml.Unmarshal([]byte(b.text), &snippet); err != nil {
				t.Fatalf("%s: %v", b.where(), err)
			}
		}
	}
	if snippet == nil {
		t.Fatal("deploy/helm/gatehouse/README.md has no ```yaml block starting with store: any more")
	}
	out, err := exec.Command(helm, "template", "gatehouse", filepath.Join(root, "deploy", "helm", "gatehouse"),
		"--set", "redis.mode=external", "--set", "redis.address=redis:6379", "--set", "redis.username=gh",
		"--set", "redis.existingSecret=gatehouse-redis", "--set", "redis.tls=true", "--set", "redis.keyPrefix=gh:").Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderrOf(err))
	}
	var rendered map[string]any
	for _, doc := range strings.Split(string(out), "\n---") {
		var obj struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if yaml.Unmarshal([]byte(doc), &obj) != nil || obj.Kind != "ConfigMap" || obj.Data["gatehouse.yaml"] == "" {
			continue
		}
		if err := yaml.Unmarshal([]byte(obj.Data["gatehouse.yaml"]), &rendered); err != nil {
			t.Fatal(err)
		}
	}
	if rendered == nil {
		t.Fatal("no ConfigMap with gatehouse.yaml in the rendered chart")
	}
	flat := func(m map[string]any) []string {
		var out []string
		var walk func(prefix string, v any)
		walk = func(prefix string, v any) {
			if sub, ok := v.(map[string]any); ok {
				for k, v := range sub {
					walk(prefix+"."+k, v)
				}
				return
			}
			out = append(out, prefix)
		}
		walk("store", m["store"])
		slices.Sort(out)
		return out
	}
	if got, want := flat(rendered), flat(snippet); !slices.Equal(got, want) {
		t.Errorf("the chart README's store snippet has keys %v; the chart renders %v", want, got)
	}
}

// TestComposeCACopyPath: the path compose/README.md copies Gatehouse's CA
// from is the one the compose scripts use.
func TestComposeCACopyPath(t *testing.T) {
	cp := regexp.MustCompile(`cp gatehouse:(\S+)`)
	lib, err := os.ReadFile(filepath.Join(repoRoot(t), "compose", "scripts", "lib.sh"))
	if err != nil {
		t.Fatal(err)
	}
	want := cp.FindStringSubmatch(string(lib))
	if want == nil {
		t.Fatal("compose/scripts/lib.sh no longer copies the CA with `compose cp gatehouse:...`")
	}
	n := 0
	for _, s := range readDoc(t, "compose/README.md").spans {
		if m := cp.FindStringSubmatch(s.text); m != nil {
			n++
			if m[1] != want[1] {
				t.Errorf("%s: `%s` copies %s; compose/scripts/lib.sh copies %s", s.where(), s.text, m[1], want[1])
			}
		}
	}
	if n == 0 {
		t.Fatal("compose/README.md no longer shows how to copy the CA out")
	}
}
