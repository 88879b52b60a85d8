package loadtest

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"
)

// Report is the outcome of a run: written as report.json and rendered as
// report.html.
type Report struct {
	Scenario    string    `json:"scenario"`
	Description string    `json:"description,omitempty"`
	Started     time.Time `json:"started"`
	WallSeconds float64   `json:"wall_seconds"`
	Meters      int       `json:"meters"`
	Collectors  int       `json:"collectors"`
	Phloems     int       `json:"phloems"`

	Verdict Verdict     `json:"verdict"`
	Summary Summary     `json:"summary"`
	SLOs    []SLOResult `json:"slos"`
	// Pass is true when every SLO held and every event was applied.
	Pass bool `json:"pass"`

	Events        []EventLog `json:"events"`
	EventFailures int        `json:"event_failures"`
	Notes         []string   `json:"notes,omitempty"`

	Seconds []Second `json:"seconds"`
	Ticks   []Tick   `json:"ticks"`
}

// Summary aggregates the timeline.
type Summary struct {
	LoadSeconds  float64 `json:"load_seconds"`
	DrainSeconds float64 `json:"drain_seconds"`
	// Drained is true when every produced record was acknowledged and seen before
	// the drain timeout.
	Drained bool `json:"drained"`

	RecordsPerSecMean float64 `json:"records_per_sec_mean"` // acknowledged, over the load phase
	RecordsPerSecPeak uint64  `json:"records_per_sec_peak"`

	Requests     uint64 `json:"requests"`
	OK           uint64 `json:"ok"`
	S503         uint64 `json:"s503"`
	S429         uint64 `json:"s429"`
	OtherStatus  uint64 `json:"other_status"`
	ConnErrors   uint64 `json:"conn_errors"`
	Retries      uint64 `json:"retries"`
	AppendErrors uint64 `json:"append_errors"`
	MetersDrop   uint64 `json:"meter_records_dropped"`

	// Reconnect storm: retry attempts per 100 ms. The mean is over the retry window
	// (first to last 100 ms bucket with a retry).
	ReconnectPeakPer100ms  uint64  `json:"reconnect_peak_per_100ms"`
	ReconnectPeakAt        float64 `json:"reconnect_peak_at"`
	ReconnectMeanPer100ms  float64 `json:"reconnect_mean_per_100ms"`
	ReconnectWindowSeconds float64 `json:"reconnect_window_seconds"`
	ReconnectPeakToMean    float64 `json:"reconnect_peak_to_mean"`
	// ReconnectBurst is the largest ratio of one 100 ms bucket to the mean of the
	// 2.1 s around it (windows with at least burstMinRetries retries): measured
	// 1.5-4 when retries are spread by full jitter, 13 when a herd that failed
	// together retries in lockstep (testdata/scenarios/herd.json without jitter).
	ReconnectBurst   float64 `json:"reconnect_burst"`
	ReconnectBurstAt float64 `json:"reconnect_burst_at"`

	// Load spread: the worst second's busiest collector over the mean per
	// running collector.
	SharePeakToMean      float64   `json:"share_peak_to_mean"`
	SharePeakAt          float64   `json:"share_peak_at"`
	ShareTotal           []float64 `json:"share_total"` // per collector, whole run
	ShareTotalPeakToMean float64   `json:"share_total_peak_to_mean"`

	IngestP50 float64 `json:"ingest_p50_ms"`
	IngestP90 float64 `json:"ingest_p90_ms"`
	IngestP99 float64 `json:"ingest_p99_ms"`
	IngestMax float64 `json:"ingest_max_ms"`
	E2EP50    float64 `json:"e2e_p50_ms"`
	E2EP90    float64 `json:"e2e_p90_ms"`
	E2EP99    float64 `json:"e2e_p99_ms"`
	E2EMax    float64 `json:"e2e_max_ms"`

	IngressBytes       float64 `json:"ingress_bytes"`
	EgressBytes        float64 `json:"egress_bytes"`
	EgressIngressRatio float64 `json:"egress_ingress_ratio"`
	RatioMax           float64 `json:"egress_ingress_ratio_max"`

	SinkRequests   uint64 `json:"sink_requests"`
	SinkBlackholed uint64 `json:"sink_blackholed_requests"`
	SinkBadLines   uint64 `json:"sink_bad_lines"`
}

