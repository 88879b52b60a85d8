package collector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/collector/wire"
	"phloem/phloem/control"
)

// env is one test deployment: a broker, the control topic with its Watcher and
// Writer, and a running Collector on a loopback listener.
type env struct {
	t       testing.TB
	cluster *kfake.Cluster // nil when brokers come from elsewhere
	brokers []string
	admin   *kgo.Client
	writer  *control.Writer
	watcher *control.Watcher
	c       *Collector
	reg     *prometheus.Registry
	url     string
	addr    string
	cancel  context.CancelFunc
	done    chan error
	wdone   chan error
	tenants map[string]control.Tenant
}

// newCluster starts an in-process kfake broker, closed at test end.
func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// testConfig is DefaultConfig with short deadlines so failure paths run fast.
func testConfig(brokers []string) Config {
	cfg := DefaultConfig()
	cfg.CollectorID = "test-collector"
	cfg.KafkaOpts = []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond })}
	cfg.IngestTimeout = 3 * time.Second
	cfg.ShutdownGrace = 2 * time.Second
	cfg.FlushTimeout = 2 * time.Second
	return cfg
}

// newEnv starts everything on brokers (a fresh kfake cluster when nil).
func newEnv(t testing.TB, brokers []string, mutate func(*Config)) *env {
	t.Helper()
	e := &env{t: t, tenants: map[string]control.Tenant{}}
	if brokers == nil {
		e.cluster = newCluster(t)
		brokers = e.cluster.ListenAddrs()
	}
	e.brokers = brokers
	var err error
	e.admin, err = kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(e.admin.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, control.EnsureTopic(ctx, kadm.NewClient(e.admin), control.DefaultTopic))
	e.writer = control.NewWriter(e.admin, control.DefaultTopic)

	e.reg = prometheus.NewRegistry()
	wcfg := control.DefaultWatcherConfig()
	wcfg.KafkaOpts = []kgo.Opt{kgo.SeedBrokers(brokers...)}
	wcfg.FetchMaxWait = 100 * time.Millisecond
	e.watcher, err = control.NewWatcher(wcfg, nil, e.reg)
	require.NoError(t, err)

	cfg := testConfig(brokers)
	if mutate != nil {
		mutate(&cfg)
	}
	e.c, err = New(cfg, e.watcher, nil, e.reg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e.addr = ln.Addr().String()
	scheme := "http"
	if cfg.TLSCertFile != "" {
		scheme = "https"
	}
	e.url = scheme + "://" + e.addr

	rctx, rcancel := context.WithCancel(context.Background())
	e.cancel = rcancel
	e.done = make(chan error, 1)
	e.wdone = make(chan error, 1)
	go func() { e.wdone <- e.watcher.Run(rctx) }()
	go func() { e.done <- e.c.Run(rctx, ln) }()
	t.Cleanup(e.stop)
	select {
	case <-e.watcher.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("watcher not ready")
	}
	return e
}

// stop shuts the collector and watcher down and checks Run's result. Idempotent.
func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		require.NoError(e.t, err)
	case <-time.After(30 * time.Second):
		e.t.Fatal("collector Run did not return")
	}
	select {
	case err := <-e.wdone:
		require.NoError(e.t, err)
	case <-time.After(10 * time.Second):
		e.t.Fatal("watcher Run did not return")
	}
}

// putTenant writes a tenant record and waits until the Watcher applied it.
func (e *env) putTenant(t control.Tenant) {
	e.t.Helper()
	if old, ok := e.tenants[t.ID]; ok {
		t.Version = old.Version + 1
	} else if t.Version == 0 {
		t.Version = 1
	}
	if t.Status == "" {
		t.Status = control.StatusActive
	}
	if t.Partitions == 0 {
		t.Partitions = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(e.t, e.writer.PutTenant(ctx, t))
	e.tenants[t.ID] = t
	require.Eventually(e.t, func() bool {
		got, ok := e.watcher.State().Tenant(t.ID)
		return ok && got.Version == t.Version
	}, 5*time.Second, 5*time.Millisecond)
}

// addTenant creates an active tenant and returns its token.
func (e *env) addTenant(id string, lim control.Limits) string {
	e.t.Helper()
	tok, err := control.NewToken()
	require.NoError(e.t, err)
	e.putTenant(control.Tenant{ID: id, TokenHash: control.HashToken(tok), Limits: lim})
	return tok
}

// makeBatch encodes n records of size bytes each, seq from base.
func makeBatch(base uint64, n, size int) ([]byte, []wire.Record) {
	recs := make([]wire.Record, n)
	for i := range recs {
		p := bytes.Repeat([]byte{'a' + byte(i%26)}, size)
		copy(p, fmt.Sprintf("%d:", base+uint64(i)))
		recs[i] = wire.Record{Seq: base + uint64(i), Timestamp: time.Now().UnixNano(), Payload: p}
	}
	return wire.AppendBatch(nil, recs), recs
}

type post struct {
	token, meter, rid, ctype, enc string
	body                          []byte
	headers                       map[string]string
}

type answer struct {
	code       int
	body       string
	retryAfter string
	rid        string
}

func (e *env) do(cl *http.Client, p post) answer {
	e.t.Helper()
	if cl == nil {
		cl = http.DefaultClient
	}
	req, err := http.NewRequest(http.MethodPost, e.url+PathIngest, bytes.NewReader(p.body))
	require.NoError(e.t, err)
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	if p.meter != "" {
		req.Header.Set(HeaderXMeterID, p.meter)
	}
	if p.rid != "" {
		req.Header.Set(HeaderXRequestID, p.rid)
	}
	if p.ctype == "" {
		p.ctype = wire.ContentTypeBatch
	}
	req.Header.Set("Content-Type", p.ctype)
	if p.enc != "" {
		req.Header.Set("Content-Encoding", p.enc)
	}
	for k, v := range p.headers {
		req.Header.Set(k, v)
	}
	resp, err := cl.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return answer{code: resp.StatusCode, body: string(b), retryAfter: resp.Header.Get("Retry-After"), rid: resp.Header.Get(HeaderXRequestID)}
}

func accepted(t testing.TB, a answer) int {
	t.Helper()
	require.Equal(t, 200, a.code, a.body)
	var r ingestResult
	require.NoError(t, json.Unmarshal([]byte(a.body), &r))
	return r.Accepted
}

func (e *env) counter(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	require.NoError(e.t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						ok = true
					}
				}
				if !ok {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// consumeAll reads every record of topic from the start until it has want
// records or the timeout passes.
func consumeAll(t testing.TB, brokers []string, topic string, want int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(timeout)
	for len(out) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// lintMetrics checks metric names and help against client_golang's linter.
func lintMetrics(t testing.TB, reg *prometheus.Registry) {
	t.Helper()
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	var ours []string
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "phloem_collector_") {
			ours = append(ours, p.Metric+": "+p.Text)
		}
	}
	require.Empty(t, ours)
}
