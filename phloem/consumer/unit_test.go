package consumer

import (
	"bufio"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/phloem/control"
)

func TestTrackerWatermark(t *testing.T) {
	tr := newTracker()
	require.EqualValues(t, -1, tr.watermark())
	var es []*entry
	for off := int64(10); off < 10+3*chunkSize; off++ {
		if off == 20 {
			off = 25 // a gap (compaction, transaction markers)
		}
		es = append(es, tr.push(off))
	}
	require.EqualValues(t, 10, tr.watermark())
	// Acks out of order: nothing moves until the head is acked.
	es[2].ack()
	es[1].ack()
	require.EqualValues(t, 10, tr.watermark())
	es[0].ack()
	require.EqualValues(t, 13, tr.watermark())
	// An entry handed to two sinks needs both acks.
	es[3].rem.Add(1)
	es[3].ack()
	require.EqualValues(t, 13, tr.watermark())
	es[3].ack()
	for _, e := range es[4:] {
		e.ack()
	}
	require.EqualValues(t, es[len(es)-1].off+1, tr.watermark())
	require.Zero(t, tr.inflight())
	e := tr.push(10_000)
	require.EqualValues(t, 10_000, tr.watermark())
	e.ack()
	require.EqualValues(t, 10_001, tr.watermark())
}

