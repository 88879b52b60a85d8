package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/collector/wire"
	"phloem/phloem/control"
)

func TestHelpAndBadFlags(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &out, nil))
	for _, f := range []string{"--listen", "--admin-listen", "--tls-cert", "--tls-key", "--collector-id", "--brokers", "--data-dir",
		"--max-inflight-requests", "--ingest-timeout", "PHLOEM_LISTEN", "SIGHUP"} {
		require.Contains(t, out.String(), strings.TrimLeft(f, "-"))
	}
	out.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"--ingest-timeout", "1m"}, &out, nil))
	require.Contains(t, out.String(), "meter's client timeout")
	out.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"--tls-cert", "x.pem"}, &out, nil))
	t.Setenv("PHLOEM_MAX_INFLIGHT_REQUESTS", "many")
	out.Reset()
	require.Equal(t, 2, run(context.Background(), nil, &out, nil))
	require.Contains(t, out.String(), "PHLOEM_MAX_INFLIGHT_REQUESTS")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestEndToEndEmbedded runs the binary's wiring with the embedded broker: ready,
// a tenant written on the control topic, a batch acknowledged, SIGHUP without TLS
// harmless, clean exit on cancel.
func TestEndToEndEmbedded(t *testing.T) {
	data, admin, kafka := freeAddr(t), freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan os.Signal, 1)
	done := make(chan int, 1)
	var logs bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--listen", data, "--admin-listen", admin, "--embedded-addr", kafka,
			"--data-dir", t.TempDir(), "--collector-id", "e2e", "--log-level", "warn"}, &syncWriter{w: &logs}, hup)
	}()
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == 200
	}, 20*time.Second, 50*time.Millisecond)

	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka))
	require.NoError(t, err)
	defer cl.Close()
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	require.NoError(t, control.EnsureTopic(cctx, kadm.NewClient(cl), ""))
	tok, err := control.NewToken()
	require.NoError(t, err)
	require.NoError(t, control.NewWriter(cl, "").PutTenant(cctx, control.Tenant{ID: "e2e", TokenHash: control.HashToken(tok), Status: control.StatusActive, Version: 1}))

	body := wire.AppendBatch(nil, []wire.Record{{Seq: 1, Timestamp: 1, Payload: []byte(`{"x":1}`)}})
	var code int
	require.Eventually(t, func() bool {
		req, _ := http.NewRequest(http.MethodPost, "http://"+data+"/v1/ingest", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Meter-Id", "m1")
		req.Header.Set("Content-Type", wire.ContentTypeBatch)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		code = resp.StatusCode
		return code == 200
	}, 10*time.Second, 50*time.Millisecond, "last code %d", code)

	hup <- os.Interrupt // any value: SIGHUP without TLS only logs nothing
	resp, err := http.Get("http://" + admin + "/metrics")
	require.NoError(t, err)
	m, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Contains(t, string(m), `phloem_collector_ingress_records_total{tenant="e2e"} 1`)
	require.Contains(t, string(m), `phloem_ops_alert_firing{rule="collector_ratio"} 0`)
	// The status page is on every admin listener.
	resp, err = http.Get("http://" + admin + "/status/api")
	require.NoError(t, err)
	st, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, string(st), `"collector_ratio"`)

	cancel()
	select {
	case c := <-done:
		require.Equal(t, 0, c)
	case <-time.After(30 * time.Second):
		t.Fatal("collector did not exit")
	}
}

// syncWriter serialises writes of concurrent loggers into one buffer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
