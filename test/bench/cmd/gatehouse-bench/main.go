// Command gatehouse-bench is Gatehouse's benchmark harness (`make bench`).
//
// ext_authz: it runs a no-op Check server, `gatehouse authz` (Rego only,
// RS256 JWT + Rego with one token and with many distinct tokens) and
// opa-envoy-plugin with equivalent policies, one at a time, pinned to
// their own CPUs, under the authzload generator at fixed concurrency,
// alternating the servers over several rounds; every figure is reported as
// a ratio to the no-op server measured in the same round.
//
// OIDC session cookies and replicas: it starts a real redis-server and a
// real Dex (test/dex, internal/store/redistest), logs in once through Dex
// to get a real sealed session cookie (cookie keys from a shared file),
// and replays it at `gatehouse authz` with the memory store, with the
// Redis store, and at two Redis-store replicas over which the load
// generator spreads its connections round-robin, as Envoy's cluster does
// (-skip-session skips them).
//
// xDS: it runs `gatehouse xds` on a generated 50-service mesh and a fleet
// of simulated Envoys (SotW and delta) and times a config edit, an
// endpoint change and a certificate rotation until the last stream has
// them, with heap, RSS and goroutines per stream.
//
// It prints one table per harness with the targets beside the results and
// writes every sample to a JSON file.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gatehouse-proxy/gatehouse/test/bench/authzload"
	"github.com/gatehouse-proxy/gatehouse/test/bench/internal/proc"
	"github.com/gatehouse-proxy/gatehouse/test/bench/xdsload"
)

// opaEnvoyVersion is the opa-envoy-plugin release compared against; the
// wrapper module in test/bench/opaenvoy pins it.
const opaEnvoyVersion = "v1.15.2-envoy"

type flags struct {
	quick       bool
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	concs       string
	distinct    int
	streams     int
	xdsRounds   int
	out         string
	cacheDir    string
	skipAuthz   bool
	skipXDS     bool
	skipOPA     bool
	skipSession bool
	noPin       bool
	readmeTable string
	cases       string
}

