package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/gatehouse-proxy/gatehouse/certs"
	"github.com/gatehouse-proxy/gatehouse/internal/admin"
	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/internal/store"
	"github.com/gatehouse-proxy/gatehouse/internal/watch"
	"github.com/gatehouse-proxy/gatehouse/xds/bootstrap"
	"github.com/gatehouse-proxy/gatehouse/xds/cache"
	"github.com/gatehouse-proxy/gatehouse/xds/fleet"
	"github.com/gatehouse-proxy/gatehouse/xds/reconcile"
	"github.com/gatehouse-proxy/gatehouse/xds/secrets"
	xdsserver "github.com/gatehouse-proxy/gatehouse/xds/server"
)

func runXDS(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runServer(ctx, "xds", "Runs the xDS control plane: ADS (SotW and delta) serving listeners, routes,\nclusters, endpoints and SDS secrets built from the config's mesh section,\nwith certificates from the CA in the state directory. Config edits apply live.", parts{xds: true}, args, stdout, stderr)
}

// buildXDS assembles the control plane: CA, certificate rotator, cache,
// reconciler (config file → resources) and ADS server, and starts the
// watchers and rotator in g.
func buildXDS(p *process) (*xdsserver.Server, error) {
	ctx, g, cfg, cfgPath, stateDir, log, reg, adm := p.ctx, p.g, p.cfg, p.cfgPath, p.stateDir, p.log, p.reg, p.adm
	caDir := filepath.Join(stateDir, "ca")
	shared := cfg.Store.WithDefaults().Backend == store.BackendRedis
	ca, err := openCA(caDir, cfg.Mesh.TrustDomain, shared, log)
	if err != nil {
		return nil, err
	}
	live := &liveCA{}
	live.ca.Store(ca)
	iss, fl, err := leafIssuer(p, live)
	if err != nil {
		return nil, err
	}
	rot := certs.NewRotator(iss, certs.WithRotatorLogger(log))
	if fl != nil {
		// A leaf renewed by another replica (or after a store reconnect)
		// replaces ours and is pushed like a local renewal, so every
		// replica serves the same secret versions.
		fl.Run(ctx, func(id string, leaf *certs.Leaf) { rot.Adopt(id, leaf) })
		g.Go(func() error { fl.Reshare(ctx, reshareInterval, rot.Renew); return nil })
	}
	c := cache.New(log)
	secretOpts := []secrets.Option{secrets.WithLogger(log)}
	var overrides *certs.DirSource
	if dir := cfg.Mesh.CertDir; dir != "" {
		// Operator certificates must chain to the CA in force at start; after
		// a CA rotation, restart to trust the new CA for them.
		overrides = certs.NewDirSource(dir, ca.TrustPool(), certs.WithSourceLogger(log))
		if err := overrides.Reload(); err != nil {
			log.Error("some operator certificates were rejected; issued ones are served instead", "dir", dir, "err", err)
		}
		secretOpts = append(secretOpts, secrets.WithOverrides(overrides))
	}
	rec := reconcile.New(c, secrets.New(live, rot, secretOpts...), log)
	srvOpts := []xdsserver.Option{xdsserver.WithLogger(log), xdsserver.WithRegisterer(reg)}
	if t := cfg.XDS.TLS; t.Enabled {
		tlsCfg, err := adsTLS(live, rot, cfg.Mesh.TrustDomain, t)
		if err != nil {
			return nil, err
		}
		srvOpts = append(srvOpts, xdsserver.WithTLS(tlsCfg))
		if t.ClientAuth == "require" {
			srvOpts = append(srvOpts, xdsserver.WithNodeAuthorizer(peerIsNode(rec)))
		}
	}
	srv, err := xdsserver.New(c, srvOpts...)
	if err != nil {
		return nil, err
	}
	if err := rec.Apply(ctx, cfg); err != nil {
		// Keep serving nothing rather than exiting: the file may be fixed live.
		log.Error("mesh config not applied; proxies get nothing until it is fixed", "err", err)
	}
	rot.OnRotate(func(id string, _ *certs.Leaf) {
		if err := rec.Rotated(ctx, id); err != nil {
			log.Error("pushing a rotated certificate failed", "spiffe_id", id, "err", err)
		}
	})
	g.Go(func() error { return rot.Run(ctx) })
	if overrides != nil {
		overrides.OnChange(func(name string, _ *certs.Leaf) {
			log.Info("operator certificate changed", "file", name)
			// Content-hashed versions: only nodes whose secrets changed get a push.
			if err := rec.Rotated(ctx, ""); err != nil {
				log.Error("pushing operator certificates failed", "err", err)
			}
		})
		g.Go(func() error { return overrides.Run(ctx) })
		if err := startWatch(g, ctx, log, []string{overrides.Dir() + string(os.PathSeparator)}, func(context.Context) {
			if err := overrides.Reload(); err != nil {
				log.Error("operator certificate rejected; the last good one stays", "dir", overrides.Dir(), "err", err)
			}
		}); err != nil {
			return nil, err
		}
	}
	if err := startWatch(g, ctx, log, []string{cfgPath}, func(ctx context.Context) {
		_ = rec.LoadFile(ctx, cfgPath) // errors are logged and kept in Status
	}, watch.WithDebounce(configDebounce)); err != nil {
		return nil, err
	}
	// `gatehouse ca rotate` rewrites the CA directory: load the new CA, push
	// the new trust bundle (old and new CA during the overlap), re-issue.
	if err := startWatch(g, ctx, log, []string{caDir + string(os.PathSeparator)}, func(ctx context.Context) {
		next, err := certs.Load(caDir, certs.WithTrustDomain(cfg.Mesh.TrustDomain), certs.WithLogger(log))
		if err != nil {
			log.Error("CA files changed but do not load; the current CA stays", "err", err)
			return
		}
		prev := live.ca.Load()
		if next.Certificate().SerialNumber.Cmp(prev.Certificate().SerialNumber) == 0 && len(next.Previous()) == len(prev.Previous()) {
			return
		}
		if fl != nil {
			// Seal with the new CA's key; keep opening what the old one sealed.
			sealer, err := fleet.SealerFor(next, prev)
			if err != nil {
				log.Error("CA files changed but no sealing key derives from them; the current CA stays", "err", err)
				return
			}
			fl.SetSealer(sealer)
		}
		live.ca.Store(next)
		if err := rec.Rotated(ctx, ""); err != nil {
			log.Error("pushing the new trust bundle failed", "err", err)
		}
		rot.RenewAll()
		log.Info("CA rotated", "serial", next.Certificate().SerialNumber.Text(16))
	}); err != nil {
		return nil, err
	}

	reg.MustRegister(certExpiry{rot: rot, live: live})
	adm.AddReadiness("xds-config", rec.Ready)
	adm.Handle("GET /debug/xds", srv.StatusHandler())
	adm.Handle("GET /debug/mesh", admin.JSON(func() any { return rec.Status() }))
	adm.Handle("POST /debug/rotate", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fl != nil {
			// Renew for the whole fleet: this replica issues, the others adopt.
			fl.ForceRenew()
		}
		rot.RenewAll()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "{\"renewing\": %d}\n", len(rot.IDs()))
	}))
	return srv, nil
}

