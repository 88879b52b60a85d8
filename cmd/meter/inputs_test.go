package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"phloem/internal/logx"
	"phloem/meter"
)

// lineSink collects emitted records.
type lineSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *lineSink) appendBatch(_ context.Context, ps [][]byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range ps {
		s.lines = append(s.lines, string(p))
	}
	return len(ps), nil
}

func (s *lineSink) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

func testInputs(s *lineSink) inputSet {
	return inputSet{appendBatch: s.appendBatch, logger: logx.Discard(), throttle: logx.NewThrottled(nil, time.Hour)}
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	require.NoError(t, err)
	_, err = f.WriteString(text)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// TestTailFollowsRotationAndTruncation: lines appended are read (a partial line
// waits for its newline), a rename+create rotation finishes the old file and
// reads the new one from its start, a truncation restarts at the beginning.
func TestTailFollowsRotationAndTruncation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendFile(t, path, "old-1\nold-2\n") // present before the start: skipped (tail -f)
	sink := &lineSink{}
	var logs syncBuffer
	in := testInputs(sink)
	in.logger = slog.New(slog.NewTextHandler(&logs, nil))
	waitLog := func(msg string, n int) {
		t.Helper()
		require.Eventually(t, func() bool { return strings.Count(logs.String(), msg) >= n }, 5*time.Second, time.Millisecond, "log: %s", &logs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.tail(ctx, tailConfig{path: path, poll: 5 * time.Millisecond}) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	waitLines := func(want ...string) {
		t.Helper()
		require.Eventually(t, func() bool { return strings.Join(sink.get(), ",") == strings.Join(want, ",") },
			5*time.Second, 2*time.Millisecond, "got %q", sink.get())
	}
	waitLog("tailing file", 1) // opened and positioned at the end
	appendFile(t, path, "a\nb\npart")
	waitLines("a", "b")
	appendFile(t, path, "ial\r\n")
	waitLines("a", "b", "partial")

	// Rotation: the writer appends a last line, renames, and starts a new file.
	appendFile(t, path, "last-of-old\n")
	require.NoError(t, os.Rename(path, path+".1"))
	appendFile(t, path, "new-1\n")
	waitLines("a", "b", "partial", "last-of-old", "new-1")

	// Truncation (copytruncate): the file shrinks below our offset.
	// A poller can only see a truncation if the file is shorter than its offset
	// when it looks (tail -F has the same limit): wait until it has noticed.
	require.NoError(t, os.Truncate(path, 0))
	waitLog("tailed file truncated", 1)
	appendFile(t, path, "after-truncate\n")
	waitLines("a", "b", "partial", "last-of-old", "new-1", "after-truncate")
}

func TestTailWaitsForFileAndReadsFromStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "late.log")
	sink := &lineSink{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_ = testInputs(sink).tail(ctx, tailConfig{path: path, poll: 5 * time.Millisecond, fromStart: true})
	}()
	appendFile(t, path, "x\ny\n")
	require.Eventually(t, func() bool { return len(sink.get()) == 2 }, 5*time.Second, 2*time.Millisecond)
}

func TestSplitLinesDropsOverlong(t *testing.T) {
	long := strings.Repeat("z", maxLine+10)
	in := "one\r\n\n" + long + "\ntwo\nthree"
	var got []string
	long2 := 0
	require.NoError(t, splitLines(strings.NewReader(in), func(l []byte) bool { got = append(got, string(l)); return true }, func() { long2++ }))
	require.Equal(t, []string{"one", "two", "three"}, got)
	require.Equal(t, 1, long2)
}

