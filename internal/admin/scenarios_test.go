package admin

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func newScenarioServer(t *testing.T) (*Server, *atomic.Int32) {
	t.Helper()
	s := New(prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	var calls atomic.Int32
	s.Handle("POST /debug/mutate", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	s.Handle("GET /debug/info", JSON(func() any { return map[string]string{"k": "v"} }))
	return s, &calls
}

func TestScenarioMethods(t *testing.T) {
	s, calls := newScenarioServer(t)
	tests := []struct {
		method, path string
		want         int
		mutates      bool
	}{
		{"GET", "/healthz", 200, false},
		{"HEAD", "/healthz", 200, false},
		{"POST", "/healthz", 405, false},
		{"DELETE", "/readyz", 405, false},
		{"PUT", "/metrics", 405, false},
		{"GET", "/debug/mutate", 405, false},
		{"HEAD", "/debug/mutate", 405, false},
		{"PUT", "/debug/mutate", 405, false},
		{"POST", "/debug/mutate", 202, true},
		{"POST", "/debug/info", 405, false},
		{"GET", "/debug/info", 200, false},
		{"GET", "/debug/", 404, false},
		{"GET", "/", 404, false},
	}
	for _, tc := range tests {
		before := calls.Load()
		rec := httptest.NewRecorder()
		s.mux.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, rec.Code, tc.want)
		}
		if rec.Code == 405 && rec.Header().Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow header", tc.method, tc.path)
		}
		if got := calls.Load() != before; got != tc.mutates {
			t.Errorf("%s %s: handler ran=%v, want %v", tc.method, tc.path, got, tc.mutates)
		}
	}
}

func TestScenarioReadyzInfoDoesNotGate(t *testing.T) {
	s := New(prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	s.AddInfo("redis", func() error { return errors.New("dial tcp: refused") })
	rec := httptest.NewRecorder()
	s.mux.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"ready":true`) || !strings.Contains(rec.Body.String(), "refused") {
		t.Fatalf("readyz with failing info = %d %s", rec.Code, rec.Body)
	}
	s.AddReadiness("policy", func() error { return errors.New("none") })
	rec = httptest.NewRecorder()
	s.mux.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"ready":false`) {
		t.Fatalf("readyz with failing check = %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
}

// A browser on the operator's machine can send a "simple" cross-site POST
// (form or fetch no-cors) to the loopback admin port. Mutating admin
// endpoints such as POST /debug/rotate should refuse it.
func TestScenarioCrossSiteMutationRefused(t *testing.T) {
	s, calls := newScenarioServer(t)
	// A server-to-server POST (an IdP's back-channel logout) carries
	// neither header and is served.
	plain := httptest.NewRequest("POST", "/debug/mutate", strings.NewReader("x=1"))
	plain.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if rec := httptest.NewRecorder(); func() bool { s.handler.ServeHTTP(rec, plain); return calls.Load() != 1 }() {
		t.Fatalf("a POST without Origin or Sec-Fetch-Site was refused (status %d)", rec.Code)
	}
	for _, h := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Origin": "https://evil.example"},
	} {
		req := httptest.NewRequest("POST", "/debug/mutate", strings.NewReader("x=1"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range h {
			req.Header.Set(k, v)
		}
		before := calls.Load()
		rec := httptest.NewRecorder()
		s.handler.ServeHTTP(rec, req)
		if calls.Load() != before || rec.Code != http.StatusForbidden {
			t.Errorf("cross-site browser POST with %v: handler ran %v, status %d; want refused with 403", h, calls.Load() != before, rec.Code)
		}
	}
}

func TestScenarioDrainFailsReadinessOnly(t *testing.T) {
	s := New(prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	s.AddReadiness("policy", func() error { return nil })
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		s.mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec
	}
	if rec := get("/readyz"); rec.Code != 200 || strings.Contains(rec.Body.String(), "shutting_down") {
		t.Fatalf("readyz before Drain = %d %s", rec.Code, rec.Body)
	}
	s.Drain()
	rec := get("/readyz")
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"ready":false`) ||
		!strings.Contains(rec.Body.String(), `"shutting_down":true`) || !strings.Contains(rec.Body.String(), `"policy":"ok"`) {
		t.Fatalf("readyz while draining = %d %s", rec.Code, rec.Body)
	}
	if rec := get("/healthz"); rec.Code != 200 {
		t.Fatalf("healthz while draining = %d %s", rec.Code, rec.Body)
	}
}
