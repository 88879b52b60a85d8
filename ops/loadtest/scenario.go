package loadtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Duration is a JSON duration: a Go duration string ("5s", "250ms") or a number of
// seconds. Decoding never fails on a bad value; Scenario.Validate reports it with
// the field's path, so that the operator is told which field is wrong.
type Duration struct {
	D   time.Duration
	raw string
	bad bool
}

// Dur returns a Duration of d (for scenarios built in code).
func Dur(d time.Duration) Duration { return Duration{D: d} }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	d.raw = string(b)
	d.bad = false
	if s, err := strconv.Unquote(string(b)); err == nil {
		v, perr := time.ParseDuration(s)
		if perr != nil {
			d.bad = true
			return nil
		}
		d.D = v
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		d.bad = true
		return nil
	}
	d.D = time.Duration(f * float64(time.Second))
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.D.String()) }

// Scenario describes one load test: what to start, how meters arrive, what goes
// wrong when, and the SLOs that decide pass or fail. See testdata/scenarios.
type Scenario struct {
	// Name labels the report. Default: the file name without extension.
	Name        string `json:"name"`
	Description string `json:"description"`
	// Seed seeds every random choice (arrival jitter, sizes, rates). Default 1.
	Seed int64 `json:"seed"`
	// Duration is the load phase: meters append records from their arrival until
	// Duration after the start. Required.
	Duration Duration `json:"duration"`
	// DrainTimeout bounds the wait, after the load phase, for every produced record
	// to be acknowledged by the collectors and seen by the sink. Default 60s.
	DrainTimeout Duration `json:"drain_timeout"`

	Kafka      KafkaSpec     `json:"kafka"`
	Collectors CollectorSpec `json:"collectors"`
	Phloems    PhloemSpec    `json:"phloems"`
	Meters     MeterSpec     `json:"meters"`
	Events     []Event       `json:"events"`
	SLO        SLO           `json:"slo"`

	// dir is the scenario file's directory; relative trace paths resolve against it.
	dir string
}

// KafkaSpec says which Kafka to use.
type KafkaSpec struct {
	// Brokers are external seed brokers. Empty (default): the harness starts an
	// embedded broker with a data dir in its work dir (needed for stop_broker).
	Brokers []string `json:"brokers"`
	// Partitions of the tenant topic. Default 6.
	Partitions int32 `json:"partitions"`
}

// CollectorSpec says which collectors to start (or target).
type CollectorSpec struct {
	// Count collectors are started in-process, each on its own loopback IP
	// (127.0.0.11, .12, ...) and one shared port, so that a DNS name can list them.
	Count int `json:"count"`
	// External collector addresses (host:port) to target instead of starting any.
	// Then Token must be set, and the sink must be configured by the operator to
	// post to the harness's sink (see Phloems.SinkAddr). Default none.
	External []string `json:"external"`
	// Token is the tenant token for external collectors. In-process runs make one.
	Token string `json:"token"`
	// MaxInflightRequests per collector (its admission limit; 503 beyond).
	// Default 1024 (the collector's default).
	MaxInflightRequests int `json:"max_inflight_requests"`
	// IngestTimeout is the collector's per-request deadline. Default 10s.
	IngestTimeout Duration `json:"ingest_timeout"`
	// ShutdownGrace is how long a stopped collector waits for in-flight requests.
	// Default 2s (a kill closes the connections at once anyway).
	ShutdownGrace Duration `json:"shutdown_grace"`
	// TenantRecordsPerSec is the tenant's rate limit (429 beyond). Default 0: none.
	TenantRecordsPerSec float64 `json:"tenant_records_per_sec"`
}

// PhloemSpec says how many phloem consumers deliver to the harness's sink.
type PhloemSpec struct {
	// Count consumers join one group. Default 1.
	Count int `json:"count"`
	// SinkTimeout is the http sink's per-request timeout (what a blackholed sink
	// costs per attempt). Default 2s.
	SinkTimeout Duration `json:"sink_timeout"`
	// SessionTimeout of the consumer group. Default 10s.
	SessionTimeout Duration `json:"session_timeout"`
	// SinkAddr is the loopback address the harness's sink listens on. Default
	// "127.0.0.1:0".
	SinkAddr string `json:"sink_addr"`
}

