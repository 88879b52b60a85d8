package ops

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestConfigValidate(t *testing.T) {
	require.NoError(t, DefaultConfig().Validate())
	require.NoError(t, testConfig().Validate())
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"zero interval", func(c *Config) { c.Interval = 0 }, "Interval must be > 0"},
		{"window too short", func(c *Config) { c.Window = c.Interval }, "Window (1s) must be at least 2*Interval"},
		{"history", func(c *Config) { c.HistoryPoints = 1 }, "HistoryPoints"},
		{"bad component name", func(c *Config) { c.Components[0].Name = "Coll ector" }, "invalid name"},
		{"duplicate component", func(c *Config) { c.Components[1].Name = c.Components[0].Name }, "duplicate name"},
		{"no egress", func(c *Config) { c.Components[0].Egress = nil }, "at least one Ingress and one Egress"},
		{"bad metric", func(c *Config) { c.Components[0].Ingress[0].Metric = "not a metric" }, "invalid metric name"},
		{"unknown component", func(c *Config) { c.RatioRules[0].Component = "nope" }, `unknown component "nope"`},
		{"inverted band", func(c *Config) { c.RatioRules[0].Min, c.RatioRules[0].Max = 3, 1 }, "band [3, 1]"},
		{"no idle floor", func(c *Config) { c.RatioRules[0].MinIngressBytesPerSec = 0 }, "guards the division"},
		{"duplicate rule", func(c *Config) { c.SubscriptionLeak.Name = c.RatioRules[0].Name }, "duplicate rule name"},
		{"zombie after", func(c *Config) { c.ZombieMeters.After = 0 }, "After must be > 0"},
		{"lag window", func(c *Config) { c.LagGrowth.Window = c.Interval }, "at least 3 samples"},
		{"breakdown label", func(c *Config) { c.Breakdowns[0].By = "a-b" }, "invalid By label"},
		{"breakdown rows", func(c *Config) { c.Breakdowns[0].MaxRows = 0 }, "MaxRows"},
		{"webhook url", func(c *Config) { c.Webhook.URL = "ftp://x" }, "absolute http(s) URL"},
		{"webhook queue", func(c *Config) { c.Webhook.URL = "http://x"; c.Webhook.QueueSize = 0 }, "QueueSize must be > 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
	// Disabled detectors are not validated.
	c := DefaultConfig()
	c.ZombieMeters = ZombieRule{}
	c.SubscriptionLeak = LeakRule{}
	c.LagGrowth = LagRule{}
	require.NoError(t, c.Validate())
}

func TestAlertStateMachine(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type step struct {
		sec  int
		cond bool
		want AlertState
	}
	tests := []struct {
		name  string
		for_  time.Duration
		steps []step
	}{
		{"pending then firing then resolved then inactive", 3 * time.Second, []step{
			{0, false, StateInactive}, {1, true, StatePending}, {2, true, StatePending}, {3, true, StatePending},
			{4, true, StateFiring}, {5, true, StateFiring}, {6, false, StateResolved}, {7, false, StateResolved},
			{8, false, StateInactive},
		}},
		{"pending cleared before firing", 3 * time.Second, []step{
			{1, true, StatePending}, {2, false, StateInactive}, {3, true, StatePending}, {5, true, StatePending}, {6, true, StateFiring},
		}},
		{"for zero fires at once", 0, []step{{1, true, StateFiring}, {2, false, StateResolved}}},
		{"resolved then condition again", time.Second, []step{
			{1, true, StatePending}, {2, true, StateFiring}, {3, false, StateResolved}, {4, true, StatePending}, {5, true, StateFiring},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &alert{rule: "r", forDur: tt.for_}
			for _, s := range tt.steps {
				got, _ := a.step(at(s.sec), s.cond, 2*time.Second)
				require.Equal(t, s.want, got, "at +%ds cond=%v", s.sec, s.cond)
			}
		})
	}
	var s AlertState
	require.NoError(t, s.UnmarshalText([]byte("firing")))
	require.Equal(t, StateFiring, s)
	require.Error(t, s.UnmarshalText([]byte("burning")))
}

