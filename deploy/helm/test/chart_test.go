package helmtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// envoyImage is the Envoy the compose stack runs; the chart's edge must
// run the same.
const envoyImage = "envoyproxy/envoy:v1.37.11"

// TestPoliciesMatchRepo keeps the chart's bundled policies equal to the
// repository's example policies (tests excluded): same files, same bytes.
func TestPoliciesMatchRepo(t *testing.T) {
	repo := regoFiles(t, filepath.Join(repoRoot, "policies", "envoy", "authz"))
	chart := regoFiles(t, filepath.Join(chartDir, "files", "policies"))
	if len(repo) == 0 {
		t.Fatal("no policies in the repository")
	}
	for _, name := range slices.Sorted(maps.Keys(repo)) {
		got, ok := chart[name]
		switch {
		case !ok:
			t.Errorf("files/policies/%s missing from the chart: run deploy/helm/sync-policies.sh", name)
		case got != repo[name]:
			t.Errorf("files/policies/%s differs from policies/envoy/authz/%s: run deploy/helm/sync-policies.sh", name, name)
		}
	}
	for name := range chart {
		if _, ok := repo[name]; !ok {
			t.Errorf("files/policies/%s is not in policies/envoy/authz: run deploy/helm/sync-policies.sh", name)
		}
	}
}

// regoFiles reads the served *.rego files of dir (no *_test.rego).
func regoFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.rego"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.rego") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = string(b)
	}
	return out
}

func TestLint(t *testing.T) {
	for _, rc := range allCases() {
		t.Run(rc.name, func(t *testing.T) {
			helm(t, append([]string{"lint", "--strict", chartDir, "--namespace", rc.ns}, rc.args...)...)
		})
	}
}

