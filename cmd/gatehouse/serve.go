package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/gatehouse-proxy/gatehouse/examples"
	"github.com/gatehouse-proxy/gatehouse/internal/admin"
	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/internal/store"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// process is what the parts of one gatehouse process share: its lifetime,
// config, state directory, observability and shared-state store.
type process struct {
	ctx       context.Context
	g         *errgroup.Group // every goroutine of the process; ends with ctx
	cfg       *config.Config
	cfgPath   string
	stateDir  string
	adminAddr net.Addr
	log       *slog.Logger
	reg       prometheus.Registerer
	adm       *admin.Server
	store     store.Store
}

// parts selects what one process runs.
type parts struct{ authz, xds bool }

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runServer(ctx, "serve", "Runs the xDS control plane and the ext_authz server in one process, with\none admin endpoint. Use `authz` and `xds` to run them separately at scale.", parts{authz: true, xds: true}, args, stdout, stderr)
}

// runServer parses the flags shared by the server commands and runs the
// selected parts until ctx ends.
func runServer(ctx context.Context, name, summary string, p parts, args []string, stdout, stderr io.Writer) int {
	var cf commonFlags
	var authzAddr, xdsAddr, adminAddr, policyDir, stateDir string
	var shutdownDelay, shutdownGrace time.Duration
	fs := newFlagSet(name, "[flags]", summary, stderr)
	cf.register(fs)
	fs.StringVar(&adminAddr, "admin", "", "override listen.admin (HTTP host:port for /healthz, /readyz, /metrics, /debug/*)")
	fs.DurationVar(&shutdownDelay, "shutdown-delay", 0, "override shutdown.delay: after SIGTERM/SIGINT, fail /readyz but keep serving this long before stopping (config default 0; a few seconds on Kubernetes)")
	fs.DurationVar(&shutdownGrace, "shutdown-grace", 0, "override shutdown.grace: how long in-flight ext_authz Checks may take to finish once stopping (config default 10s)")
	if p.authz {
		fs.StringVar(&authzAddr, "listen", "", "override listen.authz (ext_authz gRPC host:port)")
		fs.StringVar(&policyDir, "policies", "", "override authz.policies.dir")
	}
	if p.xds {
		fs.StringVar(&xdsAddr, "xds-listen", "", "override listen.xds (ADS gRPC host:port)")
		fs.StringVar(&stateDir, "state-dir", "state", "directory for the CA and keys; created (0700) with a new CA on first start")
	} else {
		fs.StringVar(&stateDir, "state-dir", "state", "directory for the assertion signing keys (authz.assertion); created (0700) when needed")
	}
	if code, ok := parseFlagsOnly(fs, args); !ok {
		return code
	}
	if err := config.CheckShutdownDelay(shutdownDelay); flagSet(fs, "shutdown-delay") && err != nil {
		return usageError(fs, "--shutdown-delay %v", err)
	}
	if err := config.CheckShutdownGrace(shutdownGrace); flagSet(fs, "shutdown-grace") && err != nil {
		return usageError(fs, "--shutdown-grace %v", err)
	}
	if p.xds && p.authz && !flagSet(fs, "config") {
		// `gatehouse serve` with no config: ./gatehouse.yaml if there is one,
		// else the embedded one-machine defaults, written out on first start.
		path, wrote, err := defaultConfig(cf.config, stateDir)
		if err != nil {
			fmt.Fprintf(stderr, "gatehouse %s: %v\n", name, err)
			return 1
		}
		if wrote {
			fmt.Fprintf(stdout, "gatehouse %s: no --config given: wrote the example config to %s and its policies beside it; edit them, changes apply live\n", name, path)
		}
		cf.config = path
	}
	cfg, log, err := cf.load(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse %s: %v\n", name, err)
		return 1
	}
	override(&cfg.Listen.Authz, authzAddr)
	override(&cfg.Listen.XDS, xdsAddr)
	override(&cfg.Listen.Admin, adminAddr)
	override(&cfg.Authz.Policies.Dir, policyDir)
	if flagSet(fs, "shutdown-delay") {
		cfg.Shutdown.Delay = shutdownDelay
	}
	if flagSet(fs, "shutdown-grace") {
		cfg.Shutdown.Grace = shutdownGrace
	}
	if p.xds {
		printEnvoyHint(stdout, cf.config, cfg)
	}
	if err := serve(ctx, name, p, cfg, cf.config, stateDir, log, stdout); err != nil {
		log.Error("gatehouse stopped", "command", name, "err", err)
		fmt.Fprintf(stderr, "gatehouse %s: %v\n", name, err)
		return 1
	}
	return 0
}