// MeterSpec describes the meter fleet.
type MeterSpec struct {
	// Count meters, each a real meter.Meter with its own id and spool dir. With a
	// trace arrival and Count 0, the trace's total is used; otherwise the trace is
	// scaled to Count. Required (>= 1) otherwise.
	Count   int         `json:"count"`
	Arrival ArrivalSpec `json:"arrival"`
	// RecordSize is the payload size in bytes (at least the verification header,
	// ~64 bytes). Default fixed 200.
	RecordSize Dist `json:"record_size"`
	// Rate is each meter's records per second, drawn once per meter. Default fixed 1.
	Rate Dist `json:"rate"`
	// Linger, BatchMaxRecords, Compression, BackoffBase, BackoffCap, FailoverHold,
	// RequestTimeout: meter.Config fields. Defaults 500ms, 100, "identity", 100ms,
	// 10s, 5s, 30s.
	Linger          Duration `json:"linger"`
	BatchMaxRecords int      `json:"batch_max_records"`
	Compression     string   `json:"compression"`
	BackoffBase     Duration `json:"backoff_base"`
	BackoffCap      Duration `json:"backoff_cap"`
	FailoverHold    Duration `json:"failover_hold"`
	RequestTimeout  Duration `json:"request_timeout"`
	// Discovery is "ring" (default: the harness keeps one shared ring of the
	// collectors, meter.Config.Ring; a ring costs ~2 MiB, so thousands of meters
	// share one) or "dns" (each meter resolves dns://collectors.loadtest:PORT
	// itself through the harness's resolver, which DNSFirst and dns_first skew;
	// keep Count in the hundreds).
	Discovery string `json:"discovery"`
	// DNSFirst, when set, is the collector index every DNS answer lists first.
	DNSFirst *int `json:"dns_first"`
	// SharedTransport makes all meters share one HTTP transport with at most 400
	// connections per collector. Default false: each meter has its own
	// connections, as on real hosts. Needed above 2,000 meters: every meter holds
	// ~3 spool descriptors, and a connection costs one at each end in this one
	// process (the descriptor limit here is 20,000). Meters' retry and failover
	// behaviour is unchanged; only TCP connections are pooled.
	SharedTransport bool `json:"shared_transport"`
}

// ArrivalSpec is the arrival curve of the meters.
type ArrivalSpec struct {
	// Kind is "all_at_once" (default), "ramp" (uniformly over Over) or "trace".
	Kind string `json:"kind"`
	// Over is the ramp's length. Required for "ramp".
	Over Duration `json:"over"`
	// Start delays the first arrival. Default 0.
	Start Duration `json:"start"`
	// Trace is a CSV file (columns second,arrivals), relative to the scenario
	// file's directory. Required for "trace".
	Trace string `json:"trace"`
}

