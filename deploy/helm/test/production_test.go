package helmtest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// extraCases are values sets beyond renderCases that only the production
// checks below (and lint) run: everything switched on, the HA values with
// NetworkPolicies, and NetworkPolicies with neither edge nor clients.
func extraCases() []renderCase {
	return []renderCase{
		{name: "full", release: "prod", ns: "gatehouse", args: []string{"-f", filepath.Join("testdata", "values-full.yaml")}},
		{name: "ha-netpol", release: "gh", ns: "edge-system", args: []string{
			"-f", filepath.Join(chartDir, "values-ha.yaml"), "--set", "networkPolicy.enabled=true"}},
		{name: "netpol-no-clients", release: "gatehouse", ns: "gatehouse", args: []string{
			"--set", "networkPolicy.enabled=true,edge.enabled=false,networkPolicy.clients=null,networkPolicy.egress.enabled=false"}},
	}
}

func allCases() []renderCase { return append(renderCases(), extraCases()...) }

// podTemplates returns every pod template the chart renders, by workload.
func podTemplates(r *rendered) map[string]*corev1.PodTemplateSpec {
	out := map[string]*corev1.PodTemplateSpec{}
	for _, o := range r.objs {
		switch w := o.obj.(type) {
		case *appsv1.Deployment:
			out["Deployment/"+w.Name] = &w.Spec.Template
		case *appsv1.StatefulSet:
			out["StatefulSet/"+w.Name] = &w.Spec.Template
		case *appsv1.DaemonSet:
			out["DaemonSet/"+w.Name] = &w.Spec.Template
		}
	}
	return out
}

// restrictedViolations lists what keeps a pod from the Kubernetes
// "restricted" Pod Security Standard (baseline included), as the
// pod-security admission controller checks it at the latest version
// (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
func restrictedViolations(tmpl *corev1.PodTemplateSpec) []string {
	var v []string
	bad := func(format string, a ...any) { v = append(v, fmt.Sprintf(format, a...)) }
	pod := &tmpl.Spec
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	// Baseline.
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		bad("host namespaces")
	}
	if psc.SELinuxOptions != nil {
		bad("pod seLinuxOptions %+v", psc.SELinuxOptions)
	}
	if psc.AppArmorProfile != nil && psc.AppArmorProfile.Type == corev1.AppArmorProfileTypeUnconfined {
		bad("pod AppArmor unconfined")
	}
	for k, val := range tmpl.Annotations {
		if strings.HasPrefix(k, "container.apparmor.security.beta.kubernetes.io/") && val == "unconfined" {
			bad("AppArmor annotation %s unconfined", k)
		}
	}
	safeSysctls := []string{"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
		"net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
		"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
	for _, s := range psc.Sysctls {
		if !slices.Contains(safeSysctls, s.Name) {
			bad("unsafe sysctl %s", s.Name)
		}
	}
	// Restricted: volume types.
	for _, vol := range pod.Volumes {
		vs := vol.VolumeSource
		if vs.ConfigMap == nil && vs.CSI == nil && vs.DownwardAPI == nil && vs.EmptyDir == nil && vs.Ephemeral == nil &&
			vs.PersistentVolumeClaim == nil && vs.Projected == nil && vs.Secret == nil {
			bad("volume %s: type not allowed", vol.Name)
		}
	}
	// Restricted: pod-level defaults that containers may rely on.
	podNonRoot := psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	podSeccomp := psc.SeccompProfile != nil
	if podSeccomp && psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault && psc.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost {
		bad("pod seccompProfile %s", psc.SeccompProfile.Type)
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		bad("pod runAsUser 0")
	}
	var all []corev1.Container
	all = append(all, pod.InitContainers...)
	all = append(all, pod.Containers...)
	for _, ec := range pod.EphemeralContainers {
		all = append(all, corev1.Container(ec.EphemeralContainerCommon))
	}
	for _, c := range all {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		at := "container " + c.Name
		if sc.Privileged != nil && *sc.Privileged {
			bad("%s: privileged", at)
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				bad("%s: hostPort %d", at, p.HostPort)
			}
		}
		if sc.SELinuxOptions != nil {
			bad("%s: seLinuxOptions %+v", at, sc.SELinuxOptions)
		}
		if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
			bad("%s: procMount %s", at, *sc.ProcMount)
		}
		if sc.AppArmorProfile != nil && sc.AppArmorProfile.Type == corev1.AppArmorProfileTypeUnconfined {
			bad("%s: AppArmor unconfined", at)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			bad("%s: allowPrivilegeEscalation must be false", at)
		}
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot || sc.RunAsNonRoot == nil && !podNonRoot {
			bad("%s: runAsNonRoot must be true (pod or container)", at)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			bad("%s: runAsUser 0", at)
		}
		if sc.SeccompProfile != nil {
			if t := sc.SeccompProfile.Type; t != corev1.SeccompProfileTypeRuntimeDefault && t != corev1.SeccompProfileTypeLocalhost {
				bad("%s: seccompProfile %s", at, t)
			}
		} else if !podSeccomp {
			bad("%s: no seccompProfile (pod or container)", at)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			bad("%s: capabilities must drop ALL", at)
		}
		if sc.Capabilities != nil {
			for _, a := range sc.Capabilities.Add {
				if a != "NET_BIND_SERVICE" {
					bad("%s: adds capability %s", at, a)
				}
			}
		}
	}
	return v
}