func TestRateWindowAndCounterTracker(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phloem_x_bytes_total", Help: "x"}, []string{"k"})
	reg.MustRegister(c)
	c.WithLabelValues("a").Add(1000) // history before the first observation: not counted
	tr := newCounterTracker()
	var w rateWindow
	t0 := time.Unix(0, 0)
	obs := func(sec int) float64 {
		fams, err := reg.Gather()
		require.NoError(t, err)
		out := map[string]float64{}
		require.True(t, tr.observe(newSnapshot(fams), []Selector{{Metric: "phloem_x_bytes_total"}}, nil, out))
		w.add(t0.Add(time.Duration(sec)*time.Second), out[""], 4*time.Second)
		return out[""]
	}
	require.Equal(t, 0.0, obs(0))
	require.True(t, math.IsNaN(w.rate()), "one point: no rate")
	c.WithLabelValues("a").Add(100)
	require.Equal(t, 100.0, obs(1))
	require.Equal(t, 100.0, w.rate())
	c.WithLabelValues("b").Add(50) // born since the last observation: counted whole
	c.WithLabelValues("a").Add(100)
	require.Equal(t, 150.0, obs(2))
	require.Equal(t, 125.0, w.rate())

	// A counter reset (process restart re-registering the series) counts the new value.
	reg.Unregister(c)
	c2 := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phloem_x_bytes_total", Help: "x"}, []string{"k"})
	reg.MustRegister(c2)
	c2.WithLabelValues("a").Add(30)
	c2.WithLabelValues("b").Add(70) // was 50: grew
	require.Equal(t, 30.0+20.0, obs(3))
	// The window slides: after 4s+ only the last 4s count.
	for s := 4; s <= 8; s++ {
		c2.WithLabelValues("a").Add(10)
		obs(s)
	}
	require.Equal(t, 10.0, w.rate())
	require.LessOrEqual(t, len(w.pts), 6, "window is trimmed")

	// An absent family reports false.
	fams, err := reg.Gather()
	require.NoError(t, err)
	require.False(t, tr.observe(newSnapshot(fams), []Selector{{Metric: "phloem_absent_total"}}, nil, map[string]float64{}))
}

// TestIdleAndAbsentGiveNoRatio: below the idle floor, or without counters, the ratio
// is undefined and never alerts, however wild egress/ingress would be.
func TestIdleAndAbsentGiveNoRatio(t *testing.T) {
	h := newTestHub(t)
	cfg := testConfig()
	cfg.RatioRules[0].For = 0
	m, err := New(cfg, Sources{Gatherer: h.reg}, nil, h.reg)
	require.NoError(t, err)
	c := newClock()
	tap := h.subscribe("tap")
	_ = tap
	for range 10 {
		h.publish("acme", 50) // 50 B/s ingress, 100 B/s egress: ratio 2 but idle
		m.Tick(c.tick(time.Second))
	}
	st := m.Status()
	require.InDelta(t, 50, float64(st.Components[0].IngressBytesPerSecond), 1e-9)
	require.True(t, math.IsNaN(float64(st.Components[0].Ratio)))
	require.Equal(t, StateInactive, st.Alerts[0].State)
	require.Contains(t, st.Alerts[0].Summary, "idle")
	require.True(t, math.IsNaN(testutil.ToFloat64(m.metrics.ratio.WithLabelValues("collector_ratio"))))
	// phloem's counters do not exist in this process.
	require.Equal(t, "phloem", st.Components[1].Name)
	require.True(t, math.IsNaN(float64(st.Components[1].IngressBytesPerSecond)))
	require.Contains(t, st.Alerts[1].Summary, "absent")
	// Out-of-order ticks are ignored.
	n := len(m.Status().Times)
	m.Tick(c.t.Add(-time.Second))
	require.Len(t, m.Status().Times, n)
}

type fakeMeters struct {
	mu     sync.Mutex
	meters []MeterSeen
}

func (f *fakeMeters) Meters() []MeterSeen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]MeterSeen(nil), f.meters...)
}

func TestZombieMeters(t *testing.T) {
	reg := prometheus.NewRegistry()
	fm := &fakeMeters{}
	cfg := testConfig()
	cfg.ZombieMeters.After = 5 * time.Second
	cfg.ZombieMeters.For = time.Second
	m, err := New(cfg, Sources{Gatherer: reg, Meters: fm}, nil, reg)
	require.NoError(t, err)
	c := newClock()
	start := c.t
	fm.meters = []MeterSeen{
		{ID: "m1", Tenant: "acme", Connected: true, LastRecord: start},                  // goes silent
		{ID: "m2", Tenant: "acme", Connected: false, LastRecord: start},                 // disconnected: not a zombie
		{ID: "m3", Tenant: "globex", Connected: true, LastRecord: start.Add(time.Hour)}, // keeps sending
	}
	var states []AlertState
	for range 8 {
		m.Tick(c.tick(time.Second))
		states = append(states, alertState(t, m, "zombie_meters"))
	}
	require.Equal(t, []AlertState{StateInactive, StatePending, StateFiring}, compress(states), "%v", states)
	st := m.Status()
	require.Len(t, st.Zombies, 1)
	require.Equal(t, "m1", st.Zombies[0].ID)
	require.Contains(t, st.Alerts[2].Summary, "acme/m1")
	require.Equal(t, 1.0, testutil.ToFloat64(m.metrics.value.WithLabelValues("zombie_meters")))

	fm.mu.Lock()
	fm.meters[0].LastRecord = c.t
	fm.mu.Unlock()
	m.Tick(c.tick(time.Second))
	require.Equal(t, StateResolved, alertState(t, m, "zombie_meters"))
}

