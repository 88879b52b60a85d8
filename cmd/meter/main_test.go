package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"phloem/collector/wire"
	"phloem/internal/testutil"
)

// syncBuffer captures a child meter process's output for assertions.
type syncBuffer = testutil.SyncBuffer

// TestMain lets the kill -9 test re-exec this test binary as the meter command:
// with PHLOEM_METER_CHILD=1 it runs main's run with the process arguments.
func TestMain(m *testing.M) {
	if os.Getenv("PHLOEM_METER_CHILD") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// loopCollector is a loopback stand-in for the collector: it decodes wire
// batches, answers 200 or 503 as the test says, and records every acknowledged
// (seq, payload) and every attempted seq.
type loopCollector struct {
	srv     *httptest.Server
	refuse  atomic.Bool
	mu      sync.Mutex
	acked   map[uint64][]string // seq -> payloads acknowledged (one per delivery)
	maxSeen uint64              // highest seq in any attempt, acknowledged or not (the sender retries one batch at a time)
	meters  map[string]bool
}

func newLoopCollector(t testing.TB) *loopCollector {
	c := &loopCollector{acked: make(map[uint64][]string), meters: make(map[string]bool)}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *loopCollector) addr() string { return strings.TrimPrefix(c.srv.URL, "http://") }

func (c *loopCollector) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer test-token" {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	zr, err := wire.NewDecompressReader(r.Header.Get("Content-Encoding"), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
		return
	}
	body, err := wire.ReadLimited(nil, zr, wire.DefaultMaxBatchBytes)
	_ = zr.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	type rec struct {
		seq uint64
		p   string
	}
	var recs []rec
	if err := wire.DecodeBatch(body, wire.Limits{}, func(x wire.Record) error {
		recs = append(recs, rec{x.Seq, string(x.Payload)})
		return nil
	}); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.meters[r.Header.Get("X-Meter-Id")] = true
	for _, x := range recs {
		c.maxSeen = max(c.maxSeen, x.seq)
	}
	if c.refuse.Load() {
		w.Header().Set("Retry-After", "0")
		http.Error(w, "kafka unavailable (test)", http.StatusServiceUnavailable)
		return
	}
	for _, x := range recs {
		c.acked[x.seq] = append(c.acked[x.seq], x.p)
	}
	fmt.Fprintln(w, len(recs))
}

func (c *loopCollector) state() (acked int, maxSeen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.acked), c.maxSeen
}

func payloadOf(i int) string {
	return fmt.Sprintf(`{"line":%d,"pad":"%s"}`, i, strings.Repeat("x", 40))
}

// TestKill9ResendsUnacknowledged is the kill -9 acceptance test. A meter process
// (this test binary re-executed as the meter command) reads 500 lines from stdin;
// the first 200 are acknowledged, then the collector answers 503 while the meter
// keeps retrying the rest from its spool; the process is killed with SIGKILL.
// Restarted on the same spool dir with a healthy collector and an empty stdin, it
// delivers everything: sequence numbers 1..500 with no gap, each with its own
// line, and duplicates only of records that had not been acknowledged.
func TestKill9ResendsUnacknowledged(t *testing.T) {
	c := newLoopCollector(t)
	spool := t.TempDir()
	args := []string{"--stdin", "--collectors", c.addr(), "--spool-dir", spool, "--meter-id", "kill9-meter",
		"--linger", "10ms", "--batch-max-records", "50", "--backoff-base", "5ms", "--backoff-cap", "50ms",
		"--spool-fsync", "never", "--log-level", "warn"}
	start := func(stdin io.Reader) (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "PHLOEM_METER_CHILD=1", "PHLOEM_TOKEN=test-token")
		cmd.Stdin = stdin
		stderr := &syncBuffer{}
		cmd.Stderr = stderr
		require.NoError(t, cmd.Start())
		return cmd, stderr
	}

	pr, pw := io.Pipe()
	cmd, stderr1 := start(pr)
	for i := 1; i <= 200; i++ {
		_, err := fmt.Fprintln(pw, payloadOf(i))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { n, _ := c.state(); return n == 200 }, 20*time.Second, 5*time.Millisecond, "log: %s", stderr1)
	c.refuse.Store(true)
	for i := 201; i <= 500; i++ {
		_, err := fmt.Fprintln(pw, payloadOf(i))
		require.NoError(t, err)
	}
	// Wait until all 500 records are in the spool (one segment: entries of 28
	// header bytes plus the payload) and the meter is retrying the refused ones.
	want := int64(0)
	for i := 1; i <= 500; i++ {
		want += int64(28 + len(payloadOf(i)))
	}
	require.Eventually(t, func() bool {
		segs, _ := filepath.Glob(filepath.Join(spool, "*.seg"))
		var size int64
		for _, s := range segs {
			if fi, err := os.Stat(s); err == nil {
				size += fi.Size()
			}
		}
		_, seen := c.state()
		return size == want && seen > 200
	}, 20*time.Second, 5*time.Millisecond, "log: %s", stderr1)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = pw.Close() // ends exec's stdin copier, which Wait waits for
	err := cmd.Wait()
	require.Error(t, err, "killed")
	cursor := ackCursor(t, spool)
	require.Equal(t, uint64(200), cursor)
	t.Logf("first run killed; its log:\n%s", stderr1.String())

	c.refuse.Store(false)
	cmd, stderr2 := start(strings.NewReader(""))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, stderr2.String())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("restarted meter did not flush and exit; log:\n%s", stderr2.String())
	}

	dups := c.check(t, 500, cursor)
	require.Equal(t, map[string]bool{"kill9-meter": true}, c.meters)
	t.Logf("after restart: 500/500 records, seq 1..500 without gap, %d duplicates (ack cursor at kill: %d); restart log:\n%s",
		dups, cursor, stderr2.String())
}