// TestPodSecurityRestricted: every pod of every values set meets the
// "restricted" Pod Security Standard, so the chart installs into a
// namespace labelled pod-security.kubernetes.io/enforce=restricted.
func TestPodSecurityRestricted(t *testing.T) {
	for _, rc := range allCases() {
		t.Run(rc.name, func(t *testing.T) {
			r := render(t, rc)
			pods := podTemplates(r)
			if len(pods) == 0 {
				t.Fatal("no workloads")
			}
			for name, tmpl := range pods {
				for _, v := range restrictedViolations(tmpl) {
					t.Errorf("%s: %s", name, v)
				}
			}
			for _, o := range r.objs {
				if o.kind == "Job" || o.kind == "CronJob" || o.kind == "Pod" || o.kind == "StatefulSet" || o.kind == "DaemonSet" {
					t.Errorf("%s/%s is not covered by this check", o.kind, o.name)
				}
			}
		})
	}
	// The checker itself catches what it is meant to.
	t.Run("checker", func(t *testing.T) {
		r := render(t, renderCases()[0])
		for name, mutate := range map[string]func(*corev1.PodTemplateSpec){
			"escalation": func(p *corev1.PodTemplateSpec) { p.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil },
			"root":       func(p *corev1.PodTemplateSpec) { u := int64(0); p.Spec.Containers[0].SecurityContext.RunAsUser = &u },
			"capabilities": func(p *corev1.PodTemplateSpec) {
				p.Spec.InitContainers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
			},
			"seccomp": func(p *corev1.PodTemplateSpec) {
				p.Spec.SecurityContext.SeccompProfile = nil
				p.Spec.Containers[0].SecurityContext.SeccompProfile = nil
			},
			"hostPath": func(p *corev1.PodTemplateSpec) {
				p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
			},
			"hostPort": func(p *corev1.PodTemplateSpec) { p.Spec.Containers[0].Ports[0].HostPort = 9001 },
		} {
			dep := r.get(t, "Deployment", r.fullname).(*appsv1.Deployment).DeepCopy()
			if v := restrictedViolations(&dep.Spec.Template); len(v) != 0 {
				t.Fatalf("rendered pod violates: %v", v)
			}
			mutate(&dep.Spec.Template)
			if len(restrictedViolations(&dep.Spec.Template)) == 0 {
				t.Errorf("%s: not caught", name)
			}
		}
	})
}

