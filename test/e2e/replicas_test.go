package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"
	"github.com/gatehouse-proxy/gatehouse/test/dex"
	"github.com/gatehouse-proxy/gatehouse/test/scriptedidp"
	"github.com/gatehouse-proxy/gatehouse/test/testidp"
)

const (
	replicaHost     = "app.test"
	replicaCallback = "https://" + replicaHost + "/oauth2/callback"
	sessionCookie   = "__Host-gatehouse-dex"
	// replicaIDTokenTTL and replicaRefreshBefore make a fresh session due
	// for refresh a few seconds after login, without a fake clock (these
	// are separate processes).
	replicaIDTokenTTL    = time.Minute
	replicaRefreshBefore = 55 * time.Second
	replicaDownGrace     = 3 * time.Second
)

// replicaPolicy allows any identified user on /app (Dex users) and /corp
// (users of the scripted IdP), nothing else.
const replicaPolicy = `package envoy.authz

default allow := false

allow if {
	input.parsed_path[0] in {"app", "corp"}
	input.identity.kind == "user"
}
`

// replica is one `gatehouse authz` process of the fleet.
type replica struct {
	name   string
	client authv3.AuthorizationClient
	admin  string
	proc   *proc
}

// TestAuthzReplicas runs three `gatehouse authz` processes with one config
// (store.backend redis, one cookie key file) against a real Redis and a
// real Dex, and shows that any replica serves any session: a login started
// at one replica completes at another and is accepted by the third; a
// logout at one is enforced by the others within 1 s; 50 concurrent
// requests of one session due for refresh, spread over the three, make one
// refresh grant; and with Redis stopped cookie sessions keep working for
// down_grace, then fail closed, bearer tokens unaffected, and recover when
// Redis is back without restarting Gatehouse.
func TestAuthzReplicas(t *testing.T) {
	red := redistest.Start(t)
	d := dex.Start(t, dex.Options{RedirectURIs: []string{replicaCallback}, IDTokenTTL: replicaIDTokenTTL})
	idp := testidp.New(t)
	// Dex never sends back-channel logout tokens; a scripted IdP on /corp does.
	corp := scriptedidp.New(t, replicaCallback, "corp-app", "corp-secret")
	dir := t.TempDir()
	policyDir := filepath.Join(dir, "policies")
	if err := os.Mkdir(policyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(policyDir, "authz.rego"), replicaPolicy)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(dir, "cookie.key")
	// 0600: gatehouse refuses a secret file others may read.
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client := d.Client(dex.ConfidentialClient)
	cfg := writeConfig(t, dir, fmt.Sprintf(authzListen+`log:
  level: info
store:
  backend: redis
  redis:
    address: %s
    down_grace: %s
    on_down: closed
authz:
  timeout: 15s
  policies:
    dir: %s
`+jwtIssuer+`  oidc:
    cookie_key_files: [%s]
    refresh_before: %s
    providers:
      - name: dex
        issuer: %s
        client_id: %s
        client_secret: %s
        external_url: https://%s
        path_prefixes: [/app]
        scopes: [openid, email, profile, groups, offline_access]
      - name: corp
        issuer: %s
        client_id: %s
        client_secret: %s
        external_url: https://%s
        path_prefixes: [/corp]
        scopes: [openid, email, groups]
`, red.Addr(), replicaDownGrace, policyDir, idp.Issuer(), idp.JWKSURI(), keyFile, replicaRefreshBefore,
		d.Issuer, client.ID, client.Secret, replicaHost, corp.Issuer, corp.ClientID, corp.ClientSecret, replicaHost))

	var fleet []*replica
	for i := range 3 {
		p, authz, admin := startAuthzProc(t, cfg, "--state-dir", filepath.Join(dir, "state"+strconv.Itoa(i)))
		fleet = append(fleet, &replica{name: "replica " + strconv.Itoa(i+1), client: authz, admin: admin, proc: p})
	}
	r1, r2, r3 := fleet[0], fleet[1], fleet[2]

	t.Run("session from one replica is accepted by all", func(t *testing.T) {
		b := newReplicaBrowser()
		b.loginAcross(t, d, "alice", r1, r2)
		for _, r := range fleet {
			if rep := b.check(t, r, "GET", "/app/home"); !rep.allowed {
				t.Errorf("%s: status %d, want the session accepted", r.name, rep.status)
			}
		}
	})

	t.Run("logout at one replica is enforced by all within 1s", func(t *testing.T) {
		b := newReplicaBrowser()
		b.loginAcross(t, d, "alice", r3, r1)
		kept := b.clone() // a copy of the cookie the logout does not clear
		if rep := b.check(t, r2, "GET", "/oauth2/logout"); rep.status != http.StatusFound {
			t.Fatalf("logout at %s: status %d", r2.name, rep.status)
		}
		for _, r := range []*replica{r1, r3} {
			within(t, time.Second, r.name+" denies the logged-out session", func() error {
				if rep := kept.check(t, r, "GET", "/app/home"); rep.allowed {
					return fmt.Errorf("still allowed")
				}
				return nil
			})
		}
		// Another session of the same user is not affected.
		other := newReplicaBrowser()
		other.loginAcross(t, d, "alice", r1, r3)
		if rep := other.check(t, r2, "GET", "/app/home"); !rep.allowed {
			t.Errorf("another session after logout: status %d", rep.status)
		}
	})

	t.Run("a login callback replayed to another replica is refused there", func(t *testing.T) {
		b := newReplicaBrowser()
		back := b.loginAtDex(t, d, "alice", r1)
		kept := b.clone() // the login cookie, which the callback clears
		if cb := b.check(t, r2, "GET", back.RequestURI()); cb.status != http.StatusFound || cb.cookie(sessionCookie) == nil {
			t.Fatalf("callback at %s: status %d", r2.name, cb.status)
		}
		rep := kept.check(t, r3, "GET", back.RequestURI())
		if rep.status != http.StatusBadRequest || rep.cookie(sessionCookie) != nil {
			t.Fatalf("replayed callback at %s: status %d, session cookie %v; want 400 and none", r3.name, rep.status, rep.cookie(sessionCookie) != nil)
		}
		// Refused as a replay, before the code went to Dex (which would
		// refuse a used code too, so the status alone proves little). The
		// log line may reach the pipe after the answer.
		within(t, 5*time.Second, r3.name+" refuses the callback as a replayed state", func() error {
			if !strings.Contains(r3.proc.logs(), `"reason":"state replayed"`) {
				return errors.New("no \"state replayed\" refusal in its log")
			}
			return nil
		})
	})

	t.Run("back-channel logout at one replica is enforced by all within 1s", func(t *testing.T) {
		b := newReplicaBrowser()
		rep := b.check(t, r1, "GET", "/corp/home")
		if rep.status != http.StatusFound {
			t.Fatalf("GET /corp/home at %s: status %d, want a redirect to log in", r1.name, rep.status)
		}
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.Get(rep.location)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		back, err := resp.Location()
		if err != nil {
			t.Fatalf("IdP answered %d without a redirect", resp.StatusCode)
		}
		if cb := b.check(t, r2, "GET", back.RequestURI()); cb.status != http.StatusFound || cb.cookie("__Host-gatehouse-corp") == nil {
			t.Fatalf("callback at %s: status %d, session cookie %v", r2.name, cb.status, cb.cookie("__Host-gatehouse-corp") != nil)
		}
		for _, r := range fleet {
			if rep := b.check(t, r, "GET", "/corp/home"); !rep.allowed {
				t.Fatalf("%s: status %d before the logout, want the session accepted", r.name, rep.status)
			}
		}
		// The IdP posts a signed logout token to replica 2 only.
		token := corp.LogoutToken(nil)
		if status := postLogoutToken(t, r2, token); status != http.StatusOK {
			t.Fatalf("back-channel logout at %s: status %d", r2.name, status)
		}
		for _, r := range fleet {
			within(t, time.Second, r.name+" denies the session logged out by back channel", func() error {
				if rep := b.check(t, r, "GET", "/corp/home"); rep.allowed {
					return fmt.Errorf("still allowed")
				}
				return nil
			})
		}
		// The same token replayed to the other replicas is refused: a
		// captured logout token cannot end sessions started after it.
		for _, r := range []*replica{r1, r3} {
			if status := postLogoutToken(t, r, token); status != http.StatusBadRequest {
				t.Errorf("logout token replayed to %s: status %d, want 400", r.name, status)
			}
		}
	})

	var refreshed *replicaBrowser
	t.Run("50 concurrent requests at expiry refresh once", func(t *testing.T) {
		b := newReplicaBrowser()
		b.loginAcross(t, d, "bob", r2, r3)
		before := sumRefreshGrants(t, fleet)
		// The session is due once its ID token is within refresh_before of
		// expiry; wait past that point (Dex's exp is whole seconds).
		time.Sleep(replicaIDTokenTTL - replicaRefreshBefore + 1500*time.Millisecond)
		const n = 50
		replies := make([]replicaReply, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { replies[i] = b.clone().check(t, fleet[i%3], "GET", "/app/home") })
		}
		wg.Wait()
		for i, rep := range replies {
			if !rep.allowed || rep.cookie(sessionCookie) == nil {
				t.Fatalf("request %d at %s: allowed %v, refreshed cookie %v", i, fleet[i%3].name, rep.allowed, rep.cookie(sessionCookie) != nil)
			}
		}
		if got := sumRefreshGrants(t, fleet) - before; got != 1 {
			t.Errorf("%d concurrent requests over 3 replicas sent %d refresh grants to Dex, want 1", n, got)
		}
		b.apply(replies[0])
		for _, r := range fleet {
			if rep := b.check(t, r, "GET", "/app/home"); !rep.allowed {
				t.Errorf("refreshed cookie at %s: status %d", r.name, rep.status)
			}
		}
		refreshed = b
	})

	t.Run("redis down: grace, then closed; bearer unaffected; recovery", func(t *testing.T) {
		if refreshed == nil {
			t.Skip("needs the refreshed session of the previous subtest")
		}
		b := refreshed
		bearer := "Bearer " + idp.Token(t, idp.UserClaims("carol", "gatehouse"))
		red.Stop()
		stoppedAt := time.Now()
		for _, r := range fleet {
			if rep := b.check(t, r, "GET", "/app/home"); !rep.allowed && time.Since(stoppedAt) < replicaDownGrace {
				t.Errorf("%s right after Redis stopped (within down_grace): status %d, want allowed from the local cache", r.name, rep.status)
			}
		}
		for _, r := range fleet {
			eventually(t, r.name+" fails closed for cookies after down_grace", func() error {
				if rep := b.check(t, r, "GET", "/app/home"); rep.allowed {
					return fmt.Errorf("cookie still allowed")
				}
				return nil
			})
			if got := metricValue(t, r.admin, "gatehouse_store_redis_up"); got != 0 {
				t.Errorf("%s: gatehouse_store_redis_up = %v with Redis stopped", r.name, got)
			}
		}
		if elapsed := time.Since(stoppedAt); elapsed < replicaDownGrace {
			t.Errorf("cookies refused %s after Redis stopped, before down_grace %s", elapsed, replicaDownGrace)
		}
		for _, r := range fleet {
			if rep := checkWith(t, r, "GET", "/app/api", map[string]string{"authorization": bearer}); !rep.allowed {
				t.Errorf("%s: bearer request with Redis down: status %d, want allowed", r.name, rep.status)
			}
		}
		// A login completed while Redis is down fails closed: without the
		// shared one-time claim a replayed callback cannot be told from a
		// first one.
		lb := newReplicaBrowser()
		back := lb.loginAtDex(t, d, "alice", r1)
		if rep := lb.check(t, r2, "GET", back.RequestURI()); rep.status != http.StatusServiceUnavailable || rep.cookie(sessionCookie) != nil {
			t.Errorf("callback at %s with Redis down: status %d, session cookie %v; want 503 and none", r2.name, rep.status, rep.cookie(sessionCookie) != nil)
		}
		red.Restart()
		for _, r := range fleet {
			eventually(t, r.name+" accepts the session again after Redis restarted", func() error {
				if rep := b.check(t, r, "GET", "/app/home"); !rep.allowed {
					return fmt.Errorf("status %d", rep.status)
				}
				return nil
			})
			if got := metricValue(t, r.admin, "gatehouse_store_redis_up"); got != 1 {
				t.Errorf("%s: gatehouse_store_redis_up = %v after Redis restarted", r.name, got)
			}
		}
	})

	// No token or cookie value reached any replica's log.
	for _, r := range fleet {
		if logs := r.proc.logs(); strings.Contains(logs, "eyJ") {
			t.Errorf("%s logged something that looks like a JWT", r.name)
		}
	}
}

