package embedded

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) {
	// The kill -9 test re-executes this binary as the broker process.
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	os.Exit(m.Run())
}

// startBroker starts a broker that the test's cleanup closes.
func startBroker(t *testing.T, cfg Config) *Broker {
	t.Helper()
	b, err := Start(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

// newClient returns a kgo client on addrs that the test's cleanup closes.
func newClient(t *testing.T, addrs []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts = append([]kgo.Opt{
		kgo.SeedBrokers(addrs...),
		kgo.RequestTimeoutOverhead(5 * time.Second),
		kgo.RetryTimeout(10 * time.Second),
	}, opts...)
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func createTopic(t *testing.T, ctx context.Context, adm *kadm.Client, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	resp, err := adm.CreateTopic(ctx, partitions, -1, configs, topic)
	require.NoError(t, err)
	require.NoError(t, resp.Err, "create topic %s", topic)
}

// produceN produces n records "v<i>" with keys "k<i>" to topic and waits for every ack.
func produceN(t *testing.T, ctx context.Context, cl *kgo.Client, topic string, from, n int) {
	t.Helper()
	recs := make([]*kgo.Record, 0, n)
	for i := from; i < from+n; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i)})
	}
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())
}

// consumeAll reads topic from the start up to the end offsets listed when it starts
// and returns the values seen. It tracks offsets, not counts, so that compacted
// partitions (with holes) end too.
func consumeAll(t *testing.T, ctx context.Context, addrs []string, topic string) map[string]bool {
	t.Helper()
	adm := kadm.NewClient(newClient(t, addrs))
	ends, err := adm.ListEndOffsets(ctx, topic)
	require.NoError(t, err)
	require.NoError(t, ends.Error())
	starts, err := adm.ListStartOffsets(ctx, topic)
	require.NoError(t, err)
	pending := make(map[int32]int64) // partition -> end offset still to reach
	ends.Each(func(o kadm.ListedOffset) {
		if s, _ := starts.Lookup(o.Topic, o.Partition); o.Offset > s.Offset {
			pending[o.Partition] = o.Offset
		}
	})
	got := make(map[string]bool)
	if len(pending) == 0 {
		return got
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	for len(pending) > 0 {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "consuming %s: partitions not read to the end: %v", topic, pending)
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			got[string(r.Value)] = true
			if end, ok := pending[r.Partition]; ok && r.Offset+1 >= end {
				delete(pending, r.Partition)
			}
		})
	}
	return got
}