func TestConsumerLagGrowing(t *testing.T) {
	reg := prometheus.NewRegistry()
	lag := prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricConsumerLagRecords, Help: "lag"})
	reg.MustRegister(lag)
	cfg := testConfig() // lag window 5s, for 0
	m, err := New(cfg, Sources{Gatherer: reg}, nil, reg)
	require.NoError(t, err)
	c := newClock()
	tick := func(v float64) AlertState {
		lag.Set(v)
		m.Tick(c.tick(time.Second))
		return alertState(t, m, "consumer_lag_growing")
	}
	// A consumer that keeps up: lag goes up and down.
	for i := range 12 {
		require.Equal(t, StateInactive, tick(float64(150-(i%2)*50)))
	}
	// Falling behind: lag only grows (flat steps allowed).
	var states []AlertState
	for i, v := range []float64{200, 300, 300, 400, 500, 600, 700} {
		s := tick(v)
		states = append(states, s)
		if i < 4 {
			require.Equal(t, StateInactive, s, "window not yet covered at step %d", i)
		}
	}
	require.Equal(t, StateFiring, states[len(states)-1], "%v", states)
	require.Equal(t, 400.0, testutil.ToFloat64(m.metrics.value.WithLabelValues("consumer_lag_growing")))
	// One decrease inside the window clears it.
	require.Equal(t, StateResolved, tick(650))
}

// TestWebhookErrorsAndBoundedQueue: a failing receiver is counted, a stuck one never
// blocks evaluation (the queue drops and counts), and Run stops promptly.
func TestWebhookErrorsAndBoundedQueue(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			http.Error(w, "nope", http.StatusInternalServerError)
			return
		}
		select { // stuck receiver: hold the request until the test releases it or the client gives up
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	h := newTestHub(t)
	cfg := testConfig()
	cfg.Webhook.URL = srv.URL
	cfg.Webhook.QueueSize = 1
	cfg.Webhook.Timeout = 300 * time.Millisecond
	cfg.RatioRules[0].For = 0
	cfg.SubscriptionLeak.Enabled = false
	m, err := New(cfg, Sources{Gatherer: h.reg}, nil, h.reg)
	require.NoError(t, err)
	m.manual = true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	require.Eventually(t, m.started.Load, 5*time.Second, time.Millisecond)
	require.ErrorIs(t, m.Run(ctx), ErrAlreadyRunning)

	c := newClock()
	tap := &testSub{dest: "tap", live: false}
	flap := func(leak bool) {
		// Flip between ratio 1 (in band) and 2 (a leaked tap) so that the alert fires
		// or resolves every few ticks: a stream of notifications.
		if leak {
			h.subs[tap] = true
		} else {
			delete(h.subs, tap)
		}
		for range 6 {
			h.publish("acme", 10_000)
			m.Tick(c.tick(time.Second))
		}
	}
	flap(false)
	start := time.Now()
	for i := range 10 {
		flap(i%2 == 0)
	}
	require.Less(t, time.Since(start), 250*time.Millisecond, "evaluation must not wait for the webhook")
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(m.metrics.webhookErrors) >= 2 && testutil.ToFloat64(m.metrics.webhookDropped) >= 1
	}, 10*time.Second, 10*time.Millisecond)
	t.Logf("webhook errors %v, dropped %v", testutil.ToFloat64(m.metrics.webhookErrors), testutil.ToFloat64(m.metrics.webhookDropped))
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestRunSamplesEveryInterval drives Run's own ticker in a synctest bubble: fake
// time, no sleeps, deterministic.
func TestRunSamplesEveryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTestHub(t)
		m, err := New(testConfig(), Sources{Gatherer: h.reg}, nil, h.reg)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		for range 5 {
			h.publish("acme", 1000)
			time.Sleep(time.Second)
			synctest.Wait()
		}
		st := m.Status()
		require.Len(t, st.Times, 5)
		require.InDelta(t, 1000, float64(st.Components[0].IngressBytesPerSecond), 1e-9)
		require.Equal(t, 5.0, testutil.ToFloat64(m.metrics.samples))
		cancel()
		require.NoError(t, <-done)
		// Run unregistered the monitor's metrics on the way out.
		fams, err := h.reg.Gather()
		require.NoError(t, err)
		for _, f := range fams {
			require.False(t, strings.HasPrefix(f.GetName(), "phloem_ops_"), f.GetName())
		}
	})
}

