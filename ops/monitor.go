package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"phloem/internal/logx"
)

// MeterActivity reports the meters a collector currently knows, for the zombie-meter
// detector. The collector implements it; the monitor calls Meters once per Interval,
// outside its own lock. Implementations must be safe for concurrent use, fast (no
// I/O), and return a slice the monitor may keep (a copy).
type MeterActivity interface {
	Meters() []MeterSeen
}

// MeterSeen is one meter as its collector sees it.
type MeterSeen struct {
	// ID is the meter id (X-Meter-Id).
	ID string `json:"id"`
	// Tenant is the meter's tenant.
	Tenant string `json:"tenant"`
	// Connected is true while the meter holds a connection (or sent a request
	// recently enough that the collector considers it attached).
	Connected bool `json:"connected"`
	// LastRecord is when the collector last accepted a record from the meter.
	LastRecord time.Time `json:"last_record"`
}

// Sources are what the monitor reads.
type Sources struct {
	// Gatherer is the process's metric registry. Required.
	Gatherer prometheus.Gatherer
	// Meters feeds the zombie-meter detector. Nil: the detector stays inactive.
	Meters MeterActivity
	// Instance names this process in notifications and on the status page (e.g.
	// "collector-1"). Optional.
	Instance string
}

// ErrAlreadyRunning is returned by Run when the Monitor is already running (or has
// run): a Monitor owns one sampling loop for its whole life.
var ErrAlreadyRunning = errors.New("ops: monitor already running")

// Monitor samples the process's metrics every Interval, computes per-component byte
// rates and ratios, evaluates the rules and detectors, exports the results as
// metrics, notifies on alert transitions and keeps a bounded history for the status
// page. All methods are safe for concurrent use.
type Monitor struct {
	cfg      Config
	src      Sources
	logger   *slog.Logger
	throttle *logx.Throttled
	reg      prometheus.Registerer
	metrics  *metrics
	hook     *webhook // nil without Webhook.URL
	started  atomic.Bool
	// manual makes Run skip its ticker (tests that drive Tick with a synthetic
	// clock while Run owns the webhook sender). Set before Run.
	manual bool

	// mu guards everything below. Lock order: mu is a leaf; it is never held while
	// calling the Gatherer, MeterActivity, the logger or the webhook queue.
	mu         sync.Mutex
	last       time.Time // time of the last Tick; earlier ticks are ignored
	comps      []*compState
	ratios     []ratioEval
	alerts     []*alert // ratio rules first, then detectors, in config order
	zombie     *alert
	leak       *alert
	lag        *alert
	lagPts     []ratePoint // lag samples spanning LagGrowth.Window (cum = lag value)
	zombies    []MeterSeen
	breakdowns []*breakdownTracker
	gauges     []float64 // latest value per Config.Gauges entry
	hist       history
}

type compState struct {
	cfg             ComponentConfig
	in, out         *counterTracker
	inW, outW       rateWindow
	inRate, outRate float64
	ratio           float64
	floor           float64 // idle floor for the history's ratio: the smallest of its rules' floors
	scratch         map[string]float64
}

type ratioEval struct {
	rule  RatioRule
	comp  *compState
	alert *alert
}

