package collector

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"phloem/internal/promx"
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
	reasonMetersFull       = "meters_full"       // 503 + X-Phloem-Full (MaxMeters)
)

var allReasons = []string{
	reasonMalformed, reasonBadMeter, reasonUnauthenticated, reasonTenantDisabled, reasonMeterBlocked,
	reasonTooLarge, reasonUnsupportedType, reasonRateLimited, reasonOverRequests, reasonOverBytes,
	reasonOverTaps, reasonNotReady, reasonShuttingDown, reasonKafkaUnavailable, reasonDeadline,
	reasonClientGone, reasonBadMethod, reasonMetersFull,
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
	hubGauges       *hubGauges // set by newHubs: read from the hubs at scrape time
	tapDropped      prometheus.Counter
	produceErrors   prometheus.Counter
	retriesJoined   prometheus.Counter
	tlsReloads      *prometheus.CounterVec
	metersTracked   prometheus.Gauge
	metersEvicted   prometheus.Counter
	metersActive    prometheus.Collector // GaugeFunc over the activity table, set by New
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
			Help: "Payload bytes of records accepted (acknowledged by Kafka, counted once even when a retry joined an earlier attempt) per tenant; tenants beyond the label cap count as tenant=\"other\"."}, []string{"tenant"}),
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
		tapDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "tap_dropped_records_total",
			Help: "Records dropped by policy from slow taps' buffers (oldest first); the tap is told how many."}),
		produceErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "produce_errors_total",
			Help: "Records Kafka failed to acknowledge (their request was answered 503)."}),
		retriesJoined: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "retries_joined_total",
			Help: "Retried batches answered from an earlier attempt that was answered 503 but whose records were still in the producer (no second copy produced)."}),
		tlsReloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "tls_reloads_total",
			Help: "Certificate reloads, by result."}, []string{"result"}),
		metersTracked: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "meters_tracked",
			Help: "Meters in the activity table behind the zombie-meter detector (bounded by MaxMetersTracked)."}),
		metersEvicted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "meters_evicted_total",
			Help: "Meters evicted from the full activity table, least recently seen first."}),
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
	cs := []prometheus.Collector{m.ingressBytes, m.ingressRecords, m.ingressBody, m.egressBytes, m.inflightReqs,
		m.inflightBytes, m.rejected, m.requests, m.produceLatency, m.requestLatency,
		m.tapDropped, m.produceErrors, m.retriesJoined, m.tlsReloads, m.metersTracked, m.metersEvicted}
	if m.metersActive != nil {
		cs = append(cs, m.metersActive)
	}
	if m.hubGauges != nil {
		cs = append(cs, m.hubGauges)
	}
	return cs
}

// hubGauges exports the hubs' gauges (hub_subscribers, tap_receivers,
// republishers, hubs) from ONE read of the hubs' counts under hubs.mu, at
// scrape time. Separate Gauges would be set at different instants, and a
// scrape between two Sets could show a subscription without its receiver: a
// false leak for the ops detector, which compares them.
//
// The invariant a scrape sees in a healthy collector:
//
//	hub_subscribers <= tap_receivers + republishers
//
// with equality whenever no tap is opening or closing. A tap handler counts
// itself as a receiver just before it subscribes and stops counting just after
// it unsubscribed, so the transient difference is negative, never positive. A
// positive excess is a subscription without a live receiver: a leak.
//
// republishers is always 0: the Kafka republisher is not a hub subscription
// (the ingest path calls it synchronously, see hubs), so it holds none. It is
// exported anyway, under the name the ops leak rule sums, because the rule stays
// inactive while any of its gauges is absent.
type hubGauges struct {
	h                                    *hubs
	subscribers, receivers, reps, tenHub *prometheus.Desc
}

func newHubGauges(h *hubs) *hubGauges {
	const ns, sub = "phloem", "collector"
	return &hubGauges{
		h: h,
		subscribers: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "hub_subscribers"),
			"Hub subscriptions open over all tenant hubs (one per live tap; the Kafka republisher holds none). Above tap_receivers + republishers: a leaked subscription.", nil, nil),
		receivers: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "tap_receivers"),
			"Live tap handlers streaming to a connected client, each the owner of one hub subscription.", nil, nil),
		reps: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "republishers"),
			"Hub subscriptions held by Kafka republishers: 0, the republisher is called synchronously by ingest and holds no hub subscription.", nil, nil),
		tenHub: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "hubs"),
			"Tenant hubs that exist (a hub exists while it has subscribers).", nil, nil),
	}
}

func (g *hubGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.subscribers
	ch <- g.receivers
	ch <- g.reps
	ch <- g.tenHub
}

func (g *hubGauges) Collect(ch chan<- prometheus.Metric) {
	s := g.h.stats()
	ch <- prometheus.MustNewConstMetric(g.subscribers, prometheus.GaugeValue, float64(s.subscribers))
	ch <- prometheus.MustNewConstMetric(g.receivers, prometheus.GaugeValue, float64(s.receivers))
	ch <- prometheus.MustNewConstMetric(g.reps, prometheus.GaugeValue, 0)
	ch <- prometheus.MustNewConstMetric(g.tenHub, prometheus.GaugeValue, float64(s.hubs))
}

func (m *metrics) register(reg prometheus.Registerer) error {
	return promx.RegisterAll(reg, "collector metrics", m.collectors()...)
}

func (m *metrics) unregister(reg prometheus.Registerer) { promx.UnregisterAll(reg, m.collectors()...) }

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
