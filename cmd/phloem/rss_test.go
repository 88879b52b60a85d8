package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/phloem/control"
	"phloem/phloem/topics"
)

// rssKiB returns the resident set size of pid from /proc, in KiB.
func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	return 0
}

// TestBlackholeRSS (PHLOEM_LONG=1 only) runs phloem as its own process with a
// blackhole http sink for one tenant and a healthy one for two others, for 60s,
// and reports the process's peak RSS against the configured memory bound; then
// the blackhole answers and every record must arrive.
func TestBlackholeRSS(t *testing.T) {
	if os.Getenv("PHLOEM_LONG") != "1" {
		t.Skip("set PHLOEM_LONG=1 (takes about 90s)")
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	require.NoError(t, err)
	defer cluster.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ProducerLinger(time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	require.NoError(t, control.EnsureTopic(ctx, adm, control.DefaultTopic))
	w := control.NewWriter(cl, control.DefaultTopic)
	tc := topics.DefaultConfig()
	tenants := []string{"hole", "ok1", "ok2"}
	for _, tn := range tenants {
		topic, err := topics.Ensure(ctx, adm, tc, tn, 3)
		require.NoError(t, err)
		require.NoError(t, w.PutTenant(ctx, control.Tenant{ID: tn, TokenHash: control.HashToken(tn), Status: control.StatusActive, Topic: topic, Partitions: 3, Version: 1}))
	}
	var mu sync.Mutex
	seen := map[string]map[string]bool{}
	handler := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		sc := bufio.NewScanner(r.Body)
		mu.Lock()
		defer mu.Unlock()
		for sc.Scan() {
			var l struct {
				Tenant, Meter string
				Seq           *uint64
			}
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Seq == nil {
				http.Error(rw, err.Error(), 400)
				return
			}
			if seen[l.Tenant] == nil {
				seen[l.Tenant] = map[string]bool{}
			}
			seen[l.Tenant][l.Meter+"/"+strconv.FormatUint(*l.Seq, 10)] = true
		}
	})
	good := httptest.NewServer(handler)
	defer good.Close()
	// The blackhole: accepts and holds connections until it is told to answer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var black atomic.Bool
	black.Store(true)
	var heldMu sync.Mutex
	var held []net.Conn
	srv := &http.Server{Handler: handler}
	conns := make(chan net.Conn)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(conns)
				return
			}
			if black.Load() {
				heldMu.Lock()
				held = append(held, c)
				heldMu.Unlock()
				continue
			}
			conns <- c
		}
	}()
	go func() { _ = srv.Serve(chanLn{conns, ln.Addr()}) }()
	defer func() { _ = ln.Close(); _ = srv.Close() }()

	require.NoError(t, w.PutSink(ctx, control.Sink{ID: "hole", Tenant: "hole", Type: control.SinkHTTP, Params: map[string]string{"url": "http://" + ln.Addr().String() + "/"}, Version: 1}))
	for _, tn := range tenants[1:] {
		require.NoError(t, w.PutSink(ctx, control.Sink{ID: tn, Tenant: tn, Type: control.SinkHTTP, Params: map[string]string{"url": good.URL}, Version: 1}))
	}
	const queueBytes, queueRecs, fetchBytes, pollRecs, pendingBytes = 1 << 20, 2000, 4 << 20, 2000, 4 << 20
	// The operator's memory bound: the data bound (3 sink queues, fetch buffers,
	// pending budget, one poll) plus room for the Go runtime and the binary.
	const memoryLimit = 48 << 20
	args := fmt.Sprintf("--brokers %s --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --group rss --sink-queue-bytes %d --sink-queue-records %d --fetch-max-bytes %d --max-poll-records %d --pending-max-bytes %d --pending-partition-bytes %d --memory-limit %d --http-sink-timeout 500ms --log-level error",
		strings.Join(cluster.ListenAddrs(), ","), queueBytes, queueRecs, fetchBytes, pollRecs, pendingBytes, pendingBytes/4, memoryLimit)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PHLOEM_TEST_CHILD=1", "PHLOEM_TEST_ARGS="+args)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()

	const perSec = 2000
	next := map[string]uint64{}
	t0 := time.Now()
	peak, samples := 0, 0
	var rssAt10s int
	for time.Since(t0) < 60*time.Second {
		time.Sleep(10 * time.Millisecond)
		want := uint64(time.Since(t0).Seconds() * perSec)
		for _, tn := range tenants {
			for ; next[tn] < want; next[tn]++ {
				seq := next[tn]
				meter := fmt.Sprintf("%s-m%d", tn, seq%10)
				cl.Produce(ctx, &kgo.Record{Topic: tc.Name(tn), Key: []byte(meter), Value: fmt.Appendf(nil, `{"seq":%d,"pad":"%0200d"}`, seq, seq),
					Headers: []kgo.RecordHeader{{Key: topics.HeaderMeterID, Value: []byte(meter)}, {Key: topics.HeaderSeq, Value: strconv.AppendUint(nil, seq, 10)}}}, nil)
			}
		}
		if samples++; samples%20 == 0 {
			r := rssKiB(cmd.Process.Pid)
			peak = max(peak, r)
			if rssAt10s == 0 && time.Since(t0) > 10*time.Second {
				rssAt10s = r
			}
		}
	}
	require.NoError(t, cl.Flush(ctx))
	mu.Lock()
	okRate := float64(len(seen["ok1"])+len(seen["ok2"])) / time.Since(t0).Seconds()
	holeBefore := len(seen["hole"])
	mu.Unlock()
	black.Store(false)
	heldMu.Lock()
	for _, c := range held {
		_ = c.Close()
	}
	heldMu.Unlock()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen["hole"]) == int(next["hole"]) && len(seen["ok1"]) == int(next["ok1"]) && len(seen["ok2"]) == int(next["ok2"])
	}, 120*time.Second, 100*time.Millisecond)
	bound := 3*queueBytes + fetchBytes + pendingBytes + pollRecs*512
	t.Logf("60s blackhole for tenant hole, 2000 rec/s per tenant: healthy tenants delivered %.0f rec/s (target 4000); hole delivered %d during the blackhole, all %d after recovery",
		okRate, holeBefore, next["hole"])
	t.Logf("phloem process RSS: %d KiB after 10s, peak %d KiB over 60s; data bound %d KiB (3 sink queues x %d B + fetch %d B + pending %d B + one poll); --memory-limit %d KiB",
		rssAt10s, peak, bound>>10, queueBytes, fetchBytes, pendingBytes, memoryLimit>>10)
	require.Less(t, peak, memoryLimit>>10, "RSS must stay under the configured memory bound")
}

type chanLn struct {
	c    chan net.Conn
	addr net.Addr
}

func (l chanLn) Accept() (net.Conn, error) {
	c, ok := <-l.c
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l chanLn) Close() error   { return nil }
func (l chanLn) Addr() net.Addr { return l.addr }
