package collector

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"phloem/collector/wire"
	"phloem/hashring"
	"phloem/meter"
	"phloem/phloem/control"
)

// TestBoundedLoadPlacement is issue 5's placement acceptance, end to end with
// real collectors enforcing Config.MaxMeters and real meters following the
// X-Phloem-Full protocol (consistent hashing with bounded loads):
//
//   - N meters across 10 collectors (MaxMeters = ceil(1.1 × N / 10)): the
//     per-collector share of active meters has peak/mean <= 1.10;
//   - the busiest collector stops: its meters spread over the 9 survivors with
//     no survivor taking more than 2 × its fair share of them.
//
// N is the 1,000 (about 5 s, 300 MB); PHLOEM_PLACEMENT_METERS=N
// changes it (at 300, the removal check's fair share of ~3.7 meters is too few
// for a 2x bound to be meaningful). Pure consistent hashing of the same 1,000 meter ids is
// measured in meter/placement_test.go (TestPlacementBalanceAndRemoval): ~1.16.
func TestBoundedLoadPlacement(t *testing.T) {
	n := 1000
	if s := os.Getenv("PHLOEM_PLACEMENT_METERS"); s != "" {
		_, err := fmt.Sscan(s, &n)
		require.NoError(t, err)
	}
	const collectors = 10
	maxMeters := int(math.Ceil(1.1 * float64(n) / collectors))

	e := newEnv(t, nil, func(c *Config) { c.Republisher = DiscardRepublisher{} })
	tok := e.addTenant("acme", control.Limits{})

	// 10 collectors sharing the env's tenant source, records discarded.
	type node struct {
		c      *Collector
		addr   string
		cancel context.CancelFunc
		done   chan error
	}
	nodes := make([]*node, collectors)
	listenAddr := map[string]string{} // ring name -> loopback address; written before any meter starts
	var ringNodes []hashring.Node
	for i := range nodes {
		cfg := testConfig(e.brokers)
		cfg.CollectorID = fmt.Sprintf("c%d", i)
		cfg.Republisher = DiscardRepublisher{}
		cfg.MaxMeters = maxMeters
		c, err := New(cfg, e.watcher, nil, nil)
		require.NoError(t, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		// The ring names collectors as the placement test does (and as DNS
		// would); the meters' transport dials the loopback port behind each
		// name. So the ring, the meter ids and the start order (seeded below)
		// are the same in every run: only goroutine timing varies.
		nd := &node{c: c, addr: fmt.Sprintf("collector-%d.phloem.internal:7070", i), cancel: cancel, done: make(chan error, 1)}
		listenAddr[nd.addr] = ln.Addr().String()
		go func() { nd.done <- c.Run(ctx, ln) }()
		nodes[i] = nd
		ringNodes = append(ringNodes, hashring.Node{Name: nd.addr})
	}
	dialer := &net.Dialer{Timeout: time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			real, ok := listenAddr[addr]
			if !ok {
				return nil, fmt.Errorf("no collector %s", addr)
			}
			return dialer.DialContext(ctx, network, real)
		},
		MaxIdleConns:        2 * n,
		MaxIdleConnsPerHost: 2 * n,
		IdleConnTimeout:     time.Minute,
	}
	defer tr.CloseIdleConnections()
	stopNode := func(nd *node) {
		if nd.cancel == nil {
			return
		}
		nd.cancel()
		nd.cancel = nil
		select {
		case err := <-nd.done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("collector Run did not return")
		}
	}
	defer func() {
		for _, nd := range nodes {
			stopNode(nd)
		}
	}()

	ring, err := hashring.New(1, ringNodes)
	require.NoError(t, err)
	holder := &hashring.Holder{}
	require.NoError(t, holder.Store(ring))

	// N real meters, started in a random order (arrival order is what bounded
	// loads depend on), with a small stagger.
	base := t.TempDir()
	mctx, mcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		mcancel()
		wg.Wait()
	}()
	meters := make([]*meter.Meter, n)
	for i := range n {
		cfg := meter.DefaultConfig()
		cfg.MeterID = fmt.Sprintf("host-%04d.customer.example", i)
		cfg.Token = tok
		cfg.Ring = holder
		cfg.SpoolDir = fmt.Sprintf("%s/%04d", base, i)
		cfg.Fsync = meter.FsyncNever
		cfg.Compression = meter.CompressionNone // a gzip writer per meter costs ~1 MiB
		cfg.Linger = 0
		cfg.BackoffBase = 10 * time.Millisecond
		cfg.BackoffCap = 200 * time.Millisecond
		cfg.RequestTimeout = 10 * time.Second
		cfg.Transport = tr
		cfg.ShutdownGrace = 100 * time.Millisecond
		// Long holds: within the test no mark expires, so every move is caused
		// by the placement rule or the lost collector, never by a retry of the owner.
		cfg.FailoverHold = time.Minute
		cfg.FullHold = time.Minute
		m, err := meter.New(cfg, nil, nil)
		require.NoError(t, err)
		meters[i] = m
	}
	const perPhase = 3
	appendAll := func(ms []*meter.Meter) {
		for _, m := range ms {
			for j := range perPhase {
				require.NoError(t, m.Append(context.Background(), fmt.Appendf(nil, `{"n":%d}`, j)))
			}
		}
	}
	waitAcked := func(want uint64) {
		require.Eventually(t, func() bool {
			for _, m := range meters {
				if m.Stats().Acked < want {
					return false
				}
			}
			return true
		}, 60*time.Second, 20*time.Millisecond, "every meter's records acknowledged")
	}
	start := time.Now()
	rnd := rand.New(rand.NewPCG(5, 2016))
	for k, i := range rnd.Perm(n) {
		m := meters[i]
		appendAll([]*meter.Meter{m})
		wg.Go(func() {
			if err := m.Run(mctx); err != nil {
				t.Errorf("meter %d: %v", i, err)
			}
		})
		if k%10 == 9 {
			time.Sleep(time.Millisecond) // stagger arrivals, not synchronisation
		}
	}
	waitAcked(perPhase)
	t.Logf("%d meters placed and acknowledged in %v", n, time.Since(start).Round(time.Millisecond))

	// Loads as the collectors count them (active meters), and as the meters
	// report them: the two views agree.
	loads := make([]int, collectors)
	total := 0
	for i, nd := range nodes {
		loads[i] = nd.c.ActiveMeters()
		total += loads[i]
	}
	placed := map[string]int{}
	where := make([]string, n)
	for i, m := range meters {
		where[i] = m.Stats().Collector
		placed[where[i]]++
	}
	for i, nd := range nodes {
		require.Equal(t, loads[i], placed[nd.addr], "collector %d: active meters vs meters placed on it", i)
	}
	require.Equal(t, n, total, "every meter active on exactly one collector")
	mean := float64(n) / collectors
	peak := slices.Max(loads)
	ratio := float64(peak) / mean
	var full float64
	for _, nd := range nodes {
		full += counterOf(t, nd.c, "meters_full")
	}
	t.Logf("%d meters over %d collectors, MaxMeters %d: loads %v, peak/mean = %.3f; meters_full refusals %.0f",
		n, collectors, maxMeters, loads, ratio, full)
	require.LessOrEqual(t, ratio, 1.10)

	// The busiest collector stops (the worst case for its neighbours).
	vi := slices.Index(loads, peak)
	victim := nodes[vi]
	stopNode(victim)
	var moved []int
	for i := range meters {
		if where[i] == victim.addr {
			moved = append(moved, i)
		}
	}
	require.Len(t, moved, peak)
	appendAll(meters)
	waitAcked(2 * perPhase)

	took := map[string]int{}
	stayed := 0
	for i, m := range meters {
		now := m.Stats().Collector
		require.NotEqual(t, victim.addr, now)
		if where[i] == victim.addr {
			took[now]++
		} else if now == where[i] {
			stayed++
		}
	}
	fair := float64(len(moved)) / (collectors - 1)
	var spread []int
	worst := 0
	for _, nd := range nodes {
		if nd == victim {
			continue
		}
		spread = append(spread, took[nd.addr])
		worst = max(worst, took[nd.addr])
	}
	after := make([]int, 0, collectors-1)
	for _, nd := range nodes {
		if nd != victim {
			after = append(after, nd.c.ActiveMeters())
		}
	}
	t.Logf("stopped c%d (%d meters): taken by survivors %v, fair share %.1f, worst survivor took %d (%.2fx fair); "+
		"%d of the other %d meters stayed put; survivors' active meters now %v (cap %d; capacity %d for %d meters, beyond it fallbacks)",
		vi, len(moved), spread, fair, worst, float64(worst)/fair, stayed, n-len(moved), after, maxMeters, (collectors-1)*maxMeters, n)
	require.Equal(t, n-len(moved), stayed, "meters of surviving collectors do not move")
	require.LessOrEqual(t, float64(worst), 2*fair)
}

