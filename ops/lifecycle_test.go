package ops

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// leakScenario drives a hub at 10 kB/s for tenant "acme" through the monitor on a
// synthetic clock (one Tick per second) until firing: normal traffic, then a tap
// whose receiver leaves without unsubscribing. It returns the tick at which the leak
// started and the per-tick states of collector_ratio.
func leakScenario(t *testing.T, m *Monitor, h *testHub, c *clock) (leakAt time.Time, states []AlertState) {
	t.Helper()
	step := func() AlertState {
		h.publish("acme", 8_000)
		h.publish("globex", 2_000)
		m.Tick(c.tick(time.Second))
		return alertState(t, m, "collector_ratio")
	}
	for range 10 {
		states = append(states, step())
	}
	require.Equal(t, StateInactive, states[len(states)-1])
	st := m.Status()
	require.InDelta(t, 1.0, float64(st.Components[0].Ratio), 1e-9, "healthy collector: kafka egress == ingress")

	// The leak: a tap subscribes, its receiver goes away, the hub keeps the subscription.
	tap := h.subscribe("tap")
	h.receiverGone(tap, true)
	leakAt = c.t
	for range 20 {
		s := step()
		states = append(states, s)
		if s == StateFiring {
			break
		}
	}
	return leakAt, states
}

func alertState(t *testing.T, m *Monitor, rule string) AlertState {
	t.Helper()
	for _, a := range m.Alerts() {
		if a.Rule == rule {
			return a.State
		}
	}
	t.Fatalf("no rule %q", rule)
	return 0
}

// compress removes consecutive duplicates.
func compress(states []AlertState) []AlertState {
	var out []AlertState
	for _, s := range states {
		if len(out) == 0 || out[len(out)-1] != s {
			out = append(out, s)
		}
	}
	return out
}

// TestLeakingTapAlertLifecycle is the acceptance test: a leaking tap
// subscriber drives the collector's egress/ingress ratio out of its band; the alert
// goes pending, then firing within its configured window, shows in /metrics, in the
// status JSON and on the webhook, and resolves (then goes inactive) after the leak is
// removed.
func TestLeakingTapAlertLifecycle(t *testing.T) {
	h := newTestHub(t)

	var (
		hookMu sync.Mutex
		hooks  []Notification
	)
	hookSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n Notification
		b, err := io.ReadAll(r.Body)
		if err == nil {
			err = json.Unmarshal(b, &n)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		hookMu.Lock()
		hooks = append(hooks, n)
		hookMu.Unlock()
	}))
	t.Cleanup(hookSrv.Close)

	cfg := testConfig()
	cfg.Webhook.URL = hookSrv.URL
	m, err := New(cfg, Sources{Gatherer: h.reg, Instance: "test-collector"}, nil, h.reg)
	require.NoError(t, err)
	m.manual = true // Run only sends webhooks here; the test ticks the synthetic clock itself
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-runDone)
	})
	base := serveAdmin(t, m, h.reg)

	c := newClock()
	leakAt, states := leakScenario(t, m, h, c)
	got := compress(states)
	require.Equal(t, []AlertState{StateInactive, StatePending, StateFiring}, got, "per-tick states: %v", states)

	// Firing within the configured window: the windowed ratio needs at most Window to
	// cross the band, then For to fire.
	fired := *m.Alerts()[0].FiredAt
	rule := cfg.RatioRules[0]
	require.LessOrEqual(t, fired.Sub(leakAt), cfg.Window+rule.For, "fired %v after the leak", fired.Sub(leakAt))
	pendingSince := *m.Alerts()[0].ActiveSince
	require.Equal(t, rule.For, fired.Sub(pendingSince), "pending for exactly For before firing")
	t.Logf("leak at +0s, pending at +%v, firing at +%v (window %v, for %v)",
		pendingSince.Sub(leakAt), fired.Sub(leakAt), cfg.Window, rule.For)

	// /metrics on the real admin listener.
	metricsText := httpGet(t, base+"/metrics")
	require.Contains(t, metricsText, `phloem_ops_alert_firing{rule="collector_ratio"} 1`)
	require.Contains(t, metricsText, `phloem_ops_alert_firing{rule="phloem_ratio"} 0`)
	ratio := regexp.MustCompile(`phloem_ops_ratio\{rule="collector_ratio"\} ([0-9.e+]+)`).FindStringSubmatch(metricsText)
	require.NotNil(t, ratio, metricsText)
	t.Logf("/metrics: phloem_ops_alert_firing{rule=\"collector_ratio\"} 1, phloem_ops_ratio{rule=\"collector_ratio\"} %s", ratio[1])
	// The leak detector sees the subscription without a receiver as well.
	require.Equal(t, StateFiring, alertState(t, m, "subscription_leak"))
	require.Contains(t, metricsText, `phloem_ops_alert_firing{rule="subscription_leak"} 1`)
	require.Contains(t, metricsText, `phloem_ops_detector_value{rule="subscription_leak"} 1`)

	// The status page's JSON API.
	var st Status
	require.NoError(t, json.Unmarshal([]byte(httpGet(t, base+"/status/api")), &st))
	require.Equal(t, "collector_ratio", st.Alerts[0].Rule)
	require.Equal(t, StateFiring, st.Alerts[0].State)
	require.Greater(t, float64(st.Alerts[0].Value), rule.Max)
	require.Len(t, st.Times, len(states))
	require.Equal(t, "collector", st.Components[0].Name)
	require.Len(t, st.Components[0].Ratios, len(states))
	require.Equal(t, []Band{{Rule: "collector_ratio", Min: 0.9, Max: 1.5, State: StateFiring}}, st.Components[0].Bands)
	require.Equal(t, "tenants", st.Breakdowns[0].Name)
	require.Equal(t, "acme", st.Breakdowns[0].Rows[0].Label)
	require.InDelta(t, 8000, float64(st.Breakdowns[0].Rows[0].BytesPerSecond), 1e-6)
	require.Contains(t, httpGet(t, base+"/status/"), `<script src="app.js">`)

	// Remove the leak: the hub finally unsubscribes the orphaned tap.
	for s := range h.subs {
		if !s.live {
			h.unsubscribe(s)
		}
	}
	var after []AlertState
	for range 15 {
		h.publish("acme", 8_000)
		h.publish("globex", 2_000)
		m.Tick(c.tick(time.Second))
		after = append(after, alertState(t, m, "collector_ratio"))
	}
	require.Equal(t, []AlertState{StateFiring, StateResolved, StateInactive}, compress(after), "per-tick states: %v", after)
	require.Equal(t, StateInactive, alertState(t, m, "subscription_leak"))
	require.Contains(t, httpGet(t, base+"/metrics"), `phloem_ops_alert_firing{rule="collector_ratio"} 0`)

	// The webhook heard firing then resolved for both alerts, in order per rule.
	require.Eventually(t, func() bool {
		hookMu.Lock()
		defer hookMu.Unlock()
		return len(hooks) == 4
	}, 10*time.Second, 10*time.Millisecond)
	hookMu.Lock()
	var ratioHooks []AlertState
	for _, n := range hooks {
		require.Equal(t, "test-collector", n.Source)
		if n.Rule == "collector_ratio" {
			ratioHooks = append(ratioHooks, n.State)
		}
	}
	hookMu.Unlock()
	require.Equal(t, []AlertState{StateFiring, StateResolved}, ratioHooks)
}
