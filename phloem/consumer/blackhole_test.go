package consumer

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/phloem/control"
)

// rateProducer produces to each tenant at perSec records/s until stopped, with
// per-tenant sequence numbers from 0 (meter = tenant-m<seq%10>).
type rateProducer struct {
	e       *env
	tenants []string
	perSec  int
	next    map[string]*atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
	errs    atomic.Int64
}

func startProducer(e *env, perSec int, tenants ...string) *rateProducer {
	p := &rateProducer{e: e, tenants: tenants, perSec: perSec, next: map[string]*atomic.Uint64{},
		stop: make(chan struct{}), done: make(chan struct{})}
	for _, t := range tenants {
		p.next[t] = new(atomic.Uint64)
	}
	go p.run()
	return p
}

func (p *rateProducer) run() {
	defer close(p.done)
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-p.stop:
			if err := p.e.cl.Flush(p.e.ctx); err != nil {
				p.errs.Add(1)
			}
			return
		case <-t.C:
		}
		// Catch up to the target so that scheduling jitter does not lower the rate.
		want := uint64(time.Since(start).Seconds() * float64(p.perSec))
		for _, tn := range p.tenants {
			ctr := p.next[tn]
			for ctr.Load() < want {
				seq := ctr.Add(1) - 1
				r := record(p.e.topics.Name(tn), fmt.Sprintf("%s-m%d", tn, seq%10), seq)
				p.e.cl.Produce(p.e.ctx, r, func(_ *kgo.Record, err error) {
					if err != nil {
						p.errs.Add(1)
					}
				})
			}
		}
	}
}

func (p *rateProducer) halt() {
	close(p.stop)
	<-p.done
}

