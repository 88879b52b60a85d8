package control

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testCluster is an in-process kfake broker with the control topic, and a client
// writing to it.
type testCluster struct {
	addrs  []string
	client *kgo.Client
	writer *Writer
}

func newTestCluster(t testing.TB) *testCluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	addrs := c.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, EnsureTopic(ctx, kadm.NewClient(cl), DefaultTopic))
	return &testCluster{addrs: addrs, client: cl, writer: NewWriter(cl, DefaultTopic)}
}

// startWatcher runs a Watcher until the test ends and waits for it to be ready.
func (tc *testCluster) startWatcher(t testing.TB, reg prometheus.Registerer) *Watcher {
	t.Helper()
	w, err := NewWatcher(WatcherConfig{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(tc.addrs...)}}, nil, reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case <-w.Ready():
	case err := <-done:
		t.Fatalf("watcher stopped before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("watcher not ready within 10s")
	}
	return w
}

// produceTenants writes n tenant records in one synchronous batch.
func (tc *testCluster) produceTenants(t testing.TB, n int, version uint64) {
	t.Helper()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		id := fmt.Sprintf("tenant-%05d", i)
		recs[i] = &kgo.Record{Topic: DefaultTopic, Key: []byte(TenantKey(id)), Value: tenantValue(t, sampleTenant(id, version, id+"-token"))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, tc.client.ProduceSync(ctx, recs...).FirstErr())
}

func TestWatcherReadyOnEmptyAndMissingTopic(t *testing.T) {
	tc := newTestCluster(t)
	w := tc.startWatcher(t, nil)
	require.Zero(t, w.State().NumTenants())

	// A watcher on a topic that does not exist yet is ready at once.
	w2, err := NewWatcher(WatcherConfig{Topic: "no.such.topic", KafkaOpts: []kgo.Opt{kgo.SeedBrokers(tc.addrs...)}}, nil, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w2.Run(ctx) }()
	require.NoError(t, w2.WaitReady(withTimeout(t, 10*time.Second)))
	// The topic appears later: the running watcher picks it up.
	ctx2 := withTimeout(t, 20*time.Second)
	require.NoError(t, EnsureTopic(ctx2, kadm.NewClient(tc.client), "no.such.topic"))
	require.NoError(t, NewWriter(tc.client, "no.such.topic").PutTenant(ctx2, sampleTenant("late", 1, "x")))
	start := time.Now()
	require.Eventually(t, func() bool { return w2.State().NumTenants() == 1 }, 15*time.Second, 10*time.Millisecond)
	t.Logf("topic created after start seen after %v", time.Since(start))
	cancel()
	require.NoError(t, <-done)
}

func withTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestWatcherReplayFollowAndTokenRotation(t *testing.T) {
	tc := newTestCluster(t)
	ctx := withTimeout(t, 20*time.Second)
	require.NoError(t, tc.writer.PutTenant(ctx, sampleTenant("acme", 1, "old-token")))
	require.NoError(t, tc.writer.PutTenant(ctx, sampleTenant("beta", 1, "beta-token")))
	require.NoError(t, tc.writer.PutSink(ctx, Sink{ID: "out", Tenant: AllTenants, Type: SinkStdout, Version: 1}))
	require.NoError(t, tc.writer.DeleteTenant(ctx, "beta"))

	reg := prometheus.NewRegistry()
	w := tc.startWatcher(t, reg)
	s := w.State()
	require.Equal(t, 1, s.NumTenants(), "replay applied the tombstone")
	_, ok := s.TenantByTokenHash(HashToken("old-token"))
	require.True(t, ok)
	require.Len(t, s.SinksFor("acme"), 1)

	// Rotation: visible to the running watcher within 1 s.
	rotated := sampleTenant("acme", 2, "new-token")
	require.NoError(t, tc.writer.PutTenant(ctx, rotated))
	require.Eventually(t, func() bool {
		_, ok := w.State().TenantByTokenHash(HashToken("new-token"))
		return ok
	}, 1*time.Second, 5*time.Millisecond, "rotated token not visible within 1s")
	_, ok = w.State().TenantByTokenHash(HashToken("old-token"))
	require.False(t, ok, "old token must stop working")

	// A duplicate and an older write are counted as ignored, not applied.
	require.NoError(t, tc.writer.PutTenant(ctx, rotated))
	require.NoError(t, tc.writer.PutTenant(ctx, sampleTenant("acme", 1, "old-token")))
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(w.metrics.ignored.WithLabelValues(ReasonStale)) == 2
	}, 5*time.Second, 5*time.Millisecond)
	_, ok = w.State().TenantByTokenHash(HashToken("new-token"))
	require.True(t, ok)

	require.Equal(t, 1.0, testutil.ToFloat64(w.metrics.ready))
	require.Equal(t, 1.0, testutil.ToFloat64(w.metrics.tenants))
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)

	// One Watcher never runs two loops.
	require.ErrorIs(t, w.Run(context.Background()), ErrAlreadyRunning)
	// A second Watcher on the same registry fails at construction.
	_, err = NewWatcher(WatcherConfig{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(tc.addrs...)}}, nil, reg)
	require.Error(t, err)
}

