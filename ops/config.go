package ops

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"
)

// Selector picks series from the gathered metrics: every series of the family named
// Metric whose labels include all of Labels (exact match). The values of the selected
// series are summed, so a selector with no Labels sums over every label combination
// (e.g. all tenants, or both the "kafka" and "tap" destinations).
type Selector struct {
	// Metric is the full metric family name, e.g. "phloem_collector_ingress_bytes_total".
	// Required.
	Metric string `json:"metric"`
	// Labels are exact-match label matchers. Nil or empty selects every series.
	Labels map[string]string `json:"labels,omitempty"`
}

func (s Selector) validate() error {
	if !metricNameRE.MatchString(s.Metric) {
		return fmt.Errorf("invalid metric name %q", s.Metric)
	}
	for k := range s.Labels {
		if !labelNameRE.MatchString(k) {
			return fmt.Errorf("metric %q: invalid label name %q", s.Metric, k)
		}
	}
	return nil
}

// ComponentConfig names a component and the byte counters that measure its traffic.
// The monitor computes, for each component, the ingress and egress byte rates over the
// sliding Config.Window, and ratio rules compare them.
type ComponentConfig struct {
	// Name is the component label on phloem_ops_*_bytes_per_second, e.g. "collector".
	// Required; [a-z0-9_]+.
	Name string `json:"name"`
	// Title is the heading on the status page. Default: Name.
	Title string `json:"title,omitempty"`
	// Ingress selects the counters (bytes, monotonically increasing) whose summed
	// increase is the component's ingress. Required, at least one.
	Ingress []Selector `json:"ingress"`
	// Egress selects the counters whose summed increase is the component's egress.
	// Required, at least one.
	Egress []Selector `json:"egress"`
}

// RatioRule alerts when a component's egress/ingress byte-rate ratio leaves the
// expected band [Min, Max] for longer than For.
//
// The ratio is undefined, and the rule's condition is false (no alert, an already
// firing alert resolves), while the component's ingress rate is below
// MinIngressBytesPerSec or its counters are absent from the registry: an idle
// component has no meaningful ratio, and dividing by a near-zero rate would turn a
// few stray bytes into an enormous ratio.
type RatioRule struct {
	// Name is the rule label on phloem_ops_ratio and phloem_ops_alert_firing.
	// Required; [a-z0-9_]+; unique across all rules and detectors.
	Name string `json:"name"`
	// Component is the ComponentConfig.Name this rule watches. Required.
	Component string `json:"component"`
	// Min and Max bound the expected ratio, inclusive. 0 <= Min <= Max; Max > 0.
	Min float64 `json:"min"`
	Max float64 `json:"max"`
	// For is how long the ratio must stay outside the band before the alert fires
	// (pending until then). 0 fires on the first evaluation outside the band.
	For time.Duration `json:"for"`
	// MinIngressBytesPerSec is the idle floor: below it the ratio is undefined.
	// Must be > 0 (it is the divide-by-zero guard).
	MinIngressBytesPerSec float64 `json:"min_ingress_bytes_per_sec"`
}

// ZombieRule configures the zombie-meter detector: meters that the collector reports
// as connected but that have sent no record for longer than After. It needs
// Sources.Meters; without it the detector is inactive.
type ZombieRule struct {
	// Enabled turns the detector on. Zero value: off. DefaultConfig: on.
	Enabled bool `json:"enabled"`
	// Name is the rule label. Default "zombie_meters".
	Name string `json:"name"`
	// After is the silence after which a connected meter counts as a zombie. > 0.
	// Default 2m.
	After time.Duration `json:"after"`
	// For is how long at least one zombie must exist before the alert fires.
	// Default 0 (After already encodes the wait).
	For time.Duration `json:"for"`
}

