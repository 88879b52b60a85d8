package meter

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"phloem/collector/wire"
	"phloem/internal/testutil"
)

// testCollector is a loopback stand-in for the collector (issue 4): it decodes
// wire batches, answers what the test asks for and records, per meter, every
// (seq, payload) it acknowledged.
type testCollector struct {
	srv *httptest.Server

	// decide, when set, picks the answer before the body is read: 0 means accept.
	decide func(r *http.Request) (code int, retryAfter string)

	attempts atomic.Int64
	mu       sync.Mutex
	acked    map[string]map[uint64][]byte // meter -> seq -> payload
	dups     int                          // records acknowledged more than once
	order    map[string][]uint64          // meter -> acked seqs in arrival order
	reqIDs   map[string]bool
	lastHdr  http.Header
}

func newTestCollector(t testing.TB) *testCollector {
	c := &testCollector{
		acked:  make(map[string]map[uint64][]byte),
		order:  make(map[string][]uint64),
		reqIDs: make(map[string]bool),
	}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *testCollector) addr() string { return strings.TrimPrefix(c.srv.URL, "http://") }

func (c *testCollector) serve(w http.ResponseWriter, r *http.Request) {
	c.attempts.Add(1)
	if r.URL.Path != IngestPath || r.Method != http.MethodPost {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if c.decide != nil {
		if code, ra := c.decide(r); code != 0 {
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			http.Error(w, "test collector says "+http.StatusText(code), code)
			return
		}
	}
	if r.Header.Get("Content-Type") != wire.ContentTypeBatch {
		http.Error(w, "bad content type", http.StatusUnsupportedMediaType)
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
	meter := r.Header.Get("X-Meter-Id")
	type rec struct {
		seq uint64
		p   []byte
	}
	var recs []rec
	if err := wire.DecodeBatch(body, wire.Limits{}, func(x wire.Record) error {
		recs = append(recs, rec{x.Seq, bytes.Clone(x.Payload)})
		return nil
	}); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	m := c.acked[meter]
	if m == nil {
		m = make(map[uint64][]byte)
		c.acked[meter] = m
	}
	for _, x := range recs {
		if old, ok := m[x.seq]; ok {
			c.dups++
			if !bytes.Equal(old, x.p) {
				c.mu.Unlock()
				panic(fmt.Sprintf("meter %s reused seq %d for different data", meter, x.seq))
			}
		}
		m[x.seq] = x.p
		c.order[meter] = append(c.order[meter], x.seq)
	}
	c.reqIDs[r.Header.Get("X-Request-Id")] = true
	c.lastHdr = r.Header.Clone()
	c.mu.Unlock()
	fmt.Fprintf(w, "%d\n", len(recs))
}

func (c *testCollector) count(meter string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.acked[meter])
}

func (c *testCollector) payloads(meter string) map[uint64][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[uint64][]byte, len(c.acked[meter]))
	for k, v := range c.acked[meter] {
		out[k] = v
	}
	return out
}

// testConfig returns a config with short timers for tests.
func testConfig(t testing.TB, collectors string) Config {
	cfg := DefaultConfig()
	cfg.MeterID = "meter-test"
	cfg.Token = "secret-token"
	cfg.Collectors = collectors
	cfg.SpoolDir = t.TempDir()
	cfg.Linger = 5 * time.Millisecond
	cfg.BackoffBase = 5 * time.Millisecond
	cfg.BackoffCap = 50 * time.Millisecond
	cfg.ShutdownGrace = time.Second
	cfg.FailoverHold = 200 * time.Millisecond
	cfg.DiscoveryMinInterval = 10 * time.Millisecond
	return cfg
}

// logBuffer captures a meter's log for assertions.
type logBuffer struct{ testutil.SyncBuffer }

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// runMeter starts m.Run and returns a stop function that cancels it and waits.
func runMeter(t testing.TB, m *Meter) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(15 * time.Second):
				t.Fatal("meter Run did not return")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
