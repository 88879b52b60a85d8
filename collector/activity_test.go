package collector

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"phloem/ops"
	"phloem/phloem/control"
)

func findMeter(ms []ops.MeterSeen, tenant, id string) (ops.MeterSeen, bool) {
	for _, m := range ms {
		if m.Tenant == tenant && m.ID == id {
			return m, true
		}
	}
	return ops.MeterSeen{}, false
}

// TestMeterActivityBoundedLRU: the table keeps the most recently seen meters,
// evicts the least recently seen one beyond its cap and counts it; a meter not
// yet acknowledged reports its first-seen time as LastRecord; without connection
// tracking, Connected means "seen within the idle timeout"; Meters returns a
// copy.
func TestMeterActivityBoundedLRU(t *testing.T) {
	m := newMetrics(10)
	a := newMeterActivity(3, time.Minute, m)
	t0 := time.Now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

	a.observe("t1", "m1", nil, true, at(0))
	a.observe("t1", "m2", nil, false, at(1)) // Kafka failed its only batch
	a.observe("t2", "m1", nil, true, at(2))  // same id, other tenant: another meter
	a.observe("t1", "m1", nil, true, at(3))  // m1 is now the most recent
	a.observe("t1", "m3", nil, true, at(4))  // full: evicts the least recent, t1/m2

	got := a.snapshot(at(30))
	require.Equal(t, []ops.MeterSeen{
		{ID: "m3", Tenant: "t1", Connected: true, LastRecord: at(4)},
		{ID: "m1", Tenant: "t1", Connected: true, LastRecord: at(3)},
		{ID: "m1", Tenant: "t2", Connected: true, LastRecord: at(2)},
	}, got)
	require.Equal(t, float64(1), testutil.ToFloat64(m.metersEvicted))
	require.Equal(t, float64(3), testutil.ToFloat64(m.metersTracked))

	// A failed batch does not move LastRecord; a meter never acknowledged
	// reports when it was first seen.
	a.observe("t1", "m3", nil, false, at(10))
	a.observe("t1", "m4", nil, false, at(11)) // evicts t2/m1
	got = a.snapshot(at(65))
	m3, ok := findMeter(got, "t1", "m3")
	require.True(t, ok)
	require.Equal(t, at(4), m3.LastRecord)
	require.True(t, m3.Connected, "seen 55s ago, within the 1m idle timeout")
	m4, ok := findMeter(got, "t1", "m4")
	require.True(t, ok)
	require.Equal(t, at(11), m4.LastRecord, "never acknowledged: first seen")
	m1, ok := findMeter(got, "t1", "m1")
	require.True(t, ok)
	require.False(t, m1.Connected, "seen 62s ago, beyond the idle timeout")
	require.Equal(t, float64(2), testutil.ToFloat64(m.metersEvicted))

	// A tracked connection decides Connected.
	ct := &connTrack{}
	a.observe("t1", "m4", ct, true, at(70))
	m4, _ = findMeter(a.snapshot(at(500)), "t1", "m4")
	require.True(t, m4.Connected, "its connection is open, however long ago")
	ct.closed.Store(true)
	m4, _ = findMeter(a.snapshot(at(71)), "t1", "m4")
	require.False(t, m4.Connected, "its connection closed")

	// The snapshot is a copy.
	got[0].ID = "changed"
	_, ok = findMeter(a.snapshot(at(72)), "t1", "changed")
	require.False(t, ok)
}

// TestMetersOnRealCollector: a meter posting over a keep-alive connection is
// listed with its tenant, Connected while that connection is open and not after
// it closed, and LastRecord at its latest acknowledged batch.
func TestMetersOnRealCollector(t *testing.T) {
	e := newEnv(t, nil, nil)
	tok := e.addTenant("acme", control.Limits{})
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	before := time.Now()
	body, _ := makeBatch(1, 3, 50)
	require.Equal(t, 3, accepted(t, e.do(cl, post{token: tok, meter: "host-1", body: body})))
	after := time.Now()
	require.Equal(t, 401, e.do(cl, post{token: "nope", meter: "host-2", body: body}).code)

	ms := e.c.Meters()
	require.Len(t, ms, 1, "only meters whose batches reached Kafka: %v", ms)
	m := ms[0]
	require.Equal(t, "host-1", m.ID)
	require.Equal(t, "acme", m.Tenant)
	require.True(t, m.Connected, "its keep-alive connection is open")
	require.False(t, m.LastRecord.Before(before))
	require.False(t, m.LastRecord.After(after))

	// The meter's connection goes away: no longer connected.
	tr.CloseIdleConnections()
	require.Eventually(t, func() bool {
		ms := e.c.Meters()
		return len(ms) == 1 && !ms[0].Connected
	}, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, float64(1), e.counter("phloem_collector_meters_tracked"))
}

