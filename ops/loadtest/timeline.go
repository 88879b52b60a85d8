package loadtest

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"time"
)

// Tick is one 100 ms bucket of request activity.
type Tick struct {
	T        float64 `json:"t"` // end of the bucket, seconds after the start
	Attempts uint64  `json:"attempts"`
	Retries  uint64  `json:"retries"`
}

// Second is one second of the run.
type Second struct {
	T float64 `json:"t"` // end of the second, seconds after the start
	// Span is the wall time the sample covers: 1 s, more when the sampler was
	// starved. Counts are per-second rates over the span.
	Span            float64 `json:"span"`
	MetersStarted   int     `json:"meters_started"`
	MetersConnected int     `json:"meters_connected"`
	CollectorsUp    int     `json:"collectors_up"`
	Appended        uint64  `json:"appended"`     // records appended by meters
	Acked           uint64  `json:"acked"`        // records acknowledged by collectors
	SinkRecords     uint64  `json:"sink_records"` // deliveries at the sink (duplicates included)
	Pending         uint64  `json:"pending"`      // appended, not yet acknowledged (end of second)
	Outstanding     uint64  `json:"outstanding"`  // produced, not yet seen at the sink
	Requests        uint64  `json:"requests"`
	// Answered and Share count, per collector, the requests it accepted (200):
	// the load it carried. Refusals have their own series (S503, S429).
	Answered     []uint64  `json:"accepted"`
	Share        []float64 `json:"share"`
	Retries      uint64    `json:"retries"`
	OK           uint64    `json:"ok"`
	S503         uint64    `json:"s503"`
	S429         uint64    `json:"s429"`
	OtherStatus  uint64    `json:"other_status"`
	ConnErrors   uint64    `json:"conn_errors"`
	AppendErrors uint64    `json:"append_errors"`
	IngestP50    float64   `json:"ingest_p50_ms"`
	IngestP90    float64   `json:"ingest_p90_ms"`
	IngestP99    float64   `json:"ingest_p99_ms"`
	E2EP50       float64   `json:"e2e_p50_ms"`
	E2EP90       float64   `json:"e2e_p90_ms"`
	E2EP99       float64   `json:"e2e_p99_ms"`
	IngressBytes float64   `json:"ingress_bytes"` // collector hubs, phloem_collector_ingress_bytes_total
	EgressBytes  float64   `json:"egress_bytes"`  // collector hubs, phloem_collector_egress_bytes_total
	Ratio        float64   `json:"egress_ingress_ratio"`
	// SharePeakToMean is the busiest collector's accepted requests over the mean
	// per running collector. 0 when not judged: fewer than 50 accepted requests
	// per collector, or more than 10% of answers were refusals.
	SharePeakToMean float64 `json:"share_peak_to_mean"`
}

// sampler collects Ticks every 100 ms and Seconds every second and prints the
// progress line. One goroutine (run) owns it; results are read after it returns.
type sampler struct {
	f        *fleet
	cl       *cluster
	c        *counters
	e2e      *Histogram
	progress io.Writer
	t0       time.Time

	mu      sync.Mutex
	ticks   []Tick
	seconds []Second
	notes   []string
}

// note queues a message for the progress output (events).
func (s *sampler) note(msg string) {
	s.mu.Lock()
	s.notes = append(s.notes, msg)
	s.mu.Unlock()
}