// serve binds every listener first (so a port conflict fails fast), builds
// the parts, prints where they listen, and runs until ctx ends.
func serve(ctx context.Context, name string, p parts, cfg *config.Config, cfgPath, stateDir string, log *slog.Logger, stdout io.Writer) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	adm := admin.New(reg, log)

	var lis []net.Listener
	closeAll := func() {
		for _, l := range lis {
			l.Close()
		}
	}
	listen := func(field, addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		lis = append(lis, l)
		return l, nil
	}
	var banner []string
	var authzLis, xdsLis net.Listener
	var err error
	if p.authz {
		if authzLis, err = listen("listen.authz", cfg.Listen.Authz); err != nil {
			return err
		}
		banner = append(banner, "ext_authz gRPC on "+authzLis.Addr().String())
	}
	if p.xds {
		if xdsLis, err = listen("listen.xds", cfg.Listen.XDS); err != nil {
			return err
		}
		banner = append(banner, "xDS gRPC on "+xdsLis.Addr().String())
	}
	adminLis, err := listen("listen.admin", cfg.Listen.Admin)
	if err != nil {
		return err
	}
	banner = append(banner, "admin HTTP on "+adminLis.Addr().String())

	// ctx ending asks for shutdown; the parts keep serving until the drain
	// is over (see drainAndStop), so they live under life, not ctx.
	requested := ctx
	life, endLife := context.WithCancel(context.WithoutCancel(requested))
	defer endLife()
	g, ctx := errgroup.WithContext(life)
	redis.SetLogger(store.RedisLog{L: log})
	st, err := store.New(ctx, cfg.Store, store.WithLogger(log), store.WithRegisterer(reg))
	if err != nil {
		closeAll()
		return fmt.Errorf("store: %w", err)
	}
	defer st.Close()
	// Shown, not required: every replica shares a Redis outage, and failing
	// readiness everywhere would turn degraded service into none.
	adm.AddInfo("store", st.Healthy)
	proc := &process{ctx: ctx, g: g, cfg: cfg, cfgPath: cfgPath, stateDir: stateDir, adminAddr: adminLis.Addr(),
		log: log, reg: reg, adm: adm, store: st}
	var servers []*grpc.Server
	var serving sync.WaitGroup // the gRPC servers, which the admin server outlives
	if p.authz {
		srv, err := buildAuthz(proc)
		if err != nil {
			closeAll()
			return err
		}
		gs := grpc.NewServer(
			grpc.MaxRecvMsgSize(maxCheckRequestBytes),
			grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		)
		srv.Register(gs)
		servers = append(servers, gs)
		serving.Add(1)
		g.Go(func() error { defer serving.Done(); return gs.Serve(authzLis) })
	}
	if p.xds {
		xs, err := buildXDS(proc)
		if err != nil {
			closeAll()
			return err
		}
		// Closes every xDS stream when ctx ends, so proxies reconnect to
		// another replica (keeping their last config meanwhile).
		serving.Add(1)
		g.Go(func() error { defer serving.Done(); return xs.Serve(ctx, xdsLis) })
	}
	// The admin server answers until the gRPC servers are gone: /readyz
	// says 503 and /healthz 200 through the whole shutdown.
	adminCtx, endAdmin := context.WithCancel(context.WithoutCancel(ctx))
	g.Go(func() error { return adm.Serve(adminCtx, adminLis) })
	g.Go(func() error {
		<-ctx.Done()
		serving.Wait()
		endAdmin()
		return nil
	})
	var began time.Time // when shutdown was requested; read after g.Wait
	g.Go(func() error {
		began = drainAndStop(requested, ctx, endLife, proc, servers)
		return nil
	})
	fmt.Fprintf(stdout, "gatehouse %s: %s\n", name, strings.Join(banner, ", "))
	log.Info("gatehouse started", "command", name, "listening", banner)
	if err := g.Wait(); err != nil {
		return err
	}
	if !began.IsZero() {
		log.Info("stopped", "command", name, "took", time.Since(began).Round(time.Millisecond))
	}
	return nil
}

