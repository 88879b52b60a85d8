package ops_test

// The ops acceptance against the REAL collector (not the miniature testHub of
// lifecycle_test.go): kfake, the control Watcher, collector.Collector on a
// loopback listener, and an ops.Monitor reading the same registry, driven by a
// synthetic clock (one Tick per synthetic second) while real traffic flows.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/collector"
	"phloem/collector/wire"
	"phloem/ops"
	"phloem/phloem/consumer"
	"phloem/phloem/control"
)

// realStack is one collector process: broker, control watcher, collector.
type realStack struct {
	t       *testing.T
	brokers []string
	reg     *prometheus.Registry
	watcher *control.Watcher
	c       *collector.Collector
	url     string
	token   string
	meter   *http.Client // one meter's keep-alive client
	seq     uint64
}

const stackTenant = "acme"

func startRealStack(t *testing.T, mutate func(*collector.Config)) *realStack {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	s := &realStack{t: t, brokers: cluster.ListenAddrs(), reg: prometheus.NewRegistry()}

	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, control.EnsureTopic(ctx, kadm.NewClient(cl), control.DefaultTopic))

	wcfg := control.DefaultWatcherConfig()
	wcfg.KafkaOpts = []kgo.Opt{kgo.SeedBrokers(s.brokers...)}
	wcfg.FetchMaxWait = 100 * time.Millisecond
	s.watcher, err = control.NewWatcher(wcfg, nil, s.reg)
	require.NoError(t, err)

	ccfg := collector.DefaultConfig()
	ccfg.CollectorID = "ops-it"
	ccfg.KafkaOpts = []kgo.Opt{kgo.SeedBrokers(s.brokers...)}
	ccfg.IngestTimeout = 5 * time.Second
	ccfg.ShutdownGrace = 2 * time.Second
	ccfg.FlushTimeout = 2 * time.Second
	if mutate != nil {
		mutate(&ccfg)
	}
	s.c, err = collector.New(ccfg, s.watcher, nil, s.reg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.url = "http://" + ln.Addr().String()

	rctx, rcancel := context.WithCancel(context.Background())
	wdone, cdone := make(chan error, 1), make(chan error, 1)
	go func() { wdone <- s.watcher.Run(rctx) }()
	go func() { cdone <- s.c.Run(rctx, ln) }()
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	s.meter = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		rcancel()
		for name, ch := range map[string]chan error{"collector": cdone, "watcher": wdone} {
			select {
			case err := <-ch:
				require.NoError(t, err, name)
			case <-time.After(30 * time.Second):
				t.Errorf("%s Run did not return", name)
			}
		}
	})
	select {
	case <-s.watcher.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("control watcher not ready")
	}

	s.token, err = control.NewToken()
	require.NoError(t, err)
	w := control.NewWriter(cl, control.DefaultTopic)
	require.NoError(t, w.PutTenant(ctx, control.Tenant{ID: stackTenant, TokenHash: control.HashToken(s.token),
		Status: control.StatusActive, Partitions: 1, Version: 1}))
	require.Eventually(t, func() bool {
		_, ok := s.watcher.State().Tenant(stackTenant)
		return ok
	}, 10*time.Second, 5*time.Millisecond)
	return s
}

