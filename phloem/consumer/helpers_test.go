package consumer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/phloem/control"
	"phloem/phloem/topics"
)

// env is one test's Kafka world: an in-process kfake broker, the control topic, a
// running Watcher and a producer.
type env struct {
	t       testing.TB
	ctx     context.Context
	cluster *kfake.Cluster
	addrs   []string
	cl      *kgo.Client
	adm     *kadm.Client
	writer  *control.Writer
	watcher *control.Watcher
	topics  topics.Config
	version atomic.Uint64
}

func newEnv(t testing.TB) *env {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, cluster: cluster, addrs: cluster.ListenAddrs(), topics: topics.DefaultConfig()}
	e.cl, err = kgo.NewClient(kgo.SeedBrokers(e.addrs...), kgo.ProducerLinger(time.Millisecond),
		kgo.MaxBufferedRecords(100_000))
	require.NoError(t, err)
	t.Cleanup(e.cl.Close)
	e.adm = kadm.NewClient(e.cl)
	require.NoError(t, control.EnsureTopic(ctx, e.adm, control.DefaultTopic))
	e.writer = control.NewWriter(e.cl, control.DefaultTopic)
	e.watcher, err = control.NewWatcher(control.WatcherConfig{Topic: control.DefaultTopic,
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers(e.addrs...)}, FetchMaxWait: 100 * time.Millisecond}, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = e.watcher.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// tenant creates tenant id with its topic and returns its token.
func (e *env) tenant(id string, partitions int32) string {
	e.t.Helper()
	tok := "tok-" + id
	topic, err := topics.Ensure(e.ctx, e.adm, e.topics, id, partitions)
	require.NoError(e.t, err)
	require.NoError(e.t, e.writer.PutTenant(e.ctx, control.Tenant{ID: id, TokenHash: control.HashToken(tok),
		Status: control.StatusActive, Topic: topic, Partitions: partitions, Version: 1}))
	return tok
}

func (e *env) putSink(s control.Sink) {
	e.t.Helper()
	s.Version = e.version.Add(1)
	require.NoError(e.t, e.writer.PutSink(e.ctx, s))
}

// waitSink waits until the watcher's state shows sink id with the given param.
func (e *env) waitSink(id, key, val string) {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		s, ok := e.watcher.State().Sink(id)
		return ok && s.Params[key] == val
	}, 10*time.Second, 10*time.Millisecond)
}

func record(topic, meter string, seq uint64) *kgo.Record {
	return &kgo.Record{
		Topic: topic,
		Key:   []byte(meter),
		Value: fmt.Appendf(nil, `{"meter":%q,"seq":%d,"v":"%0100d"}`, meter, seq, seq),
		Headers: []kgo.RecordHeader{
			{Key: HeaderMeterID, Value: []byte(meter)},
			{Key: HeaderSeq, Value: strconv.AppendUint(nil, seq, 10)},
			{Key: HeaderRequestID, Value: []byte("req")},
			{Key: HeaderCollectorID, Value: []byte("col-1")},
			{Key: HeaderTimestamp, Value: strconv.AppendInt(nil, time.Now().UnixNano(), 10)},
		},
	}
}