// TestWorkloadBasics: per pod, the practices the restricted standard does
// not demand — read-only root filesystem, fixed uid/gid, fsGroup, no token,
// a dedicated ServiceAccount, resources, pinned images with a pull policy.
func TestWorkloadBasics(t *testing.T) {
	digest := regexp.MustCompile(`^[^@]+:[^:@/]+@sha256:[0-9a-f]{64}$`)
	for _, rc := range allCases() {
		t.Run(rc.name, func(t *testing.T) {
			r := render(t, rc)
			sas := map[string]*corev1.ServiceAccount{}
			for _, o := range r.all("ServiceAccount") {
				sa := o.(*corev1.ServiceAccount)
				sas[sa.Name] = sa
				if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
					t.Errorf("ServiceAccount %s mounts its token by default", sa.Name)
				}
			}
			used := map[string]string{}
			for name, tmpl := range podTemplates(r) {
				pod := &tmpl.Spec
				psc := pod.SecurityContext
				if psc == nil || psc.RunAsUser == nil || psc.RunAsGroup == nil || psc.FSGroup == nil || *psc.RunAsUser == 0 || *psc.RunAsGroup == 0 {
					t.Errorf("%s: want runAsUser, runAsGroup and fsGroup set and non-zero: %+v", name, psc)
				}
				if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
					t.Errorf("%s: automountServiceAccountToken must be false", name)
				}
				if pod.ServiceAccountName == "" || pod.ServiceAccountName == "default" || sas[pod.ServiceAccountName] == nil {
					t.Errorf("%s: ServiceAccount %q is not a dedicated one rendered by the chart", name, pod.ServiceAccountName)
				} else if other, dup := used[pod.ServiceAccountName]; dup {
					t.Errorf("%s shares ServiceAccount %s with %s", name, pod.ServiceAccountName, other)
				}
				used[pod.ServiceAccountName] = name
				if pod.TerminationGracePeriodSeconds == nil {
					t.Errorf("%s: no terminationGracePeriodSeconds", name)
				}
				for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
					at := name + " container " + c.Name
					sc := c.SecurityContext
					if sc == nil || !isTrue(sc.ReadOnlyRootFilesystem) || sc.RunAsUser == nil || sc.RunAsGroup == nil {
						t.Errorf("%s: want readOnlyRootFilesystem and runAsUser/runAsGroup: %+v", at, sc)
					}
					if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
						t.Errorf("%s: want memory request and limit, CPU request: %+v", at, c.Resources)
					}
					if c.ImagePullPolicy == "" {
						t.Errorf("%s: no imagePullPolicy", at)
					}
					ref := c.Image
					if i := strings.Index(ref, "@"); i >= 0 {
						ref = ref[:i]
					}
					if tag := ref[strings.LastIndex(ref, ":")+1:]; !strings.Contains(ref, ":") || tag == "" || tag == "latest" || strings.Contains(tag, "/") {
						t.Errorf("%s: image %s is not pinned to a tag", at, c.Image)
					}
					if rc.name == "full" && !digest.MatchString(c.Image) {
						t.Errorf("%s: image %s: want repository:tag@sha256:… with the digests of values-full.yaml", at, c.Image)
					}
					// Writable paths are emptyDirs (the root filesystem is read-only).
					for _, m := range c.VolumeMounts {
						if m.ReadOnly {
							continue
						}
						if v := volume(t, pod, m.Name); v.EmptyDir == nil {
							t.Errorf("%s: writable mount %s at %s is not an emptyDir", at, m.Name, m.MountPath)
						} else if v.EmptyDir.SizeLimit == nil {
							t.Errorf("%s: emptyDir %s has no sizeLimit", at, m.Name)
						}
					}
				}
			}
		})
	}
}

// goMemLimitOf returns the gatehouse container's GOMEMLIMIT env var.
func goMemLimitOf(t *testing.T, r *rendered) *corev1.EnvVar {
	t.Helper()
	gh := container(t, r.get(t, "Deployment", r.fullname).(*appsv1.Deployment).Spec.Template.Spec.Containers, "gatehouse")
	for i := range gh.Env {
		if gh.Env[i].Name == "GOMEMLIMIT" {
			return &gh.Env[i]
		}
	}
	return nil
}

