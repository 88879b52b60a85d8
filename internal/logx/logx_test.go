package logx

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestThrottledSuppressesAndCounts(t *testing.T) {
	var buf bytes.Buffer
	th := NewThrottled(slog.New(slog.NewTextHandler(&buf, nil)), time.Minute)
	now := time.Unix(1000, 0)
	th.now = func() time.Time { return now }

	for range 100 {
		th.Warn("dial", "cannot dial", "addr", "127.0.0.1:1")
	}
	th.Warn("other", "different key")
	require.Equal(t, 2, strings.Count(buf.String(), "\n"), buf.String())

	now = now.Add(time.Minute)
	th.Warn("dial", "cannot dial", "addr", "127.0.0.1:1")
	require.Contains(t, buf.String(), "suppressed_similar=99")
}

func TestThrottledBoundsKeys(t *testing.T) {
	th := NewThrottled(nil, time.Hour)
	for i := range maxKeys * 3 {
		th.Info(string(rune(i)), "x")
	}
	require.LessOrEqual(t, len(th.entries), maxKeys)
}