// TestRenderFails: values that would produce a broken or unsafe install are
// refused at render time with a message saying what to do.
func TestRenderFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"half a CA", []string{"--set", "ca.cert=x"}, "ca.cert and ca.key go together"},
		{"CA twice", []string{"--set", "ca.cert=x,ca.key=y,ca.existingSecret=s"}, "not both"},
		{"external redis without address", []string{"--set", "redis.mode=external"}, "redis.address is required"},
		{"unknown redis mode", []string{"--set", "redis.mode=cluster"}, "redis.mode must be"},
		{"edge not in mesh", []string{"--set", "edge.node=nope"}, `edge.node "nope" is not a name in config.mesh.edges`},
		{"no policies", []string{"--set", "policies.bundled=false"}, "no policies"},
		{"bad policy name", []string{"--set", "policies.files.x/y\\.rego=package p"}, "not a file name"},
		{"pdb blocks drains", []string{"--set", "replicaCount=2,podDisruptionBudget.minAvailable=2"}, "must be below replicaCount"},
		{"policies nested in config dir", []string{"--set", "policiesDir=/etc/gatehouse/policies"}, "must not be under configDir"},
		{"bad anti-affinity", []string{"--set", "podAntiAffinity.mode=sometimes"}, "podAntiAffinity.mode must be"},
		{"pod killed mid-drain", []string{"--set", "terminationGracePeriodSeconds=14"}, "terminationGracePeriodSeconds (14) must be at least"},
		{"no shutdown grace", []string{"--set", "shutdown.graceSeconds=0"}, "shutdown.graceSeconds 1 to 300"},
		{"bad image digest", []string{"--set", "image.digest=latest"}, "digest must be sha256:"},
		{"GOMEMLIMIT above the limit", []string{"--set", "goMemLimit.percent=120"}, "goMemLimit.percent must be 0 to 100"},
		{"edge image without tag", []string{"--set", "edge.image.tag="}, "a tag is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(helmBin, append([]string{"template", "x", chartDir}, tc.args...)...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("rendered, want an error containing %q", tc.want)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("error does not say %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestRender renders each values set and checks the manifests against each
// other and against what the gatehouse binary expects.
func TestRender(t *testing.T) {
	for _, rc := range renderCases() {
		t.Run(rc.name, func(t *testing.T) {
			r := render(t, rc)
			dep := r.get(t, "Deployment", r.fullname).(*appsv1.Deployment)
			cm := r.get(t, "ConfigMap", r.fullname).(*corev1.ConfigMap)
			cfg := parseConfig(t, cm.Data["gatehouse.yaml"])
			pod := &dep.Spec.Template.Spec
			gh := container(t, pod.Containers, "gatehouse")
			args := flagValues(t, gh.Args[1:])
			if gh.Args[0] != "serve" || len(gh.Command) != 0 {
				t.Errorf("gatehouse runs %v %v, want the image entrypoint with serve", gh.Command, gh.Args)
			}
			configPath, stateDir := args["--config"], args["--state-dir"]
			if configPath == "" || stateDir == "" {
				t.Fatalf("gatehouse args %v lack --config or --state-dir", gh.Args)
			}

			t.Run("hardened pods", func(t *testing.T) { checkHardened(t, r) })
			t.Run("config and policies mounts", func(t *testing.T) {
				checkConfigMounts(t, r, pod, gh, cm, cfg, configPath)
			})
			t.Run("CA", func(t *testing.T) { checkCA(t, r, pod, gh, stateDir) })
			t.Run("ports and probes", func(t *testing.T) { checkPorts(t, r, gh, cfg) })
			t.Run("services", func(t *testing.T) { checkServices(t, r, dep, cfg) })
			t.Run("scale-out", func(t *testing.T) { checkScaleOut(t, r, dep) })
			t.Run("redis", func(t *testing.T) { checkRedis(t, r, pod, gh, cfg) })
			t.Run("config validates", func(t *testing.T) { checkValidates(t, cm) })
			t.Run("edge bootstrap", func(t *testing.T) { checkEdge(t, r, cm, cfg) })
			t.Run("shutdown drain", func(t *testing.T) { checkShutdown(t, pod, gh, args) })
		})
	}
}

// gatehouseConfig is the part of gatehouse.yaml the checks read.
type gatehouseConfig struct {
	Listen struct{ Authz, XDS, Admin string }
	Authz  struct {
		Policies struct{ Dir string }
	}
	XDS struct {
		TLS struct {
			Enabled  bool
			DNSNames []string `json:"dns_names"`
		}
	}
	Mesh struct {
		TrustDomain string `json:"trust_domain"`
		Authz       struct{ Address string }
	}
	Store *struct {
		Backend string
		Redis   struct {
			Address      string
			PasswordFile string `json:"password_file"`
		}
	}
}

func parseConfig(t *testing.T, s string) *gatehouseConfig {
	t.Helper()
	if s == "" {
		t.Fatal("ConfigMap has no gatehouse.yaml")
	}
	var c gatehouseConfig
	if err := yaml.Unmarshal([]byte(s), &c); err != nil {
		t.Fatalf("gatehouse.yaml: %v\n%s", err, s)
	}
	return &c
}

func container(t *testing.T, cs []corev1.Container, name string) *corev1.Container {
	t.Helper()
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// flagValues reads "--flag value" pairs.
func flagValues(t *testing.T, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "--") || i+1 == len(args) {
			t.Fatalf("unexpected argument %q in %v", args[i], args)
		}
		out[args[i]] = args[i+1]
		i++
	}
	return out
}

func volume(t *testing.T, pod *corev1.PodSpec, name string) *corev1.Volume {
	t.Helper()
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	t.Fatalf("no volume %q", name)
	return nil
}

// mountAt returns the mount of c at exactly dir.
func mountAt(t *testing.T, c *corev1.Container, dir string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(dir) {
			return m
		}
	}
	t.Fatalf("container %s mounts nothing at %s; mounts: %+v", c.Name, dir, c.VolumeMounts)
	return corev1.VolumeMount{}
}

