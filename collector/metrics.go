package collector

import (
	"errors"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Rejection reasons, the values of rejected_requests_total{reason}.
const (
	reasonMalformed        = "malformed"         // 400
	reasonBadMeter         = "bad_meter_id"      // 400
	reasonUnauthenticated  = "unauthenticated"   // 401
	reasonTenantDisabled   = "tenant_disabled"   // 403
	reasonMeterBlocked     = "meter_blocked"     // 403
	reasonTooLarge         = "too_large"         // 413
	reasonUnsupportedType  = "unsupported_type"  // 415
	reasonRateLimited      = "rate_limited"      // 429
	reasonOverRequests     = "over_requests"     // 503
	reasonOverBytes        = "over_bytes"        // 503
	reasonOverTaps         = "over_taps"         // 503
	reasonNotReady         = "not_ready"         // 503
	reasonShuttingDown     = "shutting_down"     // 503
	reasonKafkaUnavailable = "kafka_unavailable" // 503
	reasonDeadline         = "deadline"          // 503
	reasonClientGone       = "client_gone"       // no answer reached the client
	reasonBadMethod        = "method"            // 405
)

var allReasons = []string{
	reasonMalformed, reasonBadMeter, reasonUnauthenticated, reasonTenantDisabled, reasonMeterBlocked,
	reasonTooLarge, reasonUnsupportedType, reasonRateLimited, reasonOverRequests, reasonOverBytes,
	reasonOverTaps, reasonNotReady, reasonShuttingDown, reasonKafkaUnavailable, reasonDeadline,
	reasonClientGone, reasonBadMethod,
}

// otherTenant is the label value of tenants beyond the cardinality cap.
const otherTenant = "other"

type metrics struct {
	ingressBytes    *prometheus.CounterVec
	ingressRecords  *prometheus.CounterVec
	ingressBody     prometheus.Counter
	egressBytes     *prometheus.CounterVec
	egressKafka     prometheus.Counter
	egressTap       prometheus.Counter
	inflightReqs    prometheus.Gauge
	inflightBytes   prometheus.Gauge
	rejected        *prometheus.CounterVec
	requests        *prometheus.CounterVec
	produceLatency  prometheus.Histogram
	requestLatency  prometheus.Histogram
	hubSubscribers  prometheus.Gauge
	hubs            prometheus.Gauge
	tapDropped      prometheus.Counter
	produceErrors   prometheus.Counter
	retriesJoined   prometheus.Counter
	tlsReloads      *prometheus.CounterVec
	tenantLabelsCap int

	// Per-tenant children cached, so the hot path does one map lookup under a
	// read lock instead of WithLabelValues' hashing. Bounded by tenantLabelsCap+1.
	mu      sync.RWMutex
	tenants map[string]*tenantCounters
}

type tenantCounters struct {
	bytes, records prometheus.Counter
}

func newMetrics(labelCap int) *metrics {
	const ns, sub = "phloem", "collector"
	m := &metrics{
		ingressBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "ingress_bytes_total",
			Help: "Payload bytes of records accepted (acknowledged by Kafka) per tenant; tenants beyond the label cap count as tenant=\"other\"."}, []string{"tenant"}),
		ingressRecords: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "ingress_records_total",
			Help: "Records accepted (acknowledged by Kafka) per tenant; tenants beyond the label cap count as tenant=\"other\"."}, []string{"tenant"}),
		ingressBody: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "ingress_body_bytes_total",
			Help: "Raw request body bytes read from ingest requests (compressed as sent), accepted or not."}),
		egressBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "egress_bytes_total",
			Help: "Payload bytes sent on, by destination: kafka (acknowledged) or tap (written to live taps)."}, []string{"destination"}),
		inflightReqs: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "inflight_requests",
			Help: "Ingest requests admitted and not yet finished."}),
		inflightBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "inflight_bytes",
			Help: "Bytes of body buffers held by in-flight ingest requests (until Kafka releases them)."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rejected_requests_total",
			Help: "Requests refused, by reason."}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Requests answered on the data listener, by path and status code."}, []string{"path", "code"}),
		produceLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "produce_latency_seconds",
			Help:    "Time from producing a batch's first record to Kafka acknowledging its last.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		requestLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "ingest_duration_seconds",
			Help:    "Duration of ingest requests from headers read to answer, whatever the answer.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		hubSubscribers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "hub_subscribers",
			Help: "Live tap subscriptions over all tenant hubs."}),
		hubs: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "hubs",
			Help: "Tenant hubs that exist (a hub exists while it has subscribers)."}),
		tapDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "tap_dropped_records_total",
			Help: "Records dropped by policy from slow taps' buffers (oldest first); the tap is told how many."}),
		produceErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "produce_errors_total",
			Help: "Records Kafka failed to acknowledge (their request was answered 503)."}),
		retriesJoined: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "retries_joined_total",
			Help: "Retried batches answered from an earlier attempt that was answered 503 but whose records were still in the producer (no second copy produced)."}),
		tlsReloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "tls_reloads_total",
			Help: "Certificate reloads, by result."}, []string{"result"}),
		tenantLabelsCap: labelCap,
		tenants:         make(map[string]*tenantCounters),
	}
	m.egressKafka = m.egressBytes.WithLabelValues("kafka")
	m.egressTap = m.egressBytes.WithLabelValues("tap")
	// Pre-create every reason so dashboards see zeros rather than absent series.
	for _, r := range allReasons {
		m.rejected.WithLabelValues(r)
	}
	m.tlsReloads.WithLabelValues("ok")
	m.tlsReloads.WithLabelValues("error")
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.ingressBytes, m.ingressRecords, m.ingressBody, m.egressBytes, m.inflightReqs,
		m.inflightBytes, m.rejected, m.requests, m.produceLatency, m.requestLatency, m.hubSubscribers, m.hubs,
		m.tapDropped, m.produceErrors, m.retriesJoined, m.tlsReloads}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	var done []prometheus.Collector
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return errors.Join(errors.New("cannot register collector metrics (one Collector per registry)"), err)
		}
		done = append(done, c)
	}
	return nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}

// forTenant returns the per-tenant counters of id, or of "other" once the cap
// of distinct labels is reached.
func (m *metrics) forTenant(id string) *tenantCounters {
	m.mu.RLock()
	tc, ok := m.tenants[id]
	m.mu.RUnlock()
	if ok {
		return tc
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if tc, ok := m.tenants[id]; ok {
		return tc
	}
	label := id
	if len(m.tenants) >= m.tenantLabelsCap {
		if tc, ok := m.tenants[otherTenant]; ok {
			return tc
		}
		label = otherTenant
	}
	tc = &tenantCounters{bytes: m.ingressBytes.WithLabelValues(label), records: m.ingressRecords.WithLabelValues(label)}
	m.tenants[label] = tc
	return tc
}

// codeLabel avoids strconv on the hot path for the usual codes.
func codeLabel(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 401:
		return "401"
	case 403:
		return "403"
	case 413:
		return "413"
	case 415:
		return "415"
	case 429:
		return "429"
	case 503:
		return "503"
	}
	return strconv.Itoa(code)
}