// LeakRule configures the subscription-leak detector: the hub's subscriber count
// exceeding the subscriptions that have a live owner (tap receivers plus Kafka
// republishers) by more than Slack, for longer than For. A subscription that
// outlives its receiver is the leak that once pushed a system's ratio from 4.4× to
// 16× (DESIGN.md).
//
// If any selected metric family is absent from the registry (e.g. on a phloem-only
// process, or a collector that does not export a republisher gauge) the condition is
// undefined and the detector stays inactive: a missing gauge read as 0 would
// otherwise fire a false leak.
type LeakRule struct {
	// Enabled turns the detector on. Zero value: off. DefaultConfig: on.
	Enabled bool `json:"enabled"`
	// Name is the rule label. Default "subscription_leak".
	Name string `json:"name"`
	// Subscribers selects the gauge of open hub subscriptions.
	// Default phloem_collector_hub_subscribers.
	Subscribers Selector `json:"subscribers"`
	// Owners selects the gauges whose sum is the number of subscriptions that should
	// exist. Default phloem_collector_tap_receivers + phloem_collector_republishers.
	Owners []Selector `json:"owners"`
	// Slack is the tolerated excess (subscriptions being torn down when sampled).
	// >= 0. Default 0.
	Slack float64 `json:"slack"`
	// For is how long the excess must persist before the alert fires. Default 1m:
	// a receiver that just left is unsubscribed within milliseconds, a leak stays.
	For time.Duration `json:"for"`
}

// LagRule configures the consumer-lag-growth detector: the summed consumer lag has
// not decreased between any two consecutive samples across Window and grew by at
// least MinGrowth records over it. A consumer that keeps up sees its lag go down
// after every fetch; a lag that only climbs means the sinks (or the consumer) cannot
// keep up.
type LagRule struct {
	// Enabled turns the detector on. Zero value: off. DefaultConfig: on.
	Enabled bool `json:"enabled"`
	// Name is the rule label. Default "consumer_lag_growing".
	Name string `json:"name"`
	// Lag selects the lag gauge. Default phloem_consumer_lag_records.
	Lag Selector `json:"lag"`
	// Window is the span over which the lag must grow monotonically. It must cover at
	// least 3 samples (Window >= 2*Config.Interval). Default 2m.
	Window time.Duration `json:"window"`
	// MinGrowth is the minimum net growth over Window, in records. > 0. Default 1.
	MinGrowth float64 `json:"min_growth"`
	// For is an extra wait after the window condition holds. Default 0.
	For time.Duration `json:"for"`
}

// BreakdownConfig is a table on the status page: the rate of one counter split by a
// label (tenants with their ingress rates, egress by destination, bytes per sink).
type BreakdownConfig struct {
	// Name identifies the table. Required; [a-z0-9_]+.
	Name string `json:"name"`
	// Title is its heading. Default: Name.
	Title string `json:"title,omitempty"`
	// Counter selects the byte counter. Required.
	Counter Selector `json:"counter"`
	// By is the label to split by, e.g. "tenant". Required.
	By string `json:"by"`
	// MaxRows caps the distinct label values tracked; further values are summed into
	// a row named "_other" so that a tenant explosion cannot grow the monitor's
	// memory. Default 50.
	MaxRows int `json:"max_rows"`
}

// GaugeConfig is a gauge shown on the status page with its history (consumer lag,
// hub subscribers, tap receivers).
type GaugeConfig struct {
	// Name identifies the gauge. Required; [a-z0-9_]+.
	Name string `json:"name"`
	// Title is its heading. Default: Name.
	Title string `json:"title,omitempty"`
	// Gauge selects the series to sum. Required.
	Gauge Selector `json:"gauge"`
	// Chart draws its history as a chart (else only the latest value is shown).
	Chart bool `json:"chart,omitempty"`
}

// WebhookConfig configures the optional webhook notifier.
type WebhookConfig struct {
	// URL receives a POST with a JSON Notification when an alert fires or resolves.
	// Empty: no webhook (notifications are logged only).
	URL string `json:"url,omitempty"`
	// Timeout bounds each POST. Default 5s.
	Timeout time.Duration `json:"timeout"`
	// QueueSize bounds the notifications waiting to be sent. When full, new
	// notifications are dropped and counted in phloem_ops_webhook_dropped_total:
	// evaluation never blocks on a slow receiver. Default 64.
	QueueSize int `json:"queue_size"`
}

