package compose

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/config"
)

// stack is the part of the compose file schema docker-compose.yaml uses;
// decoding it strictly makes a typo'd key an error here rather than a
// silently ignored setting.
type stack struct {
	Name     string              `yaml:"name"`
	Services map[string]service  `yaml:"services"`
	Volumes  map[string]struct{} `yaml:"volumes"`
	X        map[string]any      `yaml:",inline"` // x- extension fields only
}

type service struct {
	Build       *build                `yaml:"build"`
	Image       string                `yaml:"image"`
	Command     []string              `yaml:"command"`
	Environment map[string]string     `yaml:"environment"`
	Volumes     []string              `yaml:"volumes"`
	Ports       []string              `yaml:"ports"`
	NetworkMode string                `yaml:"network_mode"`
	DependsOn   map[string]dependency `yaml:"depends_on"`
	Healthcheck *healthcheck          `yaml:"healthcheck"`
	Restart     string                `yaml:"restart"`
}

type build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
	Target     string `yaml:"target"`
}

type dependency struct {
	Condition string `yaml:"condition"`
}

type healthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

func loadStack(t *testing.T) *stack {
	t.Helper()
	var s stack
	strictDecode(t, composeFile, &s)
	for k := range s.X {
		if !strings.HasPrefix(k, "x-") {
			t.Fatalf("docker-compose.yaml: unknown top-level key %q", k)
		}
	}
	if len(s.Services) == 0 {
		t.Fatal("docker-compose.yaml: no services")
	}
	return &s
}

// mount is one "source:target[:mode]" volume entry.
type mount struct{ source, target, mode string }

func parseMount(t *testing.T, v string) mount {
	t.Helper()
	parts := strings.Split(v, ":")
	switch len(parts) {
	case 2:
		return mount{parts[0], parts[1], "rw"}
	case 3:
		if parts[2] != "ro" && parts[2] != "rw" {
			t.Fatalf("volume %q: mode %q", v, parts[2])
		}
		return mount{parts[0], parts[1], parts[2]}
	}
	t.Fatalf("volume %q: want source:target[:mode]", v)
	return mount{}
}

func (m mount) bind() bool {
	return strings.HasPrefix(m.source, ".") || strings.HasPrefix(m.source, "/")
}

// mountedFrom returns the repository path mounted at target in svc, or "".
func (s *stack) mountedFrom(t *testing.T, svc, target string) string {
	t.Helper()
	for _, v := range s.Services[svc].Volumes {
		if m := parseMount(t, v); m.target == target && m.bind() {
			return filepath.Join(composeDir, m.source)
		}
	}
	return ""
}

func TestComposeReferences(t *testing.T) {
	s := loadStack(t)
	published := map[string]string{} // host ip:port → service
	for name, svc := range s.Services {
		t.Run(name, func(t *testing.T) {
			switch {
			case svc.Build != nil && svc.Image != "":
				t.Error("has both build and image: compose would try to pull the local image name")
			case svc.Build == nil && svc.Image == "":
				t.Error("has neither build nor image")
			case svc.Image != "":
				checkPinned(t, svc.Image)
			}
			if b := svc.Build; b != nil {
				checkBuild(t, b)
			}
			for _, v := range svc.Volumes {
				m := parseMount(t, v)
				if !strings.HasPrefix(m.target, "/") {
					t.Errorf("volume %q: target must be absolute", v)
				}
				if !m.bind() {
					if _, ok := s.Volumes[m.source]; !ok {
						t.Errorf("volume %q: named volume %q not declared under volumes:", v, m.source)
					}
					continue
				}
				if strings.HasPrefix(m.source, "/") {
					t.Errorf("volume %q: bind mounts must be relative to compose/, not host paths", v)
					continue
				}
				src := filepath.Join(composeDir, m.source)
				if _, err := os.Stat(src); err != nil {
					t.Errorf("volume %q: %v", v, err)
				}
				if !strings.HasPrefix(filepath.Clean(src), filepath.Clean(repoDir)+"/") && filepath.Clean(src) != filepath.Clean(repoDir) {
					t.Errorf("volume %q mounts something outside the repository", v)
				}
				if m.mode != "ro" {
					t.Errorf("volume %q: bind mounts of repository files must be :ro", v)
				}
			}
			for dep := range svc.DependsOn {
				if _, ok := s.Services[dep]; !ok {
					t.Errorf("depends_on %q: no such service", dep)
				}
				if c := svc.DependsOn[dep].Condition; c != "service_started" && c != "service_healthy" && c != "service_completed_successfully" {
					t.Errorf("depends_on %q: condition %q", dep, c)
				}
				if svc.DependsOn[dep].Condition == "service_healthy" && s.Services[dep].Healthcheck == nil {
					t.Errorf("depends_on %q: service_healthy, but %s has no healthcheck", dep, dep)
				}
			}
			if nm := svc.NetworkMode; nm != "" {
				target, ok := strings.CutPrefix(nm, "service:")
				if !ok {
					t.Errorf("network_mode %q: only service:<name> is used here", nm)
				} else if _, exists := s.Services[target]; !exists {
					t.Errorf("network_mode %q: no such service", nm)
				} else if _, dep := svc.DependsOn[target]; !dep {
					t.Errorf("network_mode %q without depends_on %s", nm, target)
				}
				if len(svc.Ports) > 0 {
					t.Errorf("publishes ports but shares %s's network namespace: publish them on %s", target, target)
				}
			}
			if hc := svc.Healthcheck; hc != nil {
				checkHealthcheck(t, s, name, hc)
			}
			if svc.Restart != "" && !slices.Contains([]string{"no", "always", "on-failure", "unless-stopped"}, svc.Restart) {
				t.Errorf("restart %q", svc.Restart)
			}
		})
		for _, p := range svc.Ports {
			host := publishedHost(t, name, p)
			if prev, dup := published[host]; dup {
				t.Errorf("host address %s is published by both %s and %s", host, prev, name)
			}
			published[host] = name
		}
	}
	checkNoCycles(t, s)
}