// send posts one batch of n records of size bytes as meter "meter-1" over its
// keep-alive connection and requires 200.
func (s *realStack) send(n, size int) {
	s.t.Helper()
	recs := make([]wire.Record, n)
	for i := range recs {
		s.seq++
		recs[i] = wire.Record{Seq: s.seq, Timestamp: time.Now().UnixNano(), Payload: bytes.Repeat([]byte{'x'}, size)}
	}
	req, err := http.NewRequest(http.MethodPost, s.url+collector.PathIngest, bytes.NewReader(wire.AppendBatch(nil, recs)))
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set(collector.HeaderXMeterID, "meter-1")
	req.Header.Set("Content-Type", wire.ContentTypeBatch)
	resp, err := s.meter.Do(req)
	require.NoError(s.t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(s.t, errors.Join(err, resp.Body.Close()))
	require.Equal(s.t, http.StatusOK, resp.StatusCode, string(b))
}

// value sums the series of family name whose labels include labels (k, v pairs).
func (s *realStack) value(name string, labels ...string) float64 {
	s.t.Helper()
	mfs, err := s.reg.Gather()
	require.NoError(s.t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// openTap opens a real tap that reads everything until the returned close is
// called; close waits for the reader to exit.
func (s *realStack) openTap() (closeTap func()) {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+collector.PathTap, nil)
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	require.Equal(s.t, http.StatusOK, resp.StatusCode)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(io.Discard, resp.Body) // ends when cancel closes the body
	}()
	var once sync.Once
	closeTap = func() {
		once.Do(func() {
			cancel()
			<-done
			_ = resp.Body.Close()
		})
	}
	s.t.Cleanup(closeTap)
	return closeTap
}

// monitorConfig is DefaultConfig with windows short enough for a test; the
// collector band is the default [0.9, 3.0].
func monitorConfig() ops.Config {
	cfg := ops.DefaultConfig()
	cfg.Interval = time.Second
	cfg.Window = 5 * time.Second
	cfg.KeepResolved = 3 * time.Second
	cfg.HistoryPoints = 120
	cfg.RatioRules[0].For = 3 * time.Second
	cfg.RatioRules[1].For = 3 * time.Second
	cfg.SubscriptionLeak.For = 2 * time.Second
	cfg.LagGrowth.Window = 5 * time.Second
	cfg.ZombieMeters.After = 2 * time.Minute
	return cfg
}

func stateOf(t *testing.T, m *ops.Monitor, rule string) (ops.AlertStatus, ops.AlertState) {
	t.Helper()
	for _, a := range m.Alerts() {
		if a.Rule == rule {
			return a, a.State
		}
	}
	t.Fatalf("no rule %q", rule)
	return ops.AlertStatus{}, 0
}

func dedup(states []ops.AlertState) []ops.AlertState {
	var out []ops.AlertState
	for _, s := range states {
		if len(out) == 0 || out[len(out)-1] != s {
			out = append(out, s)
		}
	}
	return out
}

func statusAPI(t *testing.T, base string) ops.Status {
	t.Helper()
	var st ops.Status
	require.NoError(t, json.Unmarshal([]byte(ops.GetForTest(t, base+"/status/api")), &st))
	return st
}

func alertIn(t *testing.T, st ops.Status, rule string) ops.AlertStatus {
	t.Helper()
	for _, a := range st.Alerts {
		if a.Rule == rule {
			return a
		}
	}
	t.Fatalf("status has no alert %q", rule)
	return ops.AlertStatus{}
}

func gaugeIn(t *testing.T, st ops.Status, name string) float64 {
	t.Helper()
	for _, g := range st.Gauges {
		if g.Name == name {
			return float64(g.Value)
		}
	}
	t.Fatalf("status has no gauge %q", name)
	return 0
}

// TestRealCollectorLeakAndRatioAlerts is the issue-7 acceptance with the real
// collector.
//
// Phase 1, the leak: a hub subscription whose receiver is gone (injected with
// LeakSubscriptionForTest: the tap handler's deferred unsubscribe makes it
// impossible otherwise) makes hub_subscribers exceed tap_receivers +
// republishers; subscription_leak goes pending, then firing after its For, shows
// in /metrics and the status API, and resolves once the subscription is removed.
// The real collector does not count egress for a subscription without a
// receiver (tap egress is bytes written to a client; the orphaned ring drops its
// oldest records instead, counted), so collector_ratio rightly stays quiet.
//
// Phase 2, egress amplification: three live taps multiply the tenant's egress
// (Kafka + 3 taps = 4x ingress), out of collector_ratio's [0.9, 3.0] band; the
// ratio alert goes pending, then firing within Window+For, shows in /metrics and
// the status API, and resolves after the taps close. The leak rule stays quiet:
// every subscription has its receiver.
//
// Finally the collector's meter activity (ops.MeterActivity) feeds the zombie
// detector: the meter, still connected, falls silent past ZombieMeters.After.
func TestRealCollectorLeakAndRatioAlerts(t *testing.T) {
	s := startRealStack(t, func(c *collector.Config) { c.TapBuffer = 16 })
	cfg := monitorConfig()
	m, err := ops.New(cfg, ops.Sources{Gatherer: s.reg, Meters: s.c, Instance: "collector-it"}, nil, s.reg)
	require.NoError(t, err)
	base := ops.ServeStatusForTest(t, m, s.reg)

	now := time.Now().Truncate(time.Second)
	const perTick = 10 * 100 // payload bytes per synthetic second: 1 kB/s, above the 100 B/s idle floor
	tapBytes := s.value("phloem_collector_egress_bytes_total", "destination", "tap")
	step := func(taps int) {
		s.send(10, 100)
		if taps > 0 {
			// Tap egress is counted when the tap handlers wrote to their clients,
			// after the 200: wait for it so that each tick sees whole seconds.
			tapBytes += float64(taps * perTick)
			require.Eventually(t, func() bool {
				return s.value("phloem_collector_egress_bytes_total", "destination", "tap") == tapBytes
			}, 5*time.Second, 2*time.Millisecond)
		}
		now = now.Add(time.Second)
		m.Tick(now)
	}

	// Healthy: Kafka egress == ingress, no taps.
	for range 7 {
		step(0)
	}
	ratioA, ratioSt := stateOf(t, m, "collector_ratio")
	require.Equal(t, ops.StateInactive, ratioSt)
	require.InDelta(t, 1.0, float64(ratioA.Value), 1e-9, "healthy real collector: kafka egress == ingress")
	leakA, leakSt := stateOf(t, m, "subscription_leak")
	require.Equal(t, ops.StateInactive, leakSt)
	require.Equal(t, 0.0, float64(leakA.Value), leakA.Summary)

	// ---- Phase 1: the leak.
	dropped0 := s.value("phloem_collector_tap_dropped_records_total")
	release, err := s.c.LeakSubscriptionForTest(stackTenant)
	require.NoError(t, err)
	leakAt := now
	var leakStates, ratioStates []ops.AlertState
	for range 15 {
		step(0)
		_, st := stateOf(t, m, "subscription_leak")
		_, rst := stateOf(t, m, "collector_ratio")
		leakStates, ratioStates = append(leakStates, st), append(ratioStates, rst)
		if st == ops.StateFiring {
			break
		}
	}
	require.Equal(t, []ops.AlertState{ops.StatePending, ops.StateFiring}, dedup(leakStates), "per-tick states: %v", leakStates)
	require.Equal(t, []ops.AlertState{ops.StateInactive}, dedup(ratioStates), "no egress for a receiver-less subscription: %v", ratioStates)
	leakA, _ = stateOf(t, m, "subscription_leak")
	fired, pending := *leakA.FiredAt, *leakA.ActiveSince
	require.Equal(t, cfg.SubscriptionLeak.For, fired.Sub(pending), "pending for exactly For")
	require.LessOrEqual(t, fired.Sub(leakAt), cfg.SubscriptionLeak.For+cfg.Interval)
	require.Greater(t, s.value("phloem_collector_tap_dropped_records_total"), dropped0, "the orphaned ring is bounded: it drops")
	t.Logf("leak at +0s: subscription_leak pending at +%v, firing at +%v (for %v); summary %q",
		pending.Sub(leakAt), fired.Sub(leakAt), cfg.SubscriptionLeak.For, leakA.Summary)

	text := ops.GetForTest(t, base+"/metrics")
	for _, want := range []string{
		`phloem_ops_alert_firing{rule="subscription_leak"} 1`,
		`phloem_ops_detector_value{rule="subscription_leak"} 1`,
		`phloem_ops_alert_firing{rule="collector_ratio"} 0`,
		"phloem_collector_hub_subscribers 1",
		"phloem_collector_tap_receivers 0",
		"phloem_collector_republishers 0",
	} {
		require.Contains(t, text, want)
	}
	st := statusAPI(t, base)
	require.Equal(t, "collector-it", st.Instance)
	require.Equal(t, ops.StateFiring, alertIn(t, st, "subscription_leak").State)
	require.Equal(t, 1.0, float64(alertIn(t, st, "subscription_leak").Value))
	require.Equal(t, 1.0, gaugeIn(t, st, "hub_subscribers"))
	require.Equal(t, 0.0, gaugeIn(t, st, "tap_receivers"))
	require.Equal(t, 0.0, gaugeIn(t, st, "republishers"))

	release()
	leakStates = nil
	for range 8 {
		step(0)
		_, st := stateOf(t, m, "subscription_leak")
		leakStates = append(leakStates, st)
	}
	require.Equal(t, []ops.AlertState{ops.StateResolved, ops.StateInactive}, dedup(leakStates), "per-tick states: %v", leakStates)
	require.Contains(t, ops.GetForTest(t, base+"/metrics"), `phloem_ops_alert_firing{rule="subscription_leak"} 0`)

	// ---- Phase 2: egress amplification by live taps.
	var closers []func()
	for range 3 {
		closers = append(closers, s.openTap())
	}
	require.Eventually(t, func() bool { return s.value("phloem_collector_tap_receivers") == 3 }, 5*time.Second, 2*time.Millisecond)
	require.Equal(t, 3.0, s.value("phloem_collector_hub_subscribers"))
	tapsAt := now
	ratioStates, leakStates = nil, nil
	for range 20 {
		step(3)
		_, rst := stateOf(t, m, "collector_ratio")
		_, lst := stateOf(t, m, "subscription_leak")
		ratioStates, leakStates = append(ratioStates, rst), append(leakStates, lst)
		if rst == ops.StateFiring {
			break
		}
	}
	require.Equal(t, []ops.AlertState{ops.StateInactive, ops.StatePending, ops.StateFiring}, dedup(ratioStates), "per-tick states: %v", ratioStates)
	require.Equal(t, []ops.AlertState{ops.StateInactive}, dedup(leakStates), "every tap subscription has its receiver")
	ratioA, _ = stateOf(t, m, "collector_ratio")
	fired, pending = *ratioA.FiredAt, *ratioA.ActiveSince
	rule := cfg.RatioRules[0]
	require.Equal(t, rule.For, fired.Sub(pending))
	require.LessOrEqual(t, fired.Sub(tapsAt), cfg.Window+rule.For, "fired %v after the taps opened", fired.Sub(tapsAt))
	t.Logf("3 taps at +0s: collector_ratio pending at +%v, firing at +%v (window %v, for %v); summary %q",
		pending.Sub(tapsAt), fired.Sub(tapsAt), cfg.Window, rule.For, ratioA.Summary)

	text = ops.GetForTest(t, base+"/metrics")
	require.Contains(t, text, `phloem_ops_alert_firing{rule="collector_ratio"} 1`)
	require.Contains(t, text, `phloem_ops_alert_firing{rule="subscription_leak"} 0`)
	ratio := regexp.MustCompile(`phloem_ops_ratio\{rule="collector_ratio"\} ([0-9.e+]+)`).FindStringSubmatch(text)
	require.NotNil(t, ratio, text)
	t.Logf("/metrics: phloem_ops_alert_firing{rule=\"collector_ratio\"} 1, phloem_ops_ratio{rule=\"collector_ratio\"} %s", ratio[1])
	st = statusAPI(t, base)
	ra := alertIn(t, st, "collector_ratio")
	require.Equal(t, ops.StateFiring, ra.State)
	require.Greater(t, float64(ra.Value), rule.Max)
	require.Equal(t, "collector", st.Components[0].Name)
	require.Equal(t, 3.0, gaugeIn(t, st, "tap_receivers"))

	for _, c := range closers {
		c()
	}
	require.Eventually(t, func() bool {
		return s.value("phloem_collector_tap_receivers") == 0 && s.value("phloem_collector_hub_subscribers") == 0
	}, 5*time.Second, 2*time.Millisecond)
	ratioStates = nil
	for range 15 {
		step(0)
		_, rst := stateOf(t, m, "collector_ratio")
		ratioStates = append(ratioStates, rst)
	}
	require.Equal(t, []ops.AlertState{ops.StateFiring, ops.StateResolved, ops.StateInactive}, dedup(ratioStates), "per-tick states: %v", ratioStates)
	require.Contains(t, ops.GetForTest(t, base+"/metrics"), `phloem_ops_alert_firing{rule="collector_ratio"} 0`)

	// ---- The meter activity feeds the zombie detector.
	_, zst := stateOf(t, m, "zombie_meters")
	require.Equal(t, ops.StateInactive, zst, "the meter sends every second")
	meters := s.c.Meters()
	require.Len(t, meters, 1)
	require.Equal(t, ops.MeterSeen{ID: "meter-1", Tenant: stackTenant, Connected: true, LastRecord: meters[0].LastRecord}, meters[0])
	// The meter keeps its connection and sends nothing for longer than After.
	now = meters[0].LastRecord.Add(cfg.ZombieMeters.After + time.Second)
	m.Tick(now)
	za, zst := stateOf(t, m, "zombie_meters")
	require.Equal(t, ops.StateFiring, zst, za.Summary)
	st = statusAPI(t, base)
	require.Len(t, st.Zombies, 1)
	require.Equal(t, "meter-1", st.Zombies[0].ID)
	require.Contains(t, ops.GetForTest(t, base+"/metrics"), `phloem_ops_alert_firing{rule="zombie_meters"} 1`)
	t.Logf("zombie: %s", za.Summary)
}

// TestExportedMetricsMatchRealComponents checks ops' hand-kept list against the
// real registries: every phloem_collector_* name in ExportedMetrics is exported
// by a real collector after traffic (with a tap open, so every vector has
// children), and every phloem_consumer_* name is registered by a real consumer.
func TestExportedMetricsMatchRealComponents(t *testing.T) {
	s := startRealStack(t, nil)
	closeTap := s.openTap()
	require.Eventually(t, func() bool { return s.value("phloem_collector_tap_receivers") == 1 }, 5*time.Second, 2*time.Millisecond)
	s.send(3, 50)
	closeTap()

	mfs, err := s.reg.Gather()
	require.NoError(t, err)
	collectorNames := map[string]bool{}
	for _, mf := range mfs {
		collectorNames[mf.GetName()] = true
	}

	// The consumer's metrics are registered by New (Run starts nothing it
	// needs here); vectors have no children before sinks deliver, so names are
	// read from the descriptors it registers rather than from a Gather.
	rec := &descRecorder{names: map[string]bool{}}
	ccfg := consumer.DefaultConfig()
	ccfg.KafkaOpts = []kgo.Opt{kgo.SeedBrokers(s.brokers...)}
	_, err = consumer.New(ccfg, s.watcher, nil, rec)
	require.NoError(t, err)

	var checked []string
	for _, name := range ops.ExportedMetrics() {
		switch {
		case strings.HasPrefix(name, "phloem_collector_"):
			require.True(t, collectorNames[name], "ops.ExportedMetrics lists %s; the real collector does not export it", name)
		case strings.HasPrefix(name, "phloem_consumer_"):
			require.True(t, rec.names[name], "ops.ExportedMetrics lists %s; the real consumer does not register it", name)
		default:
			continue
		}
		checked = append(checked, name)
	}
	require.NotEmpty(t, checked)
	t.Logf("checked %d collector/consumer names against real registries: %v", len(checked), checked)
}

// descRecorder is a Registerer that records the names of the descriptors of
// what is registered on it.
type descRecorder struct {
	mu    sync.Mutex
	names map[string]bool
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	var err error
	for desc := range ch { // drained to the end, so that Describe returns
		m := fqNameRE.FindStringSubmatch(desc.String())
		if m == nil {
			err = errors.Join(err, fmt.Errorf("cannot read the name of %s", desc))
			continue
		}
		d.names[m[1]] = true
	}
	return err
}

func (d *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := d.Register(c); err != nil {
			panic(err)
		}
	}
}

func (d *descRecorder) Unregister(prometheus.Collector) bool { return true }