// Config configures a Monitor. Build it with DefaultConfig and adjust.
type Config struct {
	// Interval is the sampling and evaluation period. Default 1s.
	Interval time.Duration `json:"interval"`
	// Window is the sliding window over which byte rates are computed: the counters'
	// increase over the last Window divided by the time it spans, like PromQL's
	// rate(x[Window]). Must be >= 2*Interval. Default 1m.
	Window time.Duration `json:"window"`
	// HistoryPoints is the size of the history ring buffer behind the status page's
	// charts (one point per Interval). Default 600 (10 minutes at 1s).
	HistoryPoints int `json:"history_points"`
	// KeepResolved is how long a resolved alert stays in the "resolved" state (shown
	// on the page) before it becomes inactive. Default 5m.
	KeepResolved time.Duration `json:"keep_resolved"`

	// Components are the traffic counters per component.
	// Default: "collector" and "phloem".
	Components []ComponentConfig `json:"components"`
	// RatioRules are the egress/ingress band rules.
	// Default: collector_ratio [0.9, 3.0] and phloem_ratio [0.8, 2.0], For 2m.
	RatioRules []RatioRule `json:"ratio_rules"`

	// ZombieMeters, SubscriptionLeak and LagGrowth are the detectors.
	ZombieMeters     ZombieRule `json:"zombie_meters"`
	SubscriptionLeak LeakRule   `json:"subscription_leak"`
	LagGrowth        LagRule    `json:"lag_growth"`

	// Breakdowns and Gauges are the status page's tables and gauge charts.
	Breakdowns []BreakdownConfig `json:"breakdowns"`
	Gauges     []GaugeConfig     `json:"gauges"`

	// Webhook is the optional notifier.
	Webhook WebhookConfig `json:"webhook"`
}

// Metric names the default configuration reads. They are the contract with the
// collector and phloem consumer packages; ExportedMetrics lists them too.
const (
	MetricCollectorIngress    = "phloem_collector_ingress_bytes_total" // counter, label tenant
	MetricCollectorEgress     = "phloem_collector_egress_bytes_total"  // counter, label destination="kafka"|"tap"
	MetricHubSubscribers      = "phloem_collector_hub_subscribers"     // gauge
	MetricTapReceivers        = "phloem_collector_tap_receivers"       // gauge
	MetricRepublishers        = "phloem_collector_republishers"        // gauge: hub subscriptions held by Kafka republishers
	MetricConsumerBytesIn     = "phloem_consumer_bytes_in_total"       // counter
	MetricConsumerBytesOut    = "phloem_consumer_bytes_out_total"      // counter, label sink
	MetricConsumerLagRecords  = "phloem_consumer_lag_records"          // gauge
	defaultMinIngressBytesSec = 100
)

