package ops

import (
	"math"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// snapshot indexes one Gather result by family name.
type snapshot map[string]*dto.MetricFamily

func newSnapshot(fams []*dto.MetricFamily) snapshot {
	s := make(snapshot, len(fams))
	for _, f := range fams {
		s[f.GetName()] = f
	}
	return s
}

// metricValue reads a sample whatever the family's type (counter, gauge, untyped).
// Histograms and summaries are not byte counters; they read as NaN and are skipped.
func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return math.NaN()
}

func labelValue(m *dto.Metric, name string) (string, bool) {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue(), true
		}
	}
	return "", false
}

func matches(m *dto.Metric, labels map[string]string) bool {
	for k, v := range labels {
		if got, _ := labelValue(m, k); got != v {
			return false
		}
	}
	return true
}

// each calls fn for every series sel selects. It reports whether the family exists.
func (s snapshot) each(sel Selector, fn func(m *dto.Metric, v float64)) bool {
	f, ok := s[sel.Metric]
	if !ok {
		return false
	}
	for _, m := range f.GetMetric() {
		if !matches(m, sel.Labels) {
			continue
		}
		v := metricValue(m)
		if math.IsNaN(v) {
			continue
		}
		fn(m, v)
	}
	return true
}

// gaugeSum sums the selected gauges; ok is false if any selector's family is absent.
func (s snapshot) gaugeSum(sels ...Selector) (sum float64, ok bool) {
	ok = true
	for _, sel := range sels {
		if !s.each(sel, func(_ *dto.Metric, v float64) { sum += v }) {
			ok = false
		}
	}
	return sum, ok
}

// seriesKey identifies a series within a family: its labels in the order the
// registry returns them (sorted by name).
func seriesKey(metric string, m *dto.Metric) string {
	var b strings.Builder
	b.WriteString(metric)
	for _, lp := range m.GetLabel() {
		b.WriteByte(0)
		b.WriteString(lp.GetName())
		b.WriteByte('=')
		b.WriteString(lp.GetValue())
	}
	return b.String()
}

// counterTracker turns the cumulative values of a set of counter series into
// increases, series by series, the way PromQL's rate() does: a value lower than the
// previous one is a counter reset (the increase is the new value), and summing
// per-series increases (rather than differencing the sum) keeps a vanished series
// from looking like a negative step or a reset.
//
// Unlike Prometheus, which cannot know when a series was born, the tracker samples
// the same registry every Interval: a series that appears after the first
// observation was created since the previous sample, so its whole value is counted
// (a counter born lazily with the first tap's bytes must not lose them). Series
// present at the first observation contribute nothing then (their history is
// unknown). A series that vanishes is remembered for forgetAfter observations, so
// that one partial Gather does not turn its reappearance into a spike of its whole
// value.
//
// Not safe for concurrent use; the Monitor calls it under its lock.
type counterTracker struct {
	prev        map[string]trackedSeries // series key -> last value
	round       uint64                   // observations so far
	seen        map[string]bool          // scratch: series seen in the current observation
	initialized bool
}

type trackedSeries struct {
	v     float64
	round uint64 // last observation that saw it
}

// forgetAfter is how many observations a vanished series is remembered.
const forgetAfter = 10

func newCounterTracker() *counterTracker {
	return &counterTracker{prev: make(map[string]trackedSeries), seen: make(map[string]bool)}
}

// observe adds the increase of every selected series, grouped by group(m), into out
// and reports whether at least one selector's family exists.
func (t *counterTracker) observe(s snapshot, sels []Selector, group func(*dto.Metric) string, out map[string]float64) bool {
	clear(t.seen)
	t.round++
	present := false
	for _, sel := range sels {
		ok := s.each(sel, func(m *dto.Metric, v float64) {
			k := seriesKey(sel.Metric, m)
			if t.seen[k] {
				return // selected twice by overlapping selectors: count once
			}
			t.seen[k] = true
			prev, known := t.prev[k]
			t.prev[k] = trackedSeries{v: v, round: t.round}
			inc := 0.0
			switch {
			case !known:
				if t.initialized {
					inc = v // born since the previous observation
				}
			case v >= prev.v:
				inc = v - prev.v
			default:
				inc = v // reset
			}
			g := ""
			if group != nil {
				g = group(m)
			}
			out[g] += inc
		})
		present = present || ok
	}
	for k, p := range t.prev {
		if t.round-p.round > forgetAfter {
			delete(t.prev, k)
		}
	}
	t.initialized = true
	return present
}

