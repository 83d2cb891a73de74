package extauthz

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the ext_authz server's Prometheus series. A nil *Metrics
// records nothing, so tests and embedders need not register any.
type Metrics struct {
	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec

	// The series of each outcome, looked up in the vectors on first use and
	// kept: a series appears on /metrics once it has been observed, as with
	// a lookup per Check, without the label hashing per Check.
	allowCount   atomic.Pointer[series[prometheus.Counter]]
	allowLatency atomic.Pointer[series[prometheus.Observer]]
	denyLatency  atomic.Pointer[series[prometheus.Observer]]
	denyCount    [600]atomic.Pointer[series[prometheus.Counter]] // by HTTP status
}

// series holds one resolved child of a vector.
type series[T any] struct{ m T }

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "authz", Name: "decisions_total",
			Help: "Check decisions by result and HTTP status.",
		}, []string{"result", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "gatehouse", Subsystem: "authz", Name: "check_duration_seconds",
			Help:    "Time to answer one Check, identity and policy included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"result"}),
	}
	reg.MustRegister(m.decisions, m.latency)
	return m
}

func (m *Metrics) observe(out outcome, elapsed time.Duration) {
	if m == nil {
		return
	}
	if out.allowed {
		resolve(&m.allowCount, func() prometheus.Counter { return m.decisions.WithLabelValues("allow", "200") }).Inc()
		resolve(&m.allowLatency, func() prometheus.Observer { return m.latency.WithLabelValues("allow") }).Observe(elapsed.Seconds())
		return
	}
	if out.status >= 0 && out.status < len(m.denyCount) {
		resolve(&m.denyCount[out.status], func() prometheus.Counter { return m.decisions.WithLabelValues("deny", strconv.Itoa(out.status)) }).Inc()
	} else {
		m.decisions.WithLabelValues("deny", strconv.Itoa(out.status)).Inc()
	}
	resolve(&m.denyLatency, func() prometheus.Observer { return m.latency.WithLabelValues("deny") }).Observe(elapsed.Seconds())
}

// resolve returns the series in p, looking it up with lookup the first time.
// Racing first uses look up the same child, so either store is right.
func resolve[T any](p *atomic.Pointer[series[T]], lookup func() T) T {
	if s := p.Load(); s != nil {
		return s.m
	}
	s := &series[T]{m: lookup()}
	p.Store(s)
	return s.m
}