// TestGOMEMLIMIT: the Go runtime does not read the cgroup limit, so the
// chart sets GOMEMLIMIT below the container's memory limit, in a form the
// Go runtime accepts.
func TestGOMEMLIMIT(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // "": none; "ref": resourceFieldRef on limits.memory
	}{
		{"default 90% of 512Mi", nil, strconv.Itoa(512 << 20 * 90 / 100)},
		{"ha 90% of 1Gi", []string{"-f", filepath.Join(chartDir, "values-ha.yaml")}, strconv.Itoa(1 << 30 * 90 / 100)},
		{"decimal suffix", []string{"--set", "resources.limits.memory=2G,goMemLimit.percent=80"}, "1600000000"},
		{"plain bytes", []string{"--set", "resources.limits.memory=1000000000"}, "900000000"},
		{"explicit value", []string{"--set", "goMemLimit.value=300MiB"}, "300MiB"},
		{"other quantity form", []string{"--set", "resources.limits.memory=1.5Gi"}, "ref"},
		{"off", []string{"--set", "goMemLimit.percent=0"}, ""},
		{"no memory limit", []string{"--set", "resources.limits.memory=null"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, renderCase{name: tc.name, release: "gatehouse", ns: "gatehouse", args: tc.args})
			env := goMemLimitOf(t, r)
			switch {
			case tc.want == "":
				if env != nil {
					t.Fatalf("GOMEMLIMIT %+v, want none", env)
				}
				return
			case env == nil:
				t.Fatalf("no GOMEMLIMIT, want %s", tc.want)
			case tc.want == "ref":
				ref := env.ValueFrom
				if ref == nil || ref.ResourceFieldRef == nil || ref.ResourceFieldRef.Resource != "limits.memory" || ref.ResourceFieldRef.ContainerName != "gatehouse" {
					t.Fatalf("GOMEMLIMIT %+v, want a resourceFieldRef on the gatehouse container's limits.memory", env)
				}
				return
			case env.Value != tc.want:
				t.Fatalf("GOMEMLIMIT %q, want %q", env.Value, tc.want)
			}
			// Below the limit, when it is derived from it.
			gh := container(t, r.get(t, "Deployment", r.fullname).(*appsv1.Deployment).Spec.Template.Spec.Containers, "gatehouse")
			if n, err := strconv.ParseInt(env.Value, 10, 64); err == nil && n >= gh.Resources.Limits.Memory().Value() {
				t.Errorf("GOMEMLIMIT %d is not below the memory limit %s", n, gh.Resources.Limits.Memory())
			}
			// The Go runtime accepts it (it aborts at start on a bad one).
			if err := goAccepts(env.Value); err != nil {
				t.Error(err)
			}
		})
	}
	if goAccepts("90%") == nil {
		t.Error("goAccepts does not catch a bad GOMEMLIMIT")
	}
}

// goAccepts starts the gatehouse binary with GOMEMLIMIT=v: the runtime
// aborts before main on a value it cannot parse; main then fails on the
// missing config file with exit 1.
func goAccepts(v string) error {
	cmd := exec.Command(gatehouse, "validate", "--config", "/nonexistent/gatehouse.yaml")
	cmd.Env = append(cmd.Environ(), "GOMEMLIMIT="+v)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || strings.Contains(string(out), "GOMEMLIMIT") {
		return fmt.Errorf("gatehouse with GOMEMLIMIT=%s: %v\n%s", v, err, out)
	}
	return nil
}

