package server

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse-proxy/gatehouse/xds/cache"
)

type metrics struct {
	streams             *prometheus.GaugeVec
	pushes, acks, nacks *prometheus.CounterVec
	// byType holds the counters of the types a cache serves, resolved
	// once: every push and ACK of every stream counts, and resolving a
	// label hashes and locks each time.
	byType map[string]typeCounters
}

type typeCounters struct{ pushes, acks, nacks prometheus.Counter }

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_xds_streams",
			Help: "Open xDS streams by protocol (sotw, delta).",
		}, []string{"protocol"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_xds_pushes_total",
			Help: "xDS responses sent, by resource type.",
		}, []string{"type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_xds_acks_total",
			Help: "xDS responses accepted by clients, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_xds_nacks_total",
			Help: "xDS responses rejected by clients, by resource type.",
		}, []string{"type"}),
	}
	m.byType = map[string]typeCounters{}
	for _, t := range cache.Types() {
		l := typeLabel(t)
		m.byType[t] = typeCounters{m.pushes.WithLabelValues(l), m.acks.WithLabelValues(l), m.nacks.WithLabelValues(l)}
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.streams, m.pushes, m.acks, m.nacks} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register xds metrics: %w", err)
		}
	}
	return m, nil
}

// typeLabel shortens a type URL to its message name, e.g. "Cluster".
func typeLabel(typeURL string) string {
	return typeURL[strings.LastIndexByte(typeURL, '.')+1:]
}

func (m *metrics) push(typeURL string) prometheus.Counter {
	if c, ok := m.byType[typeURL]; ok {
		return c.pushes
	}
	return m.pushes.WithLabelValues(typeLabel(typeURL))
}

func (m *metrics) ack(typeURL string) prometheus.Counter {
	if c, ok := m.byType[typeURL]; ok {
		return c.acks
	}
	return m.acks.WithLabelValues(typeLabel(typeURL))
}

func (m *metrics) nack(typeURL string) prometheus.Counter {
	if c, ok := m.byType[typeURL]; ok {
		return c.nacks
	}
	return m.nacks.WithLabelValues(typeLabel(typeURL))
}