// New builds a Monitor and registers its metrics (phloem_ops_*) on reg. Run starts
// it; without Run, Tick may be called directly (tests, or a caller with its own
// loop). A nil logger discards.
func New(cfg Config, src Sources, logger *slog.Logger, reg prometheus.Registerer) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid ops config: %w", err)
	}
	if src.Gatherer == nil {
		return nil, errors.New("ops: Sources.Gatherer is required")
	}
	if reg == nil {
		return nil, errors.New("ops: a prometheus.Registerer is required")
	}
	logger = logx.OrDiscard(logger).With("component", "ops")
	m := &Monitor{
		cfg:      cfg,
		src:      src,
		logger:   logger,
		throttle: logx.NewThrottled(logger, time.Minute),
		reg:      reg,
		metrics:  newMetrics(),
	}
	byName := make(map[string]*compState)
	for _, c := range cfg.Components {
		cs := &compState{cfg: c, in: newCounterTracker(), out: newCounterTracker(),
			inRate: math.NaN(), outRate: math.NaN(), ratio: math.NaN(), floor: math.Inf(1),
			scratch: make(map[string]float64, 1)}
		m.comps = append(m.comps, cs)
		byName[c.Name] = cs
		m.metrics.ingress.WithLabelValues(c.Name).Set(math.NaN())
		m.metrics.egress.WithLabelValues(c.Name).Set(math.NaN())
	}
	for _, r := range cfg.RatioRules {
		cs := byName[r.Component]
		cs.floor = math.Min(cs.floor, r.MinIngressBytesPerSec)
		a := &alert{rule: r.Name, kind: "ratio", forDur: r.For, value: math.NaN()}
		m.ratios = append(m.ratios, ratioEval{rule: r, comp: cs, alert: a})
		m.alerts = append(m.alerts, a)
		m.metrics.ratio.WithLabelValues(r.Name).Set(math.NaN())
	}
	for _, cs := range m.comps {
		if math.IsInf(cs.floor, 1) {
			cs.floor = defaultMinIngressBytesSec
		}
	}
	if z := cfg.ZombieMeters; z.Enabled {
		m.zombie = &alert{rule: z.Name, kind: "zombie", forDur: z.For, value: math.NaN()}
		m.alerts = append(m.alerts, m.zombie)
	}
	if l := cfg.SubscriptionLeak; l.Enabled {
		m.leak = &alert{rule: l.Name, kind: "leak", forDur: l.For, value: math.NaN()}
		m.alerts = append(m.alerts, m.leak)
	}
	if l := cfg.LagGrowth; l.Enabled {
		m.lag = &alert{rule: l.Name, kind: "lag", forDur: l.For, value: math.NaN()}
		m.alerts = append(m.alerts, m.lag)
	}
	for _, a := range m.alerts {
		m.metrics.firing.WithLabelValues(a.rule).Set(0)
		m.metrics.pending.WithLabelValues(a.rule).Set(0)
		if a.kind != "ratio" {
			m.metrics.value.WithLabelValues(a.rule).Set(math.NaN())
		}
	}
	for _, b := range cfg.Breakdowns {
		m.breakdowns = append(m.breakdowns, newBreakdownTracker(b))
	}
	m.gauges = make([]float64, len(cfg.Gauges))
	for i := range m.gauges {
		m.gauges[i] = math.NaN()
	}
	m.hist = newHistory(cfg.HistoryPoints, len(m.comps), len(cfg.Gauges))
	if cfg.Webhook.URL != "" {
		m.hook = newWebhook(cfg.Webhook, m.metrics, m.throttle)
	}
	if err := m.metrics.register(reg); err != nil {
		return nil, err
	}
	return m, nil
}

// Config returns the configuration the Monitor was built with.
func (m *Monitor) Config() Config { return m.cfg }

// Run samples every Interval until ctx is done, and (with a webhook URL) runs the
// webhook sender. It returns nil after ctx is done and both goroutines have exited,
// and then unregisters the monitor's metrics. It returns ErrAlreadyRunning if called
// twice.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer m.metrics.unregister(m.reg)
	var wg sync.WaitGroup
	if m.hook != nil {
		wg.Go(func() { m.hook.run(ctx) })
	}
	var tick <-chan time.Time
	if !m.manual {
		t := time.NewTicker(m.cfg.Interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case now := <-tick:
			m.Tick(now)
		}
	}
}

// transition is an alert state change, collected under the lock and announced after.
type transition struct {
	a     alert // copy
	state AlertState
}

