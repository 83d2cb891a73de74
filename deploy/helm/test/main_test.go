package helmtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Set up once by TestMain.
var (
	repoRoot  string // the repository (root module)
	chartDir  string // deploy/helm/gatehouse
	helmBin   string // pinned helm
	gatehouse string // the gatehouse binary built from repoRoot
	testCADir string // a CA made by `gatehouse ca init`, for chart-managed CA renders
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "helmtest: "+format+"\n", a...)
		return 1
	}
	var err error
	if repoRoot, err = filepath.Abs("../../.."); err != nil {
		return fail("%v", err)
	}
	if b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod")); err != nil || !bytes.Contains(b, []byte("module github.com/gatehouse-proxy/gatehouse\n")) {
		return fail("%s is not the gatehouse repository (run the tests from deploy/helm/test)", repoRoot)
	}
	chartDir = filepath.Join(repoRoot, "deploy", "helm", "gatehouse")

	// helm: build-helm.sh prints its path, building it first if needed.
	out, err := exec.Command("./build-helm.sh").Output()
	if err != nil {
		return fail("build-helm.sh: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	helmBin = lines[len(lines)-1]

	tmp, err := os.MkdirTemp("", "helmtest-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(tmp)
	// GATEHOUSE_BIN: a gatehouse binary already built (e.g. make build's
	// bin/gatehouse); otherwise build one from the repository.
	if gatehouse = os.Getenv("GATEHOUSE_BIN"); gatehouse != "" {
		if gatehouse, err = filepath.Abs(gatehouse); err != nil {
			return fail("GATEHOUSE_BIN: %v", err)
		}
	} else {
		gatehouse = filepath.Join(tmp, "gatehouse")
		build := exec.Command("go", "build", "-o", gatehouse, "./cmd/gatehouse")
		build.Dir = repoRoot
		if out, err := build.CombinedOutput(); err != nil {
			return fail("building gatehouse: %v\n%s", err, out)
		}
	}
	testCADir = filepath.Join(tmp, "ca")
	if out, err := exec.Command(gatehouse, "ca", "init", "--dir", testCADir, "--trust-domain", "gatehouse.local").CombinedOutput(); err != nil {
		return fail("gatehouse ca init: %v\n%s", err, out)
	}
	return m.Run()
}

// renderCase is one way of installing the chart.
type renderCase struct {
	name    string
	release string
	ns      string
	args    []string // helm flags: -f, --set, --set-file
}

// renderCases are the values sets every check runs against.
func renderCases() []renderCase {
	return []renderCase{
		{name: "default", release: "gatehouse", ns: "gatehouse"},
		{name: "ha", release: "gh", ns: "edge-system", args: []string{"-f", filepath.Join(chartDir, "values-ha.yaml")}},
		{name: "managed-ca", release: "try", ns: "default", args: []string{
			"-f", filepath.Join("testdata", "values-managed.yaml"),
			"--set-file", "ca.cert=" + filepath.Join(testCADir, "ca.crt"),
			"--set-file", "ca.key=" + filepath.Join(testCADir, "ca.key"),
		}},
	}
}

func helm(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(helmBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// Keep helm away from the user's repositories and plugins.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stderr.Bytes(), out)
	}
	return out
}

// object is one rendered document, decoded into its API type.
type object struct {
	source string // "# Source:" line of helm template
	kind   string
	name   string
	obj    any
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the
// chart uses; unknown fields fail decoding like the built-in types.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Scheme        string `json:"scheme"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// newTyped returns the Go type for apiVersion/kind, or nil if the chart
// is not expected to render it.
func newTyped(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &serviceMonitor{}
	}
	return nil
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeStrict splits helm template output and decodes every document
// into its typed struct, refusing unknown fields.
func decodeStrict(t *testing.T, out []byte) []object {
	t.Helper()
	var objs []object
	for _, chunk := range docSep.Split(string(out), -1) {
		js, err := yaml.YAMLToJSON([]byte(chunk))
		if err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, chunk)
		}
		if string(js) == "null" {
			continue
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(js, &tm); err != nil {
			t.Fatalf("%v\n%s", err, chunk)
		}
		typed := newTyped(tm.APIVersion, tm.Kind)
		if typed == nil {
			t.Fatalf("unexpected kind %s %s rendered:\n%s", tm.APIVersion, tm.Kind, chunk)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(typed); err != nil {
			t.Fatalf("%s %s does not decode strictly: %v\n%s", tm.APIVersion, tm.Kind, err, chunk)
		}
		source := ""
		if m := regexp.MustCompile(`(?m)^# Source: (.*)$`).FindStringSubmatch(chunk); m != nil {
			source = m[1]
		}
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		_ = json.Unmarshal(js, &meta)
		if meta.Metadata.Name == "" {
			t.Fatalf("%s from %s has no name", tm.Kind, source)
		}
		objs = append(objs, object{source: source, kind: tm.Kind, name: meta.Metadata.Name, obj: typed})
	}
	return objs
}

// rendered indexes one render by kind and name.
type rendered struct {
	rc       renderCase
	fullname string
	objs     []object
}

func (r *rendered) get(t *testing.T, kind, name string) any {
	t.Helper()
	if o := r.find(kind, name); o != nil {
		return o
	}
	t.Fatalf("%s: no %s %q rendered; have %v", r.rc.name, kind, name, r.names())
	return nil
}

func (r *rendered) find(kind, name string) any {
	for _, o := range r.objs {
		if o.kind == kind && o.name == name {
			return o.obj
		}
	}
	return nil
}

func (r *rendered) all(kind string) []any {
	var out []any
	for _, o := range r.objs {
		if o.kind == kind {
			out = append(out, o.obj)
		}
	}
	return out
}

func (r *rendered) names() []string {
	var out []string
	for _, o := range r.objs {
		out = append(out, o.kind+"/"+o.name)
	}
	return out
}

func render(t *testing.T, rc renderCase) *rendered {
	t.Helper()
	args := append([]string{"template", rc.release, chartDir, "--namespace", rc.ns}, rc.args...)
	objs := decodeStrict(t, helm(t, args...))
	fullname := rc.release + "-gatehouse"
	if strings.Contains(rc.release, "gatehouse") {
		fullname = rc.release
	}
	return &rendered{rc: rc, fullname: fullname, objs: objs}
}