func TestHistoryIsBounded(t *testing.T) {
	h := newTestHub(t)
	cfg := testConfig()
	cfg.HistoryPoints = 7
	m, err := New(cfg, Sources{Gatherer: h.reg}, nil, h.reg)
	require.NoError(t, err)
	c := newClock()
	var last time.Time
	for range 20 {
		h.publish("acme", 1000)
		last = c.tick(time.Second)
		m.Tick(last)
	}
	st := m.Status()
	require.Len(t, st.Times, 7)
	require.Len(t, st.Components[0].Ingress, 7)
	require.Len(t, st.Gauges[1].History, 7)
	require.Equal(t, last.UnixMilli(), st.Times[6])
	require.Equal(t, last.Add(-6*time.Second).UnixMilli(), st.Times[0])
}

func TestBreakdownCapsRows(t *testing.T) {
	h := newTestHub(t)
	cfg := testConfig()
	cfg.Breakdowns[0].MaxRows = 3
	m, err := New(cfg, Sources{Gatherer: h.reg}, nil, h.reg)
	require.NoError(t, err)
	c := newClock()
	for i := range 5 {
		for _, tenant := range []string{"a", "b", "c", "d", "e"} {
			h.publish(tenant, 100*(i+1))
		}
		m.Tick(c.tick(time.Second))
	}
	rows := m.Status().Breakdowns[0].Rows
	require.Len(t, rows, 4, "%v", rows)
	labels := map[string]bool{}
	for _, r := range rows {
		labels[r.Label] = true
	}
	require.True(t, labels[otherRow])
}

func TestStatusHandlerRoutes(t *testing.T) {
	h := newTestHub(t)
	m, err := New(testConfig(), Sources{Gatherer: h.reg}, nil, h.reg)
	require.NoError(t, err)
	m.Tick(time.Unix(100, 0))
	mux := http.NewServeMux()
	mux.Handle("/status/", StatusHandler(m))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for path, want := range map[string]string{
		"/status/":          "text/html",
		"/status/app.js":    "text/javascript",
		"/status/style.css": "text/css",
		"/status/api":       "application/json",
	} {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), want), path)
		require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'self'")
	}
	resp, err := http.Get(srv.URL + "/status/nope")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, err = http.Post(srv.URL+"/status/api", "text/plain", nil)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	// NaN values (no samples yet) encode as null, not as invalid JSON.
	var raw map[string]any
	require.NoError(t, json.Unmarshal([]byte(httpGet(t, srv.URL+"/status/api")), &raw))
	comp := raw["components"].([]any)[0].(map[string]any)
	require.Nil(t, comp["ratio"])
}

// TestNoExternalReferences: the page must work without network access beyond its
// own origin.
func TestNoExternalReferences(t *testing.T) {
	for _, name := range []string{"web/index.html", "web/app.js", "web/style.css"} {
		b, err := webFS.ReadFile(name)
		require.NoError(t, err)
		s := string(b)
		s = strings.ReplaceAll(s, "http://www.w3.org/2000/svg", "") // the SVG namespace is an identifier, not a fetch
		require.NotContains(t, s, "http://", name)
		require.NotContains(t, s, "https://", name)
		require.NotContains(t, s, "//cdn", name)
	}
}

func TestNewRejects(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := New(DefaultConfig(), Sources{}, nil, reg)
	require.ErrorContains(t, err, "Gatherer is required")
	bad := DefaultConfig()
	bad.Interval = 0
	_, err = New(bad, Sources{Gatherer: reg}, nil, reg)
	require.ErrorContains(t, err, "invalid ops config")
	_, err = New(DefaultConfig(), Sources{Gatherer: reg}, nil, reg)
	require.NoError(t, err)
	_, err = New(DefaultConfig(), Sources{Gatherer: reg}, nil, reg)
	require.ErrorContains(t, err, "second instance")
	// The failed New left no partial registration behind: the first monitor's
	// metrics are still the only ones.
	fams, err := reg.Gather()
	require.NoError(t, err)
	ops := 0
	for _, n := range ExportedMetrics() {
		if strings.HasPrefix(n, "phloem_ops_") {
			ops++
		}
	}
	require.Len(t, fams, ops)
}
