package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/gatehouse-proxy/gatehouse/extauthz"
	"github.com/gatehouse-proxy/gatehouse/extauthz/assertion"
	"github.com/gatehouse-proxy/gatehouse/extauthz/identity"
	"github.com/gatehouse-proxy/gatehouse/extauthz/jwt"
	"github.com/gatehouse-proxy/gatehouse/extauthz/oidc"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
	"github.com/gatehouse-proxy/gatehouse/internal/admin"
	"github.com/gatehouse-proxy/gatehouse/internal/config"
	"github.com/gatehouse-proxy/gatehouse/internal/logging"
	"github.com/gatehouse-proxy/gatehouse/internal/secretfile"
	"github.com/gatehouse-proxy/gatehouse/internal/store"
	"github.com/gatehouse-proxy/gatehouse/internal/watch"
)

// commonFlags are shared by the server subcommands.
type commonFlags struct {
	config   string
	logLevel string
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "gatehouse.yaml", "path of the Gatehouse config file (YAML)")
	fs.StringVar(&c.logLevel, "log-level", "", "override log.level from the config: debug, info, warn or error")
}

// load reads the config file and builds the process logger from it.
func (c *commonFlags) load(stderr io.Writer) (*config.Config, *slog.Logger, error) {
	cfg, err := config.Load[config.Config](c.config)
	if err != nil {
		return nil, nil, err
	}
	if c.logLevel != "" {
		cfg.Log.Level = c.logLevel
	}
	log, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return nil, nil, err
	}
	return cfg, log, nil
}

func runAuthz(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runServer(ctx, "authz", "Runs the Envoy ext_authz gRPC server (envoy.service.auth.v3.Authorization):\nidentity from bearer JWTs and mTLS peer certificates, decisions from the\nRego policies in the policy directory, reloaded live.", parts{authz: true}, args, stdout, stderr)
}

// buildAuthz assembles the ext_authz server from the config: the policy
// engine and token verifier, their live reloads (started in g) and their
// admin pages.
func buildAuthz(p *process) (*extauthz.Server, error) {
	ctx, g, cfg, stateDir, adminAddr, log, reg, adm := p.ctx, p.g, p.cfg, p.stateDir, p.adminAddr, p.log, p.reg, p.adm
	a := cfg.Authz
	popts := []policy.Option{policy.WithDir(a.Policies.Dir), policy.WithQuery(a.Policies.Query), policy.WithLogger(log)}
	if n := a.Policies.DecisionCache; n != nil {
		popts = append(popts, policy.WithDecisionCache(*n))
	}
	engine, err := policy.New(ctx, popts...)
	if engine == nil {
		return nil, fmt.Errorf("authz.policies: %w", err)
	}
	if err != nil {
		// Keep running and denying: a fix to the files will be picked up.
		log.Error("no valid policy loaded; every request is denied until the policy files are fixed", "err", err)
	}
	adm.AddReadiness("policy", func() error {
		if engine.Status().Revision == "" {
			return errors.New("no policy loaded")
		}
		return nil
	})
	adm.Handle("GET /debug/policy", admin.JSON(func() any { return engine.Status() }))
	pm := newPolicyMetrics(reg, engine)
	pm.record(engine.Status(), err)
	if err := startWatch(g, ctx, log, []string{a.Policies.Dir + string(os.PathSeparator)}, func(ctx context.Context) {
		err := engine.Reload(ctx)
		pm.record(engine.Status(), err)
		if err != nil {
			log.Error("policy reload rejected; last good policy stays active", "err", err)
			return
		}
		log.Info("policy reloaded", "revision", engine.Status().Revision)
	}); err != nil {
		return nil, err
	}

	opts := []extauthz.Option{
		extauthz.WithTimeout(a.Timeout),
		extauthz.WithHeaders(extauthz.HeaderOptions{Prefix: a.Headers.Prefix, StripAuthorization: a.Headers.StripAuthorization}),
		extauthz.WithInputOptions(policy.WithMaxBodyBytes(a.MaxBodyBytes)),
		extauthz.WithLogger(log),
		extauthz.WithMetrics(extauthz.NewMetrics(reg)),
	}
	if len(a.OIDC.Providers) > 0 {
		flow, err := buildOIDC(a.OIDC, log, reg, p.store, cfg.Store.Backend)
		if err != nil {
			return nil, err
		}
		opts = append(opts, extauthz.WithBrowserLogin(flow))
		// For IdPs that can reach the admin listener directly; the same path
		// also works routed through Envoy to Check.
		path := a.OIDC.BackChannelLogoutPath
		if path == "" {
			path = oidc.DefaultBackChannelLogoutPath
		}
		adm.Handle("POST "+path, flow.BackChannelLogoutHandler())
	}
	if len(a.JWT.Issuers) > 0 {
		v, err := buildVerifier(ctx, g, a.JWT, log, reg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, extauthz.WithTokenVerifier(extauthz.JWTTokens(v)))
	}
	if a.Assertion.Enabled {
		m, v, err := buildAssertions(ctx, g, cfg, stateDir, adminAddr, log, adm)
		if err != nil {
			return nil, err
		}
		opts = append(opts, extauthz.WithAssertions(m, v))
	}
	return extauthz.New(engine, opts...), nil
}

