package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/gatehouse-proxy/gatehouse/test/bench/authzload"
	"github.com/gatehouse-proxy/gatehouse/test/bench/internal/proc"
)

// ordersPolicy is the shape of every bench policy: allow GET /api/orders/…
// when one more condition holds (a header, a role from a verified token, a
// logged-in session), so the servers compared differ only in where that
// condition comes from. prelude holds the rules the condition needs.
func ordersPolicy(prelude, cond string) string {
	return "package envoy.authz\n\ndefault allow := false\n\n" + prelude + `allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "api"
	input.parsed_path[1] == "orders"
	` + cond + "\n}\n"
}

var (
	// regoOnly decides on method, path and a header: no identity. Both
	// Gatehouse and opa-envoy-plugin serve it unchanged.
	regoOnly = ordersPolicy("", `input.attributes.request.http.headers["x-tenant"] == "acme"`)

	// gatehouseRBAC is RBAC on the identity Gatehouse established from the
	// bearer token.
	gatehouseRBAC = ordersPolicy("", `"reader" in input.identity.roles`)

	// opaJWTRBAC is the same RBAC for opa-envoy-plugin, which must verify
	// the RS256 token itself: io.jwt.decode_verify against the inlined JWKS
	// (first %q), with iss (second %q) and aud checked as Gatehouse checks
	// them.
	opaJWTRBAC = ordersPolicy(`jwks := %q

token := t if {
	auth := input.attributes.request.http.headers.authorization
	startswith(auth, "Bearer ")
	t := substring(auth, 7, -1)
}

claims := payload if {
	[valid, _, payload] := io.jwt.decode_verify(token, {"cert": jwks, "iss": %q, "aud": "gatehouse"})
	valid
}

`, `"reader" in claims.roles`)
)

// authzCase is one server configuration with its request fixtures.
type authzCase struct {
	Name   string `json:"name"`
	Server string `json:"server"` // noop, gatehouse, opa-envoy-plugin
	Desc   string `json:"desc"`
	// start runs the server in dir and returns it with its gRPC address.
	start func(ctx context.Context, dir string) (*proc.Process, string, error)
	// startN, when set instead of start, runs several processes (replicas)
	// the load generator spreads its connections over.
	startN   func(ctx context.Context, dir string) ([]*proc.Process, []string, error)
	fixtures []authzload.Fixture
	// Replicas is the number of server processes (1 unless startN).
	Replicas int `json:"replicas,omitempty"`
	policy   int // bytes of policy source
}

type authzEnv struct {
	bins     binaries
	cpus     []int
	issuer   *authzload.Issuer
	distinct int
	log      *slog.Logger
	// session is shared by the session-cookie cases; nil with sessionSkip
	// saying why they cannot run.
	session     *sessionEnv
	sessionSkip string
}