// DefaultConfig returns the defaults documented on Config and its fields.
//
// The bands are starting points: the collector's egress is Kafka plus every live tap,
// so a deployment with taps open most of the time should raise collector_ratio's Max;
// phloem's egress is the sum over sinks, so Max should grow with the number of sinks
// per tenant.
func DefaultConfig() Config {
	return Config{
		Interval:      time.Second,
		Window:        time.Minute,
		HistoryPoints: 600,
		KeepResolved:  5 * time.Minute,
		Components: []ComponentConfig{
			{
				Name:    "collector",
				Title:   "Collector (meters → Kafka + taps)",
				Ingress: []Selector{{Metric: MetricCollectorIngress}},
				Egress:  []Selector{{Metric: MetricCollectorEgress}},
			},
			{
				Name:    "phloem",
				Title:   "Phloem consumer (Kafka → sinks)",
				Ingress: []Selector{{Metric: MetricConsumerBytesIn}},
				Egress:  []Selector{{Metric: MetricConsumerBytesOut}},
			},
		},
		RatioRules: []RatioRule{
			{Name: "collector_ratio", Component: "collector", Min: 0.9, Max: 3.0, For: 2 * time.Minute, MinIngressBytesPerSec: defaultMinIngressBytesSec},
			{Name: "phloem_ratio", Component: "phloem", Min: 0.8, Max: 2.0, For: 2 * time.Minute, MinIngressBytesPerSec: defaultMinIngressBytesSec},
		},
		ZombieMeters: ZombieRule{Enabled: true, Name: "zombie_meters", After: 2 * time.Minute},
		SubscriptionLeak: LeakRule{
			Enabled:     true,
			Name:        "subscription_leak",
			Subscribers: Selector{Metric: MetricHubSubscribers},
			Owners:      []Selector{{Metric: MetricTapReceivers}, {Metric: MetricRepublishers}},
			For:         time.Minute,
		},
		LagGrowth: LagRule{
			Enabled:   true,
			Name:      "consumer_lag_growing",
			Lag:       Selector{Metric: MetricConsumerLagRecords},
			Window:    2 * time.Minute,
			MinGrowth: 1,
		},
		Breakdowns: []BreakdownConfig{
			{Name: "tenants", Title: "Tenants (collector ingress)", Counter: Selector{Metric: MetricCollectorIngress}, By: "tenant", MaxRows: 50},
			{Name: "collector_egress", Title: "Collector egress by destination", Counter: Selector{Metric: MetricCollectorEgress}, By: "destination", MaxRows: 50},
			{Name: "sinks", Title: "Phloem egress by sink", Counter: Selector{Metric: MetricConsumerBytesOut}, By: "sink", MaxRows: 50},
		},
		Gauges: []GaugeConfig{
			{Name: "consumer_lag", Title: "Consumer lag (records)", Gauge: Selector{Metric: MetricConsumerLagRecords}, Chart: true},
			{Name: "hub_subscribers", Title: "Hub subscribers", Gauge: Selector{Metric: MetricHubSubscribers}, Chart: true},
			{Name: "tap_receivers", Title: "Live tap receivers", Gauge: Selector{Metric: MetricTapReceivers}},
			{Name: "republishers", Title: "Kafka republishers", Gauge: Selector{Metric: MetricRepublishers}},
		},
		Webhook: WebhookConfig{Timeout: 5 * time.Second, QueueSize: 64},
	}
}

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	nameRE       = regexp.MustCompile(`^[a-z0-9_]+$`)
)