// leafIssuer is what the rotator issues through. With the memory store it
// is the CA itself, as it always was: one replica, leaves issued locally.
// With Redis it is a fleet.Issuer, so an identity's leaf is issued once for
// every replica (sealed in the store with a key derived from the shared CA)
// and all of them serve identical SDS secrets.
func leafIssuer(p *process, live *liveCA) (certs.LeafIssuer, *fleet.Issuer, error) {
	if p.cfg.Store.WithDefaults().Backend != store.BackendRedis || p.store == nil {
		return live, nil, nil
	}
	sealer, err := fleet.SealerFor(live.ca.Load())
	if err != nil {
		return nil, nil, err
	}
	fl := fleet.New(p.store, live, sealer, fleet.WithLogger(p.log))
	return fl, fl, nil
}

// adsTLS is the ADS server's TLS: a certificate from the rotator (renewed
// like every leaf), and client certificates verified against the CA in
// force at each handshake.
func adsTLS(live *liveCA, rot *certs.Rotator, trustDomain string, t config.XDSTLS) (*tls.Config, error) {
	id := "spiffe://" + trustDomain + "/gatehouse/xds"
	opts := []certs.IssueOption{certs.WithDNSNames(t.DNSNames...)}
	if _, err := rot.Get(id, opts...); err != nil {
		return nil, fmt.Errorf("xds.tls: server certificate: %w", err)
	}
	// Parsed once per leaf, not per handshake.
	type parsed struct {
		serial string
		cert   *tls.Certificate
	}
	var current atomic.Pointer[parsed]
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			leaf, err := rot.Get(id, opts...)
			if err != nil {
				return nil, err
			}
			if p := current.Load(); p != nil && p.serial == leaf.Serial {
				return p.cert, nil
			}
			c, err := leaf.TLSCertificate()
			if err != nil {
				return nil, err
			}
			current.Store(&parsed{leaf.Serial, &c})
			return &c, nil
		},
	}
	if t.ClientAuth != "require" {
		return base, nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			c.ClientAuth = tls.RequireAndVerifyClientCert
			c.ClientCAs = live.ca.Load().TrustPool()
			return c, nil
		},
	}, nil
}