// counterOf reads phloem_collector_rejected_requests_total{reason} of a
// collector built without a registry.
func counterOf(t testing.TB, c *Collector, reason string) float64 {
	t.Helper()
	return testutil.ToFloat64(c.m.rejected.WithLabelValues(reason))
}

// TestMaxMetersProtocol: with MaxMeters 1, a second meter is refused with 503 +
// X-Phloem-Full (reason meters_full), the active meter keeps being admitted,
// fallback is always admitted, failover up to FailoverMeterFactor × MaxMeters.
func TestMaxMetersProtocol(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.Republisher = DiscardRepublisher{}; c.MaxMeters = 1 })
	tok := e.addTenant("acme", control.Limits{})
	body, _ := makeBatch(1, 1, 10)
	send := func(meterID, placement string) *http.Response {
		req, err := http.NewRequest(http.MethodPost, e.url+PathIngest, bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set(HeaderXMeterID, meterID)
		req.Header.Set("Content-Type", "application/vnd.phloem.batch")
		if placement != "" {
			req.Header.Set(wire.HeaderPlacement, placement)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return resp
	}
	require.Equal(t, 200, send("m1", "").StatusCode)
	require.Equal(t, 200, send("m1", "").StatusCode, "an active meter stays")
	r := send("m2", "")
	require.Equal(t, 503, r.StatusCode)
	require.Equal(t, "meters", r.Header.Get(wire.HeaderFull))
	require.NotEmpty(t, r.Header.Get("Retry-After"))
	require.Equal(t, float64(1), e.counter("phloem_collector_rejected_requests_total", "reason", "meters_full"))
	require.Equal(t, 200, send("m2", wire.PlacementFailover).StatusCode, "failover: room up to 2 x MaxMeters")
	require.Equal(t, 503, send("m3", wire.PlacementFailover).StatusCode)
	require.Equal(t, 200, send("m3", wire.PlacementFallback).StatusCode, "fallback is always admitted")
	require.Equal(t, 3, e.c.ActiveMeters())
	require.Equal(t, float64(3), e.counter("phloem_collector_meters_active"))
}