// check verifies that seqs 1..n arrived, each with its own line, and that only
// records above the meter's persisted ack cursor at the kill were delivered twice.
func (c *loopCollector) check(t *testing.T, n int, cursor uint64) (dups int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Len(t, c.acked, n)
	for seq := uint64(1); seq <= uint64(n); seq++ {
		got := c.acked[seq]
		require.NotEmpty(t, got, "seq %d missing", seq)
		for _, p := range got {
			require.Equal(t, payloadOf(int(seq)), p, "seq %d carries another record", seq)
		}
		if len(got) > 1 {
			dups++
			require.Greater(t, seq, cursor, "seq %d was acknowledged (persisted) before the kill and sent again", seq)
		}
	}
	return dups
}

// ackCursor reads the spool's persisted acknowledgement cursor.
func ackCursor(t *testing.T, spool string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(spool, "ack"))
	require.NoError(t, err)
	require.Len(t, b, 12)
	return binary.LittleEndian.Uint64(b)
}

// TestKill9MidStream kills a meter while the collector is acknowledging a fast
// stream (the kill can land between a collector's 200 and the meter persisting
// it): after the restart nothing is missing, and duplicates are only records the
// meter had not recorded as acknowledged.
func TestKill9MidStream(t *testing.T) {
	c := newLoopCollector(t)
	spool := t.TempDir()
	args := []string{"--stdin", "--collectors", c.addr(), "--spool-dir", spool, "--meter-id", "kill9-stream",
		"--linger", "1ms", "--batch-max-records", "20", "--spool-fsync", "never", "--log-level", "warn"}
	run := func(stdin io.Reader) *exec.Cmd {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "PHLOEM_METER_CHILD=1", "PHLOEM_TOKEN=test-token")
		cmd.Stdin = stdin
		require.NoError(t, cmd.Start())
		return cmd
	}
	const n = 3000
	var in bytes.Buffer
	for i := 1; i <= n; i++ {
		fmt.Fprintln(&in, payloadOf(i))
	}
	pr, pw := io.Pipe()
	cmd := run(pr)
	go func() {
		_, _ = pw.Write(in.Bytes())
	}()
	require.Eventually(t, func() bool { a, _ := c.state(); return a >= 1000 }, 20*time.Second, time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = pw.CloseWithError(io.ErrClosedPipe)
	require.Error(t, cmd.Wait())
	cursor := ackCursor(t, spool)
	before, _ := c.state()

	// Restart on the same spool with no new input: it must deliver every record
	// the first process spooled, 1..K without a gap, then exit.
	cmd = run(strings.NewReader(""))
	require.NoError(t, cmd.Wait())
	k, maxSeen := c.state()
	require.Equal(t, uint64(k), maxSeen, "sequence numbers 1..K without a gap")
	dups := c.check(t, k, cursor)
	require.GreaterOrEqual(t, uint64(before), cursor)
	t.Logf("killed with %d records acknowledged by the collector, meter cursor at %d; after restart %d records (1..%d, no gap), %d duplicates, all above the cursor",
		before, cursor, k, k, dups)
}

// TestStdinFlushesAndExits runs the command in-process end to end.
func TestStdinFlushesAndExits(t *testing.T) {
	c := newLoopCollector(t)
	t.Setenv("PHLOEM_TOKEN", "test-token")
	var in bytes.Buffer
	for i := 1; i <= 1000; i++ {
		fmt.Fprintln(&in, payloadOf(i))
	}
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"--stdin", "--collectors", c.addr(), "--spool-dir", t.TempDir(),
		"--linger", "5ms", "--compression", "zstd"}, &in, &stderr)
	require.Equal(t, 0, code, stderr.String())
	n, _ := c.state()
	require.Equal(t, 1000, n)
	require.Contains(t, stderr.String(), "acked=1000")
}

func TestFlags(t *testing.T) {
	t.Setenv("PHLOEM_TOKEN", "")
	dir := t.TempDir()
	base := []string{"--collectors", "127.0.0.1:1", "--spool-dir", dir, "--stdin"}
	_, err := parseFlags(append(base, "--token", "abc"), io.Discard)
	require.ErrorContains(t, err, "refusing --token")
	_, err = parseFlags(base, io.Discard)
	require.ErrorContains(t, err, "no token")
	tf := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tf, []byte("from-file\n"), 0o600))
	o, err := parseFlags(append(base, "--token-file", tf), io.Discard)
	require.NoError(t, err)
	require.Equal(t, "from-file", o.cfg.Token)
	t.Setenv("PHLOEM_TOKEN", "from-env")
	o, err = parseFlags(base, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "from-env", o.cfg.Token)
	host, _ := os.Hostname()
	require.Equal(t, host, o.cfg.MeterID)
	_, err = parseFlags([]string{"--collectors", "127.0.0.1:1", "--spool-dir", dir}, io.Discard)
	require.ErrorContains(t, err, "no input")
	_, err = parseFlags(append(base, "--spool-full", "explode"), io.Discard)
	require.ErrorContains(t, err, "spool full policy")
	var help bytes.Buffer
	_, err = parseFlags([]string{"--help"}, &help)
	require.ErrorIs(t, err, errHelp)
	for _, f := range []string{"--collectors", "--tail", "--host-metrics", "--token-file", "--spool-dir", "--admin-listen", "--meter-id", "PHLOEM_TOKEN"} {
		require.Contains(t, help.String(), strings.TrimPrefix(f, "-"))
	}
}
