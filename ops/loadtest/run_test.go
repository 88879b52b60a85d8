package loadtest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRunSmoke runs a tiny scenario end to end against the real components: an
// embedded broker, 2 collectors (one killed and restarted mid-run), a phloem
// consumer delivering to the harness's sink, and 50 real meters.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run takes ~15 s")
	}
	sc, err := LoadScenario("../../testdata/scenarios/smoke.json")
	require.NoError(t, err)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := Run(ctx, sc, Options{OutDir: out, WorkDir: t.TempDir()})
	require.NoError(t, err)

	require.Equal(t, 50, rep.Meters)
	require.Greater(t, rep.Verdict.Produced, uint64(1000), "50 meters at 5 records/s for ~9 s")
	require.Zero(t, rep.Verdict.Lost, "lost: %v", rep.Verdict.LostExamples)
	require.Equal(t, rep.Verdict.Produced, rep.Verdict.Delivered)
	require.Zero(t, rep.Verdict.Unexpected)
	require.True(t, rep.Summary.Drained)
	require.Zero(t, rep.EventFailures)
	require.Len(t, rep.Events, 2, "kill and restart")
	require.Positive(t, rep.Summary.ConnErrors, "the killed collector refused connections")
	require.True(t, rep.Pass, "SLOs: %+v", rep.SLOs)
	require.NotEmpty(t, rep.Seconds)
	require.NotEmpty(t, rep.Ticks)

	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	require.NoError(t, err)
	var back Report
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, rep.Verdict, back.Verdict)

	h, err := os.ReadFile(filepath.Join(out, "report.html"))
	require.NoError(t, err)
	html := string(h)
	require.Contains(t, html, "PASS")
	for _, title := range []string{"Records per second", "Per-collector share", "Reconnect", "Refusals", "Ingest latency", "End-to-end latency", "egress/ingress"} {
		require.Contains(t, html, title)
	}
	require.GreaterOrEqual(t, strings.Count(html, "<svg"), 7)
	require.Contains(t, html, `data-series="acked by collectors"`)
	require.Regexp(t, `<polyline [^>]*points="\d+\.\d,\d+\.\d \d`, html, "charts carry points")
	require.Contains(t, html, `id="report-data">{"scenario":"smoke"`)
	require.NotContains(t, html, "http://", "self-contained: no external resources")
	require.NotContains(t, html, "https://")
}
