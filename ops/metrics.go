package ops

import (
	"github.com/prometheus/client_golang/prometheus"

	"phloem/internal/promx"
)

// metrics are the monitor's own series, all under phloem_ops_.
type metrics struct {
	ratio          *prometheus.GaugeVec // rule
	value          *prometheus.GaugeVec // rule (detectors)
	firing         *prometheus.GaugeVec // rule
	pending        *prometheus.GaugeVec // rule
	ingress        *prometheus.GaugeVec // component
	egress         *prometheus.GaugeVec // component
	webhookErrors  prometheus.Counter
	webhookDropped prometheus.Counter
	webhookSent    prometheus.Counter
	gatherErrors   prometheus.Counter
	samples        prometheus.Counter

	collectors []prometheus.Collector
}

func newMetrics() *metrics {
	o := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "phloem", Subsystem: "ops", Name: name, Help: help}
	}
	m := &metrics{
		ratio: prometheus.NewGaugeVec(prometheus.GaugeOpts(o("ratio",
			"Egress/ingress byte-rate ratio watched by a ratio rule; NaN while the component is idle or its counters are absent.")), []string{"rule"}),
		value: prometheus.NewGaugeVec(prometheus.GaugeOpts(o("detector_value",
			"Value a detector evaluates: zombie meters, excess hub subscriptions, consumer lag growth over the window (records); NaN when undefined.")), []string{"rule"}),
		firing: prometheus.NewGaugeVec(prometheus.GaugeOpts(o("alert_firing",
			"1 while the rule's alert is firing, else 0.")), []string{"rule"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts(o("alert_pending",
			"1 while the rule's condition holds but has not yet held for the rule's for-duration, else 0.")), []string{"rule"}),
		ingress: prometheus.NewGaugeVec(prometheus.GaugeOpts(o("ingress_bytes_per_second",
			"Component ingress byte rate over the monitor's sliding window; NaN until two samples exist.")), []string{"component"}),
		egress: prometheus.NewGaugeVec(prometheus.GaugeOpts(o("egress_bytes_per_second",
			"Component egress byte rate over the monitor's sliding window; NaN until two samples exist.")), []string{"component"}),
		webhookErrors: prometheus.NewCounter(prometheus.CounterOpts(o("webhook_errors_total",
			"Webhook notifications that failed (transport error, timeout or non-2xx answer)."))),
		webhookDropped: prometheus.NewCounter(prometheus.CounterOpts(o("webhook_dropped_total",
			"Webhook notifications dropped because the bounded queue was full or the monitor stopped."))),
		webhookSent: prometheus.NewCounter(prometheus.CounterOpts(o("webhook_sent_total",
			"Webhook notifications delivered (2xx answer)."))),
		gatherErrors: prometheus.NewCounter(prometheus.CounterOpts(o("gather_errors_total",
			"Samples where gathering the process's metrics returned an error (the partial result is still used)."))),
		samples: prometheus.NewCounter(prometheus.CounterOpts(o("samples_total",
			"Sampling and evaluation rounds completed."))),
	}
	m.collectors = []prometheus.Collector{m.ratio, m.value, m.firing, m.pending, m.ingress, m.egress,
		m.webhookErrors, m.webhookDropped, m.webhookSent, m.gatherErrors, m.samples}
	return m
}

// register registers every collector on reg, unregistering the ones already
// registered if one fails so that a failed New leaves reg as it found it.
func (m *metrics) register(reg prometheus.Registerer) error {
	return promx.RegisterAll(reg, "ops metrics", m.collectors...)
}

func (m *metrics) unregister(reg prometheus.Registerer) { promx.UnregisterAll(reg, m.collectors...) }