// peerIsNode lets a stream subscribe as a node only if its client
// certificate carries that node's SPIFFE id.
func peerIsNode(rec *reconcile.Reconciler) xdsserver.NodeAuthorizer {
	return func(ctx context.Context, nodeID string) error {
		want, ok := rec.NodeIdentity(nodeID)
		if !ok {
			return errors.New("no such node in the mesh config")
		}
		p, ok := peer.FromContext(ctx)
		if !ok {
			return errors.New("no peer")
		}
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(info.State.VerifiedChains) == 0 {
			return errors.New("no verified client certificate")
		}
		for _, u := range info.State.VerifiedChains[0][0].URIs {
			if u.String() == want {
				return nil
			}
		}
		return fmt.Errorf("client certificate is not %s", want)
	}
}

// configDebounce is shorter than the watcher's default: a config edit is
// one file, and a half-written one fails validation and is retried on the
// next event anyway, so waiting longer only delays every proxy's update.
const configDebounce = 40 * time.Millisecond

// reshareInterval is how often a replica that issued leaves for itself
// while Redis was unreachable checks whether Redis is back to re-share them.
const reshareInterval = 5 * time.Second

// certExpiry exports when each held certificate, and the CA, expires, read
// at scrape time so it is never stale.
type certExpiry struct {
	rot  *certs.Rotator
	live *liveCA
}

var certExpiryDesc = prometheus.NewDesc("gatehouse_cert_expiry_timestamp_seconds",
	"Expiry (Unix time) of each certificate Gatehouse serves, by SPIFFE id; the CA as kind=ca.",
	[]string{"kind", "spiffe_id"}, nil)

func (c certExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- certExpiryDesc }

func (c certExpiry) Collect(ch chan<- prometheus.Metric) {
	ca := c.live.ca.Load().Certificate()
	ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(ca.NotAfter.Unix()), "ca", "spiffe://"+c.live.TrustDomain())
	for _, id := range c.rot.IDs() {
		if leaf, ok := c.rot.Current(id); ok {
			ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()), "leaf", id)
		}
	}
}

// errSharedCARequired is openCA's error when replicas would mint their own CA.
var errSharedCARequired = errors.New("shared CA required: run gatehouse ca init and mount it")

