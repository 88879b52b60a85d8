package ops

// ExportedMetrics returns the phloem_* metric names that the Phloem binaries export
// and that ops reads or that ops/prometheus/alerts.yml and ops/grafana/phloem.json
// refer to. A test fails if the rule files name a phloem_* metric missing from this
// list.
//
// The component names (collector, consumer) are the contract with those packages,
// kept here by hand because they were written at the same time as ops;
// TestExportedMetricsMatchRealComponents (collector_integration_test.go) builds the
// real collector and consumer and checks every phloem_collector_* and
// phloem_consumer_* name here against their registries. The phloem_ops_* names are
// checked against the Monitor's own registry by TestExportedMetricsMatchMonitor.
func ExportedMetrics() []string {
	return []string{
		// collector
		MetricCollectorIngress,
		MetricCollectorEgress,
		MetricHubSubscribers,
		MetricTapReceivers,
		MetricRepublishers,
		// phloem consumer
		MetricConsumerBytesIn,
		MetricConsumerBytesOut,
		MetricConsumerLagRecords,
		// ops (this package)
		"phloem_ops_ratio",
		"phloem_ops_detector_value",
		"phloem_ops_alert_firing",
		"phloem_ops_alert_pending",
		"phloem_ops_ingress_bytes_per_second",
		"phloem_ops_egress_bytes_per_second",
		"phloem_ops_webhook_errors_total",
		"phloem_ops_webhook_dropped_total",
		"phloem_ops_webhook_sent_total",
		"phloem_ops_gather_errors_total",
		"phloem_ops_samples_total",
	}
}