// TestProbes: gatehouse is probed on its admin port (readiness /readyz,
// liveness and startup /healthz); the edge on its listener, never on
// Envoy's admin, which stays on loopback.
func TestProbes(t *testing.T) {
	for _, rc := range allCases() {
		t.Run(rc.name, func(t *testing.T) {
			r := render(t, rc)
			dep := r.get(t, "Deployment", r.fullname).(*appsv1.Deployment)
			gh := container(t, dep.Spec.Template.Spec.Containers, "gatehouse")
			admin := namedPort(t, gh, "admin")
			for what, tc := range map[string]struct {
				p    *corev1.Probe
				path string
			}{"readiness": {gh.ReadinessProbe, "/readyz"}, "liveness": {gh.LivenessProbe, "/healthz"}, "startup": {gh.StartupProbe, "/healthz"}} {
				if tc.p == nil || tc.p.HTTPGet == nil || tc.p.HTTPGet.Path != tc.path || resolvePort(t, gh, tc.p.HTTPGet.Port) != admin {
					t.Errorf("gatehouse %s probe %+v, want GET %s on admin", what, tc.p, tc.path)
				}
			}
			if s := gh.StartupProbe; s != nil && s.PeriodSeconds*s.FailureThreshold < 30 {
				t.Errorf("gatehouse startup probe allows only %ds", s.PeriodSeconds*s.FailureThreshold)
			}
			if l := gh.LivenessProbe; l != nil && l.FailureThreshold < 2 {
				t.Errorf("gatehouse liveness kills on the first failure")
			}
			if o := r.find("Deployment", r.fullname+"-edge"); o != nil {
				ed := o.(*appsv1.Deployment)
				envoy := container(t, ed.Spec.Template.Spec.Containers, "envoy")
				listener := namedPort(t, envoy, "https")
				bcm := r.get(t, "ConfigMap", r.fullname+"-edge-bootstrap").(*corev1.ConfigMap)
				var boot struct {
					Admin struct {
						Address struct {
							SocketAddress struct {
								Address   string
								PortValue int32 `json:"port_value"`
							} `json:"socket_address"`
						}
					}
				}
				if err := yaml.Unmarshal([]byte(bcm.Data["envoy.yaml"]), &boot); err != nil {
					t.Fatal(err)
				}
				if a := boot.Admin.Address.SocketAddress; a.Address != "127.0.0.1" {
					t.Errorf("Envoy admin on %s: want loopback only", a.Address)
				}
				for what, p := range map[string]*corev1.Probe{"readiness": envoy.ReadinessProbe, "liveness": envoy.LivenessProbe, "startup": envoy.StartupProbe} {
					if p == nil || p.TCPSocket == nil || resolvePort(t, envoy, p.TCPSocket.Port) != listener {
						t.Errorf("edge %s probe %+v, want TCP on the listener port %d", what, p, listener)
					}
				}
				for _, p := range envoy.Ports {
					if p.ContainerPort == boot.Admin.Address.SocketAddress.PortValue {
						t.Errorf("edge exposes Envoy's admin port %d", p.ContainerPort)
					}
				}
			}
			if o := r.find("Deployment", r.fullname+"-redis"); o != nil {
				rd := container(t, o.(*appsv1.Deployment).Spec.Template.Spec.Containers, "redis")
				if rd.ReadinessProbe == nil || rd.LivenessProbe == nil {
					t.Error("trial Redis without readiness and liveness probes")
				}
			}
		})
	}
}

