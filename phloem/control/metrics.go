package control

import (
	"github.com/prometheus/client_golang/prometheus"

	"phloem/internal/promx"
)

type metrics struct {
	applied     prometheus.Counter
	ignored     *prometheus.CounterVec
	fetchErrors prometheus.Counter
	tenants     prometheus.Gauge
	sinks       prometheus.Gauge
	ready       prometheus.Gauge
	subscribers prometheus.Gauge
	catchUp     prometheus.Gauge
}

func newMetrics() *metrics {
	o := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "phloem", Subsystem: "control", Name: name, Help: help}
	}
	m := &metrics{
		applied:     prometheus.NewCounter(prometheus.CounterOpts(o("events_applied_total", "Control records that changed the state."))),
		ignored:     prometheus.NewCounterVec(prometheus.CounterOpts(o("events_ignored_total", "Control records that left the state unchanged, by reason (stale, absent, invalid, unknown_key).")), []string{"reason"}),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts(o("fetch_errors_total", "Errors reading the control topic (fetches and high-water mark lookups); the watcher retries."))),
		tenants:     prometheus.NewGauge(prometheus.GaugeOpts(o("state_tenants", "Tenants in the current control state."))),
		sinks:       prometheus.NewGauge(prometheus.GaugeOpts(o("state_sinks", "Sinks in the current control state."))),
		ready:       prometheus.NewGauge(prometheus.GaugeOpts(o("ready", "1 once the watcher has caught up with the control topic, else 0."))),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts(o("subscribers", "Open subscriptions to control state changes."))),
		catchUp:     prometheus.NewGauge(prometheus.GaugeOpts(o("catchup_duration_seconds", "Time the watcher took to replay the control topic at start."))),
	}
	// Pre-create the label values so that every reason is exported as 0 from the start.
	for _, r := range []string{ReasonStale, ReasonAbsent, ReasonInvalid, ReasonUnknownKey} {
		m.ignored.WithLabelValues(r)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.applied, m.ignored, m.fetchErrors, m.tenants, m.sinks, m.ready, m.subscribers, m.catchUp}
}

// register registers every collector, or none: on error it unregisters those it did.
func (m *metrics) register(reg prometheus.Registerer) error {
	return promx.RegisterAll(reg, "control watcher metrics", m.collectors()...)
}

func (m *metrics) unregister(reg prometheus.Registerer) { promx.UnregisterAll(reg, m.collectors()...) }