// openCA loads the CA in dir, creating one on first start. A replica
// sharing a store (shared) never creates one: replicas with CAs of their
// own would issue leaves the others' proxies do not trust and serve
// different trust bundles, so the CA must come from the shared directory.
func openCA(dir, trustDomain string, shared bool, log *slog.Logger) (*certs.CA, error) {
	ca, err := certs.Load(dir, certs.WithTrustDomain(trustDomain), certs.WithLogger(log))
	if err == nil {
		return ca, nil
	}
	if _, statErr := os.Stat(filepath.Join(dir, "ca.crt")); !errors.Is(statErr, os.ErrNotExist) {
		return nil, fmt.Errorf("state CA: %w", err)
	}
	if shared {
		return nil, fmt.Errorf("state CA %s: store.backend is redis: %w", dir, errSharedCARequired)
	}
	ca, err = certs.Init(dir, certs.WithTrustDomain(trustDomain), certs.WithLogger(log))
	if err != nil {
		return nil, fmt.Errorf("state CA: %w", err)
	}
	log.Info("created a new CA", "dir", dir, "trust_domain", trustDomain)
	return ca, nil
}

// liveCA is the CA currently in force; a CA rotation swaps it while leaves
// are being issued and bundles built.
type liveCA struct{ ca atomic.Pointer[certs.CA] }

func (l *liveCA) Issue(id string, opts ...certs.IssueOption) (*certs.Leaf, error) {
	return l.ca.Load().Issue(id, opts...)
}
func (l *liveCA) TrustBundle() []byte { return l.ca.Load().TrustBundle() }
func (l *liveCA) Certificate() *x509.Certificate {
	return l.ca.Load().Certificate()
}
func (l *liveCA) Previous() []certs.PreviousCA { return l.ca.Load().Previous() }
func (l *liveCA) TrustDomain() string          { return l.ca.Load().TrustDomain() }