func TestSubscribeCoalescesAndCloses(t *testing.T) {
	tc := newTestCluster(t)
	w, err := NewWatcher(WatcherConfig{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(tc.addrs...)}}, nil, nil)
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	require.NoError(t, w.WaitReady(withTimeout(t, 10*time.Second)))

	subCtx, unsub := context.WithCancel(context.Background())
	cur, ch := w.Subscribe(subCtx)
	require.Zero(t, cur.NumTenants())
	ctx := withTimeout(t, 10*time.Second)
	// Several changes while the subscriber does not read: it must find the newest.
	for v := uint64(1); v <= 5; v++ {
		require.NoError(t, tc.writer.PutTenant(ctx, sampleTenant("acme", v, fmt.Sprint("tok", v))))
	}
	require.Eventually(t, func() bool {
		t, _ := w.State().Tenant("acme")
		return t.Version == 5
	}, 5*time.Second, 5*time.Millisecond)
	latest := <-ch
	got, ok := latest.Tenant("acme")
	require.True(t, ok)
	require.EqualValues(t, 5, got.Version, "buffer-1 channel carries the newest state")
	select {
	case s := <-ch:
		t.Fatalf("stale state queued: generation %d", s.Generation())
	default:
	}

	// Cancelling the subscription closes its channel.
	unsub()
	require.Eventually(t, func() bool {
		select {
		case _, open := <-ch:
			return !open
		default:
			return false
		}
	}, 5*time.Second, time.Millisecond)

	// Stopping the watcher closes the remaining subscriptions, and later ones at once.
	_, ch2 := w.Subscribe(context.Background())
	stop()
	require.NoError(t, <-done)
	for range ch2 {
	}
	_, ch3 := w.Subscribe(context.Background())
	_, open := <-ch3
	require.False(t, open)
}

func goroutineDump() string {
	buf := make([]byte, 1<<22)
	return string(buf[:runtime.Stack(buf, true)])
}

// countWatcherLoops counts goroutines running Watcher.Run.
func countWatcherLoops() int {
	return strings.Count(goroutineDump(), "control.(*Watcher).Run(")
}

// countClients counts live kgo clients by their metadata goroutine (one per client).
func countClients() int {
	return strings.Count(goroutineDump(), "kgo.(*Client).updateMetadataLoop(")
}

func TestWatcherBoundedGoroutinesUnder10kUpdates(t *testing.T) {
	tc := newTestCluster(t)
	// Subscribers that never read must not hold the watcher up or add goroutines.
	w := tc.startWatcher(t, nil)
	_, lazy := w.Subscribe(t.Context())
	_ = lazy

	// Settle: the first tenants go through so every connection exists.
	tc.produceTenants(t, 100, 1)
	require.Eventually(t, func() bool { return w.State().NumTenants() == 100 }, 10*time.Second, 5*time.Millisecond)
	before := runtime.NumGoroutine()
	clientsBefore, loopsBefore := countClients(), countWatcherLoops()
	require.Equal(t, 2, clientsBefore, "the test's producer and the watcher's own client")
	require.Equal(t, 1, loopsBefore)

	// 10,000 updates: 100 rounds of new versions of the same 100 tenants.
	const rounds = 100
	for v := uint64(2); v < 2+rounds; v++ {
		tc.produceTenants(t, 100, v)
	}
	require.Eventually(t, func() bool {
		tn, _ := w.State().Tenant("tenant-00099")
		return tn.Version == 1+rounds
	}, 20*time.Second, 5*time.Millisecond)

	// kgo keeps a goroutine or two per in-flight request (a fetch parked on the
	// broker, a poll waiting on its context), so the total moves by a few with timing.
	// Growth with updates would be thousands; allow the in-flight jitter only.
	const inflightSlack = 4
	var after int
	defer func() {
		if t.Failed() {
			buf := make([]byte, 1<<22)
			n := runtime.Stack(buf, true)
			t.Logf("before=%d after=%d\n%s", before, after, stackSummary(string(buf[:n])))
		}
	}()
	require.Eventually(t, func() bool {
		after = runtime.NumGoroutine()
		return after <= before+inflightSlack
	}, 5*time.Second, 10*time.Millisecond, "goroutines grew with updates")
	clientsAfter, loopsAfter := countClients(), countWatcherLoops()
	t.Logf("goroutines before=%d after 10000 updates=%d; kgo clients before=%d after=%d; watcher loops before=%d after=%d",
		before, after, clientsBefore, clientsAfter, loopsBefore, loopsAfter)
	require.Equal(t, clientsBefore, clientsAfter, "exactly one Kafka client per watcher")
	require.Equal(t, 1, loopsAfter, "exactly one watcher loop")
}

// BenchmarkWatcherCatchUp10k measures a fresh Watcher replaying 10,000 tenant records
// until Ready. Target: <= 1 s per catch-up.
func BenchmarkWatcherCatchUp10k(b *testing.B) {
	tc := newTestCluster(b)
	tc.produceTenants(b, 10_000, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w, err := NewWatcher(WatcherConfig{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(tc.addrs...)}}, nil, nil)
		require.NoError(b, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		<-w.Ready()
		if n := w.State().NumTenants(); n != 10_000 {
			b.Fatalf("caught up with %d tenants, want 10000", n)
		}
		b.StopTimer()
		cancel()
		require.NoError(b, <-done)
		b.StartTimer()
	}
}

// stackSummary groups goroutines by their creation site, for failure messages.
func stackSummary(dump string) string {
	counts := map[string]int{}
	for _, g := range strings.Split(dump, "\n\n") {
		i := strings.Index(g, "created by ")
		if i < 0 {
			counts["main"]++
			continue
		}
		line, _, _ := strings.Cut(g[i:], "\n")
		counts[line]++
	}
	var b strings.Builder
	for k, v := range counts {
		fmt.Fprintf(&b, "%3d %s\n", v, k)
	}
	return b.String()
}