func checkHardened(t *testing.T, r *rendered) {
	wantUID := map[string]int64{"gatehouse": 65532, "redis": 999, "edge": 101}
	deps := r.all("Deployment")
	if len(deps) == 0 {
		t.Fatal("no Deployment")
	}
	for _, o := range deps {
		d := o.(*appsv1.Deployment)
		comp := d.Spec.Template.Labels["app.kubernetes.io/component"]
		uid, ok := wantUID[comp]
		if !ok {
			t.Errorf("Deployment %s: unknown component %q", d.Name, comp)
			continue
		}
		pod := &d.Spec.Template.Spec
		psc := pod.SecurityContext
		if psc == nil || !isTrue(psc.RunAsNonRoot) || psc.RunAsUser == nil || *psc.RunAsUser != uid ||
			psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("Deployment %s: pod securityContext %+v, want runAsNonRoot, runAsUser %d, seccomp RuntimeDefault", d.Name, psc, uid)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("Deployment %s: automountServiceAccountToken should be false", d.Name)
		}
		if pod.HostNetwork || pod.HostPID || pod.HostIPC {
			t.Errorf("Deployment %s: uses host namespaces", d.Name)
		}
		for _, v := range pod.Volumes {
			if v.HostPath != nil {
				t.Errorf("Deployment %s: hostPath volume %s", d.Name, v.Name)
			}
		}
		for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
			sc := c.SecurityContext
			at := fmt.Sprintf("Deployment %s container %s", d.Name, c.Name)
			switch {
			case sc == nil:
				t.Errorf("%s: no securityContext", at)
				continue
			case !isTrue(sc.RunAsNonRoot) || sc.RunAsUser == nil || *sc.RunAsUser != uid:
				t.Errorf("%s: runAsNonRoot/runAsUser %v/%v, want true/%d", at, sc.RunAsNonRoot, sc.RunAsUser, uid)
			case !isTrue(sc.ReadOnlyRootFilesystem):
				t.Errorf("%s: readOnlyRootFilesystem not set", at)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s: allowPrivilegeEscalation must be false", at)
			case isTrue(sc.Privileged):
				t.Errorf("%s: privileged", at)
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
				t.Errorf("%s: capabilities %+v, want drop [ALL] and nothing added", at, sc.Capabilities)
			case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
				t.Errorf("%s: seccompProfile %+v, want RuntimeDefault", at, sc.SeccompProfile)
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if c.Resources.Requests.Name(res, "").IsZero() || c.Resources.Limits.Name(res, "").IsZero() {
					t.Errorf("%s: %s request and limit required; got %+v", at, res, c.Resources)
				}
			}
			image := strings.SplitN(c.Image, ":", 2)
			if len(image) != 2 || image[1] == "" || image[1] == "latest" {
				t.Errorf("%s: image %q is not pinned to a tag", at, c.Image)
			}
		}
	}
}

func isTrue(b *bool) bool { return b != nil && *b }

func checkConfigMounts(t *testing.T, r *rendered, pod *corev1.PodSpec, gh *corev1.Container, cm *corev1.ConfigMap, cfg *gatehouseConfig, configPath string) {
	// The config file: the ConfigMap's gatehouse.yaml, at --config.
	m := mountAt(t, gh, path.Dir(configPath))
	v := volume(t, pod, m.Name)
	if v.ConfigMap == nil || v.ConfigMap.Name != cm.Name || !m.ReadOnly {
		t.Fatalf("%s is not the ConfigMap %s mounted read-only: %+v", path.Dir(configPath), cm.Name, v)
	}
	if !slices.Equal(itemPaths(v.ConfigMap.Items), []string{path.Base(configPath)}) || v.ConfigMap.Items[0].Key != "gatehouse.yaml" {
		t.Errorf("config volume items %+v, want only gatehouse.yaml as %s", v.ConfigMap.Items, path.Base(configPath))
	}
	// The policies: every other key, mounted directly at authz.policies.dir
	// (the layout whose "..data" swap internal/watch's TestConfigMapSwap proves).
	dir := cfg.Authz.Policies.Dir
	if !path.IsAbs(dir) {
		t.Fatalf("authz.policies.dir %q must be absolute in the pod", dir)
	}
	pm := mountAt(t, gh, dir)
	pv := volume(t, pod, pm.Name)
	if pv.ConfigMap == nil || pv.ConfigMap.Name != cm.Name || !pm.ReadOnly {
		t.Fatalf("%s is not the ConfigMap %s mounted read-only: %+v", dir, cm.Name, pv)
	}
	var policyKeys []string
	for k := range cm.Data {
		if k != "gatehouse.yaml" {
			if !strings.HasSuffix(k, ".rego") {
				t.Errorf("ConfigMap key %q is neither gatehouse.yaml nor a policy", k)
			}
			policyKeys = append(policyKeys, k)
		}
	}
	slices.Sort(policyKeys)
	for _, it := range pv.ConfigMap.Items {
		if it.Key != it.Path {
			t.Errorf("policy item %s mounted as %s", it.Key, it.Path)
		}
	}
	if got := itemPaths(pv.ConfigMap.Items); !slices.Equal(got, policyKeys) {
		t.Errorf("policies volume has %v, ConfigMap has policies %v", got, policyKeys)
	}
	// Bundled policies are the chart's files, verbatim.
	bundled := regoFiles(t, filepath.Join(chartDir, "files", "policies"))
	for name, want := range bundled {
		if got, ok := cm.Data[name]; ok && strings.TrimRight(got, "\n") != strings.TrimRight(want, "\n") {
			if r.rc.name != "managed-ca" || name != "extra.rego" {
				t.Errorf("ConfigMap %s differs from files/policies/%s", name, name)
			}
		} else if !ok {
			t.Errorf("bundled policy %s missing from the ConfigMap", name)
		}
	}
	// No other mount hides under the config directory (nested mounts in a
	// ConfigMap volume break its updates).
	for _, m := range gh.VolumeMounts {
		if strings.HasPrefix(m.MountPath, path.Dir(configPath)+"/") {
			t.Errorf("%s is mounted inside the config volume at %s", m.Name, path.Dir(configPath))
		}
	}
}

