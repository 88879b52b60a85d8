package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"phloem/internal/testutil"
)

type sinkLine struct {
	Tenant  string          `json:"tenant"`
	Meter   string          `json:"meter"`
	Seq     *uint64         `json:"seq"`
	Payload json.RawMessage `json:"payload"`
}

// readSink returns every line the file sink wrote under dir.
func readSink(t *testing.T, dir string) []sinkLine {
	t.Helper()
	var out []sinkLine
	files, _ := filepath.Glob(filepath.Join(dir, "sink", "demo", "*.ndjson"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l sinkLine
			if json.Unmarshal(sc.Bytes(), &l) == nil { // the last line may be half written
				out = append(out, l)
			}
		}
	}
	return out
}

type running struct {
	cancel context.CancelFunc
	code   chan int
	done   chan struct{} // closed when run returned
	stdout *testutil.SyncBuffer
	stderr *testutil.SyncBuffer
}

func startPipeline(t *testing.T, dir string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, code: make(chan int, 1), done: make(chan struct{}), stdout: &testutil.SyncBuffer{}, stderr: &testutil.SyncBuffer{}}
	args := []string{"--data-dir", dir, "--listen", "127.0.0.1:0", "--phloem-listen", "127.0.0.1:0",
		"--admin-listen", "127.0.0.1:0", "--interval", "100ms", "--brokers", ""}
	go func() {
		r.code <- run(ctx, args, r.stdout, r.stderr)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Errorf("pipeline still running 10s after cancel")
		}
	})
	return r
}

var statusURL = regexp.MustCompile(`Status page\s+(http://\S+/status/)`)
var tokenRe = regexp.MustCompile(`Tenant\s+demo, token (\S+)`)

func (r *running) waitURLs(t *testing.T) (status, token string) {
	t.Helper()
	require.Eventually(t, func() bool { return statusURL.MatchString(r.stdout.String()) }, 30*time.Second, 20*time.Millisecond,
		"pipeline did not print its URLs; stderr:\n%s", r.stderr.String())
	return statusURL.FindStringSubmatch(r.stdout.String())[1], tokenRe.FindStringSubmatch(r.stdout.String())[1]
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	start := time.Now()
	r.cancel()
	select {
	case code := <-r.code:
		require.Equal(t, 0, code, r.stderr.String())
		require.Less(t, time.Since(start), 5*time.Second)
		t.Logf("clean shutdown in %v", time.Since(start))
	case <-time.After(6 * time.Second):
		t.Fatalf("pipeline did not stop within 5s; stderr:\n%s", r.stderr.String())
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	return string(b)
}

// TestPipelineEndToEnd runs the whole system in-process on the embedded broker:
// host metrics from the demo meters must reach the file sink with their meter id
// and sequence number, the status page must serve, Ctrl-C must stop everything
// within 5 s, and a restart on the same data directory must keep the token and
// continue every meter's sequence without reusing a number.
func TestPipelineEndToEnd(t *testing.T) {
	dir := t.TempDir()
	r := startPipeline(t, dir)
	status, token := r.waitURLs(t)
	require.True(t, strings.HasPrefix(token, "phl_"))

	started := time.Now()
	lastSeq := map[string]uint64{}
	require.Eventually(t, func() bool {
		for _, l := range readSink(t, dir) {
			if l.Seq == nil || l.Tenant != "demo" || !json.Valid(l.Payload) {
				t.Fatalf("bad sink line: %+v", l)
			}
			lastSeq[l.Meter] = max(lastSeq[l.Meter], *l.Seq)
		}
		return len(lastSeq) == 3 && lastSeq["demo-meter-1"] >= 3
	}, 20*time.Second, 50*time.Millisecond, "records from all 3 meters did not reach the file sink; stderr:\n%s", r.stderr.String())
	t.Logf("first records of all 3 meters in the file sink %v after start", time.Since(started))

	require.Contains(t, get(t, status), "<html")
	api := get(t, status+"api")
	require.Contains(t, api, "collector_ratio")
	metrics := get(t, strings.TrimSuffix(status, "status/")+"metrics")
	require.Contains(t, metrics, "phloem_collector_ingress_bytes_total")
	require.Contains(t, metrics, "phloem_consumer_records_in_total")
	require.Contains(t, metrics, `phloem_meter_records_acked_total{meter="demo-meter-1"}`)
	r.stop(t)

	// Restart on the same data directory.
	before := readSink(t, dir)
	r2 := startPipeline(t, dir)
	_, token2 := r2.waitURLs(t)
	require.Equal(t, token, token2, "a restart must keep the demo tenant's token")
	restarted := time.Now()
	require.Eventually(t, func() bool { return len(readSink(t, dir)) > len(before)+10 }, 20*time.Second, 50*time.Millisecond)
	t.Logf("records flowing again %v after the restart", time.Since(restarted))
	r2.stop(t)

	// Per meter, sequence numbers run without a gap; duplicates (at-least-once)
	// carry the same number, never a reused one for new data.
	seen := map[string]map[uint64]bool{}
	for _, l := range readSink(t, dir) {
		if seen[l.Meter] == nil {
			seen[l.Meter] = map[uint64]bool{}
		}
		seen[l.Meter][*l.Seq] = true
	}
	for m, seqs := range seen {
		var hi uint64
		for s := range seqs {
			hi = max(hi, s)
		}
		for s := uint64(1); s <= hi; s++ {
			require.True(t, seqs[s], "meter %s: sequence %d missing (highest %d)", m, s, hi)
		}
		require.Greater(t, hi, lastSeq[m], "meter %s did not continue after the restart", m)
	}
}

func TestPipelineBadFlags(t *testing.T) {
	var out, errb testutil.SyncBuffer
	require.Equal(t, 2, run(context.Background(), []string{"--meters", "-1"}, &out, &errb))
	require.Contains(t, errb.String(), "--meters -1")
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &out, &errb))
	require.Contains(t, errb.String(), "Runs all of Phloem in one process")
}