// Validate reports every problem in c, joined. It does not fill defaults.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Interval <= 0 {
		add("ops: Interval must be > 0, got %v", c.Interval)
	}
	if c.Window < 2*c.Interval {
		add("ops: Window (%v) must be at least 2*Interval (%v) so that a rate spans two samples", c.Window, 2*c.Interval)
	}
	if c.HistoryPoints < 2 {
		add("ops: HistoryPoints must be >= 2, got %d", c.HistoryPoints)
	}
	if c.KeepResolved < 0 {
		add("ops: KeepResolved must be >= 0, got %v", c.KeepResolved)
	}
	comps := make(map[string]bool)
	for i, comp := range c.Components {
		if !nameRE.MatchString(comp.Name) {
			add("ops: Components[%d]: invalid name %q (want [a-z0-9_]+)", i, comp.Name)
		}
		if comps[comp.Name] {
			add("ops: Components[%d]: duplicate name %q", i, comp.Name)
		}
		comps[comp.Name] = true
		if len(comp.Ingress) == 0 || len(comp.Egress) == 0 {
			add("ops: component %q needs at least one Ingress and one Egress selector", comp.Name)
		}
		for _, s := range append(append([]Selector(nil), comp.Ingress...), comp.Egress...) {
			if err := s.validate(); err != nil {
				add("ops: component %q: %w", comp.Name, err)
			}
		}
	}
	rules := make(map[string]bool)
	ruleName := func(what, name string) {
		if !nameRE.MatchString(name) {
			add("ops: %s: invalid rule name %q (want [a-z0-9_]+)", what, name)
		}
		if rules[name] {
			add("ops: %s: duplicate rule name %q", what, name)
		}
		rules[name] = true
	}
	for i, r := range c.RatioRules {
		ruleName(fmt.Sprintf("RatioRules[%d]", i), r.Name)
		if !comps[r.Component] {
			add("ops: ratio rule %q: unknown component %q", r.Name, r.Component)
		}
		if r.Min < 0 || r.Max <= 0 || r.Min > r.Max {
			add("ops: ratio rule %q: band [%g, %g] must satisfy 0 <= Min <= Max and Max > 0", r.Name, r.Min, r.Max)
		}
		if r.For < 0 {
			add("ops: ratio rule %q: For must be >= 0", r.Name)
		}
		if !(r.MinIngressBytesPerSec > 0) {
			add("ops: ratio rule %q: MinIngressBytesPerSec must be > 0 (it guards the division), got %g", r.Name, r.MinIngressBytesPerSec)
		}
	}
	if z := c.ZombieMeters; z.Enabled {
		ruleName("ZombieMeters", z.Name)
		if z.After <= 0 || z.For < 0 {
			add("ops: zombie rule %q: After must be > 0 and For >= 0", z.Name)
		}
	}
	if l := c.SubscriptionLeak; l.Enabled {
		ruleName("SubscriptionLeak", l.Name)
		if err := l.Subscribers.validate(); err != nil {
			add("ops: leak rule %q: Subscribers: %w", l.Name, err)
		}
		for _, s := range l.Owners {
			if err := s.validate(); err != nil {
				add("ops: leak rule %q: Owners: %w", l.Name, err)
			}
		}
		if l.Slack < 0 || l.For < 0 {
			add("ops: leak rule %q: Slack and For must be >= 0", l.Name)
		}
	}
	if l := c.LagGrowth; l.Enabled {
		ruleName("LagGrowth", l.Name)
		if err := l.Lag.validate(); err != nil {
			add("ops: lag rule %q: %w", l.Name, err)
		}
		if l.Window < 2*c.Interval {
			add("ops: lag rule %q: Window (%v) must cover at least 3 samples (>= 2*Interval)", l.Name, l.Window)
		}
		if !(l.MinGrowth > 0) || l.For < 0 {
			add("ops: lag rule %q: MinGrowth must be > 0 and For >= 0", l.Name)
		}
	}
	names := make(map[string]bool)
	for i, b := range c.Breakdowns {
		if !nameRE.MatchString(b.Name) || names[b.Name] {
			add("ops: Breakdowns[%d]: invalid or duplicate name %q", i, b.Name)
		}
		names[b.Name] = true
		if err := b.Counter.validate(); err != nil {
			add("ops: breakdown %q: %w", b.Name, err)
		}
		if !labelNameRE.MatchString(b.By) {
			add("ops: breakdown %q: invalid By label %q", b.Name, b.By)
		}
		if b.MaxRows <= 0 {
			add("ops: breakdown %q: MaxRows must be > 0", b.Name)
		}
	}
	names = make(map[string]bool)
	for i, g := range c.Gauges {
		if !nameRE.MatchString(g.Name) || names[g.Name] {
			add("ops: Gauges[%d]: invalid or duplicate name %q", i, g.Name)
		}
		names[g.Name] = true
		if err := g.Gauge.validate(); err != nil {
			add("ops: gauge %q: %w", g.Name, err)
		}
	}
	if c.Webhook.URL != "" {
		u, err := url.Parse(c.Webhook.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("ops: Webhook.URL %q must be an absolute http(s) URL", c.Webhook.URL)
		}
		if c.Webhook.Timeout <= 0 || c.Webhook.QueueSize <= 0 {
			add("ops: Webhook.Timeout and Webhook.QueueSize must be > 0")
		}
	}
	return errors.Join(errs...)
}