var portSpec = regexp.MustCompile(`^(127\.0\.0\.1):(\d+):(\d+)$`)

// publishedHost returns the host address of a port mapping; every mapping
// binds loopback only (the stack holds a demo password and an admin API).
func publishedHost(t *testing.T, svc, p string) string {
	t.Helper()
	m := portSpec.FindStringSubmatch(p)
	if m == nil {
		t.Errorf("%s: port %q: want 127.0.0.1:<host>:<container> (loopback only)", svc, p)
		return p
	}
	return m[1] + ":" + m[2]
}

var imageRef = regexp.MustCompile(`^([a-z0-9.-]+(?::\d+)?/)?[a-z0-9._/-]+:([A-Za-z0-9_.-]+)$`)

func checkPinned(t *testing.T, image string) {
	t.Helper()
	m := imageRef.FindStringSubmatch(image)
	if m == nil {
		t.Errorf("image %q is not pinned to a tag", image)
		return
	}
	if strings.Contains(m[2], "latest") {
		t.Errorf("image %q: tag %q moves; pin a release", image, m[2])
	}
}

func checkBuild(t *testing.T, b *build) {
	t.Helper()
	ctx := filepath.Join(composeDir, b.Context)
	if filepath.Clean(ctx) != filepath.Clean(repoDir) {
		t.Errorf("build context %q: want the repository root (..)", b.Context)
	}
	df := filepath.Join(ctx, b.Dockerfile)
	if filepath.Clean(df) != filepath.Clean(dockerfile) {
		t.Errorf("dockerfile %q: want compose/Dockerfile", b.Dockerfile)
	}
	if !slices.Contains(dockerStages(t), b.Target) {
		t.Errorf("build target %q is not a stage of compose/Dockerfile (%v)", b.Target, dockerStages(t))
	}
}

func checkHealthcheck(t *testing.T, s *stack, name string, hc *healthcheck) {
	t.Helper()
	if len(hc.Test) < 2 || hc.Test[0] != "CMD" {
		t.Errorf("healthcheck %q: want [CMD, program, args...] (exec form)", hc.Test)
		return
	}
	if s.Services[name].Build != nil {
		// Distroless: the program must be one the Dockerfile puts there.
		if !strings.Contains(readFile(t, dockerfile), filepath.Base(hc.Test[1])) || !strings.HasPrefix(hc.Test[1], "/usr/local/bin/") {
			t.Errorf("healthcheck program %q is not installed by compose/Dockerfile", hc.Test[1])
		}
	}
	if hc.Retries < 1 {
		t.Error("healthcheck without retries")
	}
}

