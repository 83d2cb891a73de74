package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/logging/logtest"

	"github.com/gatehouse-proxy/gatehouse/test/testkit"
)

// authzConfig writes a `gatehouse authz` config on loopback ports with an
// allow-all policy and extra appended, and returns its path.
func authzConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	pol := filepath.Join(dir, "policies")
	if err := os.Mkdir(pol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pol, "allow.rego"), []byte("package envoy.authz\n\ndefault allow := true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "gatehouse.yaml")
	body := fmt.Sprintf("listen:\n  authz: 127.0.0.1:0\n  admin: 127.0.0.1:0\nauthz:\n  policies:\n    dir: %s\n%s", pol, extra)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// poll is testkit.Eventually.
func poll(t *testing.T, what string, cond func() error) { testkit.Eventually(t, what, cond) }

func getStatus(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// startAuthzInProcess runs `gatehouse authz` in this process until the
// returned cancel is called; exited yields its exit code.
func startAuthzInProcess(t *testing.T, args ...string) (admin string, cancel func(), exited <-chan int, stderr *logtest.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &logtest.Buffer{}, &logtest.Buffer{}
	code, done := make(chan int, 1), make(chan struct{})
	go func() {
		defer close(done)
		code <- run(ctx, append([]string{"authz"}, args...), stdout, stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Error("gatehouse authz did not return")
		}
	})
	re := regexp.MustCompile(`admin HTTP on (\S+)`)
	poll(t, "listening", func() error {
		if m := re.FindStringSubmatch(stdout.String()); m != nil {
			admin = m[1]
			return nil
		}
		select {
		case c := <-code:
			t.Fatalf("gatehouse authz exited %d: %s", c, stderr)
		default:
		}
		return fmt.Errorf("no banner yet; stderr: %s", stderr)
	})
	return admin, cancel, code, stderr
}

// TestShutdownDrainInProcess: once asked to stop, /readyz fails at once
// while /healthz stays up, and runServer returns 0 only after the delay.
func TestShutdownDrainInProcess(t *testing.T) {
	const delay = 1500 * time.Millisecond
	admin, cancel, exited, stderr := startAuthzInProcess(t, "--config", authzConfig(t, ""), "--shutdown-delay", delay.String())
	poll(t, "ready", func() error {
		if code, body, err := getStatus("http://" + admin + "/readyz"); err != nil || code != 200 {
			return fmt.Errorf("%d %s %v", code, body, err)
		}
		return nil
	})
	asked := time.Now()
	cancel()
	poll(t, "readyz fails while draining", func() error {
		if code, body, err := getStatus("http://" + admin + "/readyz"); err != nil || code != 503 || !strings.Contains(body, `"shutting_down":true`) {
			return fmt.Errorf("%d %s %v", code, body, err)
		}
		return nil
	})
	if code, body, err := getStatus("http://" + admin + "/healthz"); err != nil || code != 200 {
		t.Fatalf("healthz while draining: %d %s %v", code, body, err)
	}
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("did not stop after the delay")
	}
	if took := time.Since(asked); took < delay {
		t.Errorf("stopped %s after being asked, before the %s delay", took, delay)
	}
	for _, step := range []string{`"msg":"draining`, `"msg":"stopping`, `"msg":"stopped"`} {
		if !strings.Contains(stderr.String(), step) {
			t.Errorf("no %s log line:\n%s", step, stderr)
		}
	}
}

// TestShutdownWithoutDelay: delay 0 (the default) stops at once, as before.
func TestShutdownWithoutDelay(t *testing.T) {
	_, cancel, exited, stderr := startAuthzInProcess(t, "--config", authzConfig(t, ""))
	cancel()
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not stop promptly")
	}
}

func TestShutdownSettingsValidated(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"negative delay flag", []string{"--shutdown-delay", "-1s"}, 2, "--shutdown-delay must be between 0 and 5m0s; got -1s"},
		{"huge delay flag", []string{"--shutdown-delay", "1h"}, 2, "--shutdown-delay must be between 0 and 5m0s; got 1h0m0s"},
		{"zero grace flag", []string{"--shutdown-grace", "0s"}, 2, "--shutdown-grace must be above 0"},
		{"bad delay in config", []string{"--config", authzConfig(t, "shutdown:\n  delay: 10m\n")}, 1, "shutdown.delay: must be between 0 and 5m0s; got 10m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := run(context.Background(), append([]string{"authz"}, tc.args...), &stdout, &stderr)
			if code != tc.wantCode || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d (want %d), stderr lacks %q:\n%s", code, tc.wantCode, tc.want, stderr.String())
			}
		})
	}
}