// TestAvailability: disruption budgets, spreading, rolling updates and
// graceful stops of the gatehouse and edge Deployments.
func TestAvailability(t *testing.T) {
	for _, rc := range allCases() {
		t.Run(rc.name, func(t *testing.T) {
			r := render(t, rc)
			for _, name := range []string{r.fullname, r.fullname + "-edge"} {
				o := r.find("Deployment", name)
				if o == nil {
					continue
				}
				d := o.(*appsv1.Deployment)
				pod := &d.Spec.Template.Spec
				if ru := d.Spec.Strategy.RollingUpdate; d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
					ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 || ru.MaxSurge == nil || ru.MaxSurge.IntValue() < 1 {
					t.Errorf("%s: strategy %+v, want a rolling update with maxUnavailable 0", name, d.Spec.Strategy)
				}
				replicas := *d.Spec.Replicas
				var pdb *policyv1.PodDisruptionBudget
				for _, p := range r.all("PodDisruptionBudget") {
					if p := p.(*policyv1.PodDisruptionBudget); p.Name == name {
						pdb = p
					}
				}
				if (pdb != nil) != (replicas > 1) {
					t.Errorf("%s: %d replicas, PodDisruptionBudget rendered: %v", name, replicas, pdb != nil)
				}
				if pdb != nil {
					checkSelects(t, "PodDisruptionBudget "+pdb.Name, pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
					if mu := pdb.Spec.MaxUnavailable; mu != nil && mu.IntValue() < 1 {
						t.Errorf("%s: PodDisruptionBudget maxUnavailable %s blocks drains", name, mu.String())
					}
				}
				if replicas > 1 {
					spread := pod.Affinity != nil && pod.Affinity.PodAntiAffinity != nil || len(pod.TopologySpreadConstraints) > 0
					if !spread {
						t.Errorf("%s: %d replicas and nothing spreads them over nodes", name, replicas)
					}
				}
				// The preStop delay fits in the grace period.
				for _, c := range pod.Containers {
					if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
						s := c.Lifecycle.PreStop.Sleep
						if s == nil {
							t.Errorf("%s: preStop is not a sleep action (the images have no shell to rely on)", name)
						} else if s.Seconds+5 > *pod.TerminationGracePeriodSeconds {
							t.Errorf("%s: preStop sleeps %ds of a %ds grace period", name, s.Seconds, *pod.TerminationGracePeriodSeconds)
						}
					}
				}
				if rc.name == "full" {
					want := map[string]string{r.fullname: "gatehouse-critical", r.fullname + "-edge": "gatehouse-edge"}[name]
					if pod.PriorityClassName != want {
						t.Errorf("%s: priorityClassName %q, want %q", name, pod.PriorityClassName, want)
					}
				} else if pod.PriorityClassName != "" {
					t.Errorf("%s: priorityClassName %q by default", name, pod.PriorityClassName)
				}
			}
			if o := r.find("Deployment", r.fullname+"-edge"); o != nil {
				envoy := o.(*appsv1.Deployment).Spec.Template.Spec.Containers[0]
				if envoy.Lifecycle == nil || envoy.Lifecycle.PreStop == nil || envoy.Lifecycle.PreStop.Sleep == nil || envoy.Lifecycle.PreStop.Sleep.Seconds < 1 {
					t.Errorf("edge: want a preStop sleep (Envoy exits at once on SIGTERM); got %+v", envoy.Lifecycle)
				}
			}
		})
	}
}

// TestLabels: the app.kubernetes.io labels on every object and pod.
func TestLabels(t *testing.T) {
	for _, rc := range allCases() {
		t.Run(rc.name, func(t *testing.T) {
			r := render(t, rc)
			for _, o := range r.objs {
				meta := o.obj.(metav1.Object)
				l := meta.GetLabels()
				for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
					"app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart"} {
					if l[k] == "" {
						t.Errorf("%s/%s: no label %s", o.kind, o.name, k)
					}
				}
				if l["app.kubernetes.io/instance"] != rc.release || l["app.kubernetes.io/managed-by"] != "Helm" {
					t.Errorf("%s/%s: labels %v", o.kind, o.name, l)
				}
			}
			for name, tmpl := range podTemplates(r) {
				if rc.name == "full" && tmpl.Labels["team"] != "payments" && !strings.Contains(name, "redis") {
					t.Errorf("%s pod template: podLabels not applied: %v", name, tmpl.Labels)
				}
				for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
					"app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"} {
					if tmpl.Labels[k] == "" {
						t.Errorf("%s pod template: no label %s", name, k)
					}
				}
			}
			for _, o := range r.all("Deployment") {
				d := o.(*appsv1.Deployment)
				checkSelects(t, "Deployment "+d.Name, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
				if d.Labels["app.kubernetes.io/component"] != d.Spec.Template.Labels["app.kubernetes.io/component"] {
					t.Errorf("Deployment %s: component %q, its pods %q", d.Name, d.Labels["app.kubernetes.io/component"], d.Spec.Template.Labels["app.kubernetes.io/component"])
				}
			}
		})
	}
}