func itemPaths(items []corev1.KeyToPath) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.Path)
	}
	slices.Sort(out)
	return out
}

func checkCA(t *testing.T, r *rendered, pod *corev1.PodSpec, gh *corev1.Container, stateDir string) {
	// The state directory is an emptyDir in memory, writable.
	sm := mountAt(t, gh, stateDir)
	sv := volume(t, pod, sm.Name)
	if sv.EmptyDir == nil || sv.EmptyDir.Medium != corev1.StorageMediumMemory || sm.ReadOnly {
		t.Errorf("state dir %s: want a writable memory emptyDir, got %+v", stateDir, sv)
	}
	// ca-install copies the Secret into <state-dir>/ca, where `gatehouse
	// serve` looks for ca.crt and ca.key.
	if len(pod.InitContainers) != 1 {
		t.Fatalf("want exactly the ca-install init container, got %d", len(pod.InitContainers))
	}
	ic := &pod.InitContainers[0]
	env := map[string]string{}
	for _, e := range ic.Env {
		env[e.Name] = e.Value
	}
	if want := path.Join(stateDir, "ca"); env["CA_DIR"] != want {
		t.Errorf("ca-install CA_DIR %q, want <state-dir>/ca = %s", env["CA_DIR"], want)
	}
	if im := mountAt(t, ic, stateDir); im.Name != sm.Name {
		t.Errorf("ca-install writes volume %s at %s, gatehouse reads %s", im.Name, stateDir, sm.Name)
	}
	secMount := mountAt(t, ic, env["CA_SECRET_DIR"])
	secVol := volume(t, pod, secMount.Name)
	if secVol.Secret == nil || !secMount.ReadOnly {
		t.Fatalf("CA_SECRET_DIR %s is not a Secret mounted read-only: %+v", env["CA_SECRET_DIR"], secVol)
	}
	if secVol.Secret.DefaultMode == nil || *secVol.Secret.DefaultMode != 0o400 {
		t.Errorf("CA Secret defaultMode %v, want 0400", secVol.Secret.DefaultMode)
	}
	for _, m := range gh.VolumeMounts {
		if m.Name == secMount.Name {
			t.Errorf("the gatehouse container mounts the CA Secret at %s; it must read the copy in %s/ca", m.MountPath, stateDir)
		}
	}
	wantSecret := r.fullname + "-ca"
	if r.rc.name == "ha" {
		wantSecret = "gatehouse-ca"
	}
	if secVol.Secret.SecretName != wantSecret {
		t.Errorf("CA Secret %q, want %q", secVol.Secret.SecretName, wantSecret)
	}
	// The chart renders the Secret only from PEM the operator gave it; it
	// never makes a CA itself.
	sec := r.find("Secret", wantSecret)
	if managed := r.rc.name == "managed-ca"; managed != (sec != nil) {
		t.Fatalf("Secret %s rendered: %v, want %v", wantSecret, sec != nil, managed)
	}
	if sec != nil {
		s := sec.(*corev1.Secret)
		for _, k := range []string{"ca.crt", "ca.key"} {
			want, err := os.ReadFile(filepath.Join(testCADir, k))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s.Data[k], want) {
				t.Errorf("Secret %s key %s is not the CA given with --set-file", s.Name, k)
			}
		}
		if pod := r.get(t, "Deployment", r.fullname).(*appsv1.Deployment).Spec.Template; pod.Annotations["checksum/ca"] == "" {
			t.Error("a chart-managed CA should roll the pods when it changes (checksum/ca)")
		}
	}
	for _, o := range r.objs {
		if o.kind == "Secret" && o.name != wantSecret {
			t.Errorf("unexpected Secret %s rendered", o.name)
		}
	}
}

func port(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return int32(n)
}