// Tick runs one sampling and evaluation round as of now: gather, update rates,
// evaluate every rule, export metrics, append a history point, notify. Run calls it
// every Interval; tests call it with a synthetic clock to drive the rules
// deterministically. A now not after the previous Tick's is ignored (rates need
// increasing time).
func (m *Monitor) Tick(now time.Time) {
	fams, err := m.src.Gatherer.Gather()
	if err != nil {
		// Gather returns what it could collect alongside the error; use it.
		m.metrics.gatherErrors.Inc()
		m.throttle.Warn("gather", "ops: gathering metrics failed; using the partial result", "err", err)
	}
	snap := newSnapshot(fams)
	var meters []MeterSeen
	if m.src.Meters != nil && m.zombie != nil {
		meters = m.src.Meters.Meters()
	}

	m.mu.Lock()
	if !now.After(m.last) {
		m.mu.Unlock()
		return
	}
	m.last = now
	var changes []transition
	record := func(a *alert, cond bool) {
		if st, changed := a.step(now, cond, m.cfg.KeepResolved); changed {
			changes = append(changes, transition{a: *a, state: st})
		}
		m.metrics.firing.WithLabelValues(a.rule).Set(b2f(a.state == StateFiring))
		m.metrics.pending.WithLabelValues(a.rule).Set(b2f(a.state == StatePending))
	}

	for _, cs := range m.comps {
		m.observeComponent(cs, snap, now)
	}
	for _, r := range m.ratios {
		cs, a := r.comp, r.alert
		ratio := math.NaN()
		if !math.IsNaN(cs.inRate) && !math.IsNaN(cs.outRate) && cs.inRate >= r.rule.MinIngressBytesPerSec {
			ratio = cs.outRate / cs.inRate
		}
		cond := !math.IsNaN(ratio) && (ratio < r.rule.Min || ratio > r.rule.Max)
		a.value = ratio
		switch {
		case math.IsNaN(cs.inRate) || math.IsNaN(cs.outRate):
			a.summary = cs.cfg.Name + " ratio undefined: traffic counters absent in this process or fewer than two samples"
		case math.IsNaN(ratio):
			a.summary = fmt.Sprintf("%s ratio undefined: idle (ingress %s below the floor %s)",
				cs.cfg.Name, fmtRate(cs.inRate), fmtRate(r.rule.MinIngressBytesPerSec))
		default:
			where := "inside"
			if cond {
				where = "outside"
			}
			a.summary = fmt.Sprintf("%s egress/ingress ratio %.2f %s band [%g, %g] (ingress %s, egress %s)",
				cs.cfg.Name, ratio, where, r.rule.Min, r.rule.Max, fmtRate(cs.inRate), fmtRate(cs.outRate))
		}
		m.metrics.ratio.WithLabelValues(r.rule.Name).Set(ratio)
		record(a, cond)
	}
	if m.zombie != nil {
		record(m.zombie, m.evalZombies(meters, now))
	}
	if m.leak != nil {
		record(m.leak, m.evalLeak(snap))
	}
	if m.lag != nil {
		record(m.lag, m.evalLag(snap, now))
	}
	for _, a := range []*alert{m.zombie, m.leak, m.lag} {
		if a != nil {
			m.metrics.value.WithLabelValues(a.rule).Set(a.value)
		}
	}
	for _, b := range m.breakdowns {
		b.observe(snap, now, m.cfg.Window)
	}
	for i, g := range m.cfg.Gauges {
		v, ok := snap.gaugeSum(g.Gauge)
		if !ok {
			v = math.NaN()
		}
		m.gauges[i] = v
	}
	p := m.hist.next(now)
	for i, cs := range m.comps {
		p.comp[i] = compPoint{in: cs.inRate, out: cs.outRate, ratio: cs.ratio}
	}
	copy(p.gauges, m.gauges)
	m.mu.Unlock()

	m.metrics.samples.Inc()
	for _, c := range changes {
		m.announce(c)
	}
}

func (m *Monitor) observeComponent(cs *compState, snap snapshot, now time.Time) {
	clear(cs.scratch)
	inOK := cs.in.observe(snap, cs.cfg.Ingress, nil, cs.scratch)
	inInc := cs.scratch[""]
	clear(cs.scratch)
	outOK := cs.out.observe(snap, cs.cfg.Egress, nil, cs.scratch)
	outInc := cs.scratch[""]
	if !inOK || !outOK {
		// A component that is not in this process (e.g. phloem's counters on a
		// collector) has no rates: forget any window so that it restarts cleanly.
		cs.inW, cs.outW = rateWindow{}, rateWindow{}
		cs.inRate, cs.outRate, cs.ratio = math.NaN(), math.NaN(), math.NaN()
	} else {
		cs.inW.add(now, inInc, m.cfg.Window)
		cs.outW.add(now, outInc, m.cfg.Window)
		cs.inRate, cs.outRate = cs.inW.rate(), cs.outW.rate()
		cs.ratio = math.NaN()
		if cs.inRate >= cs.floor {
			cs.ratio = cs.outRate / cs.inRate
		}
	}
	m.metrics.ingress.WithLabelValues(cs.cfg.Name).Set(cs.inRate)
	m.metrics.egress.WithLabelValues(cs.cfg.Name).Set(cs.outRate)
}

// maxZombiesListed bounds the zombie list kept for the page and the summary.
const maxZombiesListed = 100