// npAllows reports whether np lets a pod with podLabels in a namespace with
// nsLabels (same namespace as the policy when sameNS) connect to port on the
// pods np selects.
func npAllows(t *testing.T, np *networkingv1.NetworkPolicy, sameNS bool, nsLabels, podLabels map[string]string, port int32, portName string) bool {
	t.Helper()
	sel := func(s *metav1.LabelSelector, l map[string]string) bool {
		ls, err := metav1.LabelSelectorAsSelector(s)
		if err != nil {
			t.Fatalf("%s: %v", np.Name, err)
		}
		return ls.Matches(labels.Set(l))
	}
	for _, rule := range np.Spec.Ingress {
		portOK := len(rule.Ports) == 0
		for _, p := range rule.Ports {
			if p.Port == nil || (p.Port.Type == intstr.Int && p.Port.IntVal == port) || (p.Port.Type == intstr.String && p.Port.StrVal == portName) {
				portOK = true
			}
		}
		if !portOK {
			continue
		}
		if len(rule.From) == 0 {
			return true
		}
		for _, peer := range rule.From {
			if peer.IPBlock != nil {
				continue
			}
			nsOK := sameNS
			if peer.NamespaceSelector != nil {
				nsOK = sel(peer.NamespaceSelector, nsLabels)
			}
			podOK := peer.PodSelector == nil || sel(peer.PodSelector, podLabels)
			if nsOK && podOK {
				return true
			}
		}
	}
	return false
}