// rateWindow holds (time, cumulative increase) points spanning a sliding window and
// answers the average rate over it: (last.cum - first.cum) / (last.t - first.t). It
// is the windowed rate of PromQL's rate(x[window]), so the built-in rules and the
// Prometheus rules in ops/prometheus/alerts.yml agree.
//
// The points are kept in a slice trimmed from the front; it holds at most
// window/interval+2 points, so its memory is bounded by the configuration.
type rateWindow struct {
	pts []ratePoint
	cum float64
}

type ratePoint struct {
	t   time.Time
	cum float64
}

// add records inc at now and drops points older than window, keeping one point at
// or before the window's start so that the rate spans the whole window.
func (w *rateWindow) add(now time.Time, inc float64, window time.Duration) {
	w.cum += inc
	w.pts = append(w.pts, ratePoint{t: now, cum: w.cum})
	start := now.Add(-window)
	i := 0
	for i+1 < len(w.pts) && !w.pts[i+1].t.After(start) {
		i++
	}
	if i > 0 {
		w.pts = append(w.pts[:0], w.pts[i:]...)
	}
}

// rate returns bytes per second over the window, or NaN with fewer than two points.
func (w *rateWindow) rate() float64 {
	if len(w.pts) < 2 {
		return math.NaN()
	}
	first, last := w.pts[0], w.pts[len(w.pts)-1]
	dt := last.t.Sub(first.t).Seconds()
	if dt <= 0 {
		return math.NaN()
	}
	return (last.cum - first.cum) / dt
}

// breakdownTracker keeps one rateWindow per label value, capped at maxRows values;
// the overflow is summed into "_other".
type breakdownTracker struct {
	cfg     BreakdownConfig
	tracker *counterTracker
	rows    map[string]*rateWindow
	incs    map[string]float64 // scratch
}

const otherRow = "_other"

func newBreakdownTracker(cfg BreakdownConfig) *breakdownTracker {
	return &breakdownTracker{cfg: cfg, tracker: newCounterTracker(), rows: make(map[string]*rateWindow), incs: make(map[string]float64)}
}

func (b *breakdownTracker) observe(s snapshot, now time.Time, window time.Duration) {
	clear(b.incs)
	b.tracker.observe(s, []Selector{b.cfg.Counter}, func(m *dto.Metric) string {
		v, _ := labelValue(m, b.cfg.By)
		if _, ok := b.rows[v]; !ok && len(b.rows) >= b.cfg.MaxRows {
			return otherRow
		}
		if _, ok := b.rows[v]; !ok {
			b.rows[v] = &rateWindow{}
		}
		return v
	}, b.incs)
	if _, ok := b.incs[otherRow]; ok {
		if _, ok := b.rows[otherRow]; !ok {
			b.rows[otherRow] = &rateWindow{}
		}
	}
	for k, w := range b.rows {
		w.add(now, b.incs[k], window)
	}
}

// Row is one line of a breakdown table.
type Row struct {
	Label          string   `json:"label"`
	BytesPerSecond optFloat `json:"bytes_per_second"`
}

func (b *breakdownTracker) rowsByRate() []Row {
	rows := make([]Row, 0, len(b.rows))
	for k, w := range b.rows {
		rows = append(rows, Row{Label: k, BytesPerSecond: optFloat(w.rate())})
	}
	sort.Slice(rows, func(i, j int) bool {
		ri, rj := float64(rows[i].BytesPerSecond), float64(rows[j].BytesPerSecond)
		if math.IsNaN(ri) {
			ri = -1
		}
		if math.IsNaN(rj) {
			rj = -1
		}
		if ri != rj {
			return ri > rj
		}
		return rows[i].Label < rows[j].Label
	})
	return rows
}

// optFloat is a float64 that encodes NaN and ±Inf as JSON null ("no value").
type optFloat float64

// MarshalJSON implements json.Marshaler.
func (f optFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return []byte(formatFloat(v)), nil
}
