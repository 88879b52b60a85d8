package consumer

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"phloem/phloem/control"
)

// TestRebalanceCallbacksWithDeadSinks forces rebalances (members join and leave)
// while every sink is a blackhole, queues are full and partitions paused, and checks
// that the assigned/revoked/lost callbacks stay fast: they do no network I/O beyond
// Kafka commits, and never wait for a sink.
func TestRebalanceCallbacksWithDeadSinks(t *testing.T) {
	e := newEnv(t)
	tenants := []string{"a", "b", "c", "d"}
	for _, tn := range tenants {
		e.tenant(tn, 3)
	}
	bh := newBlackhole(t, nil)
	e.putSink(control.Sink{ID: "dead", Tenant: control.AllTenants, Type: control.SinkHTTP, Params: map[string]string{"url": bh.url()}})
	e.waitSink("dead", "url", bh.url())
	for _, tn := range tenants {
		e.produce(tn, 10, 0, 3000)
	}

	var mu sync.Mutex
	var durs []time.Duration
	hook := func(_ string, d time.Duration) {
		mu.Lock()
		durs = append(durs, d)
		mu.Unlock()
	}
	cfg := e.testConfig()
	cfg.SinkQueueRecords = 500
	cfg.PendingPartitionBytes = 64 << 10 // small: the partitions hold a little, then pause
	cfg.ShutdownTimeout = 100 * time.Millisecond
	cfg.SinkDrainTimeout = 100 * time.Millisecond
	members := func(cs ...*Consumer) bool {
		total := 0.0
		for _, c := range cs {
			n := testutil.ToFloat64(c.metrics.assigned)
			if n == 0 {
				return false
			}
			total += n
		}
		return total == 12
	}
	c1, _ := e.startStoppable(cfg, prometheus.NewRegistry(), hook)
	require.Eventually(t, func() bool { return testutil.ToFloat64(c1.metrics.pausedPartitions) > 0 }, 15*time.Second, 10*time.Millisecond)
	for round := 0; round < 3; round++ {
		c2, stop2 := e.startStoppable(cfg, prometheus.NewRegistry(), hook)
		require.Eventually(t, func() bool { return members(c1, c2) }, 30*time.Second, 10*time.Millisecond)
		c3, stop3 := e.startStoppable(cfg, prometheus.NewRegistry(), hook)
		require.Eventually(t, func() bool { return members(c1, c2, c3) }, 30*time.Second, 10*time.Millisecond)
		stop3()
		require.Eventually(t, func() bool { return members(c1, c2) }, 30*time.Second, 10*time.Millisecond)
		stop2()
		require.Eventually(t, func() bool { return members(c1) }, 30*time.Second, 10*time.Millisecond)
	}
	mu.Lock()
	sorted := slices.Clone(durs)
	mu.Unlock()
	slices.Sort(sorted)
	p := func(q float64) time.Duration { return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))] }
	t.Logf("rebalance callbacks with every sink dead: n=%d p50=%v p99=%v max=%v", len(sorted), p(0.5), p(0.99), sorted[len(sorted)-1])
	require.Less(t, p(0.99), 10*time.Millisecond)
}