// TestNetworkPolicy: off by default; when on, who reaches which port of the
// gatehouse pods, the trial Redis and the edge, and where gatehouse may
// connect to.
func TestNetworkPolicy(t *testing.T) {
	for _, rc := range renderCases() {
		if n := len(render(t, rc).all("NetworkPolicy")); n != 0 {
			t.Errorf("%s: %d NetworkPolicies rendered by default", rc.name, n)
		}
	}
	for _, rc := range extraCases() {
		t.Run(rc.name, func(t *testing.T) {
			r := render(t, rc)
			dep := r.get(t, "Deployment", r.fullname).(*appsv1.Deployment)
			gh := container(t, dep.Spec.Template.Spec.Containers, "gatehouse")
			np := r.get(t, "NetworkPolicy", r.fullname).(*networkingv1.NetworkPolicy)
			checkSelects(t, "NetworkPolicy "+np.Name, np.Spec.PodSelector.MatchLabels, dep.Spec.Template.Labels)
			if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
				t.Fatalf("policy types %v", np.Spec.PolicyTypes)
			}
			ns := map[string]string{"kubernetes.io/metadata.name": rc.ns}
			other := map[string]string{"kubernetes.io/metadata.name": "shop"}
			monitoring := map[string]string{"kubernetes.io/metadata.name": "monitoring"}
			var edgeLabels map[string]string
			if o := r.find("Deployment", r.fullname+"-edge"); o != nil {
				edgeLabels = o.(*appsv1.Deployment).Spec.Template.Labels
			}
			client := map[string]string{"app": "shop", "gatehouse.io/client": "true"}
			stranger := map[string]string{"app": "shop"}
			type peer struct {
				name     string
				sameNS   bool
				nsLabels map[string]string
				pod      map[string]string
				grpc     bool // may reach ext_authz and ADS
				admin    bool
			}
			peers := []peer{
				{"unlabelled pod elsewhere", false, other, stranger, false, false},
				{"unlabelled pod in the namespace", true, ns, stranger, false, true},
				{"prometheus in monitoring", false, monitoring, map[string]string{"app": "prometheus"}, false, true},
			}
			if edgeLabels != nil {
				peers = append(peers, peer{"the chart's edge", true, ns, edgeLabels, true, true},
					peer{"an edge-labelled pod elsewhere", false, other, edgeLabels, false, false})
			}
			if rc.name != "netpol-no-clients" {
				peers = append(peers, peer{"a labelled client elsewhere", false, other, client, true, false})
			} else {
				peers = append(peers, peer{"a labelled client elsewhere", false, other, client, false, false})
			}
			for _, p := range peers {
				for _, port := range []string{"authz", "xds", "admin"} {
					want := p.grpc
					if port == "admin" {
						want = p.admin
					}
					if got := npAllows(t, np, p.sameNS, p.nsLabels, p.pod, namedPort(t, gh, port), port); got != want {
						t.Errorf("%s → %s: allowed %v, want %v", p.name, port, got, want)
					}
				}
			}
			// Egress: DNS, Redis, HTTPS (IdPs) — nothing else.
			if rc.name == "netpol-no-clients" {
				if slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
					t.Errorf("egress restricted with networkPolicy.egress.enabled=false")
				}
			} else {
				if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
					t.Fatalf("no egress policy")
				}
				ports := map[string]bool{}
				for _, rule := range np.Spec.Egress {
					if len(rule.Ports) == 0 {
						t.Errorf("egress rule %+v opens every port", rule)
					}
					for _, p := range rule.Ports {
						ports[fmt.Sprintf("%s/%s", *p.Protocol, p.Port.String())] = true
					}
				}
				for _, want := range []string{"UDP/53", "TCP/53", "TCP/6379", "TCP/443"} {
					if !ports[want] {
						t.Errorf("egress lacks %s: %v", want, ports)
					}
				}
				if len(ports) != 4 {
					t.Errorf("egress ports %v, want DNS, Redis and HTTPS only", ports)
				}
			}
			// The trial Redis: only the gatehouse pods.
			if o := r.find("Deployment", r.fullname+"-redis"); o != nil {
				rnp := r.get(t, "NetworkPolicy", r.fullname+"-redis").(*networkingv1.NetworkPolicy)
				checkSelects(t, "NetworkPolicy "+rnp.Name, rnp.Spec.PodSelector.MatchLabels, o.(*appsv1.Deployment).Spec.Template.Labels)
				if !npAllows(t, rnp, true, ns, dep.Spec.Template.Labels, 6379, "redis") {
					t.Error("gatehouse cannot reach the trial Redis")
				}
				if npAllows(t, rnp, true, ns, stranger, 6379, "redis") || (edgeLabels != nil && npAllows(t, rnp, true, ns, edgeLabels, 6379, "redis")) {
					t.Error("other pods reach the trial Redis")
				}
				// Gatehouse's egress reaches it.
				var found bool
				for _, rule := range np.Spec.Egress {
					for _, to := range rule.To {
						if to.PodSelector != nil && to.NamespaceSelector == nil {
							s, _ := metav1.LabelSelectorAsSelector(to.PodSelector)
							found = found || s.Matches(labels.Set(o.(*appsv1.Deployment).Spec.Template.Labels))
						}
					}
				}
				if !found {
					t.Error("gatehouse egress does not name the trial Redis pods")
				}
			}
			// The edge: its listener only, Envoy admin not reachable.
			if edgeLabels != nil {
				enp := r.get(t, "NetworkPolicy", r.fullname+"-edge").(*networkingv1.NetworkPolicy)
				checkSelects(t, "NetworkPolicy "+enp.Name, enp.Spec.PodSelector.MatchLabels, edgeLabels)
				if !npAllows(t, enp, false, other, stranger, 8443, "https") {
					t.Error("the edge listener is closed")
				}
				if npAllows(t, enp, true, ns, stranger, 9901, "admin") {
					t.Error("the edge admits other ports than its listener")
				}
			}
		})
	}
}
