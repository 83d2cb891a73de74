package oidc_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatehouse-proxy/gatehouse/extauthz"
	"github.com/gatehouse-proxy/gatehouse/extauthz/oidc"
	"github.com/gatehouse-proxy/gatehouse/extauthz/policy"
	"github.com/gatehouse-proxy/gatehouse/test/dex"

	"github.com/gatehouse-proxy/gatehouse/internal/logging/logtest"
)

const (
	appHost     = "app.test"
	appURL      = "https://" + appHost
	callbackURL = appURL + oidc.DefaultCallbackPath
)

// testPolicy: /public is open, /app needs any browser session, /admin
// needs Dex's "admins" group, anything else is denied.
const testPolicy = `package envoy.authz

default allow := false

allow if input.parsed_path[0] == "public"

allow if {
	input.parsed_path[0] == "app"
	input.identity.kind == "user"
	input.identity.verified_by == "session"
}

allow if {
	input.parsed_path[0] == "admin"
	"admins" in input.identity.groups
}
`

// clock is a settable offset from real time: the IdP's tokens carry real
// timestamps, and the flow judges them by this clock.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time           { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) set(d time.Duration)      { c.offset.Store(int64(d)) }
func (c *clock) fn() func() time.Time     { return c.now }
func newKey(t testing.TB) []byte          { k := make([]byte, oidc.KeySize); _, _ = rand.Read(k); return k }
func quiet() *slog.Logger                 { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func header(name, value string) [2]string { return [2]string{name, value} }

// countingTransport counts refresh grants on their way to the IdP.
type countingTransport struct {
	refreshes atomic.Int64
	exchanges atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && r.Body != nil {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(b))
		form, _ := url.ParseQuery(string(b))
		switch form.Get("grant_type") {
		case "refresh_token":
			c.refreshes.Add(1)
		case "authorization_code":
			c.exchanges.Add(1)
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// env is a Gatehouse ext_authz server with browser login, on a real gRPC
// listener, with a real policy engine, against a real IdP.
type env struct {
	t         testing.TB
	flow      *oidc.Flow
	client    authv3.AuthorizationClient
	clock     *clock
	transport *countingTransport
	keys      [][]byte
	logs      *logtest.Buffer // everything the flow and the server logged
}

type envOption func(*oidc.Config)

func newEnv(t testing.TB, providers []oidc.ProviderConfig, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{}, transport: &countingTransport{}, keys: [][]byte{newKey(t)}, logs: &logtest.Buffer{}}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := oidc.Config{Providers: providers, CookieKeys: e.keys}
	for _, o := range opts {
		o(&cfg)
	}
	flow, err := oidc.New(cfg, oidc.WithClock(e.clock.fn()), oidc.WithLogger(logger),
		oidc.WithHTTPClient(&http.Client{Transport: e.transport, Timeout: 10 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	e.flow = flow
	e.client = serve(t, flow, logger)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gatehouse log:\n%s", e.logs.String())
		}
	})
	return e
}

// serve runs an ext_authz server with flow and returns a client for it.
func serve(t testing.TB, flow *oidc.Flow, logger *slog.Logger) authv3.AuthorizationClient {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	engine, err := policy.New(t.Context(), policy.WithDir(dir), policy.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	srv := extauthz.New(engine, extauthz.WithLogger(logger), extauthz.WithTimeout(15*time.Second),
		extauthz.WithBrowserLogin(flow))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// dexProvider is the Gatehouse provider config for a Dex client.
func dexProvider(d *dex.Server, clientID string) oidc.ProviderConfig {
	c := d.Client(clientID)
	return oidc.ProviderConfig{
		Name: "dex", Issuer: d.Issuer, ClientID: c.ID, ClientSecret: c.Secret, ExternalURL: appURL,
		Scopes: []string{"openid", "email", "profile", "groups", "offline_access"},
	}
}

// dexSession starts Dex with 5-minute ID tokens and an env for its
// confidential client, and logs a browser in there as alice at path.
func dexSession(t *testing.T, path string) (*dex.Server, *env, *browser) {
	t.Helper()
	d := dex.Start(t, dex.Options{RedirectURIs: []string{callbackURL}, IDTokenTTL: 5 * time.Minute})
	e := newEnv(t, []oidc.ProviderConfig{dexProvider(d, dex.ConfidentialClient)})
	b := e.browser()
	if r := b.login(d, path, "alice"); !r.allowed {
		t.Fatalf("login: %d", r.status)
	}
	return d, e, b
}

// browser keeps the cookies app.test set, as a browser would, and talks
// to Gatehouse as Envoy would on its behalf.
type browser struct {
	t       testing.TB
	e       *env
	mu      sync.Mutex
	cookies map[string]string
}

func (e *env) browser() *browser { return e.browserFor(e.t) }

// browserFor is a browser whose failures end t (a subtest).
func (e *env) browserFor(t testing.TB) *browser {
	return &browser{t: t, e: e, cookies: map[string]string{}}
}

// reply is a CheckResponse seen as the browser sees the HTTP answer.
type reply struct {
	allowed  bool
	code     code.Code
	status   int               // on deny
	headers  map[string]string // upstream headers on allow, response headers on deny
	removed  []string          // headers removed upstream
	cookies  []*http.Cookie    // Set-Cookie, either way
	location string
	body     string
}

// check sends one request through Check and applies its Set-Cookie values.
func (b *browser) check(method, path string, hdrs ...[2]string) reply {
	b.t.Helper()
	h := map[string]string{"accept": "text/html,application/xhtml+xml"}
	for _, kv := range hdrs {
		if kv[1] == "" {
			delete(h, kv[0])
		} else {
			h[kv[0]] = kv[1]
		}
	}
	if c := b.cookieHeader(); c != "" {
		h["cookie"] = c
	}
	return b.apply(b.e.rawRequest(b.t, appHost, method, path, h, nil))
}

func (b *browser) apply(r reply) reply {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range r.cookies {
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c.Value
		}
	}
	return r
}

func (b *browser) cookieHeader() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var parts []string
	for k, v := range b.cookies {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, "; ")
}

// in is a clone whose failures end t (a subtest).
func (b *browser) in(t testing.TB) *browser {
	c := b.clone()
	c.t = t
	return c
}

// clone copies the cookie jar: a stolen or kept copy of the cookies.
func (b *browser) clone() *browser {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := &browser{t: b.t, e: b.e, cookies: map[string]string{}}
	for k, v := range b.cookies {
		c.cookies[k] = v
	}
	return c
}

// raw sends one Check with exactly these headers, as Envoy would.
func (e *env) raw(method, path string, h map[string]string) reply {
	e.t.Helper()
	return e.rawRequest(e.t, appHost, method, path, h, nil)
}

// rawHost is raw on another :authority.
func (e *env) rawHost(host, method, path string, h map[string]string) reply {
	e.t.Helper()
	return e.rawRequest(e.t, host, method, path, h, nil)
}

func (e *env) rawRequest(t testing.TB, host, method, path string, h map[string]string, body []byte) reply {
	t.Helper()
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: method, Host: host, Path: path, Scheme: "https", Protocol: "HTTP/1.1",
			Headers: h, RawBody: body,
		},
	}}}
	resp, err := e.client.Check(t.Context(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	r := reply{code: code.Code(resp.GetStatus().GetCode()), headers: map[string]string{}}
	var setCookies []string
	if ok := resp.GetOkResponse(); ok != nil && r.code == code.Code_OK {
		r.allowed = true
		for _, hv := range ok.GetHeaders() {
			r.headers[hv.GetHeader().GetKey()] = hv.GetHeader().GetValue()
		}
		r.removed = ok.GetHeadersToRemove()
		for _, hv := range ok.GetResponseHeadersToAdd() {
			if hv.GetHeader().GetKey() == "set-cookie" {
				setCookies = append(setCookies, hv.GetHeader().GetValue())
			}
		}
	} else {
		d := resp.GetDeniedResponse()
		r.status = int(d.GetStatus().GetCode())
		r.body = d.GetBody()
		for _, hv := range d.GetHeaders() {
			k, v := hv.GetHeader().GetKey(), hv.GetHeader().GetValue()
			if k == "set-cookie" {
				setCookies = append(setCookies, v)
				continue
			}
			r.headers[k] = v
		}
		r.location = r.headers["location"]
	}
	for _, sc := range setCookies {
		c, err := http.ParseSetCookie(sc)
		if err != nil {
			t.Fatalf("bad Set-Cookie %q: %v", sc, err)
		}
		r.cookies = append(r.cookies, c)
	}
	return r
}

// cookieNamed returns the Set-Cookie of that name prefix, if any.
func (r reply) cookieNamed(prefix string) *http.Cookie {
	for _, c := range r.cookies {
		if strings.HasPrefix(c.Name, prefix) {
			return c
		}
	}
	return nil
}

// login walks the whole browser login for path and returns the final reply
// (the request after the callback's redirect).
func (b *browser) login(d *dex.Server, path, user string) reply {
	b.t.Helper()
	r := b.check("GET", path)
	if r.status != http.StatusFound {
		b.t.Fatalf("GET %s: status %d, want a redirect to log in (body %q)", path, r.status, r.body)
	}
	back := b.idpLogin(d, r.location, user)
	cb := b.check("GET", back.RequestURI())
	if cb.status != http.StatusFound {
		b.t.Fatalf("callback: status %d body %q", cb.status, cb.body)
	}
	return b.check("GET", cb.location)
}

// idpLogin submits the user's credentials at Dex and returns the redirect
// back to the callback.
func (b *browser) idpLogin(d *dex.Server, authURL, user string) *url.URL {
	b.t.Helper()
	u := d.User(user)
	back, err := d.NewBrowser().Login(b.t.Context(), authURL, u.Email, u.Password)
	if err != nil {
		b.t.Fatalf("dex login: %v", err)
	}
	if !strings.HasPrefix(back.String(), callbackURL+"?") {
		b.t.Fatalf("dex redirected to %s, want the callback", back)
	}
	return back
}

func jsonDecode(resp *http.Response, v any) error {
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}
