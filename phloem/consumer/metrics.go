package consumer

import (
	"github.com/prometheus/client_golang/prometheus"

	"phloem/internal/promx"
)

type metrics struct {
	recordsIn        prometheus.Counter
	bytesIn          prometheus.Counter
	recordsOut       *prometheus.CounterVec
	bytesOut         *prometheus.CounterVec
	queueDepth       *prometheus.GaugeVec
	queueBytes       *prometheus.GaugeVec
	sinkErrors       *prometheus.CounterVec
	sinkHealthy      *prometheus.GaugeVec
	pausedPartitions prometheus.Gauge
	pauses           prometheus.Counter
	pendingBytes     prometheus.Gauge
	assigned         prometheus.Gauge
	lag              prometheus.Gauge
	commitLatency    prometheus.Histogram
	commitErrors     prometheus.Counter
	rebalance        *prometheus.HistogramVec
	unrouted         prometheus.Counter
	dropped          *prometheus.CounterVec
	rewinds          prometheus.Counter
	streamDropped    prometheus.Counter
	streamSubs       prometheus.Gauge
	fetchErrors      prometheus.Counter
}

func newMetrics() *metrics {
	const ns, sub = "phloem", "consumer"
	return &metrics{
		recordsIn: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_in_total",
			Help: "Records consumed from tenant topics."}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "bytes_in_total",
			Help: "Payload bytes consumed from tenant topics."}),
		recordsOut: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_out_total",
			Help: "Records acknowledged by each sink."}, []string{"sink"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "bytes_out_total",
			Help: "Payload bytes acknowledged by each sink."}, []string{"sink"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "queue_depth",
			Help: "Records held by each sink's queue (waiting plus being delivered)."}, []string{"sink"}),
		queueBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "queue_bytes",
			Help: "Bytes held by each sink's queue (waiting plus being delivered)."}, []string{"sink"}),
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "sink_errors_total",
			Help: "Failed delivery attempts (and configuration errors) per sink."}, []string{"sink"}),
		sinkHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "sink_healthy",
			Help: "1 when the sink's last delivery succeeded, 0 while it is failing."}, []string{"sink"}),
		pausedPartitions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "paused_partitions",
			Help: "Partitions whose fetching is paused because a sink queue is full."}),
		pauses: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "partition_pauses_total",
			Help: "Times a partition was paused because a sink queue was full (backpressure events)."}),
		pendingBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "pending_bytes",
			Help: "Bytes (payload plus per-record overhead) of fetched records held back for partitions whose sink queue is full."}),
		assigned: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "assigned_partitions",
			Help: "Partitions assigned to this member."}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "lag_records",
			Help: "Records between the committable watermark and the high-water mark, summed over assigned partitions."}),
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "commit_latency_seconds",
			Help: "Duration of offset commits.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "commit_errors_total",
			Help: "Failed offset commits."}),
		rebalance: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "rebalance_callback_duration_seconds",
			Help:    "Duration of the group's assigned/revoked/lost callbacks.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"callback"}),
		unrouted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_unrouted_total",
			Help: "Records of tenants that no sink matched; they are committed without delivery."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_dropped_total",
			Help: "Records removed from sink queues without acknowledgement (reason: revoked = partition moved to another member; abandoned = sink removed before it drained). Neither is committed: both are redelivered."},
			[]string{"reason"}),
		rewinds: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "partition_rewinds_total",
			Help: "Partitions re-read from their watermark because a removed sink abandoned some of their records."}),
		streamDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "stream_dropped_total",
			Help: "Lines dropped (oldest first) from slow stream subscribers' buffers."}),
		streamSubs: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "stream_subscribers",
			Help: "Connected stream subscribers."}),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "fetch_errors_total",
			Help: "Errors returned by polls of tenant topics."}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.recordsIn, m.bytesIn, m.recordsOut, m.bytesOut, m.queueDepth, m.queueBytes,
		m.sinkErrors, m.sinkHealthy, m.pausedPartitions, m.pauses, m.pendingBytes, m.assigned, m.lag, m.commitLatency, m.commitErrors,
		m.rebalance, m.unrouted, m.dropped, m.rewinds, m.streamDropped, m.streamSubs, m.fetchErrors}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	return promx.RegisterAll(reg, "consumer metrics", m.collectors()...)
}

func (m *metrics) unregister(reg prometheus.Registerer) { promx.UnregisterAll(reg, m.collectors()...) }

// forgetSink removes a removed sink's label values, so the series set stays bounded
// by the configured sinks.
func (m *metrics) forgetSink(id string) {
	for _, v := range []interface{ DeleteLabelValues(...string) bool }{m.recordsOut, m.bytesOut, m.queueDepth, m.queueBytes, m.sinkErrors, m.sinkHealthy} {
		v.DeleteLabelValues(id)
	}
}