// postLogoutToken posts a back-channel logout token to r's admin listener,
// as an IdP does, and returns the status.
func postLogoutToken(t *testing.T, r *replica, token string) int {
	t.Helper()
	resp, err := http.PostForm("http://"+r.admin+"/oauth2/backchannel-logout", url.Values{"logout_token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// within polls cond until it holds, failing if it does not within d.
func within(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// replicaBrowser keeps the cookies app.test set and talks to any replica
// as Envoy would on its behalf.
type replicaBrowser struct {
	mu      sync.Mutex
	cookies map[string]string
}

func newReplicaBrowser() *replicaBrowser { return &replicaBrowser{cookies: map[string]string{}} }

func (b *replicaBrowser) clone() *replicaBrowser {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := newReplicaBrowser()
	for k, v := range b.cookies {
		c.cookies[k] = v
	}
	return c
}

// loginAcross starts the login at one replica, completes the callback at
// another (the state cookie must open there), and applies the session.
func (b *replicaBrowser) loginAcross(t *testing.T, d *dex.Server, user string, start, callback *replica) {
	t.Helper()
	back := b.loginAtDex(t, d, user, start)
	cb := b.check(t, callback, "GET", back.RequestURI())
	if cb.status != http.StatusFound || cb.cookie(sessionCookie) == nil {
		t.Fatalf("callback at %s: status %d body %q, session cookie set %v", callback.name, cb.status, cb.body, cb.cookie(sessionCookie) != nil)
	}
}

// loginAtDex starts the login at a replica (the browser keeps its login
// cookie) and logs user in at Dex; it returns the callback URL Dex sent the
// browser back to, not yet visited.
func (b *replicaBrowser) loginAtDex(t *testing.T, d *dex.Server, user string, start *replica) *url.URL {
	t.Helper()
	rep := b.check(t, start, "GET", "/app/home")
	if rep.status != http.StatusFound {
		t.Fatalf("GET /app/home at %s: status %d, want a redirect to log in", start.name, rep.status)
	}
	u := d.User(user)
	back, err := d.NewBrowser().Login(t.Context(), rep.location, u.Email, u.Password)
	if err != nil {
		t.Fatalf("dex login: %v", err)
	}
	if !strings.HasPrefix(back.String(), replicaCallback+"?") {
		t.Fatalf("dex redirected to %s, want the callback", back)
	}
	return back
}

type replicaReply struct {
	allowed  bool
	status   int
	location string
	body     string
	cookies  []*http.Cookie
}

func (r replicaReply) cookie(name string) *http.Cookie {
	for _, c := range r.cookies {
		if c.Name == name && c.MaxAge >= 0 {
			return c
		}
	}
	return nil
}

func (b *replicaBrowser) check(t *testing.T, r *replica, method, path string) replicaReply {
	t.Helper()
	h := map[string]string{"accept": "text/html"}
	b.mu.Lock()
	var parts []string
	for k, v := range b.cookies {
		parts = append(parts, k+"="+v)
	}
	b.mu.Unlock()
	if len(parts) > 0 {
		h["cookie"] = strings.Join(parts, "; ")
	}
	return b.apply(checkWith(t, r, method, path, h))
}

func (b *replicaBrowser) apply(rep replicaReply) replicaReply {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range rep.cookies {
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c.Value
		}
	}
	return rep
}

// checkWith sends one Check shaped like Envoy's for app.test.
func checkWith(t *testing.T, r *replica, method, path string, h map[string]string) replicaReply {
	t.Helper()
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: method, Host: replicaHost, Path: path, Scheme: "https", Protocol: "HTTP/1.1", Headers: h,
		},
	}}}
	resp, err := r.client.Check(t.Context(), req)
	if err != nil {
		t.Fatalf("Check at %s: %v", r.name, err)
	}
	var rep replicaReply
	var set []string
	if ok := resp.GetOkResponse(); ok != nil && code.Code(resp.GetStatus().GetCode()) == code.Code_OK {
		rep.allowed, rep.status = true, http.StatusOK
		for _, hv := range ok.GetResponseHeadersToAdd() {
			if hv.GetHeader().GetKey() == "set-cookie" {
				set = append(set, hv.GetHeader().GetValue())
			}
		}
	} else {
		dr := resp.GetDeniedResponse()
		rep.status, rep.body = int(dr.GetStatus().GetCode()), dr.GetBody()
		for _, hv := range dr.GetHeaders() {
			switch hv.GetHeader().GetKey() {
			case "set-cookie":
				set = append(set, hv.GetHeader().GetValue())
			case "location":
				rep.location = hv.GetHeader().GetValue()
			}
		}
	}
	for _, sc := range set {
		c, err := http.ParseSetCookie(sc)
		if err != nil {
			t.Fatalf("bad Set-Cookie from %s: %v", r.name, err)
		}
		rep.cookies = append(rep.cookies, c)
	}
	return rep
}

// sumRefreshGrants adds up the refresh_token grants the replicas sent to
// the IdP. Only Gatehouse talks to Dex's token endpoint in this test, so
// it is the number of refreshes Dex performed.
func sumRefreshGrants(t *testing.T, fleet []*replica) int {
	t.Helper()
	total := 0.0
	for _, r := range fleet {
		total += metricValue(t, r.admin, "gatehouse_oidc_refresh_grants_total")
	}
	return int(total)
}

// metricValue sums the samples of one metric family on a replica's
// /metrics (0 when absent).
func metricValue(t *testing.T, admin, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}