func namedPort(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %q", c.Name, name)
	return 0
}

// resolvePort turns a probe's or Service's port (name or number) into the
// container port it means.
func resolvePort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.String {
		return namedPort(t, c, p.StrVal)
	}
	return p.IntVal
}

func checkPorts(t *testing.T, r *rendered, gh *corev1.Container, cfg *gatehouseConfig) {
	for _, tc := range []struct{ name, addr string }{
		{"authz", cfg.Listen.Authz}, {"xds", cfg.Listen.XDS}, {"admin", cfg.Listen.Admin},
	} {
		host, _, _ := net.SplitHostPort(tc.addr)
		if host != "0.0.0.0" && host != "" {
			t.Errorf("listen.%s %q: must bind all interfaces in the pod", tc.name, tc.addr)
		}
		if got, want := namedPort(t, gh, tc.name), port(t, tc.addr); got != want {
			t.Errorf("container port %s = %d, config listen.%s = %s", tc.name, got, tc.name, tc.addr)
		}
	}
	if len(gh.Ports) != 3 {
		t.Errorf("gatehouse exposes %d ports, want authz, xds, admin", len(gh.Ports))
	}
	admin := port(t, cfg.Listen.Admin)
	for _, tc := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", gh.ReadinessProbe, "/readyz"}, {"liveness", gh.LivenessProbe, "/healthz"}} {
		if tc.probe == nil || tc.probe.HTTPGet == nil {
			t.Errorf("%s probe: want httpGet %s", tc.name, tc.path)
			continue
		}
		g := tc.probe.HTTPGet
		if g.Path != tc.path || resolvePort(t, gh, g.Port) != admin || (g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP) {
			t.Errorf("%s probe %s %v, want %s on the admin port %d", tc.name, g.Path, g.Port.String(), tc.path, admin)
		}
	}
}

func checkServices(t *testing.T, r *rendered, dep *appsv1.Deployment, cfg *gatehouseConfig) {
	gh := container(t, dep.Spec.Template.Spec.Containers, "gatehouse")
	podLabels := dep.Spec.Template.Labels
	svc := func(suffix string) *corev1.Service {
		s := r.get(t, "Service", r.fullname+"-"+suffix).(*corev1.Service)
		for k, v := range s.Spec.Selector {
			if podLabels[k] != v {
				t.Errorf("Service %s selector %v does not select the gatehouse pods %v", s.Name, s.Spec.Selector, podLabels)
			}
		}
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s has no selector", s.Name)
		}
		if len(s.Spec.Ports) != 1 {
			t.Fatalf("Service %s: want one port, got %+v", s.Name, s.Spec.Ports)
		}
		if got := resolvePort(t, gh, s.Spec.Ports[0].TargetPort); got != namedPort(t, gh, suffix) {
			t.Errorf("Service %s targets container port %d, want the %s port %d", s.Name, got, suffix, namedPort(t, gh, suffix))
		}
		return s
	}
	authz, xds, admin := svc("authz"), svc("xds"), svc("admin")

	if xds.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("xDS Service clusterIP %q, want None (headless, for Envoy's STRICT_DNS)", xds.Spec.ClusterIP)
	}
	if xds.Spec.PublishNotReadyAddresses {
		t.Error("xDS Service publishes unready replicas")
	}
	if admin.Spec.Type != corev1.ServiceTypeClusterIP || admin.Spec.ClusterIP == corev1.ClusterIPNone ||
		len(admin.Spec.ExternalIPs) > 0 || admin.Spec.Ports[0].NodePort != 0 || admin.Spec.LoadBalancerIP != "" {
		t.Errorf("admin Service must be a plain ClusterIP, not exposed: %+v", admin.Spec)
	}
	for _, s := range []*corev1.Service{authz, xds} {
		if s.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("Service %s type %s, want ClusterIP", s.Name, s.Spec.Type)
		}
	}
	if headless := authz.Spec.ClusterIP == corev1.ClusterIPNone; headless != (r.rc.name == "ha") {
		t.Errorf("authz Service headless = %v in %s", headless, r.rc.name)
	}
	// Envoy reaches ext_authz through the authz Service.
	fqdn := func(s *corev1.Service) string {
		return fmt.Sprintf("%s.%s.svc.cluster.local:%d", s.Name, r.rc.ns, s.Spec.Ports[0].Port)
	}
	if cfg.Mesh.Authz.Address != fqdn(authz) {
		t.Errorf("mesh.authz.address %q, want the authz Service %s", cfg.Mesh.Authz.Address, fqdn(authz))
	}
	// The ADS server certificate names the xDS Service.
	if cfg.XDS.TLS.Enabled && !slices.Contains(cfg.XDS.TLS.DNSNames, strings.TrimSuffix(fqdn(xds), fmt.Sprintf(":%d", xds.Spec.Ports[0].Port))) {
		t.Errorf("xds.tls.dns_names %v lack the xDS Service name", cfg.XDS.TLS.DNSNames)
	}
	for _, o := range r.all("Service") {
		s := o.(*corev1.Service)
		if s.Spec.Type == corev1.ServiceTypeNodePort || (s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Name != r.fullname+"-edge") {
			t.Errorf("Service %s is exposed (%s); only the edge may be", s.Name, s.Spec.Type)
		}
	}
	// The ServiceMonitor scrapes the admin Service's /metrics.
	sms := r.all("ServiceMonitor")
	if want := r.rc.name == "ha"; want != (len(sms) == 1) {
		t.Fatalf("ServiceMonitors rendered: %d in %s", len(sms), r.rc.name)
	}
	for _, o := range sms {
		sm := o.(*serviceMonitor)
		for k, v := range sm.Spec.Selector.MatchLabels {
			if admin.Labels[k] != v {
				t.Errorf("ServiceMonitor selector %v does not match the admin Service labels %v", sm.Spec.Selector.MatchLabels, admin.Labels)
			}
		}
		for _, s := range []*corev1.Service{authz, xds} {
			matches := true
			for k, v := range sm.Spec.Selector.MatchLabels {
				matches = matches && s.Labels[k] == v
			}
			if matches {
				t.Errorf("ServiceMonitor also selects Service %s", s.Name)
			}
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != admin.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoints %+v, want port %s path /metrics", sm.Spec.Endpoints, admin.Spec.Ports[0].Name)
		}
		if sm.APIVersion != "monitoring.coreos.com/v1" {
			t.Errorf("ServiceMonitor apiVersion %s", sm.APIVersion)
		}
	}
}