// drainAndStop runs the shutdown. Asked to stop (requested ends:
// SIGTERM/SIGINT), it fails /readyz at once and keeps everything serving
// for cfg.Shutdown.Delay, so endpoint updates reach kube-proxy and Envoy
// before the listeners close; then it ends the process's life (ctx): the
// xDS streams close and each gRPC server stops gracefully, in-flight
// Checks getting up to cfg.Shutdown.Grace. A second SIGTERM/SIGINT cuts
// both short. When ctx ends first (a part failed) it only stops the
// servers. It returns when shutdown was requested, or zero.
func drainAndStop(requested, ctx context.Context, endLife func(), p *process, servers []*grpc.Server) (began time.Time) {
	sd, log := p.cfg.Shutdown, p.log
	select {
	case <-ctx.Done():
		for _, gs := range servers {
			stopGracefully(gs, sd.Grace, nil)
		}
		return time.Time{}
	case <-requested.Done():
	}
	began = time.Now()
	// Registered before /readyz fails, so a second signal is never missed
	// by anyone who saw it fail.
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	now := make(chan struct{})
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case sig := <-again:
			log.Warn("second signal: stopping now, without waiting for the drain or in-flight calls", "signal", sig.String())
			close(now)
		case <-done:
		}
	}()

	p.adm.Drain()
	log.Info("draining: /readyz fails, still serving", "delay", sd.Delay)
	t := time.NewTimer(sd.Delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-now:
	case <-ctx.Done(): // a part failed meanwhile
	}
	log.Info("stopping: closing xDS streams, ext_authz graceful stop", "drained", time.Since(began).Round(time.Millisecond), "grace", sd.Grace)
	endLife()
	for _, gs := range servers {
		stopGracefully(gs, sd.Grace, now)
	}
	return began
}

// stopGracefully stops gs gracefully (in-flight calls complete, clients get
// GOAWAY), or at once after within or when now closes.
// maxCheckRequestBytes bounds one CheckRequest: the largest body the mesh
// config lets Envoy send (mesh.authz.with_request_body.max_bytes, at most
// 16 MiB) plus room for headers and attributes. Below it, a route sending
// bodies would have every large upload failed by the gRPC server.
const maxCheckRequestBytes = 16<<20 + 1<<20

func stopGracefully(gs *grpc.Server, within time.Duration, now <-chan struct{}) {
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		gs.Stop()
	case <-now:
		gs.Stop()
	}
}

// printEnvoyHint tells the operator how to start a proxy of the config.
func printEnvoyHint(w io.Writer, cfgPath string, cfg *config.Config) {
	var nodes []string
	for _, e := range cfg.Mesh.Edges {
		nodes = append(nodes, e.Name)
	}
	for _, s := range cfg.Mesh.Sidecars {
		nodes = append(nodes, s.Name)
	}
	if len(nodes) == 0 {
		return
	}
	fmt.Fprintf(w, "Envoy nodes in this config: %s. Start one with:\n  gatehouse bootstrap --config %s --node %s --xds %s > envoy.yaml && envoy -c envoy.yaml\n",
		strings.Join(nodes, ", "), cfgPath, nodes[0], dialAddress(cfg.Listen.XDS, "127.0.0.1"))
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// defaultConfig returns the config to use when none was named: cwdConfig if
// it exists, else <stateDir>/gatehouse.yaml, written with the embedded
// defaults (and <stateDir>/policies with the example policies) if absent.
func defaultConfig(cwdConfig, stateDir string) (path string, wrote bool, err error) {
	if _, err := os.Stat(cwdConfig); err == nil {
		return cwdConfig, false, nil
	}
	path = filepath.Join(stateDir, "gatehouse.yaml")
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", false, fmt.Errorf("state directory: %w", err)
	}
	if err := os.CopyFS(filepath.Join(stateDir, "policies"), policies.FS); err != nil {
		return "", false, fmt.Errorf("writing example policies: %w", err)
	}
	if err := os.WriteFile(path, examples.Local, 0o600); err != nil {
		return "", false, fmt.Errorf("writing example config: %w", err)
	}
	return path, true, nil
}

func override(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}
