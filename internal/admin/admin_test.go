package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "gatehouse_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	s := New(reg, slog.New(slog.DiscardHandler))
	var ready atomic.Bool
	s.AddReadiness("policy", func() error {
		if !ready.Load() {
			return errors.New("no policy loaded")
		}
		return nil
	})
	s.Handle("GET /debug/thing", JSON(func() any { return map[string]int{"n": 7} }))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + lis.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, path string
		before     func()
		wantCode   int
		wantBody   string
	}{
		{"alive", "/healthz", nil, 200, "ok"},
		{"not ready names the part", "/readyz", nil, 503, `"policy":"no policy loaded"`},
		{"ready", "/readyz", func() { ready.Store(true) }, 200, `"ready":true`},
		{"metrics from the registry", "/metrics", nil, 200, "gatehouse_test_total 1"},
		{"registered page", "/debug/thing", nil, 200, `"n": 7`},
		{"unknown page", "/debug/nothing", nil, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			code, body := get(tt.path)
			if code != tt.wantCode || !strings.Contains(body, tt.wantBody) {
				t.Errorf("GET %s = %d %q, want %d containing %q", tt.path, code, body, tt.wantCode, tt.wantBody)
			}
		})
	}
}
