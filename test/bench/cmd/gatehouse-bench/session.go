package main

// The OIDC session-cookie cases (issue 6 case (d)) and the replica case:
// a real Dex and a real redis-server are started once, one browser login
// through Dex yields a real sealed session cookie (cookie keys from a file
// every Gatehouse process shares), and that cookie is then replayed by the
// load generator at `gatehouse authz` with the in-memory store, with the
// Redis store, and at two Redis-store replicas the load generator spreads
// its connections over (as Envoy's cluster would over two endpoints).

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"
	"github.com/gatehouse-proxy/gatehouse/test/bench/authzload"
	"github.com/gatehouse-proxy/gatehouse/test/bench/internal/proc"
	"github.com/gatehouse-proxy/gatehouse/test/dex"
)

// sessionPolicy allows a logged-in user on /api/orders; the same session
// on /admin is denied, so every answer is checked both ways.
var sessionPolicy = ordersPolicy("", `input.identity.kind == "user"`)

const (
	sessionHost     = "shop.example.com" // authzload.Request's host
	sessionCallback = "https://" + sessionHost + "/oauth2/callback"
	sessionCookie   = "__Host-gatehouse-dex"
)

// benchTB lets the test harnesses (test/dex, internal/store/redistest),
// which take a testing.TB, run inside this program: Fatal and Skip abort
// the harness call through a panic that tbRun turns into an error.
// Calling a testing.TB method not overridden here panics (nil embedded
// interface); those two packages use only the ones below.
type benchTB struct {
	testing.TB
	ctx      context.Context
	dir      string
	log      *slog.Logger
	failed   bool
	cleanups []func()
}

type tbAbort struct {
	skip bool
	msg  string
}

func (t *benchTB) Helper()                   {}
func (t *benchTB) Name() string              { return "gatehouse-bench" }
func (t *benchTB) Context() context.Context  { return t.ctx }
func (t *benchTB) Failed() bool              { return t.failed }
func (t *benchTB) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }
func (t *benchTB) Log(a ...any)              { t.log.Info(fmt.Sprint(a...)) }
func (t *benchTB) Logf(f string, a ...any)   { t.log.Info(fmt.Sprintf(f, a...)) }
func (t *benchTB) Error(a ...any)            { t.failed = true; t.log.Error(fmt.Sprint(a...)) }
func (t *benchTB) Errorf(f string, a ...any) { t.failed = true; t.log.Error(fmt.Sprintf(f, a...)) }
func (t *benchTB) Fatal(a ...any)            { t.failed = true; panic(tbAbort{msg: fmt.Sprint(a...)}) }
func (t *benchTB) Fatalf(f string, a ...any) {
	t.failed = true
	panic(tbAbort{msg: fmt.Sprintf(f, a...)})
}
func (t *benchTB) Skip(a ...any)            { panic(tbAbort{skip: true, msg: fmt.Sprint(a...)}) }
func (t *benchTB) Skipf(f string, a ...any) { panic(tbAbort{skip: true, msg: fmt.Sprintf(f, a...)}) }
func (t *benchTB) TempDir() string {
	d, err := os.MkdirTemp(t.dir, "tb")
	if err != nil {
		t.Fatalf("TempDir: %v", err)
	}
	return d
}

// close runs the cleanups, last first.
func (t *benchTB) close() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

// run calls f, turning a Fatal or Skip inside it into an error.
func (t *benchTB) run(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			a, ok := r.(tbAbort)
			if !ok {
				panic(r)
			}
			err = errors.New(a.msg)
		}
	}()
	f()
	return nil
}

// sessionEnv is what the session cases share: Redis, Dex, the cookie key
// file, the Dex client and the session cookie header of one login.
type sessionEnv struct {
	tb      *benchTB
	redis   *redistest.Server
	dex     *dex.Server
	client  dex.Client
	keyFile string
	cookie  string // "name=value; ..." of the session cookie(s)
}