// cases builds every case that can run here; skipped ones are returned
// with their reasons.
func (e *authzEnv) cases() ([]*authzCase, map[string]string, error) {
	skipped := map[string]string{}
	is := e.issuer
	plain := func(extra map[string]string, allow bool) authzload.Fixture {
		method := "GET"
		f, err := authzload.NewFixture(authzload.Request(method, "/api/orders/42", extra), allow)
		if err != nil {
			panic(err) // a fixed, valid message always encodes
		}
		return f
	}
	// Nine allowed requests to one denied: a wrong answer either way fails.
	mix := func(allow, deny authzload.Fixture) []authzload.Fixture {
		out := make([]authzload.Fixture, 0, 10)
		for range 9 {
			out = append(out, allow)
		}
		return append(out, deny)
	}
	reader, err := is.Token("alice", "", "reader")
	if err != nil {
		return nil, nil, err
	}
	guest, err := is.Token("guest", "", "guest")
	if err != nil {
		return nil, nil, err
	}
	regoFix := mix(plain(nil, true), plain(map[string]string{"x-tenant": "globex"}, false))
	jwtFix := mix(plain(map[string]string{"authorization": "Bearer " + reader}, true), plain(map[string]string{"authorization": "Bearer " + guest}, false))
	e.log.Info("signing distinct tokens", "n", e.distinct)
	distinctFix := make([]authzload.Fixture, e.distinct)
	for i := range distinctFix {
		role, allow := "reader", true
		if i%10 == 9 {
			role, allow = "guest", false
		}
		tok, err := is.Token(fmt.Sprintf("user-%d", i), fmt.Sprintf("jti-%d", i), role)
		if err != nil {
			return nil, nil, err
		}
		distinctFix[i] = plain(map[string]string{"authorization": "Bearer " + tok}, allow)
	}
	opaJWT := fmt.Sprintf(opaJWTRBAC, is.JWKS(), is.URL())

	cs := []*authzCase{
		{Name: "noop", Server: "noop", Desc: "no-op Check server (gRPC limit)", fixtures: mix(plain(nil, true), plain(nil, true)), start: e.startNoop},
		{Name: "gatehouse-rego", Server: "gatehouse", Desc: "Rego only", fixtures: regoFix, policy: len(regoOnly), start: e.startGatehouse(regoOnly, 0, true)},
		{Name: "gatehouse-rego-nocache", Server: "gatehouse", Desc: "Rego only, decision cache off", fixtures: regoFix, policy: len(regoOnly), start: e.startGatehouse(regoOnly, 0, false)},
		{Name: "gatehouse-jwt", Server: "gatehouse", Desc: "RS256 JWT + Rego RBAC, same token", fixtures: jwtFix, policy: len(gatehouseRBAC), start: e.startGatehouse(gatehouseRBAC, 0, true)},
		{Name: "gatehouse-jwt-nocache", Server: "gatehouse", Desc: "RS256 JWT + Rego RBAC, same token, decision cache off", fixtures: jwtFix, policy: len(gatehouseRBAC), start: e.startGatehouse(gatehouseRBAC, 0, false)},
		{Name: "gatehouse-jwt-distinct", Server: "gatehouse", Desc: fmt.Sprintf("RS256 JWT + Rego, %d distinct tokens, cache_size 1", e.distinct), fixtures: distinctFix, policy: len(gatehouseRBAC), start: e.startGatehouse(gatehouseRBAC, 1, true)},
	}
	sessionCases := []string{"gatehouse-session-memory", "gatehouse-session-redis", "gatehouse-session-redis-2x"}
	if e.session == nil {
		for _, n := range sessionCases {
			skipped[n] = e.sessionSkip
		}
	} else {
		fix := e.session.fixtures()
		cs = append(cs,
			&authzCase{Name: sessionCases[0], Server: "gatehouse", Desc: "OIDC session cookie (real Dex login) + Rego, store memory", fixtures: fix, policy: len(sessionPolicy), startN: e.startSession(e.session, "memory", 1), Replicas: 1},
			&authzCase{Name: sessionCases[1], Server: "gatehouse", Desc: "OIDC session cookie + Rego, store redis", fixtures: fix, policy: len(sessionPolicy), startN: e.startSession(e.session, "redis", 1), Replicas: 1},
			&authzCase{Name: sessionCases[2], Server: "gatehouse", Desc: "OIDC session cookie + Rego, store redis, 2 replicas (connections round-robin; same server CPUs)", fixtures: fix, policy: len(sessionPolicy), startN: e.startSession(e.session, "redis", 2), Replicas: 2},
		)
	}
	if e.bins.opa == "" {
		for _, n := range []string{"opa-rego", "opa-jwt", "opa-jwt-distinct"} {
			skipped[n] = e.bins.opaSkip
		}
	} else {
		cs = append(cs,
			&authzCase{Name: "opa-rego", Server: "opa-envoy-plugin", Desc: "Rego only", fixtures: regoFix, policy: len(regoOnly), start: e.startOPA(regoOnly, 10000)},
			&authzCase{Name: "opa-jwt", Server: "opa-envoy-plugin", Desc: "io.jwt.decode_verify + Rego, same token, io_jwt cache 10000", fixtures: jwtFix, policy: len(opaJWT), start: e.startOPA(opaJWT, 10000)},
			&authzCase{Name: "opa-jwt-distinct", Server: "opa-envoy-plugin", Desc: fmt.Sprintf("io.jwt.decode_verify + Rego, %d distinct tokens, io_jwt cache 1", e.distinct), fixtures: distinctFix, policy: len(opaJWT), start: e.startOPA(opaJWT, 1)},
		)
	}
	return cs, skipped, nil
}