func summarize(secs []Second, ticks []Tick, loadEnd float64, ingest, e2e HistSnap) Summary {
	var s Summary
	var ackLoad, spanLoad float64
	var totalAnswered []float64
	for _, x := range secs {
		span := x.Span
		if span <= 0 {
			span = 1
		}
		// Seconds carry per-second rates over their span; totals weight by it.
		tot := func(v uint64) uint64 { return uint64(math.Round(float64(v) * span)) }
		if x.T <= loadEnd+0.5 {
			ackLoad += float64(x.Acked) * span
			spanLoad += span
		}
		if x.Acked > s.RecordsPerSecPeak {
			s.RecordsPerSecPeak = x.Acked
		}
		s.Requests += tot(x.Requests)
		s.OK += tot(x.OK)
		s.S503 += tot(x.S503)
		s.S429 += tot(x.S429)
		s.OtherStatus += tot(x.OtherStatus)
		s.ConnErrors += tot(x.ConnErrors)
		s.Retries += tot(x.Retries)
		s.AppendErrors += tot(x.AppendErrors)
		s.IngressBytes += x.IngressBytes * span
		s.EgressBytes += x.EgressBytes * span
		if x.Ratio > s.RatioMax {
			s.RatioMax = x.Ratio
		}
		if x.SharePeakToMean > s.SharePeakToMean {
			s.SharePeakToMean, s.SharePeakAt = x.SharePeakToMean, x.T
		}
		for len(totalAnswered) < len(x.Answered) {
			totalAnswered = append(totalAnswered, 0)
		}
		for i, a := range x.Answered {
			totalAnswered[i] += float64(a) * span
		}
	}
	if spanLoad > 0 {
		s.RecordsPerSecMean = ackLoad / spanLoad
	}
	if s.IngressBytes > 0 {
		s.EgressIngressRatio = s.EgressBytes / s.IngressBytes
	}
	var sum, peak float64
	for _, a := range totalAnswered {
		sum += a
		peak = math.Max(peak, a)
	}
	for _, a := range totalAnswered {
		if sum > 0 {
			s.ShareTotal = append(s.ShareTotal, a/sum)
		}
	}
	if sum > 0 && len(totalAnswered) > 0 {
		s.ShareTotalPeakToMean = peak / (sum / float64(len(totalAnswered)))
	}
	first, last := -1, -1
	for i, t := range ticks {
		if t.Retries > 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
		if t.Retries > s.ReconnectPeakPer100ms {
			s.ReconnectPeakPer100ms, s.ReconnectPeakAt = t.Retries, t.T
		}
	}
	if first >= 0 {
		var tot uint64
		for _, t := range ticks[first : last+1] {
			tot += t.Retries
		}
		n := last - first + 1
		s.ReconnectWindowSeconds = float64(n) / 10
		s.ReconnectMeanPer100ms = float64(tot) / float64(n)
		s.ReconnectPeakToMean = float64(s.ReconnectPeakPer100ms) / s.ReconnectMeanPer100ms
	}
	s.ReconnectBurst, s.ReconnectBurstAt = reconnectBurst(ticks)
	s.IngestP50, s.IngestP90, s.IngestP99, s.IngestMax = ingest.Quantile(0.5), ingest.Quantile(0.9), ingest.Quantile(0.99), ingest.Quantile(1)
	s.E2EP50, s.E2EP90, s.E2EP99, s.E2EMax = e2e.Quantile(0.5), e2e.Quantile(0.9), e2e.Quantile(0.99), e2e.Quantile(1)
	return s
}