// setupSession starts Redis and Dex and logs in once as alice through a
// `gatehouse authz` with the memory store. The caller closes env.tb.
func (e *authzEnv) setupSession(ctx context.Context, work string) (*sessionEnv, error) {
	dir, err := os.MkdirTemp(work, "session")
	if err != nil {
		return nil, err
	}
	s := &sessionEnv{tb: &benchTB{ctx: ctx, dir: dir, log: e.log}}
	if err := s.tb.run(func() {
		s.redis = redistest.Start(s.tb)
		s.dex = dex.Start(s.tb, dex.Options{RedirectURIs: []string{sessionCallback}})
		s.client = s.dex.Client(dex.ConfidentialClient)
	}); err != nil {
		s.tb.close()
		return nil, err
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s.keyFile = filepath.Join(dir, "cookie.key")
	if err := os.WriteFile(s.keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		s.tb.close()
		return nil, err
	}
	ldir, err := os.MkdirTemp(dir, "login")
	if err != nil {
		s.tb.close()
		return nil, err
	}
	procs, addrs, err := e.startSession(s, "memory", 1)(ctx, ldir)
	if err != nil {
		s.tb.close()
		return nil, fmt.Errorf("gatehouse for the login: %w", err)
	}
	defer procs[0].Stop()
	if s.cookie, err = s.login(ctx, addrs[0]); err != nil {
		s.tb.close()
		return nil, fmt.Errorf("login through Dex: %w\n%s", err, procs[0].Tail())
	}
	e.log.Info("logged in through Dex; replaying the session cookie", "cookie_bytes", len(s.cookie))
	return s, nil
}

// login walks the login as Envoy and a browser would: Check without a
// cookie → redirect to Dex → Dex's password form → callback Check with the
// login-state cookie → the session cookie.
func (s *sessionEnv) login(ctx context.Context, addr string) (string, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer cc.Close()
	client := authv3.NewAuthorizationClient(cc)
	jar := map[string]string{}
	check := func(path string) (*authv3.CheckResponse, string, error) {
		req := authzload.Request("GET", path, map[string]string{"accept": "text/html", "sec-fetch-mode": "navigate"})
		if c := cookieHeader(jar); c != "" {
			h := req.GetAttributes().GetRequest().GetHttp().GetHeaders()
			h["cookie"] += "; " + c
		}
		resp, err := client.Check(ctx, req)
		if err != nil {
			return nil, "", err
		}
		var set []string
		loc := ""
		for _, hv := range append(resp.GetOkResponse().GetResponseHeadersToAdd(), resp.GetDeniedResponse().GetHeaders()...) {
			switch strings.ToLower(hv.GetHeader().GetKey()) {
			case "set-cookie":
				set = append(set, hv.GetHeader().GetValue())
			case "location":
				loc = hv.GetHeader().GetValue()
			}
		}
		for _, sc := range set {
			c, err := http.ParseSetCookie(sc)
			if err != nil {
				return nil, "", fmt.Errorf("bad Set-Cookie: %w", err)
			}
			if c.MaxAge < 0 {
				delete(jar, c.Name)
			} else {
				jar[c.Name] = c.Value
			}
		}
		return resp, loc, nil
	}
	resp, loc, err := check("/api/orders/42")
	if err != nil {
		return "", err
	}
	if resp.GetDeniedResponse().GetStatus().GetCode() != http.StatusFound || loc == "" {
		return "", fmt.Errorf("first Check: status %d, want a redirect to log in", resp.GetDeniedResponse().GetStatus().GetCode())
	}
	var u dex.User
	if err := s.tb.run(func() { u = s.dex.User("alice") }); err != nil {
		return "", err
	}
	var back interface{ RequestURI() string }
	var loginErr error
	if err := s.tb.run(func() {
		b, err := s.dex.NewBrowser().Login(ctx, loc, u.Email, u.Password)
		back, loginErr = b, err
	}); err != nil {
		return "", err
	}
	if loginErr != nil {
		return "", loginErr
	}
	resp, _, err = check(back.RequestURI())
	if err != nil {
		return "", err
	}
	if _, ok := jar[sessionCookie]; !ok {
		return "", fmt.Errorf("callback: status %d, no %s cookie set", resp.GetDeniedResponse().GetStatus().GetCode(), sessionCookie)
	}
	// Only the session cookie (and its chunks) is replayed.
	out := map[string]string{}
	for k, v := range jar {
		if strings.HasPrefix(k, sessionCookie) {
			out[k] = v
		}
	}
	return cookieHeader(out), nil
}

func cookieHeader(jar map[string]string) string {
	var parts []string
	for k, v := range jar {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, "; ")
}

// fixtures are nine requests of the session to /api/orders
// (allowed) and one to /admin (denied by the policy).
func (s *sessionEnv) fixtures() []authzload.Fixture {
	fix := func(path string, allow bool) authzload.Fixture {
		req := authzload.Request("GET", path, nil)
		h := req.GetAttributes().GetRequest().GetHttp().GetHeaders()
		h["cookie"] += "; " + s.cookie
		f, err := authzload.NewFixture(req, allow)
		if err != nil {
			panic(err)
		}
		return f
	}
	out := make([]authzload.Fixture, 0, 10)
	for range 9 {
		out = append(out, fix("/api/orders/42", true))
	}
	return append(out, fix("/admin/users", false))
}

// startSession runs n `gatehouse authz` processes with one config: OIDC
// login against Dex with the shared cookie key file, and store backend
// ("memory" or "redis"). Each has its own state directory.
func (e *authzEnv) startSession(s *sessionEnv, backend string, n int) func(context.Context, string) ([]*proc.Process, []string, error) {
	return func(ctx context.Context, dir string) ([]*proc.Process, []string, error) {
		pdir := filepath.Join(dir, "policies")
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(filepath.Join(pdir, "authz.rego"), []byte(sessionPolicy), 0o644); err != nil {
			return nil, nil, err
		}
		store := "store:\n  backend: memory\n"
		if backend == "redis" {
			store = fmt.Sprintf("store:\n  backend: redis\n  redis:\n    address: %s\n", s.redis.Addr())
		}
		cfg := filepath.Join(dir, "gatehouse.yaml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen:
  authz: 127.0.0.1:0
  admin: 127.0.0.1:0
log:
  level: warn
%sauthz:
  policies:
    dir: %s
    query: data.envoy.authz.allow
  oidc:
    cookie_key_files: [%s]
    providers:
      - name: dex
        issuer: %s
        client_id: %s
        client_secret: %s
        external_url: https://%s
        scopes: [openid, email, profile, groups, offline_access]
`, store, pdir, s.keyFile, s.dex.Issuer, s.client.ID, s.client.Secret, sessionHost)), 0o644); err != nil {
			return nil, nil, err
		}
		var procs []*proc.Process
		var addrs []string
		for i := range n {
			state := filepath.Join(dir, fmt.Sprintf("state%d", i))
			p, a, err := proc.Start(ctx, e.bins.gatehouse, []string{"authz", "--config", cfg, "--state-dir", state},
				proc.Options{CPUs: e.cpus, Ready: regexp.MustCompile(`ext_authz gRPC on`)})
			if err != nil {
				for _, p := range procs {
					p.Stop()
				}
				return nil, nil, err
			}
			procs, addrs = append(procs, p), append(addrs, a[0])
		}
		return procs, addrs, nil
	}
}
