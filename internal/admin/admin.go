// Package admin serves the operator's HTTP endpoints: liveness, readiness,
// Prometheus metrics and JSON status pages that the parts of Gatehouse
// register. It binds loopback by default because status pages name nodes,
// subjects and certificate serials.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyFunc reports nil when its part is ready to serve.
type ReadyFunc func() error

// Server is the admin HTTP server.
type Server struct {
	mux *http.ServeMux
	// handler is mux behind cross-origin protection: a browser page on the
	// operator's machine must not drive mutating endpoints (POST
	// /debug/rotate) on a loopback admin port. IdPs and scripts posting
	// server to server send no Origin or Sec-Fetch-Site and pass.
	handler http.Handler
	mu      sync.Mutex
	checks  map[string]ReadyFunc
	infos   map[string]ReadyFunc
	log     *slog.Logger
	// draining is set once the process is shutting down: /readyz fails
	// from then on, whatever the checks say.
	draining atomic.Bool
}

// New returns a Server exposing /healthz, /readyz and /metrics from reg.
func New(reg *prometheus.Registry, log *slog.Logger) *Server {
	s := &Server{mux: http.NewServeMux(), checks: map[string]ReadyFunc{}, infos: map[string]ReadyFunc{}, log: log}
	s.handler = http.NewCrossOriginProtection().Handler(s.mux)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return s
}

// AddReadiness makes /readyz fail until check returns nil.
func (s *Server) AddReadiness(name string, check ReadyFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = check
}

// AddInfo shows check's state on /readyz without making the process
// unready: for dependencies whose outage every replica shares (Redis), where
// failing readiness everywhere at once would take the whole service down
// instead of letting it run degraded.
func (s *Server) AddInfo(name string, check ReadyFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.infos[name] = check
}

// Drain makes /readyz answer 503 from now on, with "shutting_down": true
// in its body, whatever the checks say: the process is leaving, and load
// balancers and Kubernetes should stop sending it new work. /healthz keeps
// answering 200, so a liveness probe does not restart it mid-drain.
func (s *Server) Drain() { s.draining.Store(true) }

// Handle registers an extra page, e.g. "GET /debug/policy".
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// JSON returns a handler that serves f's result as indented JSON.
func JSON(f func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(f())
	})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	checks, infos := maps.Clone(s.checks), maps.Clone(s.infos)
	s.mu.Unlock()
	run := func(fns map[string]ReadyFunc) (map[string]string, bool) {
		out, ok := map[string]string{}, true
		for _, n := range slices.Sorted(maps.Keys(fns)) {
			if err := fns[n](); err != nil {
				out[n], ok = err.Error(), false
			} else {
				out[n] = "ok"
			}
		}
		return out, ok
	}
	status, ready := run(checks)
	body := map[string]any{"ready": ready, "checks": status}
	if s.draining.Load() {
		ready = false
		body["ready"], body["shutting_down"] = false, true
	}
	if len(infos) > 0 {
		body["info"], _ = run(infos)
	}
	w.Header().Set("Content-Type", "application/json")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}

// Serve answers on lis until ctx is done.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