// burstMinRetries is the fewest retries in a burst window for its ratio to
// count: a handful of retries is no herd, whatever its shape. burstHalfWidth is
// the window's half width in 100 ms buckets; it must span the gaps between the
// lockstep waves of an unjittered herd (base·2^n apart).
const (
	burstMinRetries = 300
	burstHalfWidth  = 10
)

func reconnectBurst(ticks []Tick) (ratio, at float64) {
	for i := range ticks {
		lo, hi := max(0, i-burstHalfWidth), min(len(ticks), i+burstHalfWidth+1)
		var sum uint64
		for _, t := range ticks[lo:hi] {
			sum += t.Retries
		}
		if sum < burstMinRetries {
			continue
		}
		r := float64(ticks[i].Retries) / (float64(sum) / float64(hi-lo))
		if r > ratio {
			ratio, at = r, ticks[i].T
		}
	}
	return ratio, at
}

// SLOResult is one checked objective.
type SLOResult struct {
	Name  string  `json:"name"`
	Limit float64 `json:"limit"`
	Value float64 `json:"value"`
	// Min is true for a lower bound (value must reach the limit).
	Min  bool `json:"min,omitempty"`
	Pass bool `json:"pass"`
}

// evaluate checks the scenario's SLOs against the report.
func evaluate(slo SLO, r *Report) []SLOResult {
	var out []SLOResult
	maxi := func(name string, limit *int64, v uint64) {
		if limit != nil {
			out = append(out, SLOResult{Name: name, Limit: float64(*limit), Value: float64(v), Pass: v <= uint64(*limit)})
		}
	}
	maxf := func(name string, limit, v float64) {
		if limit > 0 {
			out = append(out, SLOResult{Name: name, Limit: limit, Value: v, Pass: v <= limit})
		}
	}
	maxi("lost", slo.MaxLost, r.Verdict.Lost)
	maxi("duplicates", slo.MaxDuplicates, r.Verdict.Duplicates)
	maxi("reordered", slo.MaxReordered, r.Verdict.Reordered)
	maxf("p99_ingest_latency_ms", slo.MaxP99IngestLatencyMs, r.Summary.IngestP99)
	maxf("p99_e2e_latency_ms", slo.MaxP99E2ELatencyMs, r.Summary.E2EP99)
	maxf("share_peak_to_mean", slo.MaxSharePeakToMean, r.Summary.SharePeakToMean)
	maxf("reconnect_peak_to_mean", slo.MaxReconnectPeakToMean, r.Summary.ReconnectPeakToMean)
	maxf("reconnect_burst", slo.MaxReconnectBurst, r.Summary.ReconnectBurst)
	if slo.MinRecordsPerSec > 0 {
		out = append(out, SLOResult{Name: "records_per_sec_mean", Limit: slo.MinRecordsPerSec, Value: r.Summary.RecordsPerSecMean,
			Min: true, Pass: r.Summary.RecordsPerSecMean >= slo.MinRecordsPerSec})
	}
	// Records the verifier cannot account for are a harness or pipeline bug.
	out = append(out, SLOResult{Name: "unexpected_records", Limit: 0, Value: float64(r.Verdict.Unexpected + r.Verdict.Unknown), Pass: r.Verdict.Unexpected+r.Verdict.Unknown == 0})
	return out
}

// write stores report.json and report.html in dir.
func (r *Report) write(dir string) (jsonPath, htmlPath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("cannot create report dir: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", "", fmt.Errorf("cannot encode report: %w", err)
	}
	jsonPath = filepath.Join(dir, "report.json")
	if err := os.WriteFile(jsonPath, b, 0o644); err != nil {
		return "", "", fmt.Errorf("cannot write report: %w", err)
	}
	htmlPath = filepath.Join(dir, "report.html")
	h, err := renderHTML(r)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(htmlPath, h, 0o644); err != nil {
		return "", "", fmt.Errorf("cannot write HTML report: %w", err)
	}
	return jsonPath, htmlPath, nil
}