func (e *authzEnv) startNoop(ctx context.Context, _ string) (*proc.Process, string, error) {
	p, addrs, err := proc.Start(ctx, e.bins.noop, []string{"-listen", "127.0.0.1:0"}, proc.Options{CPUs: e.cpus})
	if err != nil {
		return nil, "", err
	}
	return p, addrs[0], nil
}

// startGatehouse runs `gatehouse authz` with one policy file; decision
// logging is off (log.level warn) as it is in opa-envoy-plugin's default.
// cacheSize is the verified-token cache (0: default); decisionCache false
// turns the policy decision cache off, so every request is evaluated.
func (e *authzEnv) startGatehouse(policy string, cacheSize int, decisionCache bool) func(context.Context, string) (*proc.Process, string, error) {
	return func(ctx context.Context, dir string) (*proc.Process, string, error) {
		pdir := filepath.Join(dir, "policies")
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(filepath.Join(pdir, "authz.rego"), []byte(policy), 0o644); err != nil {
			return nil, "", err
		}
		cache := ""
		if cacheSize > 0 {
			cache = fmt.Sprintf("    cache_size: %d\n", cacheSize)
		}
		dcache := ""
		if !decisionCache {
			dcache = "    decision_cache: 0\n"
		}
		cfg := filepath.Join(dir, "gatehouse.yaml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen:
  authz: 127.0.0.1:0
  admin: 127.0.0.1:0
log:
  level: warn
authz:
  policies:
    dir: %s
    query: data.envoy.authz.allow
%s  jwt:
%s    issuers:
      - issuer: %s
        audiences: [gatehouse]
        jwks_uri: %s
        algorithms: [RS256]
`, pdir, dcache, cache, e.issuer.URL(), e.issuer.JWKSURI())), 0o644); err != nil {
			return nil, "", err
		}
		p, addrs, err := proc.Start(ctx, e.bins.gatehouse, []string{"authz", "--config", cfg}, proc.Options{CPUs: e.cpus, Ready: regexp.MustCompile(`ext_authz gRPC on`)})
		if err != nil {
			return nil, "", err
		}
		return p, addrs[0], nil
	}
}

// startOPA runs opa-envoy-plugin with the envoy_ext_authz_grpc plugin on
// path envoy/authz/allow, decision logs off (its default).
func (e *authzEnv) startOPA(policy string, jwtCache int) func(context.Context, string) (*proc.Process, string, error) {
	return func(ctx context.Context, dir string) (*proc.Process, string, error) {
		grpcAddr, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		httpAddr, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		pf := filepath.Join(dir, "policy.rego")
		if err := os.WriteFile(pf, []byte(policy), 0o644); err != nil {
			return nil, "", err
		}
		cfg := filepath.Join(dir, "opa.yaml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`plugins:
  envoy_ext_authz_grpc:
    addr: %s
    path: envoy/authz/allow
    enable-reflection: false
caching:
  inter_query_builtin_value_cache:
    named:
      io_jwt:
        max_num_entries: %d
`, grpcAddr, jwtCache)), 0o644); err != nil {
			return nil, "", err
		}
		p, _, err := proc.Start(ctx, e.bins.opa, []string{"run", "--server", "--addr", httpAddr, "--log-level", "error", "--config-file", cfg, pf},
			proc.Options{CPUs: e.cpus, NoWait: true})
		if err != nil {
			return nil, "", err
		}
		if err := waitDial(ctx, p, grpcAddr, 60*time.Second); err != nil {
			p.Stop()
			return nil, "", fmt.Errorf("opa-envoy-plugin gRPC %s: %w\n%s", grpcAddr, err, p.Tail())
		}
		return p, grpcAddr, nil
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitDial(ctx context.Context, p *proc.Process, addr string, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for {
		if p.Exited() {
			return errors.New("exited")
		}
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(end) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// authzSample is one (case, concurrency, round) measurement.
type authzSample struct {
	Case        string  `json:"case"`
	Concurrency int     `json:"concurrency"`
	Round       int     `json:"round"`
	RPS         float64 `json:"rps"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	CPUusPerReq float64 `json:"server_cpu_us_per_request"`
	PeakRSS     int64   `json:"server_peak_rss_bytes"`
	// AnonRSS and FileRSS split the RSS at the end of the measured load.
	AnonRSS   int64  `json:"server_anon_rss_bytes"`
	FileRSS   int64  `json:"server_file_rss_bytes"`
	Requests  int64  `json:"requests"`
	Failures  int64  `json:"failures"`
	FirstFail string `json:"first_failure,omitempty"`
}

// runAuthz runs every case at every concurrency for rounds rounds,
// rotating the order of the servers each round.
func (e *authzEnv) runAuthz(ctx context.Context, cs []*authzCase, concs []int, rounds int, dur, warm time.Duration, work string) ([]authzSample, error) {
	var out []authzSample
	for r := range rounds {
		order := slices.Clone(cs)
		k := r % len(order)
		order = append(order[k:], order[:k]...)
		for _, c := range order {
			dir, err := os.MkdirTemp(work, c.Name)
			if err != nil {
				return nil, err
			}
			procs, addrs, err := c.run(ctx, dir)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c.Name, err)
			}
			stopAll := func() {
				for _, p := range procs {
					p.Stop()
				}
			}
			// CPU is summed over the processes; peak RSS too (the fleet's memory).
			readStats := func() proc.Stats {
				var sum proc.Stats
				for _, p := range procs {
					st, _ := proc.ReadStats(p.Pid())
					sum.CPU += st.CPU
					sum.PeakRSS += st.PeakRSS
					sum.AnonRSS += st.AnonRSS
					sum.FileRSS += st.FileRSS
				}
				return sum
			}
			for _, conc := range concs {
				var before, after proc.Stats
				res, err := authzload.Run(ctx, authzload.Load{
					Addrs: addrs, Concurrency: conc, Duration: dur, Warmup: warm, Conns: min(conc, 2), Fixtures: c.fixtures,
					OnMeasure: func(start bool) {
						if start {
							before = readStats()
						} else {
							after = readStats()
						}
					},
				})
				if err != nil {
					tails := ""
					for _, p := range procs {
						tails += p.Tail()
					}
					stopAll()
					return nil, fmt.Errorf("%s c=%d: %w\n%s", c.Name, conc, err, tails)
				}
				s := authzSample{Case: c.Name, Concurrency: conc, Round: r + 1, RPS: res.RPS,
					P50us: us(res.P50), P99us: us(res.P99), PeakRSS: after.PeakRSS, AnonRSS: after.AnonRSS, FileRSS: after.FileRSS, Requests: res.Requests,
					Failures: res.Failures, FirstFail: res.FirstFailure}
				if res.Requests > 0 {
					s.CPUusPerReq = us(after.CPU-before.CPU) / float64(res.Requests)
				}
				e.log.Info("authz", "case", c.Name, "c", conc, "round", r+1, "rps", int(s.RPS), "p99_us", int(s.P99us), "failures", s.Failures)
				out = append(out, s)
			}
			stopAll()
			os.RemoveAll(dir)
		}
	}
	return out, nil
}

// run starts the case's server process(es).
func (c *authzCase) run(ctx context.Context, dir string) ([]*proc.Process, []string, error) {
	if c.startN != nil {
		return c.startN(ctx, dir)
	}
	p, addr, err := c.start(ctx, dir)
	if err != nil {
		return nil, nil, err
	}
	return []*proc.Process{p}, []string{addr}, nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