// buildAssertions opens the signing keys in <stateDir>/assertion, publishes
// them on the admin server at assertion.JWKSPath and returns the minter and
// a verifier that reads them back through extauthz/jwt's JWKS path, by
// default from this process's own admin listener over loopback.
func buildAssertions(ctx context.Context, g *errgroup.Group, cfg *config.Config, stateDir string, adminAddr net.Addr, log *slog.Logger, adm *admin.Server) (*assertion.Minter, *assertion.Verifier, error) {
	as := cfg.Authz.Assertion
	jwksURI := as.JWKSURI
	if jwksURI == "" {
		jwksURI = "http://" + loopbackAddr(adminAddr) + assertion.JWKSPath
	}
	// The verifier is created first so that rotations can refresh it, and
	// without a prefetch: the admin listener serves only once we return.
	services := make([]string, 0, len(cfg.Mesh.Services))
	for _, s := range cfg.Mesh.Services {
		services = append(services, s.Name)
	}
	chains := make([]assertion.Chain, 0, len(as.Chains))
	for _, c := range as.Chains {
		chains = append(chains, assertion.Chain{From: c.From, To: c.To})
	}
	v, err := assertion.NewVerifier(ctx, assertion.VerifierConfig{
		Issuer: as.Issuer, JWKSURI: jwksURI, TrustDomain: cfg.Mesh.TrustDomain, Services: services, Chains: chains, ClockSkew: as.ClockSkew,
	}, jwt.WithLogger(log), jwt.WithoutPrefetch())
	if err != nil {
		return nil, nil, fmt.Errorf("authz.assertion: %w", err)
	}
	g.Go(func() error { <-ctx.Done(); return v.Close() })
	// Replicas share one read-only key directory when keys_dir is set, so
	// an assertion minted by any of them verifies at every sidecar route;
	// otherwise this process owns its keys in the state directory.
	keyDir := filepath.Join(stateDir, "assertion")
	keyOpts := []assertion.KeyOption{
		assertion.WithRotation(as.Rotation), assertion.WithRetention(as.TTL + as.ClockSkew), assertion.WithKeyLogger(log),
	}
	if as.KeysDir != "" {
		keyDir = as.KeysDir
		keyOpts = append(keyOpts, assertion.WithSharedDir())
	}
	keys, err := assertion.OpenKeySet(keyDir, append(keyOpts,
		assertion.WithOnChange(func() {
			// A new current key must verify here at once, not after the
			// unknown-kid refetch limit.
			go func() {
				if err := v.Refresh(ctx); err != nil && ctx.Err() == nil {
					log.Warn("assertion JWKS refresh after key change failed", "err", err)
				}
			}()
		}))...)
	if err != nil {
		return nil, nil, fmt.Errorf("authz.assertion: %w", err)
	}
	adm.Handle("GET "+assertion.JWKSPath, keys.Handler())
	g.Go(func() error { return keys.Run(ctx) })
	m, err := assertion.NewMinter(keys, as.Issuer, cfg.Mesh.TrustDomain, assertion.WithTTL(as.TTL))
	if err != nil {
		return nil, nil, fmt.Errorf("authz.assertion: %w", err)
	}
	log.Info("assertions enabled", "issuer", as.Issuer, "jwks_uri", jwksURI, "kid", keys.CurrentKeyID(), "shared_keys_dir", as.KeysDir != "")
	return m, v, nil
}

