package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// shutdownPolicy allows /fast at once and /slow once the URL (fmt) answers
// 200: a Check that stays in flight as long as the test wants.
const shutdownPolicy = `package envoy.authz

default allow := false

allow if input.attributes.request.http.path == "/fast"

allow if {
	input.attributes.request.http.path == "/slow"
	http.send({"method": "GET", "url": %q, "timeout": "60s"}).status_code == 200
}
`

// shutdownConfig is a `gatehouse serve` config on free ports with one edge
// (fmt: the policy directory).
const shutdownConfig = `listen:
  authz: 127.0.0.1:0
  xds: 127.0.0.1:0
  admin: 127.0.0.1:0
authz:
  timeout: 30s
  policies:
    dir: %s
` + meshTrust + `    address: 127.0.0.1:9001
    timeout: 40s
  services:
    - name: app
      endpoints: ["127.0.0.1:8080"]
` + edgeRoutes + `        - path_prefix: /
          service: app
`

// servedProc is a running `gatehouse serve` of shutdownConfig.
type servedProc struct {
	*proc
	authz, xds, admin string
	exited            <-chan int // the exit code, once it has exited
	slowEntered       <-chan struct{}
	releaseSlow       func()
}

// startServed starts `gatehouse serve` with the extra flags and waits until
// it is ready.
func startServed(t *testing.T, extra ...string) *servedProc {
	t.Helper()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	releaseSlow := func() { once.Do(func() { close(release) }) }
	t.Cleanup(slow.Close)
	t.Cleanup(releaseSlow)

	dir := t.TempDir()
	pol := filepath.Join(dir, "policies")
	if err := os.Mkdir(pol, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(pol, "shutdown.rego"), fmt.Sprintf(shutdownPolicy, slow.URL))
	cfg := writeConfig(t, dir, fmt.Sprintf(shutdownConfig, pol))
	p, addrs := start(t, append([]string{"serve", "--config", cfg, "--state-dir", filepath.Join(dir, "state")}, extra...)...)
	if len(addrs) != 3 {
		t.Fatalf("listening line named %v", addrs)
	}
	s := &servedProc{proc: p, authz: addrs[0], xds: addrs[1], admin: addrs[2], slowEntered: entered, releaseSlow: releaseSlow}
	eventually(t, "ready", func() error { return s.readyz(200) })

	exited, waited := make(chan int, 1), make(chan struct{})
	go func() {
		defer close(waited)
		_ = p.cmd.Wait()
		exited <- p.cmd.ProcessState.ExitCode()
	}()
	// Before start's cleanup, which must not Wait concurrently.
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-waited
	})
	s.exited = exited
	return s
}

// readyz is nil when /readyz answers want (and, for 503, says it is
// shutting down) and /healthz 200.
func (s *servedProc) readyz(want int) error {
	for path, code := range map[string]int{"/readyz": want, "/healthz": 200} {
		resp, err := http.Get("http://" + s.admin + path)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		if resp.StatusCode != code || (code == 503 && !strings.Contains(body, `"shutting_down":true`)) {
			return fmt.Errorf("%s = %s %s, want %d", path, resp.Status, body, code)
		}
	}
	return nil
}

func (s *servedProc) signal(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// awaitExit fails unless the process exits 0 within d (a bound on failure
// only: generous on purpose).
func (s *servedProc) awaitExit(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case code := <-s.exited:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(d):
		t.Fatalf("still running %s after SIGTERM", d)
	}
}

func authzClient(t *testing.T, addr string) authv3.AuthorizationClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

func allowed(c authv3.AuthorizationClient, path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, checkRequest("GET", path, nil))
	if err != nil {
		return err
	}
	if got := httpStatus(resp); got != 200 {
		return fmt.Errorf("%s: status %d", path, got)
	}
	return nil
}