func checkScaleOut(t *testing.T, r *rendered, dep *appsv1.Deployment) {
	want := map[string]int32{"default": 2, "ha": 3, "managed-ca": 1}[r.rc.name]
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != want {
		t.Errorf("replicas %v, want %d", dep.Spec.Replicas, want)
	}
	if ru := dep.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update may take replicas down before new ones are ready: %+v", dep.Spec.Strategy)
	}
	aff := dep.Spec.Template.Spec.Affinity
	var required, preferred int
	if aff != nil && aff.PodAntiAffinity != nil {
		for _, term := range aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			required++
			checkSelects(t, "required anti-affinity", term.LabelSelector.MatchLabels, dep.Spec.Template.Labels)
			if term.TopologyKey != "kubernetes.io/hostname" {
				t.Errorf("anti-affinity topologyKey %s", term.TopologyKey)
			}
		}
		for _, w := range aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			preferred++
			checkSelects(t, "preferred anti-affinity", w.PodAffinityTerm.LabelSelector.MatchLabels, dep.Spec.Template.Labels)
		}
	}
	if r.rc.name == "ha" {
		if required != 1 || preferred != 0 {
			t.Errorf("HA: want required pod anti-affinity, got %d required, %d preferred", required, preferred)
		}
	} else if required != 0 || preferred != 1 {
		t.Errorf("want preferred pod anti-affinity by default, got %d required, %d preferred", required, preferred)
	}
	var pdbs []any
	for _, o := range r.all("PodDisruptionBudget") {
		if o.(*policyv1.PodDisruptionBudget).Name == r.fullname {
			pdbs = append(pdbs, o)
		}
	}
	if want > 1 {
		if len(pdbs) != 1 {
			t.Fatalf("want one PodDisruptionBudget with %d replicas, got %d", want, len(pdbs))
		}
		pdb := pdbs[0].(*policyv1.PodDisruptionBudget)
		checkSelects(t, "PodDisruptionBudget", pdb.Spec.Selector.MatchLabels, dep.Spec.Template.Labels)
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 || int32(pdb.Spec.MinAvailable.IntValue()) >= want {
			t.Errorf("PodDisruptionBudget minAvailable %v with %d replicas", pdb.Spec.MinAvailable, want)
		}
	} else if len(pdbs) != 0 {
		t.Error("a PodDisruptionBudget on one replica blocks every node drain")
	}
}

