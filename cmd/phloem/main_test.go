package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
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

// TestMain lets the test binary act as the phloem binary: a child started with
// PHLOEM_TEST_CHILD=1 runs run() with the arguments in PHLOEM_TEST_ARGS, so the
// kill -9 test needs no separate build.
func TestMain(m *testing.M) {
	if os.Getenv("PHLOEM_TEST_CHILD") == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, strings.Fields(os.Getenv("PHLOEM_TEST_ARGS")), os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &out))
	for _, f := range []string{"--brokers", "--listen", "--admin-listen", "--group", "--data-dir", "--sink-queue-records", "--sink-queue-bytes", "PHLOEM_GROUP"} {
		require.Contains(t, out.String(), strings.TrimPrefix(f, "-"))
	}
	out.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"--sink-queue-records", "0", "--brokers", "127.0.0.1:1"}, &out))
	out.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"--memory-limit", "1000000", "--brokers", "127.0.0.1:1"}, &out))
	require.Contains(t, out.String(), "is not above the data bound")
}

type seenSet struct {
	mu    sync.Mutex
	seen  map[string]int
	total int
	times []time.Time // arrival time of each delivery
}

func (s *seenSet) counts() (distinct, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen), s.total
}

func (s *seenSet) since(t time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for i := len(s.times) - 1; i >= 0 && s.times[i].After(t); i-- {
		n++
	}
	return n
}

// TestKill9NoLoss runs phloem as a child process against an in-process broker,
// kills it with SIGKILL mid-stream, restarts it, and checks by (meter id, seq) that
// nothing is lost and that duplicates stay within one commit interval's worth.
func TestKill9NoLoss(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	require.NoError(t, err)
	defer cluster.Close()
	brokers := strings.Join(cluster.ListenAddrs(), ",")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ProducerLinger(time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	require.NoError(t, control.EnsureTopic(ctx, adm, control.DefaultTopic))
	tc := topics.DefaultConfig()
	topic, err := topics.Ensure(ctx, adm, tc, "acme", 3)
	require.NoError(t, err)
	w := control.NewWriter(cl, control.DefaultTopic)
	require.NoError(t, w.PutTenant(ctx, control.Tenant{ID: "acme", TokenHash: control.HashToken("x"), Status: control.StatusActive, Topic: topic, Partitions: 3, Version: 1}))

	set := &seenSet{seen: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		sc := bufio.NewScanner(r.Body)
		var keys []string
		for sc.Scan() {
			var l struct {
				Meter string  `json:"meter"`
				Seq   *uint64 `json:"seq"`
			}
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Seq == nil {
				http.Error(rw, fmt.Sprintf("bad line %q: %v", sc.Bytes(), err), http.StatusBadRequest)
				return
			}
			keys = append(keys, l.Meter+"/"+strconv.FormatUint(*l.Seq, 10))
		}
		now := time.Now()
		set.mu.Lock()
		for _, k := range keys {
			set.seen[k]++
			set.total++
			set.times = append(set.times, now)
		}
		set.mu.Unlock()
	}))
	defer srv.Close()
	require.NoError(t, w.PutSink(ctx, control.Sink{ID: "h", Tenant: "acme", Type: control.SinkHTTP, Params: map[string]string{"url": srv.URL}, Version: 1}))

	const commitInterval = time.Second
	args := fmt.Sprintf("--brokers %s --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --group kill9 --commit-interval %s --session-timeout 6s --metadata-max-age 1s --log-level warn",
		brokers, commitInterval)
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "PHLOEM_TEST_CHILD=1", "PHLOEM_TEST_ARGS="+args)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				_ = cmd.Wait()
			}
		})
		return cmd
	}

	// Produce at a steady rate for the whole test.
	const perSec = 4000
	var produced atomic.Uint64
	stopProd := make(chan struct{})
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		t0 := time.Now()
		for {
			select {
			case <-stopProd:
				_ = cl.Flush(ctx)
				return
			case <-tk.C:
			}
			for want := uint64(time.Since(t0).Seconds() * perSec); produced.Load() < want; {
				seq := produced.Add(1) - 1
				meter := fmt.Sprintf("m%d", seq%20)
				cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(meter), Value: fmt.Appendf(nil, `{"n":%d}`, seq),
					Headers: []kgo.RecordHeader{{Key: topics.HeaderMeterID, Value: []byte(meter)}, {Key: topics.HeaderSeq, Value: strconv.AppendUint(nil, seq, 10)},
						{Key: topics.HeaderRequestID, Value: []byte("r")}, {Key: topics.HeaderCollectorID, Value: []byte("c")}, {Key: topics.HeaderTimestamp, Value: []byte("1")}}}, nil)
			}
		}
	}()

	child := start()
	require.Eventually(t, func() bool { d, _ := set.counts(); return d > 3*perSec }, 30*time.Second, 10*time.Millisecond)
	killAt := time.Now()
	lastInterval := set.since(killAt.Add(-commitInterval))
	require.NoError(t, child.Process.Signal(syscall.SIGKILL))
	_ = child.Wait()
	_, totalAtKill := set.counts()

	child = start()
	time.Sleep(2 * time.Second) // keep producing across the restart (not synchronisation)
	close(stopProd)
	<-prodDone
	n := int(produced.Load())
	require.Eventually(t, func() bool { d, _ := set.counts(); return d == n }, 60*time.Second, 20*time.Millisecond)
	distinct, total := set.counts()
	dups := total - distinct
	t.Logf("kill -9 after %d deliveries; produced %d, delivered %d distinct (lost %d), %d duplicates; deliveries in the last commit interval (%v) before the kill: %d",
		totalAtKill, n, distinct, n-distinct, dups, commitInterval, lastInterval)
	require.Equal(t, n, distinct)
	// A kill loses at most the acknowledgements since the last commit (one
	// interval) plus the batch in flight at the kill (delivered, not yet acked).
	require.LessOrEqual(t, dups, lastInterval+1000)
}
