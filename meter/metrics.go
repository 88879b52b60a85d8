package meter

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"phloem/internal/promx"
)

// Drop reasons (label values of phloem_meter_records_dropped_total).
const (
	DropSpoolFull = "spool_full" // FullDropOldest deleted an unacknowledged segment
	DropRejected  = "rejected"   // the collector refused the batch as malformed (400) after retries
	DropTooLarge  = "too_large"  // a single record the collector refuses as too large (413)
)

// metrics holds the meter's Prometheus collectors and the atomic counters Stats
// reads (Prometheus counters cannot be read back cheaply).
type metrics struct {
	reg prometheus.Registerer
	all []prometheus.Collector

	sent, acked, spooled, retries, attempts, corrupt prometheus.Counter
	dropped                                          *prometheus.CounterVec
	responses                                        *prometheus.CounterVec
	current                                          *prometheus.GaugeVec
	spoolBytes, collectors                           prometheus.Gauge

	nSent, nAcked, nSpooled, nRetries, nAttempts, nCorrupt, nDropped atomic.Uint64
	nSpoolBytes                                                      atomic.Int64

	mu          sync.Mutex
	currentName string
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "phloem", "meter"
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	m := &metrics{
		reg:      reg,
		sent:     counter("records_sent_total", "Records sent to a collector, counting every attempt (a retried record counts again)."),
		acked:    counter("records_acked_total", "Records a collector acknowledged (after Kafka acknowledged them)."),
		spooled:  counter("records_spooled_total", "Records appended to the on-disk spool (every accepted record)."),
		retries:  counter("retries_total", "Ingest attempts that repeated a failed one."),
		attempts: counter("attempts_total", "Ingest requests started."),
		corrupt:  counter("spool_corrupt_entries_total", "Corrupt or torn spool entries detected and skipped."),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "records_dropped_total",
			Help: "Records given up by policy: spool_full (drop-oldest), rejected (400), too_large (413)."}, []string{"reason"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "responses_total",
			Help: "Ingest attempt outcomes by HTTP status code, or \"error\" when no response arrived."}, []string{"code"}),
		current: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "current_collector",
			Help: "1 for the collector that last acknowledged a batch (info metric)."}, []string{"collector"}),
		spoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "spool_bytes",
			Help: "Bytes held in spool segments, acknowledged or not, until their segment is deleted."}),
		collectors: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "collectors",
			Help: "Collectors in the current ring."}),
	}
	for _, r := range []string{DropSpoolFull, DropRejected, DropTooLarge} {
		m.dropped.WithLabelValues(r) // export zeros so alerts see the series
	}
	m.all = []prometheus.Collector{m.sent, m.acked, m.spooled, m.retries, m.attempts, m.corrupt, m.dropped, m.responses, m.current, m.spoolBytes, m.collectors}
	if reg == nil {
		return m, nil
	}
	if err := promx.RegisterAll(reg, "meter metrics", m.all...); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.all {
		m.reg.Unregister(c)
	}
}

func (m *metrics) addSent(n int)    { m.sent.Add(float64(n)); m.nSent.Add(uint64(n)) }
func (m *metrics) addAcked(n int)   { m.acked.Add(float64(n)); m.nAcked.Add(uint64(n)) }
func (m *metrics) addSpooled(n int) { m.spooled.Add(float64(n)); m.nSpooled.Add(uint64(n)) }
func (m *metrics) incRetries()      { m.retries.Inc(); m.nRetries.Add(1) }
func (m *metrics) incAttempts()     { m.attempts.Inc(); m.nAttempts.Add(1) }
func (m *metrics) addCorrupt(n int) { m.corrupt.Add(float64(n)); m.nCorrupt.Add(uint64(n)) }
func (m *metrics) setSpoolBytes(b int64) {
	m.spoolBytes.Set(float64(b))
	m.nSpoolBytes.Store(b)
}

func (m *metrics) addDropped(reason string, n int) {
	m.dropped.WithLabelValues(reason).Add(float64(n))
	m.nDropped.Add(uint64(n))
}

// setCurrent moves the current_collector info metric to name.
func (m *metrics) setCurrent(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if name == m.currentName {
		return
	}
	if m.currentName != "" {
		m.current.DeleteLabelValues(m.currentName)
	}
	m.currentName = name
	m.current.WithLabelValues(name).Set(1)
}

func (m *metrics) currentCollector() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.currentName
}