// TestMetersWithoutRun: served by another server (no connection hooks),
// Connected falls back to "latest batch within IdleTimeout".
func TestMetersWithoutRun(t *testing.T) {
	e := newEnv(t, nil, nil)
	tok := e.addTenant("acme", control.Limits{})
	cfg := testConfig(e.brokers)
	cfg.CollectorID = "second"
	cfg.Republisher = DiscardRepublisher{}
	c, err := New(cfg, e.watcher, nil, nil)
	require.NoError(t, err)
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	body, _ := makeBatch(1, 2, 10)
	req, err := http.NewRequest(http.MethodPost, srv.URL+PathIngest, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set(HeaderXMeterID, "m1")
	req.Header.Set("Content-Type", "application/vnd.phloem.batch")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, 200, resp.StatusCode)
	ms := c.Meters()
	require.Len(t, ms, 1)
	require.True(t, ms[0].Connected)
	require.False(t, c.activity.snapshot(time.Now().Add(cfg.IdleTimeout + time.Second))[0].Connected)
}

// TestHubGaugesAndLeakHook: with a live tap, subscribers == receivers +
// republishers (0); a subscription without receiver shows as the excess; the
// gauges pass the linter.
func TestHubGaugesAndLeakHook(t *testing.T) {
	e := newEnv(t, nil, nil)
	tok := e.addTenant("acme", control.Limits{})
	require.Equal(t, float64(0), e.counter("phloem_collector_republishers"))
	require.Equal(t, float64(0), e.counter("phloem_collector_tap_receivers"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, closeTap := e.openTap(ctx, tok, "")
	require.Eventually(t, func() bool { return e.counter("phloem_collector_hub_subscribers") == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, float64(1), e.counter("phloem_collector_tap_receivers"))
	require.Equal(t, float64(1), e.counter("phloem_collector_hubs"))

	release, err := e.c.LeakSubscriptionForTest("acme")
	require.NoError(t, err)
	require.Equal(t, float64(2), e.counter("phloem_collector_hub_subscribers"))
	require.Equal(t, float64(1), e.counter("phloem_collector_tap_receivers"), "the leaked subscription has no receiver")
	body, _ := makeBatch(1, 3, 20)
	require.Equal(t, 200, e.do(nil, post{token: tok, meter: "m1", body: body}).code)

	closeTap()
	require.Eventually(t, func() bool { return e.counter("phloem_collector_tap_receivers") == 0 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, float64(1), e.counter("phloem_collector_hub_subscribers"), "the leak outlives every tap")
	release()
	release() // idempotent
	require.Equal(t, float64(0), e.counter("phloem_collector_hub_subscribers"))
	require.Equal(t, float64(0), e.counter("phloem_collector_hubs"))
	lintMetrics(t, e.reg)
}

// TestHubGaugesNeverShowExcess: while taps open and close concurrently, no
// scrape sees more subscriptions than receivers (the order of receiverEnter,
// subscribe, unsubscribe, receiverLeave).
func TestHubGaugesNeverShowExcess(t *testing.T) {
	h := newHubs(4, 1000, newMetrics(10))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			h.receiverEnter()
			s, err := h.subscribe(fmt.Sprint("t", i%3))
			if err == nil {
				h.unsubscribe(s)
			}
			h.receiverLeave()
		}
	}()
	for range 20000 {
		s := h.stats()
		if s.subscribers > s.receivers {
			close(stop)
			<-done
			t.Fatalf("scrape saw %d subscribers for %d receivers", s.subscribers, s.receivers)
		}
	}
	close(stop)
	<-done
}

func BenchmarkMeterActivityObserve(b *testing.B) {
	a := newMeterActivity(MaxMetersTracked, time.Minute, newMetrics(10))
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprint("meter-", i)
	}
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			a.observe("acme", ids[i%len(ids)], nil, true, now)
			i++
		}
	})
}