func (m *Monitor) evalZombies(meters []MeterSeen, now time.Time) bool {
	a := m.zombie
	if m.src.Meters == nil {
		a.value, a.summary, m.zombies = math.NaN(), "no meter activity source in this process", nil
		return false
	}
	m.zombies = m.zombies[:0]
	n := 0
	for _, s := range meters {
		if s.Connected && now.Sub(s.LastRecord) > m.cfg.ZombieMeters.After {
			n++
			m.zombies = append(m.zombies, s)
		}
	}
	sort.Slice(m.zombies, func(i, j int) bool { return m.zombies[i].LastRecord.Before(m.zombies[j].LastRecord) })
	if len(m.zombies) > maxZombiesListed {
		m.zombies = m.zombies[:maxZombiesListed]
	}
	a.value = float64(n)
	a.summary = fmt.Sprintf("%d connected meter(s) silent for more than %v", n, m.cfg.ZombieMeters.After)
	if n > 0 {
		ids := ""
		for i, z := range m.zombies {
			if i == 5 {
				ids += ", …"
				break
			}
			if i > 0 {
				ids += ", "
			}
			ids += z.Tenant + "/" + z.ID
		}
		a.summary += ": " + ids
	}
	return n > 0
}

func (m *Monitor) evalLeak(snap snapshot) bool {
	a, r := m.leak, m.cfg.SubscriptionLeak
	subs, ok1 := snap.gaugeSum(r.Subscribers)
	owners, ok2 := snap.gaugeSum(r.Owners...)
	if !ok1 || !ok2 {
		a.value, a.summary = math.NaN(), "hub subscriber or owner gauges absent in this process"
		return false
	}
	excess := subs - owners
	a.value = excess
	a.summary = fmt.Sprintf("%g hub subscription(s) for %g live receiver(s) and republisher(s): excess %g (slack %g)", subs, owners, excess, r.Slack)
	return excess > r.Slack
}

func (m *Monitor) evalLag(snap snapshot, now time.Time) bool {
	a, r := m.lag, m.cfg.LagGrowth
	v, ok := snap.gaugeSum(r.Lag)
	if !ok {
		m.lagPts = m.lagPts[:0]
		a.value, a.summary = math.NaN(), "consumer lag gauge absent in this process"
		return false
	}
	m.lagPts = append(m.lagPts, ratePoint{t: now, cum: v})
	start := now.Add(-r.Window)
	i := 0
	for i+1 < len(m.lagPts) && !m.lagPts[i+1].t.After(start) {
		i++
	}
	if i > 0 {
		m.lagPts = append(m.lagPts[:0], m.lagPts[i:]...)
	}
	first, last := m.lagPts[0], m.lagPts[len(m.lagPts)-1]
	growth := last.cum - first.cum
	a.value = growth
	if now.Sub(first.t) < r.Window {
		a.summary = fmt.Sprintf("consumer lag %g records; less than %v of samples", v, r.Window)
		return false
	}
	monotonic := true
	for j := 1; j < len(m.lagPts); j++ {
		if m.lagPts[j].cum < m.lagPts[j-1].cum {
			monotonic = false
			break
		}
	}
	a.summary = fmt.Sprintf("consumer lag %g records, %+g over %v", v, growth, r.Window)
	if monotonic {
		a.summary += " without ever decreasing"
	}
	return monotonic && growth >= r.MinGrowth
}

func (m *Monitor) announce(c transition) {
	a := c.a
	attrs := []any{"rule", a.rule, "kind", a.kind, "state", c.state, "summary", a.summary}
	switch c.state {
	case StateFiring:
		m.logger.Warn("ops: alert firing", append(attrs, "pending_since", a.active)...)
	case StateResolved:
		m.logger.Info("ops: alert resolved", append(attrs, "fired_at", a.fired)...)
	case StatePending:
		m.logger.Info("ops: alert pending", append(attrs, "for", a.forDur)...)
	default:
		m.logger.Info("ops: alert inactive", attrs...)
	}
	if m.hook != nil && (c.state == StateFiring || c.state == StateResolved) {
		at := a.fired
		if c.state == StateResolved {
			at = a.resolve
		}
		m.hook.enqueue(Notification{Rule: a.rule, Kind: a.kind, State: c.state, Value: optFloat(a.value),
			Summary: a.summary, ActiveSince: a.active, At: at, Source: m.src.Instance})
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func fmtRate(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	units := []string{"B/s", "kB/s", "MB/s", "GB/s"}
	i := 0
	for math.Abs(v) >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i]
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