func checkNoCycles(t *testing.T, s *stack) {
	t.Helper()
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string, path []string)
	visit = func(n string, path []string) {
		switch state[n] {
		case 1:
			t.Errorf("depends_on cycle: %s", strings.Join(append(path, n), " → "))
			return
		case 2:
			return
		}
		state[n] = 1
		for d := range s.Services[n].DependsOn {
			visit(d, append(path, n))
		}
		state[n] = 2
	}
	for n := range s.Services {
		visit(n, nil)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var fromLine = regexp.MustCompile(`(?i)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$`)

// dockerStages lists the named stages of compose/Dockerfile.
func dockerStages(t *testing.T) []string {
	t.Helper()
	var stages []string
	for _, l := range strings.Split(readFile(t, dockerfile), "\n") {
		if m := fromLine.FindStringSubmatch(strings.TrimSpace(l)); m != nil && m[2] != "" {
			stages = append(stages, m[2])
		}
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	text := readFile(t, dockerfile)
	goMod := readFile(t, filepath.Join(repoDir, "go.mod"))
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(goMod)
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	stage := ""
	users := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if m := fromLine.FindStringSubmatch(l); m != nil {
			stage = m[2]
			checkPinned(t, m[1])
			if strings.HasPrefix(m[1], "golang:") && !strings.HasPrefix(m[1], "golang:"+goVersion[1]) {
				t.Errorf("builder %s does not match go.mod's go %s", m[1], goVersion[1])
			}
			continue
		}
		if u, ok := strings.CutPrefix(l, "USER "); ok {
			users[stage] = u
		}
	}
	for _, target := range []string{"gatehouse", "demo"} {
		u, ok := users[target]
		if !ok {
			t.Errorf("stage %s sets no USER", target)
			continue
		}
		if uid, _, _ := strings.Cut(u, ":"); uid == "0" || uid == "root" {
			t.Errorf("stage %s runs as root", target)
		}
	}
	for _, pkg := range regexp.MustCompile(`go build -o \S+ (\./\S+)`).FindAllStringSubmatch(text, -1) {
		if st, err := os.Stat(filepath.Join(repoDir, pkg[1])); err != nil || !st.IsDir() {
			t.Errorf("Dockerfile builds %s, which is not a package directory", pkg[1])
		}
	}
	// The demo, the probe and the gatehouse command are all built.
	for _, want := range []string{"./cmd/gatehouse", "./test/demo/service", "./test/demo/probe"} {
		if !strings.Contains(text, "go build -o /out/") || !strings.Contains(text, want) {
			t.Errorf("Dockerfile does not build %s", want)
		}
	}
}

// TestComposeMatchesGatehouseConfig cross-checks the containers against
// compose/gatehouse.yaml: who mounts which bootstrap, which address each
// demo service listens on, which ports are published.
func TestComposeMatchesGatehouseConfig(t *testing.T) {
	s := loadStack(t)
	cfg := loadGatehouse(t)
	m := &cfg.Mesh
	defaults := scriptDefaults(t)

	gh, ok := s.Services[gatehouseService]
	if !ok {
		t.Fatalf("no %s service", gatehouseService)
	}
	if got := s.mountedFrom(t, gatehouseService, gatehouseConfigPath); filepath.Clean(got) != filepath.Clean(gatehouseFile) {
		t.Errorf("gatehouse mounts %q at %s, want compose/gatehouse.yaml", got, gatehouseConfigPath)
	}
	if !slices.Equal(gh.Command, []string{"serve", "--config", gatehouseConfigPath, "--state-dir", "/var/lib/gatehouse"}) {
		t.Errorf("gatehouse command = %q", gh.Command)
	}
	hasState := false
	for _, v := range gh.Volumes {
		if pm := parseMount(t, v); pm.target == "/var/lib/gatehouse" && !pm.bind() {
			hasState = true
		}
	}
	if !hasState {
		t.Error("gatehouse's state dir is not a named volume: the CA would not survive a re-create")
	}
	if got := s.mountedFrom(t, gatehouseService, cfg.Authz.Policies.Dir); filepath.Clean(got) != filepath.Clean(policiesDir) {
		t.Errorf("authz.policies.dir %s is mounted from %q, want policies/", cfg.Authz.Policies.Dir, got)
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen.Admin); host != "0.0.0.0" {
		t.Errorf("listen.admin %s: want 0.0.0.0 inside the compose network", cfg.Listen.Admin)
	}
	wantPorts := map[string]string{ // host address → service publishing it
		"127.0.0.1:" + port(t, cfg.Listen.Admin):                                         gatehouseService,
		strings.TrimPrefix(strings.TrimPrefix(defaults["ADMIN"], "http://"), "https://"): gatehouseService,
		defaults["EDGE_ADDR"]:         edgeService,
		defaults["INVENTORY_SIDECAR"]: "inventory",
	}
	for addr, svc := range wantPorts {
		found := false
		for _, p := range s.Services[svc].Ports {
			if strings.HasPrefix(p, addr+":") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s does not publish %s (ports %v)", svc, addr, s.Services[svc].Ports)
		}
	}

	// The ext_authz and ADS addresses Envoy is given point at gatehouse.
	if host, p, _ := net.SplitHostPort(m.Authz.Address); host != gatehouseService || p != port(t, cfg.Listen.Authz) {
		t.Errorf("mesh.authz.address %s: want %s:%s", m.Authz.Address, gatehouseService, port(t, cfg.Listen.Authz))
	}

	// Every proxy is a container running Envoy on its bootstrap.
	proxies := map[string]string{} // compose service → bootstrap file
	for _, e := range m.Edges {
		proxies[e.Name] = bootstrapFile(config.RoleEdge, e.Name)
	}
	for _, sc := range m.Sidecars {
		proxies[sc.Service+"-sidecar"] = bootstrapFile(config.RoleSidecar, sc.Name)
	}
	for svcName, file := range proxies {
		svc, ok := s.Services[svcName]
		if !ok {
			t.Errorf("no compose service %s for the proxy with bootstrap %s", svcName, file)
			continue
		}
		if !strings.HasPrefix(svc.Image, envoyImageRepo+":") {
			t.Errorf("%s: image %q, want %s", svcName, svc.Image, envoyImageRepo)
		}
		if got := s.mountedFrom(t, svcName, envoyConfigPath); filepath.Clean(got) != filepath.Join(filepath.Clean(envoyDir), file) {
			t.Errorf("%s mounts %q at %s, want compose/envoy/%s", svcName, got, envoyConfigPath, file)
		}
		if i := slices.Index(svc.Command, "-c"); i < 0 || i+1 >= len(svc.Command) || svc.Command[i+1] != envoyConfigPath {
			t.Errorf("%s: command %q does not run envoy -c %s", svcName, svc.Command, envoyConfigPath)
		}
		if d, ok := svc.DependsOn[gatehouseService]; !ok || d.Condition != "service_healthy" {
			t.Errorf("%s does not wait for a healthy gatehouse", svcName)
		}
	}

	// Sidecars share their service's network namespace; the service is
	// reachable under its compose name on the sidecar's inbound port, and
	// the app listens where the sidecar expects it.
	for _, sc := range m.Sidecars {
		svcName := sc.Service + "-sidecar"
		if got := s.Services[svcName].NetworkMode; got != "service:"+sc.Service {
			t.Errorf("%s: network_mode %q, want service:%s", svcName, got, sc.Service)
		}
		app, ok := s.Services[sc.Service]
		if !ok {
			t.Errorf("no compose service %s", sc.Service)
			continue
		}
		if got := flagValue(app.Command, "-listen"); got != sc.App {
			t.Errorf("%s listens on %q, its sidecar forwards to %s", sc.Service, got, sc.App)
		}
		if flagValue(app.Command, "-name") != sc.Service {
			t.Errorf("%s runs as %q", sc.Service, flagValue(app.Command, "-name"))
		}
		for _, o := range sc.Outbound {
			if got := flagValue(app.Command, "-"+o.Service); got != "http://"+o.Listen {
				t.Errorf("%s calls %s at %q, its sidecar's outbound listener is %s", sc.Service, o.Service, got, o.Listen)
			}
		}
	}
	for _, svc := range m.Services {
		for _, ep := range svc.Endpoints {
			host, _, _ := net.SplitHostPort(ep)
			if _, ok := s.Services[host]; !ok {
				t.Errorf("service %s endpoint %s: %s is not a compose service", svc.Name, ep, host)
			}
		}
	}

	// The scripts' view of the stack.
	edge := m.Edges[0]
	wantEdge := "https://" + edge.TLS.DNSNames[0] + ":" + port(t, edge.Listen)
	if defaults["EDGE"] != wantEdge {
		t.Errorf("lib.sh EDGE %s, want %s", defaults["EDGE"], wantEdge)
	}
	if "127.0.0.1:"+port(t, edge.Listen) != defaults["EDGE_ADDR"] {
		t.Errorf("lib.sh EDGE_ADDR %s, edge listens on %s", defaults["EDGE_ADDR"], edge.Listen)
	}
	if defaults["TRUST_DOMAIN"] != m.TrustDomain {
		t.Errorf("lib.sh TRUST_DOMAIN %s, mesh.trust_domain %s", defaults["TRUST_DOMAIN"], m.TrustDomain)
	}
	inv := m.Service("inventory")
	if inv == nil || port(t, inv.Endpoints[0]) != port(t, defaults["INVENTORY_SIDECAR"]) {
		t.Errorf("lib.sh INVENTORY_SIDECAR %s does not match inventory's sidecar port", defaults["INVENTORY_SIDECAR"])
	}
}

// flagValue returns the argument after name in args ("-name value").
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// bootstrapFile names a proxy's bootstrap like envoy/ does: <role>.yaml when
// the proxy is named like its role, else <role>-<name>.yaml.
func bootstrapFile(role, name string) string {
	if role == name {
		return role + ".yaml"
	}
	return fmt.Sprintf("%s-%s.yaml", role, name)
}