// Dist is a distribution: {"dist":"fixed","value":V}, {"dist":"uniform","min":A,
// "max":B} or {"dist":"exponential","mean":M,"max":B} (max optional, caps samples).
type Dist struct {
	Dist  string  `json:"dist"`
	Value float64 `json:"value"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

// Event actions.
const (
	ActKillCollector    = "kill_collector"
	ActRestartCollector = "restart_collector"
	ActAddCollector     = "add_collector"
	ActRollingRestart   = "rolling_restart"
	ActStopBroker       = "stop_broker"
	ActBlackholeSink    = "blackhole_sink"
	ActDNSFirst         = "dns_first"
)

// Event is something the harness does at a given time after the start.
type Event struct {
	// At is the time after the start. Required.
	At Duration `json:"at"`
	// Action is one of kill_collector, restart_collector, add_collector,
	// rolling_restart, stop_broker, blackhole_sink, dns_first.
	Action string `json:"action"`
	// Collector is the collector index for kill_collector, restart_collector and
	// dns_first.
	Collector *int `json:"collector"`
	// For is how long stop_broker and blackhole_sink last (the broker restarts on
	// the same port and data dir; the sink answers again). Required for those; for
	// kill_collector, a non-zero For restarts the collector after it.
	For Duration `json:"for"`
	// Every and Down shape rolling_restart: collector i is killed at At+i·Every and
	// restarted Down later.
	Every Duration `json:"every"`
	Down  Duration `json:"down"`
}

// SLO holds the thresholds that decide the exit code. A nil pointer or zero
// float means "not checked", except MaxLost, which defaults to 0.
type SLO struct {
	MaxLost       *int64 `json:"max_lost"`
	MaxDuplicates *int64 `json:"max_duplicates"`
	MaxReordered  *int64 `json:"max_reordered"`
	// MaxP99IngestLatencyMs bounds the p99 of successful ingest requests
	// (meter→collector, 200 answers).
	MaxP99IngestLatencyMs float64 `json:"max_p99_ingest_latency_ms"`
	// MaxP99E2ELatencyMs bounds the p99 of end-to-end latency (Append → sink).
	MaxP99E2ELatencyMs float64 `json:"max_p99_e2e_latency_ms"`
	// MaxSharePeakToMean bounds, over every healthy second with traffic (at least
	// 50 accepted requests per collector, at most 10% refusals), the busiest
	// collector's accepted requests divided by the mean per running collector.
	MaxSharePeakToMean float64 `json:"max_share_peak_to_mean"`
	// MaxReconnectPeakToMean bounds the busiest 100 ms of retry attempts divided by
	// the mean per 100 ms over the retry window (see Report).
	MaxReconnectPeakToMean float64 `json:"max_reconnect_peak_to_mean"`
	// MaxReconnectBurst bounds the busiest 100 ms of retry attempts divided by the
	// mean per 100 ms of the 2.1 s around it (Summary.ReconnectBurst): the herd
	// detector that a long retry window cannot dilute.
	MaxReconnectBurst float64 `json:"max_reconnect_burst"`
	// MinRecordsPerSec, when set, requires the mean acknowledged records/s over the
	// load phase to reach it.
	MinRecordsPerSec float64 `json:"min_records_per_sec"`
}

// LoadScenario reads and validates a scenario file.
func LoadScenario(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read scenario: %w", err)
	}
	sc, err := ParseScenario(b)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	sc.dir = filepath.Dir(path)
	if sc.Name == "" {
		sc.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	if err := sc.checkFiles(); err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	return sc, nil
}

// ParseScenario decodes a scenario (unknown fields are errors), applies defaults
// and validates it. Errors name the offending field by its JSON path.
func ParseScenario(b []byte) (*Scenario, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var sc Scenario
	if err := dec.Decode(&sc); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("field %s: expected %s, got JSON %s", te.Field, te.Type, te.Value)
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("invalid JSON at byte %d: %w", se.Offset, err)
		}
		return nil, fmt.Errorf("cannot decode scenario: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the scenario object")
	}
	sc.applyDefaults()
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	return &sc, nil
}

func defDur(d *Duration, v time.Duration) {
	if d.D == 0 && !d.bad {
		d.D = v
	}
}

func (sc *Scenario) applyDefaults() {
	if sc.Seed == 0 {
		sc.Seed = 1
	}
	defDur(&sc.DrainTimeout, 60*time.Second)
	if sc.Kafka.Partitions == 0 {
		sc.Kafka.Partitions = 6
	}
	c := &sc.Collectors
	if c.MaxInflightRequests == 0 {
		c.MaxInflightRequests = 1024
	}
	defDur(&c.IngestTimeout, 10*time.Second)
	defDur(&c.ShutdownGrace, 2*time.Second)
	p := &sc.Phloems
	if p.Count == 0 {
		p.Count = 1
	}
	defDur(&p.SinkTimeout, 2*time.Second)
	defDur(&p.SessionTimeout, 10*time.Second)
	if p.SinkAddr == "" {
		p.SinkAddr = "127.0.0.1:0"
	}
	m := &sc.Meters
	if m.Arrival.Kind == "" {
		m.Arrival.Kind = ArrivalAllAtOnce
	}
	if m.RecordSize.Dist == "" {
		m.RecordSize = Dist{Dist: DistFixed, Value: 200}
	}
	if m.Rate.Dist == "" {
		m.Rate = Dist{Dist: DistFixed, Value: 1}
	}
	defDur(&m.Linger, 500*time.Millisecond)
	if m.BatchMaxRecords == 0 {
		m.BatchMaxRecords = 100
	}
	if m.Compression == "" {
		m.Compression = "identity"
	}
	defDur(&m.BackoffBase, 100*time.Millisecond)
	defDur(&m.BackoffCap, 10*time.Second)
	defDur(&m.FailoverHold, 5*time.Second)
	defDur(&m.RequestTimeout, 30*time.Second)
	if m.Discovery == "" {
		m.Discovery = DiscoveryRing
	}
	if sc.SLO.MaxLost == nil {
		zero := int64(0)
		sc.SLO.MaxLost = &zero
	}
}

// Discovery modes.
const (
	DiscoveryRing = "ring"
	DiscoveryDNS  = "dns"
)

// Validate reports the first invalid field, by its JSON path.
func (sc *Scenario) Validate() error {
	durs := []struct {
		name string
		d    Duration
		min  time.Duration
	}{
		{"duration", sc.Duration, time.Second},
		{"drain_timeout", sc.DrainTimeout, time.Second},
		{"collectors.ingest_timeout", sc.Collectors.IngestTimeout, time.Millisecond},
		{"collectors.shutdown_grace", sc.Collectors.ShutdownGrace, 0},
		{"phloems.sink_timeout", sc.Phloems.SinkTimeout, time.Millisecond},
		{"phloems.session_timeout", sc.Phloems.SessionTimeout, time.Second},
		{"meters.linger", sc.Meters.Linger, 0},
		{"meters.backoff_base", sc.Meters.BackoffBase, time.Millisecond},
		{"meters.backoff_cap", sc.Meters.BackoffCap, time.Millisecond},
		{"meters.failover_hold", sc.Meters.FailoverHold, 0},
		{"meters.request_timeout", sc.Meters.RequestTimeout, time.Millisecond},
		{"meters.arrival.over", sc.Meters.Arrival.Over, 0},
		{"meters.arrival.start", sc.Meters.Arrival.Start, 0},
	}
	for _, d := range durs {
		if err := checkDur(d.name, d.d, d.min); err != nil {
			return err
		}
	}
	if sc.Kafka.Partitions < 1 {
		return fmt.Errorf("field kafka.partitions: must be >= 1, got %d", sc.Kafka.Partitions)
	}
	c := sc.Collectors
	switch {
	case c.Count < 0:
		return fmt.Errorf("field collectors.count: must be >= 0, got %d", c.Count)
	case c.Count == 0 && len(c.External) == 0:
		return errors.New("field collectors.count: at least one collector is needed (or collectors.external)")
	case c.Count > 0 && len(c.External) > 0:
		return errors.New("field collectors.external: give either collectors.count (in-process) or collectors.external, not both")
	case len(c.External) > 0 && c.Token == "":
		return errors.New("field collectors.token: required with collectors.external")
	case c.Count > 200:
		return fmt.Errorf("field collectors.count: at most 200 in-process collectors, got %d", c.Count)
	case c.MaxInflightRequests < 1:
		return fmt.Errorf("field collectors.max_inflight_requests: must be >= 1, got %d", c.MaxInflightRequests)
	case c.TenantRecordsPerSec < 0:
		return fmt.Errorf("field collectors.tenant_records_per_sec: must be >= 0, got %g", c.TenantRecordsPerSec)
	}
	for i, a := range c.External {
		if _, _, err := splitHostPort(a); err != nil {
			return fmt.Errorf("field collectors.external[%d]: %q is not host:port: %w", i, a, err)
		}
	}
	if sc.Phloems.Count < 1 || sc.Phloems.Count > 16 {
		return fmt.Errorf("field phloems.count: must be 1..16, got %d", sc.Phloems.Count)
	}
	m := sc.Meters
	switch m.Arrival.Kind {
	case ArrivalAllAtOnce:
	case ArrivalRamp:
		if m.Arrival.Over.D <= 0 {
			return errors.New("field meters.arrival.over: required (> 0) for a ramp")
		}
	case ArrivalTrace:
		if m.Arrival.Trace == "" {
			return errors.New("field meters.arrival.trace: required for a trace arrival")
		}
	default:
		return fmt.Errorf("field meters.arrival.kind: %q is not one of all_at_once, ramp, trace", m.Arrival.Kind)
	}
	if m.Count < 0 || (m.Count == 0 && m.Arrival.Kind != ArrivalTrace) {
		return fmt.Errorf("field meters.count: must be >= 1, got %d", m.Count)
	}
	if m.Count > 2000 && !m.SharedTransport {
		return fmt.Errorf("field meters.shared_transport: must be true above 2000 meters, got %d meters with one transport each (every meter holds ~3 spool descriptors, and its own connections cost a descriptor on both ends in this one process; the limit here is 20000)", m.Count)
	}
	if m.Count > 50000 {
		return fmt.Errorf("field meters.count: at most 50000 meters in one process, got %d", m.Count)
	}
	if err := m.RecordSize.validate("meters.record_size", float64(minRecordSize), 1<<20); err != nil {
		return err
	}
	if err := m.Rate.validate("meters.rate", 0.001, 10000); err != nil {
		return err
	}
	if m.BatchMaxRecords < 1 || m.BatchMaxRecords > 10000 {
		return fmt.Errorf("field meters.batch_max_records: must be 1..10000, got %d", m.BatchMaxRecords)
	}
	switch m.Compression {
	case "identity", "gzip", "zstd":
	default:
		return fmt.Errorf("field meters.compression: %q is not one of identity, gzip, zstd", m.Compression)
	}
	if m.BackoffCap.D < m.BackoffBase.D {
		return fmt.Errorf("field meters.backoff_cap: %v is below meters.backoff_base %v", m.BackoffCap.D, m.BackoffBase.D)
	}
	switch m.Discovery {
	case DiscoveryRing:
	case DiscoveryDNS:
		if len(c.External) > 0 {
			return errors.New("field meters.discovery: \"dns\" needs in-process collectors (the harness answers the DNS queries)")
		}
	default:
		return fmt.Errorf("field meters.discovery: %q is not one of ring, dns", m.Discovery)
	}
	if m.DNSFirst != nil {
		if m.Discovery != DiscoveryDNS {
			return errors.New("field meters.dns_first: only meaningful with meters.discovery \"dns\"")
		}
		if *m.DNSFirst < 0 || *m.DNSFirst >= c.Count {
			return fmt.Errorf("field meters.dns_first: collector index %d out of range [0,%d)", *m.DNSFirst, c.Count)
		}
	}
	if err := sc.validateEvents(); err != nil {
		return err
	}
	s := sc.SLO
	for _, f := range []struct {
		name string
		v    *int64
	}{{"slo.max_lost", s.MaxLost}, {"slo.max_duplicates", s.MaxDuplicates}, {"slo.max_reordered", s.MaxReordered}} {
		if f.v != nil && *f.v < 0 {
			return fmt.Errorf("field %s: must be >= 0, got %d", f.name, *f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"slo.max_p99_ingest_latency_ms", s.MaxP99IngestLatencyMs},
		{"slo.max_p99_e2e_latency_ms", s.MaxP99E2ELatencyMs},
		{"slo.max_share_peak_to_mean", s.MaxSharePeakToMean},
		{"slo.max_reconnect_peak_to_mean", s.MaxReconnectPeakToMean},
		{"slo.max_reconnect_burst", s.MaxReconnectBurst},
		{"slo.min_records_per_sec", s.MinRecordsPerSec},
	} {
		if f.v < 0 {
			return fmt.Errorf("field %s: must be >= 0, got %g", f.name, f.v)
		}
	}
	if s.MaxSharePeakToMean != 0 && s.MaxSharePeakToMean < 1 {
		return fmt.Errorf("field slo.max_share_peak_to_mean: must be >= 1 (peak/mean), got %g", s.MaxSharePeakToMean)
	}
	return nil
}

func (sc *Scenario) validateEvents() error {
	inproc := sc.Collectors.Count > 0
	external := len(sc.Kafka.Brokers) > 0
	n := sc.Collectors.Count
	for i, ev := range sc.Events {
		f := func(field string) string { return fmt.Sprintf("events[%d].%s", i, field) }
		for _, d := range []struct {
			name string
			d    Duration
		}{{"at", ev.At}, {"for", ev.For}, {"every", ev.Every}, {"down", ev.Down}} {
			if err := checkDur(f(d.name), d.d, 0); err != nil {
				return err
			}
		}
		if ev.At.D > sc.Duration.D {
			return fmt.Errorf("field %s: %v is after the end of the load phase (duration %v)", f("at"), ev.At.D, sc.Duration.D)
		}
		end := ev.At.D + ev.For.D
		if ev.Action == ActRollingRestart {
			end = ev.At.D + time.Duration(max(0, n-1))*ev.Every.D + ev.Down.D
		}
		if end > sc.Duration.D {
			return fmt.Errorf("field %s: the event lasts until %v, after the end of the load phase (duration %v)", f("for"), end, sc.Duration.D)
		}
		needCollector := func() error {
			if !inproc {
				return fmt.Errorf("field %s: %s needs in-process collectors", f("action"), ev.Action)
			}
			if ev.Collector == nil {
				return fmt.Errorf("field %s: required for %s", f("collector"), ev.Action)
			}
			if *ev.Collector < 0 || *ev.Collector >= n+countAdds(sc.Events) {
				return fmt.Errorf("field %s: collector index %d out of range", f("collector"), *ev.Collector)
			}
			return nil
		}
		switch ev.Action {
		case ActKillCollector, ActRestartCollector:
			if err := needCollector(); err != nil {
				return err
			}
		case ActDNSFirst:
			if err := needCollector(); err != nil {
				return err
			}
			if sc.Meters.Discovery != DiscoveryDNS {
				return fmt.Errorf("field %s: dns_first needs meters.discovery \"dns\"", f("action"))
			}
		case ActAddCollector:
			if !inproc {
				return fmt.Errorf("field %s: add_collector needs in-process collectors", f("action"))
			}
		case ActRollingRestart:
			if !inproc {
				return fmt.Errorf("field %s: rolling_restart needs in-process collectors", f("action"))
			}
			if ev.Every.D <= 0 {
				return fmt.Errorf("field %s: required (> 0) for rolling_restart", f("every"))
			}
			if ev.Down.D <= 0 || ev.Down.D > ev.Every.D {
				return fmt.Errorf("field %s: must be > 0 and <= every for rolling_restart", f("down"))
			}
		case ActStopBroker:
			if external {
				return fmt.Errorf("field %s: stop_broker needs the embedded broker (kafka.brokers is set)", f("action"))
			}
			if ev.For.D <= 0 {
				return fmt.Errorf("field %s: required (> 0) for stop_broker", f("for"))
			}
		case ActBlackholeSink:
			if ev.For.D <= 0 {
				return fmt.Errorf("field %s: required (> 0) for blackhole_sink", f("for"))
			}
		case "":
			return fmt.Errorf("field %s: required", f("action"))
		default:
			return fmt.Errorf("field %s: unknown action %q (kill_collector, restart_collector, add_collector, rolling_restart, stop_broker, blackhole_sink, dns_first)", f("action"), ev.Action)
		}
	}
	return nil
}

func countAdds(evs []Event) int {
	n := 0
	for _, e := range evs {
		if e.Action == ActAddCollector {
			n++
		}
	}
	return n
}

func checkDur(name string, d Duration, min time.Duration) error {
	if d.bad {
		return fmt.Errorf("field %s: %s is not a duration (use a string like \"5s\" or a number of seconds)", name, d.raw)
	}
	if d.D < 0 {
		return fmt.Errorf("field %s: must not be negative, got %v", name, d.D)
	}
	if d.D != 0 && d.D < min {
		return fmt.Errorf("field %s: must be at least %v, got %v", name, min, d.D)
	}
	if name == "duration" && d.D == 0 {
		return errors.New("field duration: required (the load phase, e.g. \"60s\")")
	}
	return nil
}

// checkFiles checks that referenced files exist and parse.
func (sc *Scenario) checkFiles() error {
	if sc.Meters.Arrival.Kind != ArrivalTrace {
		return nil
	}
	if _, err := LoadTrace(sc.TracePath()); err != nil {
		return fmt.Errorf("field meters.arrival.trace: %w", err)
	}
	return nil
}

// TracePath returns the arrival trace's path, resolved against the scenario's
// directory when relative.
func (sc *Scenario) TracePath() string {
	p := sc.Meters.Arrival.Trace
	if p == "" || filepath.IsAbs(p) || sc.dir == "" {
		return p
	}
	return filepath.Join(sc.dir, p)
}

func splitHostPort(a string) (string, int, error) {
	i := strings.LastIndexByte(a, ':')
	if i <= 0 {
		return "", 0, errors.New("missing port")
	}
	p, err := strconv.Atoi(a[i+1:])
	if err != nil || p <= 0 || p > 65535 {
		return "", 0, fmt.Errorf("bad port %q", a[i+1:])
	}
	return a[:i], p, nil
}
