package admin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestAdminEndpointsAndShutdown(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "phloem", Subsystem: "test", Name: "things_total", Help: "x"})
	reg.MustRegister(c)
	c.Add(3)

	s := New(Config{}, nil, reg)
	var caughtUp atomic.Bool
	s.AddReadyCheck("control", func(context.Context) error {
		if !caughtUp.Load() {
			return errors.New("watcher not caught up")
		}
		return nil
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	base := "http://" + ln.Addr().String()

	code, body := get(t, base+"/healthz")
	require.Equal(t, 200, code)
	code, body = get(t, base+"/readyz")
	require.Equal(t, 503, code)
	require.Contains(t, body, "control: watcher not caught up")
	caughtUp.Store(true)
	code, _ = get(t, base+"/readyz")
	require.Equal(t, 200, code)
	code, body = get(t, base+"/metrics")
	require.Equal(t, 200, code)
	require.Contains(t, body, "phloem_test_things_total 3")
	code, _ = get(t, base+"/debug/pprof/")
	require.Equal(t, 404, code, "pprof must be opt-in")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(6 * time.Second):
		t.Fatal("admin server did not stop")
	}
}