// TestBlackholeSinkIsolation: a sink that accepts TCP and never answers, for one
// tenant, beside a healthy sink for the other tenants. The healthy tenants keep
// their delivery rate, memory stays bounded, and once the blackhole answers every
// record of its tenant arrives. Each phase lasts 3s; PHLOEM_LONG=1 makes it 60s.
func TestBlackholeSinkIsolation(t *testing.T) {
	phase := 3 * time.Second
	if os.Getenv("PHLOEM_LONG") == "1" {
		phase = 60 * time.Second
	}
	const perSec = 2000 // per tenant
	healthyTenants := []string{"ok1", "ok2", "ok3"}
	e := newEnv(t)
	e.tenant("hole", 3)
	for _, tn := range healthyTenants {
		e.tenant(tn, 3)
	}
	good := newCollector()
	goodSrv := httpSink(t, good)
	holeCol := newCollector()
	holeFirst := httpSink(t, holeCol) // the hole tenant's sink before it turns into a blackhole
	bh := newBlackhole(t, httpSink(t, holeCol).Config.Handler)
	for _, tn := range healthyTenants {
		e.putSink(control.Sink{ID: "s-" + tn, Tenant: tn, Type: control.SinkHTTP, Params: map[string]string{"url": goodSrv.URL}})
	}
	e.putSink(control.Sink{ID: "s-hole", Tenant: "hole", Type: control.SinkHTTP, Params: map[string]string{"url": holeFirst.URL}})
	e.waitSink("s-hole", "url", holeFirst.URL)

	cfg := e.testConfig()
	cfg.SinkQueueRecords = 2_000
	cfg.SinkQueueBytes = 1 << 20
	cfg.FetchMaxBytes = 4 << 20
	cfg.HTTPTimeout = 500 * time.Millisecond
	cfg.RetryCap = time.Second
	cfg.MaxPollRecords = 2_000
	cfg.PendingMaxBytes = 4 << 20
	cfg.PendingPartitionBytes = 512 << 10
	// One poll's records, each counted as its payload (about 150 bytes here) plus
	// itemOverhead: how far the held records may overshoot the pending budget.
	pollBytes := int64(cfg.MaxPollRecords) * (300 + itemOverhead)
	// The consumer's memory bound: the sink queues, franz-go's fetch buffers and the
	// pending budget (plus one poll's overshoot).
	bound := int64(4)*cfg.SinkQueueBytes + int64(cfg.FetchMaxBytes) + cfg.PendingMaxBytes + pollBytes
	reg := prometheus.NewRegistry()
	c := e.start(cfg, reg)

	prod := startProducer(e, perSec, append([]string{"hole"}, healthyTenants...)...)
	healthyDelivered := func() int {
		n := 0
		for _, tn := range healthyTenants {
			n += good.tenantTotal(tn)
		}
		return n
	}
	// measure returns the healthy tenants' delivery rate over d, and the peak heap
	// and peak queued plus pending bytes seen meanwhile.
	var peakPending float64
	measure := func(d time.Duration) (rate float64, peakHeap uint64, peakQueued float64) {
		start, n0 := time.Now(), healthyDelivered()
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		var ms runtime.MemStats
		for time.Since(start) < d {
			<-tk.C
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse)
			var q float64
			for _, s := range []string{"s-hole", "s-ok1", "s-ok2", "s-ok3"} {
				q += testutil.ToFloat64(c.metrics.queueBytes.WithLabelValues(s))
			}
			p := testutil.ToFloat64(c.metrics.pendingBytes)
			peakPending = max(peakPending, p)
			peakQueued = max(peakQueued, q+p)
		}
		return float64(healthyDelivered()-n0) / time.Since(start).Seconds(), peakHeap, peakQueued
	}

	// Warm up, then the baseline: every sink healthy.
	require.Eventually(t, func() bool { return healthyDelivered() > 0 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // warm-up period, not synchronisation
	base, baseHeap, baseQ := measure(phase)

	// The hole tenant's sink now points at the blackhole.
	e.putSink(control.Sink{ID: "s-hole", Tenant: "hole", Type: control.SinkHTTP, Params: map[string]string{"url": bh.url()}})
	require.Eventually(t, func() bool { return testutil.ToFloat64(c.metrics.pausedPartitions) > 0 }, 10*time.Second, 10*time.Millisecond)
	during, holeHeap, holeQ := measure(phase)
	paused := testutil.ToFloat64(c.metrics.pausedPartitions)
	holeQueue := testutil.ToFloat64(c.metrics.queueDepth.WithLabelValues("s-hole"))
	// The blackholed tenant's partitions hold at most their share of the pending
	// budget (plus one poll), and those that reached it are paused: the stuck sink
	// cannot take the budget the healthy tenants need to absorb their own hiccups.
	var holePending int64
	var holeParts, holePaused int
	c.stateMu.Lock()
	for _, ps := range c.parts {
		if ps.tenant != "hole" {
			continue
		}
		holeParts++
		holePending += ps.pendingBytes
		require.LessOrEqual(t, ps.pendingBytes, cfg.PendingPartitionBytes+pollBytes, "partition %d", ps.partition)
		if ps.pendingBytes > cfg.PendingPartitionBytes {
			require.True(t, ps.fetchPaused, "partition %d is over its pending share but not paused", ps.partition)
		}
		if ps.fetchPaused {
			holePaused++
		}
	}
	c.stateMu.Unlock()
	require.Positive(t, holePaused)

	// Recovery: the blackhole starts answering 200.
	bh.black.Store(false)
	prod.halt()
	require.Zero(t, prod.errs.Load())
	for _, tn := range healthyTenants {
		want := int(prod.next[tn].Load())
		require.Eventually(t, func() bool { return good.tenantTotal(tn) >= want }, 30*time.Second, 20*time.Millisecond)
	}
	holeN := prod.next["hole"].Load()
	require.Eventually(t, func() bool { return holeCol.distinct() >= int(holeN) }, 60*time.Second, 50*time.Millisecond)
	var missing []uint64
	for seq := uint64(0); seq < holeN; seq++ {
		if !holeCol.has(fmt.Sprintf("hole-m%d", seq%10), seq) {
			missing = append(missing, seq)
		}
	}
	require.Empty(t, missing)
	require.Eventually(t, func() bool { return testutil.ToFloat64(c.metrics.pausedPartitions) == 0 }, 10*time.Second, 20*time.Millisecond)

	t.Logf("phase %v, target %d rec/s per tenant (%d for the healthy tenants)", phase, perSec, perSec*len(healthyTenants))
	t.Logf("healthy delivery rate: baseline %.0f rec/s, with blackhole %.0f rec/s (%.1f%%)", base, during, 100*during/base)
	t.Logf("blackhole phase: %v paused partitions (%d of the hole tenant's %d), hole queue %v records, hole pending %d bytes; peak queued+pending bytes %.0f, peak pending %.0f (bound: sink queues %d + pending budget %d + one poll %d)",
		paused, holePaused, holeParts, holeQueue, holePending, holeQ, peakPending, 4*cfg.SinkQueueBytes, cfg.PendingMaxBytes, pollBytes)
	t.Logf("Go heap in use (whole test process, incl. the in-process broker's stored data): baseline peak %d MiB, blackhole peak %d MiB; consumer bound %d MiB",
		baseHeap>>20, holeHeap>>20, bound>>20)
	t.Logf("hole tenant: %d records produced, all delivered after recovery (%d deliveries incl. duplicates); baseline queued peak %.0f",
		holeN, holeCol.total, baseQ)
	require.GreaterOrEqual(t, during, 0.9*base)
	require.LessOrEqual(t, peakPending, float64(cfg.PendingMaxBytes+pollBytes))
	require.LessOrEqual(t, holeQ, float64(4*cfg.SinkQueueBytes+cfg.PendingMaxBytes+pollBytes))
}
