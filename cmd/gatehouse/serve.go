package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/gatehouse-proxy/gatehouse/internal/admin"
	"github.com/gatehouse-proxy/gatehouse/internal/config"
)

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
	fs := newFlagSet(name, "[flags]", summary, stderr)
	cf.register(fs)
	fs.StringVar(&adminAddr, "admin", "", "override listen.admin (HTTP host:port for /healthz, /readyz, /metrics, /debug/*)")
	if p.authz {
		fs.StringVar(&authzAddr, "listen", "", "override listen.authz (ext_authz gRPC host:port)")
		fs.StringVar(&policyDir, "policies", "", "override authz.policies.dir")
	}
	if p.xds {
		fs.StringVar(&xdsAddr, "xds-listen", "", "override listen.xds (ADS gRPC host:port)")
		fs.StringVar(&stateDir, "state-dir", "state", "directory for the CA and keys; created (0700) with a new CA on first start")
	}
	if code, ok := parseFlagsOnly(fs, args); !ok {
		return code
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

	g, ctx := errgroup.WithContext(ctx)
	var servers []*grpc.Server
	if p.authz {
		srv, err := buildAuthz(ctx, g, cfg, log, reg, adm)
		if err != nil {
			closeAll()
			return err
		}
		gs := grpc.NewServer(
			grpc.MaxRecvMsgSize(4<<20),
			grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		)
		srv.Register(gs)
		servers = append(servers, gs)
		g.Go(func() error { return gs.Serve(authzLis) })
	}
	if p.xds {
		xs, err := buildXDS(ctx, g, cfg, cfgPath, stateDir, log, reg, adm)
		if err != nil {
			closeAll()
			return err
		}
		g.Go(func() error { return xs.Serve(ctx, xdsLis) })
	}
	g.Go(func() error { return adm.Serve(ctx, adminLis) })
	g.Go(func() error {
		<-ctx.Done()
		for _, gs := range servers {
			stopGracefully(gs, 10*time.Second)
		}
		return nil
	})
	fmt.Fprintf(stdout, "gatehouse %s: %s\n", name, strings.Join(banner, ", "))
	log.Info("gatehouse started", "command", name, "listening", banner)
	return g.Wait()
}

func stopGracefully(gs *grpc.Server, within time.Duration) {
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(within):
		gs.Stop()
	}
}

func override(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}
