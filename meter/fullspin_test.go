package meter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/require"

	"phloem/collector/wire"
)

// TestMeterFullDoesNotSpin: collectors that answer every request 503 +
// X-Phloem-Full (even the fallback, which is out of protocol) while FullHold is
// shorter than a round trip (so every mark has expired by the next pick) must
// not make the meter loop without sleeping: after at most one immediate move
// per collector it backs off.
func TestMeterFullDoesNotSpin(t *testing.T) {
	var attempts atomic.Int64
	full := func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		w.Header().Set(wire.HeaderFull, wire.FullMeters)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "full", http.StatusServiceUnavailable)
	}
	a, b := httptest.NewServer(http.HandlerFunc(full)), httptest.NewServer(http.HandlerFunc(full))
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	cfg := testConfig(t, strings.TrimPrefix(a.URL, "http://")+","+strings.TrimPrefix(b.URL, "http://"))
	cfg.FullHold = time.Nanosecond
	// A constant backoff: the default full-jitter policy may sleep ~0.
	cfg.NewBackOff = func() backoff.BackOff { return backoff.NewConstantBackOff(5 * time.Second) }
	m, err := New(cfg, nil, nil)
	require.NoError(t, err)
	runMeter(t, m)
	require.NoError(t, m.Append(context.Background(), []byte(`{"a":1}`)))
	require.Eventually(t, func() bool { return attempts.Load() >= 1 }, 10*time.Second, 5*time.Millisecond)
	// A window under test, not synchronisation: the first backoff (>= 5s)
	// cannot end within it, so every attempt counted is an immediate one.
	time.Sleep(300 * time.Millisecond)
	require.LessOrEqual(t, attempts.Load(), int64(3), "meter retried full collectors without backing off")
}