// TestShutdownDrain: on SIGTERM readiness fails at once while ext_authz
// and xDS keep serving new connections for --shutdown-delay; then xDS
// streams close, the ext_authz server stops gracefully (a Check in flight
// completes, new calls are refused) and the process exits 0.
func TestShutdownDrain(t *testing.T) {
	s := startServed(t, "--shutdown-delay", "4s")
	old := authzClient(t, s.authz)
	if err := allowed(old, "/fast"); err != nil {
		t.Fatal(err)
	}

	sent := time.Now()
	s.signal(t)
	eventually(t, "readyz 503, healthz 200", func() error { return s.readyz(503) })
	t.Logf("readiness failed %s after SIGTERM", time.Since(sent).Round(time.Millisecond))

	// During the delay: a new connection gets its Check answered, a new
	// ADS stream is served.
	if err := allowed(authzClient(t, s.authz), "/fast"); err != nil {
		t.Fatalf("Check on a new connection during the drain: %v", err)
	}
	ads, stop, err := openADS(t, s.xds, insecure.NewCredentials())
	if err != nil {
		t.Fatalf("ADS during the drain: %v", err)
	}
	defer stop()
	a := &adsStream{t: t, s: ads, node: &corev3.Node{Id: "edge", Cluster: "edge"}}
	a.request(resource.ClusterType, "", "")
	if cds := a.recv(); len(cds.GetResources()) == 0 {
		t.Fatal("no clusters for the edge during the drain")
	}
	// A Check that is in flight when the delay ends.
	slow := make(chan error, 1)
	go func() { slow <- allowed(old, "/slow") }()
	select {
	case <-s.slowEntered:
	case err := <-slow:
		t.Fatalf("slow Check returned early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("slow Check never reached the policy")
	}
	if strings.Contains(s.logs(), `"msg":"stopping`) {
		t.Fatal("the delay ended before the checks made during it; too slow a machine for this test?")
	}

	eventually(t, "stopping after the delay", func() error {
		if !strings.Contains(s.logs(), `"msg":"stopping`) {
			return errors.New("no stopping line yet")
		}
		return nil
	})
	// The ADS stream is closed by the server, for the proxy to reconnect
	// elsewhere.
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := ads.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		t.Logf("ADS stream ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("ADS stream still open after stopping")
	}
	// New calls are refused (GOAWAY, listener closed) while the slow one
	// still holds the graceful stop.
	eventually(t, "new Check refused", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := old.Check(ctx, checkRequest("GET", "/fast", nil))
		if status.Code(err) != codes.Unavailable {
			return fmt.Errorf("Check = %v, want Unavailable", err)
		}
		return nil
	})
	select {
	case code := <-s.exited:
		t.Fatalf("exited %d with a Check in flight", code)
	default:
	}
	s.releaseSlow()
	if err := <-slow; err != nil {
		t.Fatalf("in-flight Check during the graceful stop: %v", err)
	}
	s.awaitExit(t, 30*time.Second)
	for _, step := range []string{`"msg":"draining`, `"msg":"stopping`, `"msg":"stopped"`} {
		if !strings.Contains(s.logs(), step) {
			t.Errorf("no %s log line", step)
		}
	}
}

// TestShutdownSecondSignal: a second SIGTERM during a long drain stops the
// process well before the delay ends.
func TestShutdownSecondSignal(t *testing.T) {
	s := startServed(t, "--shutdown-delay", "2m")
	s.signal(t)
	eventually(t, "draining", func() error { return s.readyz(503) })
	s.signal(t)
	s.awaitExit(t, 60*time.Second)
	if !strings.Contains(s.logs(), "second signal") {
		t.Errorf("second signal not logged:\n%s", s.logs())
	}
}

// TestShutdownNoDelay: without --shutdown-delay (default 0) SIGTERM stops
// at once, as before the drain existed.
func TestShutdownNoDelay(t *testing.T) {
	s := startServed(t)
	s.signal(t)
	s.awaitExit(t, 30*time.Second)
}
