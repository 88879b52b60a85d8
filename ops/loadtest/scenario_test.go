package loadtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const minimal = `{"duration":"10s","collectors":{"count":2},"meters":{"count":10}}`

func TestParseScenarioDefaults(t *testing.T) {
	sc, err := ParseScenario([]byte(minimal))
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, sc.Duration.D)
	require.Equal(t, 60*time.Second, sc.DrainTimeout.D)
	require.Equal(t, int32(6), sc.Kafka.Partitions)
	require.Equal(t, 1, sc.Phloems.Count)
	require.Equal(t, ArrivalAllAtOnce, sc.Meters.Arrival.Kind)
	require.Equal(t, Dist{Dist: DistFixed, Value: 200}, sc.Meters.RecordSize)
	require.Equal(t, Dist{Dist: DistFixed, Value: 1}, sc.Meters.Rate)
	require.Equal(t, DiscoveryRing, sc.Meters.Discovery)
	require.NotNil(t, sc.SLO.MaxLost)
	require.Zero(t, *sc.SLO.MaxLost)
}

func TestParseScenarioDurationForms(t *testing.T) {
	sc, err := ParseScenario([]byte(`{"duration":2.5,"collectors":{"count":1},"meters":{"count":1,"linger":"250ms"}}`))
	require.NoError(t, err)
	require.Equal(t, 2500*time.Millisecond, sc.Duration.D)
	require.Equal(t, 250*time.Millisecond, sc.Meters.Linger.D)
}

// Every error must name the field (JSON path) so the operator knows what to fix.
func TestParseScenarioErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name, json, want string
	}{
		{"bad duration", `{"duration":"ten","collectors":{"count":1},"meters":{"count":1}}`, "field duration"},
		{"missing duration", `{"collectors":{"count":1},"meters":{"count":1}}`, "field duration: required"},
		{"unknown field", `{"duration":"1s","colectors":{"count":1}}`, `unknown field "colectors"`},
		{"wrong type", `{"duration":"1s","collectors":{"count":"two"},"meters":{"count":1}}`, "field collectors.count"},
		{"no collectors", `{"duration":"1s","meters":{"count":1}}`, "field collectors.count"},
		{"no meters", `{"duration":"1s","collectors":{"count":1}}`, "field meters.count"},
		{"bad arrival", `{"duration":"1s","collectors":{"count":1},"meters":{"count":1,"arrival":{"kind":"burst"}}}`, "field meters.arrival.kind"},
		{"ramp without over", `{"duration":"1s","collectors":{"count":1},"meters":{"count":1,"arrival":{"kind":"ramp"}}}`, "field meters.arrival.over"},
		{"trace without file", `{"duration":"1s","collectors":{"count":1},"meters":{"count":1,"arrival":{"kind":"trace"}}}`, "field meters.arrival.trace"},
		{"bad dist", `{"duration":"1s","collectors":{"count":1},"meters":{"count":1,"rate":{"dist":"normal"}}}`, "field meters.rate.dist"},
		{"uniform inverted", `{"duration":"1s","collectors":{"count":1},"meters":{"count":1,"record_size":{"dist":"uniform","min":500,"max":100}}}`, "field meters.record_size.max"},
		{"size too small", `{"duration":"1s","collectors":{"count":1},"meters":{"count":1,"record_size":{"dist":"fixed","value":10}}}`, "field meters.record_size.value"},
		{"bad compression", `{"duration":"1s","collectors":{"count":1},"meters":{"count":1,"compression":"lz4"}}`, "field meters.compression"},
		{"too many private transports", `{"duration":"1s","collectors":{"count":1},"meters":{"count":5000}}`, "field meters.shared_transport"},
		{"dns_first without dns", `{"duration":"1s","collectors":{"count":2},"meters":{"count":1,"dns_first":0}}`, "field meters.dns_first"},
		{"unknown action", `{"duration":"10s","collectors":{"count":1},"meters":{"count":1},"events":[{"at":"1s","action":"explode"}]}`, "field events[0].action"},
		{"kill without collector", `{"duration":"10s","collectors":{"count":1},"meters":{"count":1},"events":[{"at":"1s","action":"kill_collector"}]}`, "field events[0].collector"},
		{"kill out of range", `{"duration":"10s","collectors":{"count":2},"meters":{"count":1},"events":[{"at":"1s","action":"kill_collector","collector":5}]}`, "field events[0].collector"},
		{"event after end", `{"duration":"10s","collectors":{"count":1},"meters":{"count":1},"events":[{"at":"11s","action":"add_collector"}]}`, "field events[0].at"},
		{"broker stop without for", `{"duration":"10s","collectors":{"count":1},"meters":{"count":1},"events":[{"at":"1s","action":"stop_broker"}]}`, "field events[1-1].for"},
		{"bad event duration", `{"duration":"10s","collectors":{"count":1},"meters":{"count":1},"events":[{"at":"soon","action":"add_collector"}]}`, "field events[0].at"},
		{"rolling down > every", `{"duration":"60s","collectors":{"count":2},"meters":{"count":1},"events":[{"at":"1s","action":"rolling_restart","every":"2s","down":"3s"}]}`, "field events[0].down"},
		{"negative slo", `{"duration":"1s","collectors":{"count":1},"meters":{"count":1},"slo":{"max_duplicates":-1}}`, "field slo.max_duplicates"},
		{"share below 1", `{"duration":"1s","collectors":{"count":1},"meters":{"count":1},"slo":{"max_share_peak_to_mean":0.5}}`, "field slo.max_share_peak_to_mean"},
		{"external without token", `{"duration":"1s","collectors":{"external":["a:1"]},"meters":{"count":1}}`, "field collectors.token"},
		{"syntax", `{"duration":"1s",}`, "invalid JSON at byte"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseScenario([]byte(tc.json))
			require.Error(t, err)
			want := strings.ReplaceAll(tc.want, "[1-1]", "[0]")
			require.Contains(t, err.Error(), want)
		})
	}
}

func TestLoadScenarioResolvesTrace(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "traces"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "scenarios"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "traces", "t.csv"), []byte("second,arrivals\n0,5\n2,5\n"), 0o644))
	p := filepath.Join(dir, "scenarios", "s.json")
	require.NoError(t, os.WriteFile(p, []byte(`{"duration":"5s","collectors":{"count":1},"meters":{"arrival":{"kind":"trace","trace":"../traces/t.csv"}}}`), 0o644))
	sc, err := LoadScenario(p)
	require.NoError(t, err)
	require.Equal(t, "s", sc.Name)
	require.Equal(t, filepath.Join(dir, "traces", "t.csv"), sc.TracePath())

	require.NoError(t, os.WriteFile(p, []byte(`{"duration":"5s","collectors":{"count":1},"meters":{"arrival":{"kind":"trace","trace":"../traces/missing.csv"}}}`), 0o644))
	_, err = LoadScenario(p)
	require.ErrorContains(t, err, "field meters.arrival.trace")
}

// The scenarios shipped in testdata must all parse.
func TestShippedScenariosParse(t *testing.T) {
	files, err := filepath.Glob("../../testdata/scenarios/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		_, err := LoadScenario(f)
		require.NoError(t, err, f)
	}
}