// loopbackAddr is addr as this process reaches it: an unspecified host
// (":9901", "0.0.0.0:9901") becomes the loopback address.
func loopbackAddr(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// buildOIDC turns authz.oidc into a login flow whose logouts and refreshes
// go through st, the process's shared store: with Redis, a back-channel
// logout received by one replica is enforced by all, and a session is
// refreshed once for the fleet. Without cookie key files a random key is
// made for this process, which is fine for one replica that may forget
// sessions on restart, and said loudly; with the Redis backend it is
// refused, since no other replica could open this one's cookies.
func buildOIDC(o config.OIDC, log *slog.Logger, reg prometheus.Registerer, st store.Store, backend string) (*oidc.Flow, error) {
	cfg := oidc.Config{
		CallbackPath: o.CallbackPath, LogoutPath: o.LogoutPath, BackChannelLogoutPath: o.BackChannelLogoutPath,
		PostLogoutPath: o.PostLogoutPath, CookiePrefix: o.CookiePrefix, SessionTTL: o.SessionTTL, LoginTTL: o.LoginTTL,
		RefreshBefore: o.RefreshBefore, ClockSkew: o.ClockSkew, MaxCookieChunks: o.MaxCookieChunks,
	}
	for i, f := range o.CookieKeyFiles {
		raw, err := secretfile.Read(f)
		if err != nil {
			return nil, fmt.Errorf("authz.oidc.cookie_key_files[%d]: %w", i, err)
		}
		key, err := oidc.ParseKey(strings.TrimSpace(string(raw)))
		if err != nil {
			return nil, fmt.Errorf("authz.oidc.cookie_key_files[%d]: %s: %w", i, f, err)
		}
		cfg.CookieKeys = append(cfg.CookieKeys, key)
	}
	if len(cfg.CookieKeys) == 0 && backend == store.BackendRedis {
		return nil, errors.New("authz.oidc.cookie_key_files is empty but store.backend is redis: " +
			"a random per-process cookie key cannot work across replicas; give every replica the same key files")
	}
	if len(cfg.CookieKeys) == 0 {
		key := make([]byte, oidc.KeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		cfg.CookieKeys = [][]byte{key}
		log.Warn("authz.oidc.cookie_key_files is empty: using a random cookie key; sessions end when this process restarts and are not valid on other replicas")
	}
	for _, p := range o.Providers {
		cfg.Providers = append(cfg.Providers, oidc.ProviderConfig{
			Name: p.Name, Issuer: p.Issuer, ClientID: p.ClientID, ClientSecret: p.ClientSecret,
			ClientSecretFile: p.ClientSecretFile, ExternalURL: p.ExternalURL, PathPrefixes: p.PathPrefixes,
			Scopes: p.Scopes, GroupsClaim: p.GroupsClaim, RolesClaim: p.RolesClaim,
			PostLogoutRedirectURL: p.PostLogoutRedirectURL,
		})
	}
	opts := []oidc.Option{oidc.WithLogger(log), oidc.WithRegisterer(reg)}
	if st != nil {
		opts = append(opts, oidc.WithRevocationStore(st))
		if backend == store.BackendRedis {
			// With one replica the in-process singleflight and one-time
			// sets are all it takes.
			opts = append(opts, oidc.WithSharedRefresh(st), oidc.WithSharedClaims(st))
		}
	}
	flow, err := oidc.New(cfg, opts...)
	if err != nil {
		return nil, fmt.Errorf("authz.oidc: %w", err)
	}
	return flow, nil
}

func buildVerifier(ctx context.Context, g *errgroup.Group, jc config.JWT, log *slog.Logger, reg prometheus.Registerer) (*jwt.Verifier, error) {
	fetches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "gatehouse", Subsystem: "jwt", Name: "jwks_fetches_total",
		Help: "JWKS fetches by issuer and result (success, failure).",
	}, []string{"issuer", "result"})
	reg.MustRegister(fetches)
	var ts *jwt.TrustStore
	if jc.TrustStore != "" {
		var err error
		ts, err = jwt.NewTrustStore(jc.TrustStore, jwt.WithTrustStoreLogger(log))
		if err != nil {
			return nil, fmt.Errorf("authz.jwt.trust_store: %w", err)
		}
		if err := startWatch(g, ctx, log, []string{jc.TrustStore + string(os.PathSeparator)}, func(context.Context) {
			if err := ts.Reload(); err != nil {
				log.Error("trust store reload rejected; last good certificates stay", "err", err)
			}
		}); err != nil {
			return nil, err
		}
	}
	issuers := make([]jwt.IssuerConfig, 0, len(jc.Issuers))
	for i, is := range jc.Issuers {
		ic := jwt.IssuerConfig{
			Issuer:      is.Issuer,
			Audiences:   is.Audiences,
			Kind:        identity.Kind(is.Kind),
			Algorithms:  is.Algorithms,
			ClockSkew:   is.ClockSkew,
			RolesClaim:  is.RolesClaim,
			GroupsClaim: is.GroupsClaim,
		}
		for _, s := range is.Strategies {
			switch s {
			case config.StrategyJWKS:
				ic.JWKSURI = is.JWKSURI
				if is.Discovery && ic.JWKSURI == "" {
					ic.DiscoveryURL = is.Issuer
				}
			case config.StrategyX5T:
				ic.X5T, ic.TrustStore = true, ts
			case config.StrategyX5C:
				for _, f := range is.TrustedCAs {
					cas, err := readCerts(f)
					if err != nil {
						return nil, fmt.Errorf("authz.jwt.issuers[%d].trusted_cas: %w", i, err)
					}
					ic.TrustedCAs = append(ic.TrustedCAs, cas...)
				}
			}
		}
		issuers = append(issuers, ic)
	}
	v, err := jwt.NewVerifier(ctx, issuers, jwt.WithLogger(log), jwt.WithTrustStore(ts), jwt.WithCache(jc.CacheSize, 0),
		jwt.WithFetchObserver(func(issuer string, err error) {
			result := "success"
			if err != nil {
				result = "failure"
			}
			fetches.WithLabelValues(issuer, result).Inc()
		}))
	if err != nil {
		return nil, fmt.Errorf("authz.jwt: %w", err)
	}
	g.Go(func() error { <-ctx.Done(); return v.Close() })
	return v, nil
}

