package collector

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"phloem/phloem/control"
	"phloem/phloem/embedded"
)

// TestBrokerStopStart: 200 means stored; while the broker is stopped every answer
// is 503 (never 200); after it returns on the same address and data dir, the
// meter's retry is acknowledged, and each acknowledged batch is on the topic.
func TestBrokerStopStart(t *testing.T) {
	dir := t.TempDir()
	b, err := embedded.Start(embedded.Config{DataDir: dir}, nil)
	require.NoError(t, err)
	addr := b.Addrs()[0]
	defer func() { _ = b.Close() }()

	e := newEnv(t, b.Addrs(), func(c *Config) { c.IngestTimeout = 1500 * time.Millisecond })
	tok := e.addTenant("acme", control.Limits{})
	batch1, _ := makeBatch(1, 100, 100)
	require.Equal(t, 100, accepted(t, e.do(nil, post{token: tok, meter: "m1", body: batch1})))

	require.NoError(t, b.Close())
	rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
	require.Error(t, e.c.Ready(rctx), "not ready while Kafka is down")
	rcancel()
	batch2, _ := makeBatch(101, 100, 100)
	attempts := 0
	for range 3 {
		a := e.do(nil, post{token: tok, meter: "m1", body: batch2})
		attempts++
		require.Equal(t, 503, a.code, "broker stopped: never 200 (%s)", a.body)
		require.NotEmpty(t, a.retryAfter)
		t.Logf("broker down: %d %s Retry-After=%s", a.code, a.body, a.retryAfter)
	}

	b2, err := embedded.Start(embedded.Config{Addr: addr, DataDir: dir}, nil)
	require.NoError(t, err)
	defer func() { _ = b2.Close() }()
	start := time.Now()
	var code int
	for time.Since(start) < 20*time.Second {
		a := e.do(nil, post{token: tok, meter: "m1", body: batch2})
		attempts++
		if code = a.code; code == 200 {
			break
		}
		require.Equal(t, 503, a.code, a.body)
	}
	require.Equal(t, 200, code)
	rctx, rcancel = context.WithTimeout(context.Background(), 2*time.Second)
	require.NoError(t, e.c.Ready(rctx), "ready again")
	rcancel()
	t.Logf("broker back: retried batch acknowledged %s after restart, after %d attempts in all", time.Since(start).Round(time.Millisecond), attempts)

	got := consumeAll(t, e.brokers, "phloem.t.acme", 200, 10*time.Second)
	// Drain a little longer to see duplicates, if any.
	copies := map[uint64]int{}
	for _, r := range got {
		s, err := strconv.ParseUint(header(r, HeaderSeq), 10, 64)
		require.NoError(t, err)
		copies[s]++
	}
	for s := uint64(1); s <= 200; s++ {
		require.GreaterOrEqual(t, copies[s], 1, "acknowledged seq %d missing", s)
		require.LessOrEqual(t, copies[s], attempts, "seq %d stored more often than sent", s)
	}
	dups := len(got) - 200
	t.Logf("topic holds %d records for 200 acknowledged (duplicates: %d; identifiable by meter id + seq)", len(got), dups)
	t.Logf("retries joined to an orphaned attempt instead of producing again: %v", e.counter("phloem_collector_retries_joined_total"))
	require.Equal(t, 0, dups, "batches answered 503 before they reached the broker must not be stored")
}
