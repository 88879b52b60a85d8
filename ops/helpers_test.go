package ops

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"phloem/internal/admin"
)

// testHub is a miniature collector: a per-tenant hub that copies every published
// batch to each subscriber, counted on the same metrics the real collector exports.
// A tap subscriber whose receiver has gone but that was never unsubscribed is the
// leak DESIGN.md describes: it keeps receiving (tap egress grows) with no receiver.
type testHub struct {
	reg          *prometheus.Registry
	ingress      *prometheus.CounterVec
	egress       *prometheus.CounterVec
	subscribers  prometheus.Gauge
	receivers    prometheus.Gauge
	republishers prometheus.Gauge
	lag          prometheus.Gauge
	subs         map[*testSub]bool
}

type testSub struct {
	dest string // "kafka" or "tap"
	live bool   // a receiver is attached
}

func newTestHub(t *testing.T) *testHub {
	t.Helper()
	reg := prometheus.NewRegistry()
	h := &testHub{
		reg:          reg,
		ingress:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricCollectorIngress, Help: "test"}, []string{"tenant"}),
		egress:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricCollectorEgress, Help: "test"}, []string{"destination"}),
		subscribers:  prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricHubSubscribers, Help: "test"}),
		receivers:    prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricTapReceivers, Help: "test"}),
		republishers: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricRepublishers, Help: "test"}),
		subs:         make(map[*testSub]bool),
	}
	reg.MustRegister(h.ingress, h.egress, h.subscribers, h.receivers, h.republishers)
	// The republisher is the hub's permanent subscriber.
	h.subscribe("kafka")
	h.republishers.Inc()
	return h
}

func (h *testHub) subscribe(dest string) *testSub {
	s := &testSub{dest: dest, live: true}
	h.subs[s] = true
	h.subscribers.Inc()
	if dest == "tap" {
		h.receivers.Inc()
	}
	return s
}

// receiverGone detaches the receiver. A correct hub unsubscribes too; a leaky one
// (leak=true) forgets to.
func (h *testHub) receiverGone(s *testSub, leak bool) {
	s.live = false
	h.receivers.Dec()
	if !leak {
		h.unsubscribe(s)
	}
}

func (h *testHub) unsubscribe(s *testSub) {
	if h.subs[s] {
		delete(h.subs, s)
		h.subscribers.Dec()
	}
}

func (h *testHub) publish(tenant string, n int) {
	h.ingress.WithLabelValues(tenant).Add(float64(n))
	for s := range h.subs {
		h.egress.WithLabelValues(s.dest).Add(float64(n))
	}
}

// testConfig is DefaultConfig with windows short enough for a test.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Interval = time.Second
	cfg.Window = 5 * time.Second
	cfg.KeepResolved = 3 * time.Second
	cfg.HistoryPoints = 120
	cfg.RatioRules[0].Min, cfg.RatioRules[0].Max = 0.9, 1.5
	cfg.RatioRules[0].For = 3 * time.Second
	cfg.RatioRules[1].For = 3 * time.Second
	cfg.SubscriptionLeak.For = 2 * time.Second
	cfg.LagGrowth.Window = 5 * time.Second
	cfg.ZombieMeters.After = 10 * time.Second
	return cfg
}

// ServeStatusForTest and GetForTest are serveAdmin and httpGet for the external
// test package (ops_test), which sees exported names of these test files.
var (
	ServeStatusForTest = serveAdmin
	GetForTest         = httpGet
)

// serveAdmin runs the real admin listener with the status page mounted, on a
// loopback port, until the test ends. It returns the base URL.
func serveAdmin(t *testing.T, m *Monitor, reg prometheus.Gatherer) string {
	t.Helper()
	srv := admin.New(admin.DefaultConfig(), nil, reg)
	srv.Handle("/status/", StatusHandler(m))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("admin server did not stop")
		}
	})
	return "http://" + ln.Addr().String()
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, errors.Join(err, resp.Body.Close()))
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", url, b)
	return string(b)
}

// clock hands out the synthetic times the tests drive Tick with.
type clock struct{ t time.Time }

func newClock() *clock {
	// Recent wall time, so that the page's time axis reads naturally in screenshots.
	return &clock{t: time.Now().Add(-10 * time.Minute).Truncate(time.Second)}
}

func (c *clock) tick(d time.Duration) time.Time { c.t = c.t.Add(d); return c.t }