// startWatch runs onChange in g whenever a file under paths changes.
func startWatch(g *errgroup.Group, ctx context.Context, log *slog.Logger, paths []string, onChange func(context.Context), opts ...watch.Option) error {
	w, err := watch.New(paths, append([]watch.Option{watch.WithLogger(log)}, opts...)...)
	if err != nil {
		return err
	}
	g.Go(func() error { return w.Run(ctx, onChange) })
	return nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificates", path)
	}
	return out, nil
}

// policyMetrics exposes the policy engine's reload state.
type policyMetrics struct {
	reloads  *prometheus.CounterVec
	revision *prometheus.GaugeVec
}

func newPolicyMetrics(reg prometheus.Registerer, engine *policy.Engine) *policyMetrics {
	m := &policyMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "policy", Name: "reloads_total",
			Help: "Policy loads by result (success, failure).",
		}, []string{"result"}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "gatehouse", Subsystem: "policy", Name: "revision_info",
			Help: "The active policy revision (value 1 on the current revision label).",
		}, []string{"revision"}),
	}
	reg.MustRegister(m.reloads, m.revision,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "policy", Name: "decision_cache_hits_total",
			Help: "Decisions answered from the decision cache.",
		}, func() float64 { return float64(engine.Status().DecisionCache.Hits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "policy", Name: "decision_cache_misses_total",
			Help: "Decisions evaluated while the decision cache was on.",
		}, func() float64 { return float64(engine.Status().DecisionCache.Misses) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "gatehouse", Subsystem: "policy", Name: "decision_cache_entries",
			Help: "Decisions held by the serving revision's cache (0 when it is off: see /debug/policy).",
		}, func() float64 { return float64(engine.Status().DecisionCache.Entries) }),
	)
	return m
}

func (m *policyMetrics) record(st policy.Status, err error) {
	if err != nil {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.revision.Reset()
	m.revision.WithLabelValues(st.Revision).Set(1)
}