// produce writes n records for tenant, meters m0..m(meters-1), seqs from start.
func (e *env) produce(tenant string, meters int, start, n uint64) {
	e.t.Helper()
	topic := e.topics.Name(tenant)
	var wg sync.WaitGroup
	var perr atomic.Value
	for i := uint64(0); i < n; i++ {
		seq := start + i
		wg.Add(1)
		e.cl.Produce(e.ctx, record(topic, fmt.Sprintf("%s-m%d", tenant, seq%uint64(meters)), seq), func(_ *kgo.Record, err error) {
			if err != nil {
				perr.Store(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if err, _ := perr.Load().(error); err != nil {
		require.NoError(e.t, err)
	}
}

type line struct {
	Tenant  string          `json:"tenant"`
	Meter   string          `json:"meter"`
	Seq     *uint64         `json:"seq"`
	TS      int64           `json:"ts"`
	Payload json.RawMessage `json:"payload"`
}

type key struct {
	meter string
	seq   uint64
}

// collector counts NDJSON lines by (meter, seq): delivered records and duplicates.
type collector struct {
	mu    sync.Mutex
	seen  map[key]int
	total int
	first time.Time
	byTen map[string]int
}

func newCollector() *collector {
	return &collector{seen: make(map[key]int), byTen: make(map[string]int)}
}

func (c *collector) add(l line) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first.IsZero() {
		c.first = time.Now()
	}
	c.seen[key{l.Meter, *l.Seq}]++
	c.total++
	c.byTen[l.Tenant]++
}

func (c *collector) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *collector) tenantTotal(t string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byTen[t]
}

func (c *collector) has(meter string, seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[key{meter, seq}] > 0
}

// httpSink is a real loopback HTTP receiver of NDJSON batches.
func httpSink(t testing.TB, col *collector) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc := bufio.NewScanner(r.Body)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		var ls []line
		for sc.Scan() {
			var l line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Seq == nil {
				http.Error(w, "bad line", http.StatusBadRequest)
				return
			}
			ls = append(ls, l)
		}
		if sc.Err() != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		for _, l := range ls {
			col.add(l)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// blackhole accepts TCP connections and never answers while black; afterwards it
// serves HTTP with handler. Connections accepted while black stay hung until
// the client gives up.
type blackhole struct {
	ln    net.Listener
	black atomic.Bool
	srv   *http.Server
	conns chan net.Conn
	mu    sync.Mutex
	held  []net.Conn
}

func newBlackhole(t testing.TB, h http.Handler) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &blackhole{ln: ln, conns: make(chan net.Conn)}
	b.black.Store(true)
	b.srv = &http.Server{Handler: h}
	fwd := &chanListener{addr: ln.Addr(), c: b.conns, done: make(chan struct{})}
	go func() { _ = b.srv.Serve(fwd) }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(fwd.done)
				return
			}
			if b.black.Load() {
				b.mu.Lock()
				b.held = append(b.held, c)
				b.mu.Unlock()
				continue
			}
			b.conns <- c
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		_ = b.srv.Close()
		b.mu.Lock()
		for _, c := range b.held {
			_ = c.Close()
		}
		b.mu.Unlock()
	})
	return b
}

func (b *blackhole) url() string { return "http://" + b.ln.Addr().String() + "/" }

type chanListener struct {
	addr net.Addr
	c    chan net.Conn
	done chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// testConfig is a small, fast config against e.
func (e *env) testConfig() Config {
	cfg := DefaultConfig()
	cfg.KafkaOpts = []kgo.Opt{kgo.SeedBrokers(e.addrs...)}
	cfg.FetchMaxWait = 100 * time.Millisecond
	cfg.Group = "g-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	cfg.MetadataMaxAge = time.Second
	cfg.CommitInterval = 200 * time.Millisecond
	cfg.RetryBase = 20 * time.Millisecond
	cfg.RetryCap = 200 * time.Millisecond
	cfg.HTTPTimeout = time.Second
	cfg.ShutdownTimeout = 2 * time.Second
	return cfg
}

// start runs a consumer until the test ends and returns it.
func (e *env) start(cfg Config, reg *prometheus.Registry) *Consumer {
	c, _ := e.startStoppable(cfg, reg, nil)
	return c
}

// startStoppable runs a consumer and returns it with a func that stops it (also
// called at the end of the test; calling it twice is fine).
func (e *env) startStoppable(cfg Config, reg *prometheus.Registry, hook func(string, time.Duration)) (*Consumer, func()) {
	e.t.Helper()
	var logger *slog.Logger
	if os.Getenv("PHLOEM_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := New(cfg, e.watcher, logger, reg)
	require.NoError(e.t, err)
	c.observeCallback = hook
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(e.t, err)
			case <-time.After(20 * time.Second):
				e.t.Error("consumer did not stop")
			}
		})
	}
	e.t.Cleanup(stop)
	return c, stop
}

// committed returns the sum of group's committed offsets.
func (e *env) committed(group string) int64 {
	offs, err := e.adm.FetchOffsets(e.ctx, group)
	if err != nil {
		return -1
	}
	var n int64
	offs.Each(func(o kadm.OffsetResponse) { n += o.At })
	return n
}
