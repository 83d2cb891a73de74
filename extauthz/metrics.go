package extauthz

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the ext_authz server's Prometheus series. A nil *Metrics
// records nothing, so tests and embedders need not register any.
type Metrics struct {
	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

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
	result, status := "allow", "200"
	if !out.allowed {
		result, status = "deny", strconv.Itoa(out.status)
	}
	m.decisions.WithLabelValues(result, status).Inc()
	m.latency.WithLabelValues(result).Observe(elapsed.Seconds())
}