// runBootstrap prints the bootstrap a proxy of the config starts with.
func runBootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cf commonFlags
	var node, xdsAddrs, admin string
	var grpcClient bool
	var certFile, keyFile, caFile string
	fs := newFlagSet("bootstrap", "[flags]", "Prints the bootstrap of one proxy named in the config's mesh section: Envoy\nYAML for an edge or sidecar, grpc-go JSON (GRPC_XDS_BOOTSTRAP_CONFIG) for a\ngrpc_clients entry.", stderr)
	cf.register(fs)
	fs.StringVar(&node, "node", "", "proxy name (edge name, sidecar name or grpc client name); required")
	fs.StringVar(&xdsAddrs, "xds", "", "control plane address(es), host:port, comma-separated (replicas; grpc-go lists them in priority order); default listen.xds")
	fs.StringVar(&admin, "envoy-admin", "127.0.0.1:9901", "Envoy admin listener (keep it on loopback)")
	fs.BoolVar(&grpcClient, "grpc", false, "force the grpc-go flavour (default: chosen by the node's role)")
	fs.StringVar(&certFile, "cert", "", "client certificate file: Envoy's for mTLS to the control plane (with xds.tls), a gRPC client's for its certificate provider")
	fs.StringVar(&keyFile, "key", "", "client key file (with --cert)")
	fs.StringVar(&caFile, "ca", "", "CA bundle file the control plane's certificate is checked against")
	var maxHeap uint64
	var maxConns int64
	fs.Uint64Var(&maxHeap, "max-heap", bootstrap.DefaultMaxHeapBytes, "Envoy heap size in bytes the overload manager measures against (shrink heap at 95%, stop accepting requests at 98%): a little under the proxy's memory limit")
	fs.Int64Var(&maxConns, "max-connections", bootstrap.DefaultMaxDownstreamConnections, "Envoy's cap on open downstream connections across its listeners")
	check := fs.String("check", "", "instead of printing one, check an Envoy bootstrap FILE strictly against Envoy's protos (unknown fields, validation rules, every typed_config)")
	if code, ok := parseFlagsOnly(fs, args); !ok {
		return code
	}
	if *check != "" {
		data, err := os.ReadFile(*check)
		if err == nil {
			var bs *bootstrapv3.Bootstrap
			if bs, err = bootstrap.Parse(data); err == nil {
				fmt.Fprintf(stdout, "ok: %s is a valid Envoy bootstrap for node %q\n", *check, bs.GetNode().GetId())
				return 0
			}
		}
		fmt.Fprintf(stderr, "gatehouse bootstrap: %s: %v\n", *check, err)
		return 1
	}
	if node == "" {
		fmt.Fprintln(stderr, "gatehouse bootstrap: --node is required")
		fs.Usage()
		return 2
	}
	cfg, err := config.Load[config.Config](cf.config)
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse bootstrap: %v\n", err)
		return 1
	}
	role, ok := nodeRole(&cfg.Mesh, node)
	if !ok {
		fmt.Fprintf(stderr, "gatehouse bootstrap: %s: no proxy named %q in mesh.edges, mesh.sidecars or mesh.grpc_clients\n", cf.config, node)
		return 1
	}
	asGRPC := grpcClient || role == config.RoleGRPC
	cps := strings.Split(xdsAddrs, ",")
	if xdsAddrs == "" {
		loopback := "127.0.0.1"
		if asGRPC && cfg.XDS.TLS.Enabled {
			// grpc-go checks the dialled name against the server's
			// certificate, which names xds.tls.dns_names, no IP (Envoy
			// matches the SPIFFE URI SAN instead).
			loopback = tlsLoopbackName(cfg.XDS.TLS.DNSNames)
		}
		cps = []string{dialAddress(cfg.Listen.XDS, loopback)}
	}
	var out []byte
	if asGRPC {
		out, err = bootstrap.RenderGRPC(bootstrap.GRPCOptions{NodeID: node, ControlPlane: cps[0], Fallbacks: cps[1:], Insecure: !cfg.XDS.TLS.Enabled, CertFile: certFile, KeyFile: keyFile, CAFile: caFile})
	} else {
		if maxHeap == 0 || maxConns <= 0 {
			fmt.Fprintln(stderr, "gatehouse bootstrap: --max-heap and --max-connections must be positive")
			return 2
		}
		o := bootstrap.Options{NodeID: node, Cluster: role, ControlPlane: cps, AdminAddress: admin, MaxHeapBytes: maxHeap, MaxDownstreamConnections: maxConns}
		if cfg.XDS.TLS.Enabled {
			if certFile == "" || keyFile == "" || caFile == "" {
				fmt.Fprintln(stderr, "gatehouse bootstrap: xds.tls is enabled: --cert, --key and --ca are required (issue them with `gatehouse ca issue`)")
				return 2
			}
			o.TLS = &bootstrap.TLS{CertFile: certFile, KeyFile: keyFile, CAFile: caFile,
				ServerSAN: "spiffe://" + cfg.Mesh.TrustDomain + "/gatehouse/xds"}
		}
		out, err = bootstrap.Render(o)
	}
	if err != nil {
		fmt.Fprintf(stderr, "gatehouse bootstrap: %v\n", err)
		return 1
	}
	_, _ = stdout.Write(out)
	return 0
}

// nodeRole finds a proxy by node id.
func nodeRole(m *config.Mesh, node string) (string, bool) {
	for _, e := range m.Edges {
		if e.Name == node {
			return config.RoleEdge, true
		}
	}
	for _, s := range m.Sidecars {
		if s.Name == node {
			return config.RoleSidecar, true
		}
	}
	for _, c := range m.GRPCClients {
		if c.Name == node {
			return config.RoleGRPC, true
		}
	}
	return "", false
}

// dialAddress turns a listen address into one a client on this machine
// can dial: a listener on every interface (":18000", "0.0.0.0:18000",
// "[::]:…") is reached at loopback.
func dialAddress(listen, loopback string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = loopback
	}
	return net.JoinHostPort(host, port)
}

// tlsLoopbackName is the name a local gRPC client dials so the xDS
// server's certificate matches: localhost when it is among the names.
func tlsLoopbackName(dnsNames []string) string {
	if len(dnsNames) == 0 || slices.Contains(dnsNames, "localhost") {
		return "localhost"
	}
	return dnsNames[0]
}