func main() {
	var f flags
	fs := flag.NewFlagSet("gatehouse-bench", flag.ExitOnError)
	fs.BoolVar(&f.quick, "quick", os.Getenv("BENCH_QUICK") != "", "short run (~2 min): c=16 only, 2 rounds of 2s, 1000 xDS streams (env BENCH_QUICK=1)")
	fs.DurationVar(&f.duration, "duration", 5*time.Second, "measured time per ext_authz load")
	fs.DurationVar(&f.warmup, "warmup", time.Second, "unmeasured warm-up before each ext_authz load")
	fs.IntVar(&f.rounds, "rounds", 3, "ext_authz rounds (servers alternate within each)")
	fs.StringVar(&f.concs, "concurrency", "1,16,64", "ext_authz concurrency levels, comma-separated")
	fs.IntVar(&f.distinct, "distinct-tokens", 2000, "tokens in the distinct-token cases")
	fs.IntVar(&f.streams, "streams", 5000, "simulated xDS proxies")
	fs.IntVar(&f.xdsRounds, "xds-rounds", 1, "xDS rounds (SotW and delta each round)")
	fs.StringVar(&f.out, "out", "bench-results.json", "raw results (JSON)")
	fs.StringVar(&f.cacheDir, "cache", os.Getenv("GATEHOUSE_CACHE"), "binary cache directory (default <repo>/.cache)")
	fs.BoolVar(&f.skipAuthz, "skip-authz", false, "skip the ext_authz harness")
	fs.BoolVar(&f.skipXDS, "skip-xds", false, "skip the xDS harness")
	fs.BoolVar(&f.skipOPA, "skip-opa", false, "do not build or run opa-envoy-plugin")
	fs.BoolVar(&f.skipSession, "skip-session", false, "skip the OIDC session-cookie and replica cases (they start Dex and redis-server)")
	fs.StringVar(&f.cases, "cases", "", "run only the ext_authz cases whose names match this regexp (the no-op server always runs: every figure is a ratio to it)")
	fs.BoolVar(&f.noPin, "no-pin", false, "do not pin the load generator and the server to separate CPUs")
	_ = fs.Parse(os.Args[1:])
	if f.quick {
		set := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
		quick := map[string]func(){
			"duration": func() { f.duration = 2 * time.Second }, "warmup": func() { f.warmup = 500 * time.Millisecond },
			"rounds": func() { f.rounds = 2 }, "concurrency": func() { f.concs = "16" }, "streams": func() { f.streams = 1000 },
			"distinct-tokens": func() { f.distinct = 1000 },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, f, log, os.Stdout); err != nil {
		log.Error("gatehouse-bench", "err", err)
		os.Exit(1)
	}
}

// binaries are the programs under test.
type binaries struct {
	repo, gatehouse, noop, opa string
	opaSkip                    string // why opa is "" (skipped)
}

// report is the JSON file.
type report struct {
	Started  time.Time         `json:"started"`
	Machine  map[string]string `json:"machine"`
	Settings map[string]string `json:"settings"`
	Authz    *authzReport      `json:"authz,omitempty"`
	XDS      *xdsReport        `json:"xds,omitempty"`
}

type authzReport struct {
	Cases   []*authzCase      `json:"cases"`
	Skipped map[string]string `json:"skipped,omitempty"`
	Samples []authzSample     `json:"samples"`
	Summary []authzSummary    `json:"summary"`
	Targets []target          `json:"targets"`
}

type xdsReport struct {
	Mesh    xdsload.Mesh      `json:"mesh"`
	Runs    []*xdsload.Result `json:"runs"`
	Targets []target          `json:"targets"`
}

func run(ctx context.Context, f flags, log *slog.Logger, stdout io.Writer) error {
	repo, err := proc.RepoRoot()
	if err != nil {
		return err
	}
	if f.cacheDir == "" {
		f.cacheDir = filepath.Join(repo, ".cache")
	}
	binDir := filepath.Join(f.cacheDir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "gatehouse-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	bins := binaries{repo: repo, gatehouse: filepath.Join(binDir, "gatehouse"), noop: filepath.Join(binDir, "noopauthz")}
	log.Info("building gatehouse and noopauthz")
	if err := proc.Build(ctx, repo, "./cmd/gatehouse", bins.gatehouse); err != nil {
		return err
	}
	if err := proc.Build(ctx, repo, "./test/bench/noopauthz", bins.noop); err != nil {
		return err
	}
	if !f.skipAuthz {
		bins.opa, bins.opaSkip = buildOPA(ctx, repo, binDir, f.skipOPA, log)
	}

	rep := &report{Started: time.Now().UTC(), Machine: machine(), Settings: map[string]string{
		"duration": f.duration.String(), "warmup": f.warmup.String(), "rounds": strconv.Itoa(f.rounds),
		"concurrency": f.concs, "distinct_tokens": strconv.Itoa(f.distinct), "streams": strconv.Itoa(f.streams),
		"quick": strconv.FormatBool(f.quick), "opa_envoy_plugin": opaEnvoyVersion,
	}}
	if !f.skipAuthz {
		ar, err := runAuthzHarness(ctx, f, bins, work, log)
		if err != nil {
			return err
		}
		rep.Authz = ar
		printAuthz(stdout, ar, f)
	}
	if !f.skipXDS {
		xr, err := runXDSHarness(ctx, f, bins, work, log)
		if err != nil {
			return err
		}
		rep.XDS = xr
		printXDS(stdout, xr, f)
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(f.out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nraw results: %s\n", f.out)
	return nil
}

// buildOPA builds opa-envoy-plugin from the wrapper module once; the
// binary is cached by version. It returns "" and the reason when it cannot.
func buildOPA(ctx context.Context, repo, binDir string, skip bool, log *slog.Logger) (bin, reason string) {
	if skip {
		return "", "skipped by -skip-opa"
	}
	bin = filepath.Join(binDir, "opa-envoy-plugin-"+opaEnvoyVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin, ""
	}
	log.Info("building opa-envoy-plugin (first run only; cached in " + binDir + ")")
	if err := proc.Build(ctx, filepath.Join(repo, "test", "bench", "opaenvoy"), ".", bin); err != nil {
		log.Warn("opa-envoy-plugin cannot be built; its cases are skipped", "err", err)
		return "", "opa-envoy-plugin " + opaEnvoyVersion + " could not be built: " + firstLine(err.Error())
	}
	return bin, ""
}

func runAuthzHarness(ctx context.Context, f flags, bins binaries, work string, log *slog.Logger) (*authzReport, error) {
	var concs []int
	for _, s := range strings.Split(f.concs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-concurrency: bad level %q", s)
		}
		concs = append(concs, n)
	}
	is, err := authzload.NewIssuer()
	if err != nil {
		return nil, err
	}
	defer is.Close()
	env := &authzEnv{bins: bins, issuer: is, distinct: f.distinct, log: log}
	client, server := proc.SplitCPUs()
	if !f.noPin && client != nil {
		env.cpus = server
		all := append(append([]int{}, client...), server...)
		prev := runtime.GOMAXPROCS(0)
		if err := proc.PinSelf(client); err != nil {
			log.Warn("cannot pin the load generator; running unpinned", "err", err)
			env.cpus = nil
		} else {
			log.Info("pinned", "load_generator_cpus", client, "server_cpus", server)
			defer func() {
				_ = proc.PinAll(os.Getpid(), all)
				runtime.GOMAXPROCS(prev)
			}()
		}
	}
	if f.skipSession {
		env.sessionSkip = "skipped by -skip-session"
	} else if se, err := env.setupSession(ctx, work); err != nil {
		log.Warn("the session-cookie cases cannot run", "err", err)
		env.sessionSkip = "setup failed: " + firstLine(err.Error())
	} else {
		env.session = se
		defer se.tb.close()
	}
	cs, skipped, err := env.cases()
	if err != nil {
		return nil, err
	}
	if f.cases != "" {
		re, err := regexp.Compile(f.cases)
		if err != nil {
			return nil, fmt.Errorf("-cases: %w", err)
		}
		cs = slices.DeleteFunc(cs, func(c *authzCase) bool { return c.Name != "noop" && !re.MatchString(c.Name) })
	}
	for name, why := range skipped {
		log.Warn("SKIP "+name, "reason", why)
	}
	samples, err := env.runAuthz(ctx, cs, concs, f.rounds, f.duration, f.warmup, work)
	if err != nil {
		return nil, err
	}
	ar := &authzReport{Cases: cs, Skipped: skipped, Samples: samples}
	ar.Summary = summarize(cs, concs, samples)
	ar.Targets = authzTargets(cs, samples)
	return ar, nil
}

func runXDSHarness(ctx context.Context, f flags, bins binaries, work string, log *slog.Logger) (*xdsReport, error) {
	xr := &xdsReport{Mesh: xdsload.DefaultMesh()}
	for r := range f.xdsRounds {
		for _, delta := range []bool{false, true} {
			dir, err := os.MkdirTemp(work, "xds")
			if err != nil {
				return nil, err
			}
			res, err := xdsload.Run(ctx, xdsload.Options{Bin: bins.gatehouse, Dir: dir, Streams: f.streams, Delta: delta, Mesh: xr.Mesh, Log: log})
			if err != nil {
				return nil, fmt.Errorf("xds round %d: %w", r+1, err)
			}
			xr.Runs = append(xr.Runs, res)
			os.RemoveAll(dir)
		}
	}
	xr.Targets = xdsTargets(xr.Runs, f.streams)
	return xr, nil
}

func machine() map[string]string {
	m := map[string]string{
		"cpus": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version(), "goos": runtime.GOOS, "goarch": runtime.GOARCH,
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m["loadavg_at_start"] = strings.TrimSpace(string(b))
	}
	return m
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
