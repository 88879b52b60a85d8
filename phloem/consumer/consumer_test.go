package consumer

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"phloem/phloem/control"
)

func TestDeliversToHTTPAndFile(t *testing.T) {
	e := newEnv(t)
	e.tenant("acme", 3)
	e.tenant("beta", 2)
	col := newCollector()
	srv := httpSink(t, col)
	dir := t.TempDir()
	e.putSink(control.Sink{ID: "h", Tenant: control.AllTenants, Type: control.SinkHTTP, Params: map[string]string{"url": srv.URL}})
	e.putSink(control.Sink{ID: "f", Tenant: "acme", Type: control.SinkFile, Params: map[string]string{"dir": dir}})
	e.produce("acme", 5, 0, 500)
	e.produce("beta", 5, 0, 300)

	reg := prometheus.NewRegistry()
	c := e.start(e.testConfig(), reg)
	require.Eventually(t, func() bool { return col.distinct() == 800 }, 15*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return c.Ready(e.ctx) == nil }, 5*time.Second, 10*time.Millisecond)

	// The file sink got acme's records, as NDJSON.
	require.Eventually(t, func() bool { return countFileLines(t, filepath.Join(dir, "acme")) == 500 }, 10*time.Second, 20*time.Millisecond)
	// Everything is committed once acknowledged.
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(c.metrics.recordsOut.WithLabelValues("h")) == 800 &&
			testutil.ToFloat64(c.metrics.recordsOut.WithLabelValues("f")) == 500
	}, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return e.committed(c.cfg.Group) == 800 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 800.0, testutil.ToFloat64(c.metrics.recordsIn))

	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)

	// A new tenant's topic is picked up without restart.
	e.tenant("gamma", 1)
	e.produce("gamma", 1, 0, 10)
	require.Eventually(t, func() bool { return col.distinct() == 810 }, 15*time.Second, 20*time.Millisecond)
}

func countFileLines(t *testing.T, dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, ent := range ents {
		f, err := os.Open(filepath.Join(dir, ent.Name()))
		require.NoError(t, err)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var l line
			require.NoError(t, json.Unmarshal(sc.Bytes(), &l))
			n++
		}
		require.NoError(t, f.Close())
	}
	return n
}