func (s *sampler) run(ctx context.Context) {
	tk := time.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	var (
		answered   [maxCollectors]uint64
		upTicks    int // collector-ticks of uptime in the current second
		nTicks     int // ticks in the current second
		lastTick   = s.t0
		win        []shareSample
		lastSec    = s.t0
		retries    uint64
		prevIngest = s.c.ingest.Snapshot()
		prevE2E    = s.e2e.Snapshot()
		prevAcked  uint64
		prevApp    uint64
		prevAppErr uint64
		prevSink   uint64
	)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			var t Tick
			t.T = now.Sub(s.t0).Seconds()
			for i := range s.c.attempts {
				t.Attempts += s.c.attempts[i].Swap(0)
				r := s.c.retries[i].Swap(0)
				t.Retries += r
				answered[i] += s.c.accepted[i].Swap(0)
			}
			retries += t.Retries
			// A starved sampler (the machine stalled, ticks were dropped) sees more
			// than 100 ms of requests at once; spread them over the buckets that
			// elapsed, or the stall would look like a burst.
			k := max(1, int(math.Round(now.Sub(lastTick).Seconds()*10)))
			lastTick = now
			upTicks += k * s.cl.collectorsUp()
			nTicks += k
			s.mu.Lock()
			for j := k - 1; j >= 0; j-- {
				s.ticks = append(s.ticks, Tick{
					T:        t.T - float64(j)/10,
					Attempts: share(t.Attempts, k, j),
					Retries:  share(t.Retries, k, j),
				})
			}
			s.mu.Unlock()
			if now.Sub(lastSec) < time.Second-50*time.Millisecond {
				continue
			}
			// span is the time this sample covers (1 s unless the sampler was
			// starved); counts below are scaled to per-second rates.
			span := now.Sub(lastSec).Seconds()
			lastSec = now
			per := func(v uint64) uint64 { return uint64(math.Round(float64(v) / span)) }
			sec := Second{T: t.T, Span: span, Retries: per(retries)}
			retries = 0
			fs := s.f.stats()
			sec.MetersStarted, sec.MetersConnected = fs.started, fs.connected
			sec.Acked = per(fs.acked - prevAcked)
			prevAcked = fs.acked
			sec.Pending = fs.pending
			app := s.f.appended.Load()
			sec.Appended = per(app - prevApp)
			prevApp = app
			ae := s.f.appendErr.Load()
			sec.AppendErrors = per(ae - prevAppErr)
			prevAppErr = ae
			sk := s.cl.sink.records.Load()
			sec.SinkRecords = per(sk - prevSink)
			prevSink = sk
			sec.Outstanding = s.f.v.Outstanding()
			sec.OK = per(s.c.ok.Swap(0))
			sec.S503 = per(s.c.s503.Swap(0))
			sec.S429 = per(s.c.s429.Swap(0))
			sec.OtherStatus = per(s.c.other.Swap(0))
			sec.ConnErrors = per(s.c.connErr.Swap(0))
			sec.Requests = sec.OK + sec.S503 + sec.S429 + sec.OtherStatus + sec.ConnErrors
			ns := s.cl.numSlots()
			sec.Answered = make([]uint64, ns)
			sec.Share = make([]float64, ns)
			var total uint64
			for i := 0; i < ns; i++ {
				sec.Answered[i] = per(answered[i])
				total += answered[i]
			}
			sec.CollectorsUp = s.cl.collectorsUp()
			// upSecs is the mean number of collectors up during the sample, so a
			// collector killed or restarted during it counts for the part it ran.
			upSecs := float64(upTicks) / float64(max(1, nTicks))
			upTicks, nTicks = 0, 0
			if total > 0 {
				for i := 0; i < ns; i++ {
					sec.Share[i] = float64(sec.Answered[i]) / float64(total)
				}
			}
			// Balance is judged over the last shareWindow seconds (one second is
			// too short: after an outage each collector's meters come back on
			// their own backoff schedule), only with enough accepted requests,
			// and only while refusals stay under 10% of answers (while some
			// collectors refuse, the others' accepted share says which ones were
			// healthy, not where meters were placed).
			win = append(win, shareSample{acc: answered, ok: sec.OK, refused: sec.S503 + sec.S429, up: upSecs, span: span})
			if len(win) > shareWindow {
				win = win[1:]
			}
			sec.SharePeakToMean = windowShare(win, ns)
			answered = [maxCollectors]uint64{}
			ing := s.c.ingest.Snapshot()
			d := ing.Sub(prevIngest)
			prevIngest = ing
			sec.IngestP50, sec.IngestP90, sec.IngestP99 = d.Quantile(0.5), d.Quantile(0.9), d.Quantile(0.99)
			e := s.e2e.Snapshot()
			d = e.Sub(prevE2E)
			prevE2E = e
			sec.E2EP50, sec.E2EP90, sec.E2EP99 = d.Quantile(0.5), d.Quantile(0.9), d.Quantile(0.99)
			sec.IngressBytes, sec.EgressBytes = s.cl.ioBytes()
			sec.IngressBytes /= span
			sec.EgressBytes /= span
			if sec.IngressBytes > 0 {
				sec.Ratio = sec.EgressBytes / sec.IngressBytes
			}
			s.mu.Lock()
			s.seconds = append(s.seconds, sec)
			notes := s.notes
			s.notes = nil
			s.mu.Unlock()
			if s.progress != nil {
				for _, m := range notes {
					fmt.Fprintf(s.progress, "[%5.1fs] %s\n", sec.T, m)
				}
				fmt.Fprintf(s.progress, "[%5.1fs] meters %d/%d connected %d | rec/s app %d ack %d sink %d | req/s %d ok %d 503 %d 429 %d connerr %d retries %d | coll up %d | ingest p99 %.0fms e2e p99 %.0fms | pending %d outstanding %d\n",
					sec.T, sec.MetersStarted, len(s.f.meters), sec.MetersConnected, sec.Appended, sec.Acked, sec.SinkRecords,
					sec.Requests, sec.OK, sec.S503, sec.S429, sec.ConnErrors, sec.Retries, sec.CollectorsUp,
					sec.IngestP99, sec.E2EP99, sec.Pending, sec.Outstanding)
			}
		}
	}
}

// shareWindow is the window, in seconds, over which collector balance is judged.
const shareWindow = 5

type shareSample struct {
	acc         [maxCollectors]uint64 // accepted requests per collector (raw counts)
	ok, refused uint64                // per-second rates
	up          float64               // mean collectors up during the sample
	span        float64
}

// windowShare returns the busiest collector's accepted requests over the mean
// per running collector across the window, or 0 when it cannot be judged (fewer
// than 50 accepted requests per collector-second, or refusals above 10%).
func windowShare(win []shareSample, ns int) float64 {
	var acc [maxCollectors]uint64
	var ok, refused, total, peak uint64
	var upSecs, spanSum float64
	for _, w := range win {
		for i := 0; i < ns; i++ {
			acc[i] += w.acc[i]
		}
		ok += uint64(float64(w.ok) * w.span)
		refused += uint64(float64(w.refused) * w.span)
		upSecs += w.up * w.span
		spanSum += w.span
	}
	for i := 0; i < ns; i++ {
		total += acc[i]
		peak = max(peak, acc[i])
	}
	if upSecs <= 0 || refused*10 > ok+refused || float64(total) < 50*upSecs {
		return 0
	}
	return float64(peak) / (float64(total) / (upSecs / spanSum))
}

// share splits v over k buckets; bucket j (0 = the latest) gets its part, the
// remainder going to the earliest ones.
func share(v uint64, k, j int) uint64 {
	q, r := v/uint64(k), v%uint64(k)
	if uint64(k-1-j) < r {
		q++
	}
	return q
}

func (s *sampler) results() ([]Tick, []Second) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Tick(nil), s.ticks...), append([]Second(nil), s.seconds...)
}
