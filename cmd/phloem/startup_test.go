package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
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

// TestStartupWith1000Topics measures, for a phloem process, the time from exec to
// the first delivery when the broker holds 1,000 tenant topics: phloem keeps no
// local state beyond Kafka offsets, so start-up must not grow with the topic
// count (DESIGN.md: restart replayed all of Kafka's files for 20-60 min).
func TestStartupWith1000Topics(t *testing.T) {
	const n = 1000
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0))
	require.NoError(t, err)
	defer cluster.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	require.NoError(t, control.EnsureTopic(ctx, adm, control.DefaultTopic))

	tc := topics.DefaultConfig()
	names := make([]string, n)
	for i := range names {
		names[i] = tc.Name(fmt.Sprintf("t%04d", i))
	}
	resp, err := adm.CreateTopics(ctx, 1, 1, nil, names...)
	require.NoError(t, err)
	require.NoError(t, resp.Error())

	// Control records for every tenant, and one catch-all sink.
	recs := make([]*kgo.Record, 0, n+1)
	w := control.NewWriter(cl, control.DefaultTopic)
	for i := range n {
		id := fmt.Sprintf("t%04d", i)
		require.NoError(t, w.PutTenant(ctx, control.Tenant{ID: id, TokenHash: control.HashToken(id), Status: control.StatusActive, Topic: names[i], Partitions: 1, Version: 1}))
	}
	delivered := make(chan time.Time, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		select {
		case delivered <- time.Now():
		default:
		}
	}))
	defer srv.Close()
	require.NoError(t, w.PutSink(ctx, control.Sink{ID: "all", Tenant: "*", Type: control.SinkHTTP, Params: map[string]string{"url": srv.URL}, Version: 1}))
	// One record in the last tenant's topic.
	recs = append(recs, &kgo.Record{Topic: names[n-1], Key: []byte("m1"), Value: []byte(`{"x":1}`),
		Headers: []kgo.RecordHeader{{Key: topics.HeaderMeterID, Value: []byte("m1")}, {Key: topics.HeaderSeq, Value: []byte("1")}}})
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())

	args := fmt.Sprintf("--brokers %s --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --group startup --log-level warn",
		strings.Join(cluster.ListenAddrs(), ","))
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PHLOEM_TEST_CHILD=1", "PHLOEM_TEST_ARGS="+args)
	cmd.Stderr = os.Stderr
	start := time.Now()
	require.NoError(t, cmd.Start())
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	select {
	case at := <-delivered:
		took := at.Sub(start)
		t.Logf("%d tenant topics: first delivery %v after the phloem process was started", n, took)
		require.Less(t, took, 2*time.Second)
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery within 30s")
	}
}