func TestAppendLine(t *testing.T) {
	rec := func(val string, hdr ...string) *kgo.Record {
		r := &kgo.Record{Key: []byte("key-meter"), Value: []byte(val), Timestamp: time.Unix(0, 77)}
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: hdr[i], Value: []byte(hdr[i+1])})
		}
		return r
	}
	for _, tc := range []struct {
		name string
		r    *kgo.Record
		want string
	}{
		{"json", rec(`{"a":1}`, HeaderMeterID, "m1", HeaderSeq, "42", HeaderTimestamp, "123"),
			`{"tenant":"acme","meter":"m1","seq":42,"ts":123,"payload":{"a":1}}`},
		{"multiline json is compacted", rec("{\n \"a\": [1, 2]\n}", HeaderMeterID, "m1", HeaderSeq, "1", HeaderTimestamp, "5"),
			`{"tenant":"acme","meter":"m1","seq":1,"ts":5,"payload":{"a":[1,2]}}`},
		{"text", rec("cpu=0.5 \"x\"\n", HeaderMeterID, "m\"2", HeaderSeq, "7", HeaderTimestamp, "9"),
			`{"tenant":"acme","meter":"m\"2","seq":7,"ts":9,"payload":"cpu=0.5 \"x\"\n"}`},
		{"invalid utf8, missing headers", rec("a\xffb\x01"),
			`{"tenant":"acme","meter":"key-meter","seq":null,"ts":77,"payload":"a\ufffdb\u0001"}`},
		{"bad seq", rec(`1`, HeaderSeq, "-1"), `{"tenant":"acme","meter":"key-meter","seq":null,"ts":77,"payload":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := appendLine(nil, newItem("acme", tc.r))
			require.Equal(t, tc.want+"\n", string(got))
			require.True(t, json.Valid(got))
		})
	}
}

func TestQueueBoundsAndLowWater(t *testing.T) {
	woken := 0
	q := newQueue(4, 1000, 0.5, func() { woken++ })
	mk := func(size int64) *item { return &item{size: size} }
	items := []*item{mk(100), mk(100), mk(100), mk(100), mk(100)}
	require.Equal(t, 4, q.fits(items))
	q.push(items[:4]...)
	require.Equal(t, 0, q.fits(items[4:]))
	q.refuse()
	require.Zero(t, woken)
	got := q.take(nil, 1, 1<<20)
	require.Len(t, got, 1)
	require.Equal(t, 0, q.fits(items[4:]), "taken records count until released")
	q.release(1, 100)
	require.Zero(t, woken, "3 held > low water 2")
	got = q.take(nil, 10, 1<<20)
	require.Len(t, got, 3)
	q.release(3, 300)
	require.Equal(t, 1, woken)
	// An oversized record fits an empty queue only.
	require.Equal(t, 1, q.fits([]*item{mk(5000)}))
}

func TestStreamSink(t *testing.T) {
	e := newEnv(t)
	tok := e.tenant("acme", 1)
	otherTok := e.tenant("other", 1)
	e.putSink(control.Sink{ID: "live", Tenant: "acme", Type: control.SinkStream})
	e.waitSink("live", "", "")
	reg := prometheus.NewRegistry()
	c := e.start(e.testConfig(), reg)
	require.Eventually(t, func() bool { return c.Ready(e.ctx) == nil }, 10*time.Second, 10*time.Millisecond)
	url := "http://" + c.dataAddr() + "/v1/stream"
	get := func(token string) *http.Response {
		req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, url, nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		return resp
	}
	for token, code := range map[string]int{"": 401, "nope": 401, otherTok: 404} {
		resp := get(token)
		require.Equal(t, code, resp.StatusCode, "token %q", token)
		require.NoError(t, resp.Body.Close())
	}
	resp := get(tok)
	require.Equal(t, 200, resp.StatusCode)
	defer resp.Body.Close()
	require.Eventually(t, func() bool { return testutil.ToFloat64(c.metrics.streamSubs) == 1 }, 5*time.Second, 10*time.Millisecond)
	e.produce("acme", 2, 0, 20)
	sc := bufio.NewScanner(resp.Body)
	for i := 0; i < 20; i++ {
		require.True(t, sc.Scan())
		var l line
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l))
		require.Equal(t, "acme", l.Tenant)
	}
	// The stream acknowledges at once: everything is committed.
	require.Eventually(t, func() bool { return e.committed(c.cfg.Group) == 20 }, 10*time.Second, 20*time.Millisecond)
}

// TestRemovedSinkAbandonsAndRewinds: a dead sink is removed while it holds records;
// its undelivered records are not committed, the partitions are re-read, and the
// remaining sink gets everything, after which the watermark reaches the end.
func TestRemovedSinkAbandonsAndRewinds(t *testing.T) {
	e := newEnv(t)
	e.tenant("acme", 2)
	col := newCollector()
	srv := httpSink(t, col)
	bh := newBlackhole(t, nil)
	e.putSink(control.Sink{ID: "good", Tenant: "acme", Type: control.SinkHTTP, Params: map[string]string{"url": srv.URL}})
	e.putSink(control.Sink{ID: "dead", Tenant: "acme", Type: control.SinkHTTP, Params: map[string]string{"url": bh.url()}})
	e.waitSink("dead", "url", bh.url())
	cfg := e.testConfig()
	cfg.SinkQueueRecords = 300
	cfg.PendingPartitionBytes = 64 << 10 // small: the partitions hold a little, then pause
	cfg.SinkDrainTimeout = 200 * time.Millisecond
	c := e.start(cfg, prometheus.NewRegistry())
	e.produce("acme", 5, 0, 2000)
	require.Eventually(t, func() bool { return testutil.ToFloat64(c.metrics.pausedPartitions) > 0 }, 10*time.Second, 10*time.Millisecond)
	require.Less(t, e.committed(cfg.Group), int64(2000))

	require.NoError(t, e.writer.DeleteSink(e.ctx, "dead"))
	require.Eventually(t, func() bool { return col.distinct() == 2000 }, 20*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return e.committed(cfg.Group) == 2000 }, 20*time.Second, 20*time.Millisecond)
	require.Positive(t, testutil.ToFloat64(c.metrics.dropped.WithLabelValues("abandoned")))
	require.Positive(t, testutil.ToFloat64(c.metrics.rewinds))
	t.Logf("abandoned %v records, %v partition rewinds, good sink got %d deliveries of 2000 records",
		testutil.ToFloat64(c.metrics.dropped.WithLabelValues("abandoned")), testutil.ToFloat64(c.metrics.rewinds), col.total)
}

// TestPendingBudget: a congested partition holds records up to its share of the
// pending budget, all partitions together up to the total, and the accounting
// returns to zero when the held records are placed or dropped.
func TestPendingBudget(t *testing.T) {
	c := &Consumer{cfg: Config{PendingMaxBytes: 3000, PendingPartitionBytes: 2000}, held: make(map[tp]*partState)}
	items := func(n int) []*item {
		out := make([]*item, n)
		for i := range out {
			out[i] = &item{size: 500}
		}
		return out
	}
	a := &partState{topic: "t", partition: 0}
	b := &partState{topic: "t", partition: 1}
	c.holdLocked(a, items(4)) // 2000: at its share, not over
	require.True(t, a.held)
	require.False(t, c.partOverBudgetLocked(a))
	require.False(t, c.overBudgetLocked())
	c.holdLocked(a, items(1)) // 2500: over its share
	require.True(t, c.partOverBudgetLocked(a))
	require.False(t, c.partOverBudgetLocked(b)) // not held
	c.holdLocked(b, items(2))                   // total 3500: over the total budget
	require.True(t, c.partOverBudgetLocked(b))
	require.Equal(t, int64(3500), c.pendingBytes)

	a.fetchPaused, b.fetchPaused = true, true
	c.nFetchPaused = 2
	require.False(t, c.overBudgetLocked(), "paused partitions are not paused again")
	require.True(t, c.unholdLocked(a))
	require.Equal(t, int64(1000), c.pendingBytes)
	require.False(t, c.partOverBudgetLocked(b))
	require.True(t, c.unholdLocked(b))
	require.Zero(t, c.pendingBytes)
	require.Zero(t, c.nFetchPaused)
	require.Empty(t, c.held)
}