// Records the meter refuses as too large are dropped, counted by reason and
// logged, and the input goes on with the next record.
func TestInputDropsAreCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	in := inputSet{logger: logx.Discard(), throttle: logx.NewThrottled(nil, time.Hour),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped_total", Help: "x"}, []string{"reason"})}
	reg.MustRegister(in.dropped)
	var got []string
	in.appendBatch = func(_ context.Context, ps [][]byte) (int, error) {
		for i, p := range ps {
			if len(p) > 3 {
				return i, meter.ErrRecordTooLarge
			}
			got = append(got, string(p))
		}
		return len(ps), nil
	}
	require.NoError(t, in.emitAll(context.Background(), [][]byte{[]byte("a"), []byte("toolong"), []byte("b")}))
	require.Equal(t, []string{"a", "b"}, got)
	require.Equal(t, 1.0, testutil.ToFloat64(in.dropped.WithLabelValues("too_large")))
}

// TestHostMetricsEndToEnd runs the command in-process with --host-metrics on the
// real /proc and an admin listener, scrapes /metrics, then stops it with its
// context (a clean shutdown).
func TestHostMetricsEndToEnd(t *testing.T) {
	if _, err := os.Stat("/proc/net/dev"); err != nil {
		t.Skip("no /proc/net/dev on this system")
	}
	c := newLoopCollector(t)
	t.Setenv("PHLOEM_TOKEN", "test-token")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	adminAddr := ln.Addr().String()
	require.NoError(t, ln.Close())
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	var stderr syncBuffer
	go func() {
		code <- run(ctx, []string{"--host-metrics", "--interval", "20ms", "--collectors", c.addr(), "--spool-dir", t.TempDir(),
			"--linger", "5ms", "--admin-listen", adminAddr}, strings.NewReader(""), &stderr)
	}()
	require.Eventually(t, func() bool { n, _ := c.state(); return n >= 3 }, 10*time.Second, 5*time.Millisecond, "log: %s", &stderr)
	var body string
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + adminAddr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, "phloem_meter_records_acked_total")
	}, 5*time.Second, 10*time.Millisecond)
	for _, m := range []string{"phloem_meter_records_sent_total", "phloem_meter_records_spooled_total", "phloem_meter_spool_bytes",
		fmt.Sprintf(`phloem_meter_current_collector{collector=%q} 1`, c.addr()), `phloem_meter_records_dropped_total{reason="spool_full"} 0`,
		"phloem_meter_retries_total", "phloem_meter_spool_corrupt_entries_total", "process_resident_memory_bytes"} {
		require.Contains(t, body, m)
	}
	cancel()
	select {
	case rc := <-code:
		require.Equal(t, 0, rc, stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatal("meter did not shut down")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var rec struct {
		Type   string `json:"type"`
		Memory struct {
			TotalBytes uint64 `json:"total_bytes"`
		} `json:"memory"`
		Net []json.RawMessage `json:"net"`
		CPU struct {
			BusyRatio *float64 `json:"busy_ratio"`
		} `json:"cpu"`
	}
	require.NoError(t, json.Unmarshal([]byte(c.acked[2][0]), &rec))
	require.Equal(t, "host", rec.Type)
	require.NotZero(t, rec.Memory.TotalBytes)
	require.NotEmpty(t, rec.Net)
	require.NotNil(t, rec.CPU.BusyRatio)
}

// TestTailDropsOverlongLineOnce: a tailed line longer than the record limit,
// spread over many reads, is dropped whole and counted once; its tail is not
// emitted as a record of its own, and the next line is read.
func TestTailDropsOverlongLineOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "long.log")
	appendFile(t, path, "before\n"+strings.Repeat("z", 3*maxLine)+"\nafter\n")
	sink := &lineSink{}
	in := testInputs(sink)
	in.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped_total", Help: "x"}, []string{"reason"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.tail(ctx, tailConfig{path: path, poll: 5 * time.Millisecond, fromStart: true}) }()
	require.Eventually(t, func() bool { n := len(sink.get()); return n > 0 && sink.get()[n-1] == "after" }, 5*time.Second, 2*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	var lens []int
	for _, l := range sink.get() {
		lens = append(lens, len(l))
	}
	require.Equal(t, []int{len("before"), len("after")}, lens, "lengths of the records emitted")
	require.Equal(t, 1.0, testutil.ToFloat64(in.dropped.WithLabelValues("line_too_long")))
}
