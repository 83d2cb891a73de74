package store

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Redis store's Prometheus series. A nil *metrics records
// nothing (no registerer given, or the memory backend).
type metrics struct {
	up       prometheus.Gauge
	errors   *prometheus.CounterVec
	received *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, backend string) *metrics {
	if reg == nil || backend != BackendRedis {
		return nil
	}
	m := &metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gatehouse", Subsystem: "store", Name: "redis_up",
			Help: "1 while the pub/sub connection to Redis is up and synchronised, else 0.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "store", Name: "operation_errors_total",
			Help: "Redis operations that failed, by operation.",
		}, []string{"op"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gatehouse", Subsystem: "store", Name: "revocations_received_total",
			Help: "Revocations learnt from Redis: pubsub (published by a replica) or reload (full load on (re)connect).",
		}, []string{"source"}),
	}
	reg.MustRegister(m.up, m.errors, m.received)
	return m
}

func (m *metrics) setUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.up.Set(1)
	} else {
		m.up.Set(0)
	}
}

func (m *metrics) opError(op string) {
	if m != nil {
		m.errors.WithLabelValues(op).Inc()
	}
}

func (m *metrics) gotRevocations(source string, n int) {
	if m != nil && n > 0 {
		m.received.WithLabelValues(source).Add(float64(n))
	}
}