// checkSelects: every label of sel is on the pod, and sel is not empty.
func checkSelects(t *testing.T, what string, sel, pod map[string]string) {
	t.Helper()
	if len(sel) == 0 {
		t.Errorf("%s selects everything", what)
	}
	for k, v := range sel {
		if pod[k] != v {
			t.Errorf("%s selector %v does not select the gatehouse pods %v", what, sel, pod)
		}
	}
}

func checkRedis(t *testing.T, r *rendered, pod *corev1.PodSpec, gh *corev1.Container, cfg *gatehouseConfig) {
	redisDep := r.find("Deployment", r.fullname+"-redis")
	switch r.rc.name {
	case "default":
		if cfg.Store != nil || redisDep != nil {
			t.Errorf("default values: want no store and no Redis, got store %+v, Redis Deployment %v", cfg.Store, redisDep != nil)
		}
	case "ha":
		if cfg.Store == nil || cfg.Store.Redis.Address != "redis-master.redis.svc.cluster.local:6379" || redisDep != nil {
			t.Fatalf("HA: want the external Redis in store.redis and no in-chart Redis; got %+v", cfg.Store)
		}
		// Without backend: redis the store section is ignored and every
		// replica keeps its state in memory.
		if cfg.Store.Backend != "redis" {
			t.Errorf("store.backend %q, want redis", cfg.Store.Backend)
		}
		// The password file is the mounted Secret key.
		pf := cfg.Store.Redis.PasswordFile
		m := mountAt(t, gh, path.Dir(pf))
		v := volume(t, pod, m.Name)
		if v.Secret == nil || v.Secret.SecretName != "gatehouse-redis" || !m.ReadOnly || !slices.Contains(itemPaths(v.Secret.Items), path.Base(pf)) {
			t.Errorf("store.redis.password_file %s is not the gatehouse-redis Secret mounted read-only: %+v", pf, v)
		}
		// Gatehouse refuses a secret file with any permission for others
		// or group write (internal/secretfile); unset means 0644.
		if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o037 != 0) {
			t.Errorf("store.redis.password_file volume defaultMode %v: gatehouse refuses it; want 0400", v.Secret.DefaultMode)
		}
	case "managed-ca":
		if redisDep == nil {
			t.Fatal("redis.mode internal: no Redis Deployment")
		}
		rd := redisDep.(*appsv1.Deployment)
		rc := container(t, rd.Spec.Template.Spec.Containers, "redis")
		if !strings.HasPrefix(rc.Image, "redis:") {
			t.Errorf("Redis image %s", rc.Image)
		}
		s := r.get(t, "Service", r.fullname+"-redis").(*corev1.Service)
		want := fmt.Sprintf("%s.%s.svc.cluster.local:%d", s.Name, r.rc.ns, s.Spec.Ports[0].Port)
		if cfg.Store == nil || cfg.Store.Redis.Address != want || cfg.Store.Backend != "redis" {
			t.Errorf("store %+v, want backend redis at address %s", cfg.Store, want)
		}
		if resolvePort(t, rc, s.Spec.Ports[0].TargetPort) != 6379 || s.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("Redis Service %+v", s.Spec)
		}
	}
}

// configSchemaHasStore reports whether internal/config already knows the
// store section (being added for the Redis store).
func configSchemaHasStore(t *testing.T) bool {
	files, _ := filepath.Glob(filepath.Join(repoRoot, "internal", "config", "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(`yaml:"store"`)) {
			return true
		}
	}
	return false
}

