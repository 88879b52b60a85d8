package embedded

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// produceAt produces one batch of n records with the given timestamp to partition 0
// of topic and waits for the acks. Records of one call share a batch, and kfake
// applies retention per batch by its max timestamp, so an "old" batch and a "new"
// batch are removed independently.
func produceAt(t *testing.T, ctx context.Context, cl *kgo.Client, topic, prefix string, n int, ts time.Time) {
	t.Helper()
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Timestamp: ts, Value: fmt.Appendf(nil, "%s%d", prefix, i)})
	}
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())
}

func logStart(t *testing.T, ctx context.Context, adm *kadm.Client, topic string) int64 {
	t.Helper()
	starts, err := adm.ListStartOffsets(ctx, topic)
	require.NoError(t, err)
	o, ok := starts.Lookup(topic, 0)
	require.True(t, ok)
	require.NoError(t, o.Err)
	return o.Offset
}

func manualPartitionClient(t *testing.T, addrs []string) *kgo.Client {
	return newClient(t, addrs, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
}

// TestRetentionTimer: records older than retention.ms disappear when the broker's
// own timer fires (kfake's own ticker is never started in this test: the topics'
// retention equals what kfake would check only hourly), records within retention
// stay, and compacted topics are not touched by time retention.
func TestRetentionTimer(t *testing.T) {
	b := startBroker(t, Config{RetentionMs: time.Minute.Milliseconds(), RetentionInterval: 50 * time.Millisecond})
	ctx := testCtx(t, 30*time.Second)
	cl := manualPartitionClient(t, b.Addrs())
	adm := kadm.NewClient(cl)
	createTopic(t, ctx, adm, "ret", 1, nil)
	compact := "compact"
	createTopic(t, ctx, adm, "ctl", 1, map[string]*string{"cleanup.policy": &compact})

	old := time.Now().Add(-10 * time.Minute)
	produceAt(t, ctx, cl, "ret", "old", 5, old)
	produceAt(t, ctx, cl, "ret", "new", 5, time.Now())
	produceAt(t, ctx, cl, "ctl", "old", 5, old)

	require.Eventually(t, func() bool { return logStart(t, ctx, adm, "ret") == 5 }, 10*time.Second, 20*time.Millisecond,
		"the old batch is removed by the retention timer")
	got := consumeAll(t, ctx, b.Addrs(), "ret")
	require.Equal(t, map[string]bool{"new0": true, "new1": true, "new2": true, "new3": true, "new4": true}, got)

	// Several more timer ticks later the compacted topic still has everything.
	time.Sleep(200 * time.Millisecond) //nolint:forbidigo // proving something does NOT happen needs elapsed ticks
	require.Equal(t, int64(0), logStart(t, ctx, adm, "ctl"), "compacted topics are bounded by compaction, not time")
	require.Len(t, consumeAll(t, ctx, b.Addrs(), "ctl"), 5)
}

// TestRetentionBytes: a partition over retention.bytes loses its oldest batches.
func TestRetentionBytes(t *testing.T) {
	b := startBroker(t, Config{RetentionBytes: 2000, RetentionInterval: 50 * time.Millisecond})
	ctx := testCtx(t, 30*time.Second)
	// Uncompressed, so that the zero padding really takes ~400 bytes per batch.
	cl := newClient(t, b.Addrs(), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.NoCompression()))
	adm := kadm.NewClient(cl)
	createTopic(t, ctx, adm, "bytes", 1, nil)
	for i := range 10 {
		produceAt(t, ctx, cl, "bytes", fmt.Sprintf("b%d-%0400d-", i, 0), 1, time.Now())
	}
	require.Eventually(t, func() bool { return logStart(t, ctx, adm, "bytes") > 0 }, 10*time.Second, 20*time.Millisecond)
	got := consumeAll(t, ctx, b.Addrs(), "bytes")
	require.Less(t, len(got), 10)
	require.NotEmpty(t, got)
}

// TestRetentionAfterRestart: after a restart from the data dir, kfake runs no
// retention ticker of its own, yet expired records still go: the broker enforces
// retention at start and on its timer.
func TestRetentionAfterRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t, 30*time.Second)
	// A broker whose timer never fires during the test: the old batch stays.
	cfg := Config{DataDir: dir, RetentionMs: time.Minute.Milliseconds(), RetentionInterval: time.Hour}
	b1, err := Start(cfg, nil)
	require.NoError(t, err)
	cl := manualPartitionClient(t, b1.Addrs())
	adm := kadm.NewClient(cl)
	createTopic(t, ctx, adm, "ret", 1, nil)
	produceAt(t, ctx, cl, "ret", "old", 5, time.Now().Add(-10*time.Minute))
	produceAt(t, ctx, cl, "ret", "new", 5, time.Now())
	require.Equal(t, int64(0), logStart(t, ctx, adm, "ret"), "no retention ran on the first broker")
	cl.Close()
	require.NoError(t, b1.Close())

	cfg.RetentionInterval = 50 * time.Millisecond
	b2 := startBroker(t, cfg)
	cl = manualPartitionClient(t, b2.Addrs())
	adm = kadm.NewClient(cl)
	require.Eventually(t, func() bool { return logStart(t, ctx, adm, "ret") == 5 }, 10*time.Second, 20*time.Millisecond,
		"the old batch loaded from the data dir is removed")

	// And the timer keeps running after the restart: a new expired batch goes too.
	produceAt(t, ctx, cl, "ret", "old2-", 5, time.Now().Add(-10*time.Minute))
	produceAt(t, ctx, cl, "ret", "new2-", 5, time.Now())
	require.Eventually(t, func() bool { return logStart(t, ctx, adm, "ret") == 15 }, 10*time.Second, 20*time.Millisecond,
		"a batch expired after the restart is removed by the timer")
	got := consumeAll(t, ctx, b2.Addrs(), "ret")
	require.Len(t, got, 5)
	require.True(t, got["new2-0"])
}

// TestCompactionTimer: the broker compacts compacted topics on its own timer (kfake's
// own compaction ticker does not survive a restart from a data dir).
func TestCompactionTimer(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t, 30*time.Second)
	cfg := Config{DataDir: dir, CompactInterval: time.Hour}
	b1, err := Start(cfg, nil)
	require.NoError(t, err)
	cl := manualPartitionClient(t, b1.Addrs())
	compact := "compact"
	createTopic(t, ctx, kadm.NewClient(cl), "ctl", 1, map[string]*string{"cleanup.policy": &compact})
	for i := range 5 {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: "ctl", Key: []byte("tenant/a"), Value: fmt.Appendf(nil, "v%d", i)}).FirstErr())
	}
	cl.Close()
	require.NoError(t, b1.Close())

	cfg.CompactInterval = 50 * time.Millisecond
	b2 := startBroker(t, cfg)
	require.Eventually(t, func() bool {
		// kfake keeps the last batch unconditionally and compacts the others
		// against each other: v0..v2 go, v3 (newest cleanable) and v4 stay.
		got := consumeAll(t, ctx, b2.Addrs(), "ctl")
		return len(got) == 2 && got["v3"] && got["v4"]
	}, 10*time.Second, 50*time.Millisecond, "older values of the key are compacted away")
}