// writeRendered writes gatehouse.yaml and the policies of cm into a
// directory as the pod sees them, and returns the config's path there and
// the policy directory. Without the store section in the schema yet, the
// store section is left out (and said so).
func writeRendered(t *testing.T, cm *corev1.ConfigMap) (cfgPath, policyDir string) {
	t.Helper()
	dir := t.TempDir()
	policyDir = filepath.Join(dir, "policies")
	if err := os.Mkdir(policyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgText := cm.Data["gatehouse.yaml"]
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(cfgText), &doc); err != nil {
		t.Fatal(err)
	}
	if _, ok := doc["store"]; ok && !configSchemaHasStore(t) {
		t.Log("NOTE: internal/config has no store section yet: validating the rendered config without store.redis; it is validated in full once the schema has it")
		delete(doc, "store")
		b, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		cfgText = string(b)
	}
	cfgPath = filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	for k, v := range cm.Data {
		if k == "gatehouse.yaml" {
			continue
		}
		if err := os.WriteFile(filepath.Join(policyDir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return cfgPath, policyDir
}

func checkValidates(t *testing.T, cm *corev1.ConfigMap) {
	cfgPath, policyDir := writeRendered(t, cm)
	out, err := exec.Command(gatehouse, "validate", "--config", cfgPath, "--policies", policyDir).CombinedOutput()
	if err != nil {
		t.Fatalf("gatehouse validate on the rendered config: %v\n%s\n--- gatehouse.yaml\n%s", err, out, cm.Data["gatehouse.yaml"])
	}
}

func checkEdge(t *testing.T, r *rendered, cm *corev1.ConfigMap, cfg *gatehouseConfig) {
	bcm := r.get(t, "ConfigMap", r.fullname+"-edge-bootstrap").(*corev1.ConfigMap)
	dep := r.get(t, "Deployment", r.fullname+"-edge").(*appsv1.Deployment)
	envoy := container(t, dep.Spec.Template.Spec.Containers, "envoy")
	if envoy.Image != envoyImage {
		t.Errorf("edge image %s, want %s (as compose)", envoy.Image, envoyImage)
	}
	// envoy -c <file>: the bootstrap ConfigMap's envoy.yaml.
	var bootstrapPath string
	for i, a := range envoy.Args {
		if a == "-c" && i+1 < len(envoy.Args) {
			bootstrapPath = envoy.Args[i+1]
		}
	}
	m := mountAt(t, envoy, path.Dir(bootstrapPath))
	if v := volume(t, &dep.Spec.Template.Spec, m.Name); v.ConfigMap == nil || v.ConfigMap.Name != bcm.Name {
		t.Errorf("envoy -c %s is not in the bootstrap ConfigMap", bootstrapPath)
	}
	got := bcm.Data[path.Base(bootstrapPath)]

	// What `gatehouse bootstrap` prints for the same node and address.
	xdsSvc := r.get(t, "Service", r.fullname+"-xds").(*corev1.Service)
	addr := fmt.Sprintf("%s.%s.svc.cluster.local:%d", xdsSvc.Name, r.rc.ns, xdsSvc.Spec.Ports[0].Port)
	cfgPath, _ := writeRendered(t, cm)
	args := []string{"bootstrap", "--config", cfgPath, "--node", "edge", "--xds", addr, "--max-heap", "209715200", "--max-connections", "50000"}
	tlsFiles := map[string]string{}
	if cfg.XDS.TLS.Enabled {
		tlsFiles = map[string]string{"--cert": "/etc/envoy-xds-tls/tls.crt", "--key": "/etc/envoy-xds-tls/tls.key", "--ca": "/etc/envoy-xds-tls/ca.crt"}
		for _, f := range slices.Sorted(maps.Keys(tlsFiles)) {
			args = append(args, f, tlsFiles[f])
		}
	}
	want, err := exec.Command(gatehouse, args...).Output()
	if err != nil {
		t.Fatalf("gatehouse %s: %v", strings.Join(args, " "), err)
	}
	if g, w := canonical(t, got), canonical(t, string(want)); g != w {
		t.Errorf("the chart's edge bootstrap differs from `gatehouse %s`:\nchart:\n%s\ngatehouse:\n%s", strings.Join(args, " "), g, w)
	}
	// The client certificate files the bootstrap names are mounted from the
	// edge's Secret.
	for flag, file := range tlsFiles {
		m := mountAt(t, envoy, path.Dir(file))
		v := volume(t, &dep.Spec.Template.Spec, m.Name)
		wantSecret := r.fullname + "-edge-xds"
		if r.rc.name == "ha" {
			wantSecret = "gatehouse-edge-xds"
		}
		if v.Secret == nil || v.Secret.SecretName != wantSecret || !m.ReadOnly {
			t.Errorf("%s %s: not in Secret %s mounted read-only: %+v", flag, file, wantSecret, v)
		}
	}
	// The edge's container port is the mesh edge's listener.
	edgeSvc := r.get(t, "Service", r.fullname+"-edge").(*corev1.Service)
	if p := resolvePort(t, envoy, edgeSvc.Spec.Ports[0].TargetPort); p != 8443 {
		t.Errorf("edge Service targets %d, the mesh edge listens on 8443", p)
	}
}

// canonical is a YAML document as indented JSON with sorted keys, comments
// dropped, for comparing two renderings of the same data.
func canonical(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
