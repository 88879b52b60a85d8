package loadtest

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseTrace(t *testing.T) {
	tr, err := ParseTrace(strings.NewReader("# comment\nsecond,arrivals\n0, 10\n\n3,0\n4,7\n"))
	require.NoError(t, err)
	require.Equal(t, []TracePoint{{0, 10}, {3, 0}, {4, 7}}, tr)
}

func TestParseTraceErrors(t *testing.T) {
	cases := map[string]string{
		"0,1,2\n":        "line 1: want 2 columns",
		"x,1\n":          "line 1: column second",
		"0,-1\n":         "line 1: column arrivals",
		"0,1\n0,2\n":     "line 2: column second: 0 does not increase",
		"0,0\n1,0\n":     "no arrivals",
		"":               "no arrivals",
		"0,1\n-3,2\n":    "line 2: column second",
		"0,1\nfoo,bar\n": "line 2",
	}
	for in, want := range cases {
		_, err := ParseTrace(strings.NewReader(in))
		require.ErrorContains(t, err, want, "input %q", in)
	}
}

func TestShippedTracesParse(t *testing.T) {
	tr, err := LoadTrace("../../testdata/traces/spike.csv")
	require.NoError(t, err)
	total := 0
	for _, p := range tr {
		total += p.Arrivals
	}
	require.GreaterOrEqual(t, total, 5000)
	require.LessOrEqual(t, tr[len(tr)-1].Second, 4, "the spike must arrive within 5 s")
}

func TestArrivalAllAtOnce(t *testing.T) {
	a := ArrivalTimes(ArrivalAllAtOnce, 5, time.Second, 0, nil, nil)
	require.Equal(t, []time.Duration{time.Second, time.Second, time.Second, time.Second, time.Second}, a)
}

func TestArrivalRamp(t *testing.T) {
	a := ArrivalTimes(ArrivalRamp, 4, 0, 2*time.Second, nil, nil)
	require.Equal(t, []time.Duration{0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond}, a)
}

func TestArrivalTrace(t *testing.T) {
	tr := []TracePoint{{0, 10}, {2, 30}}
	rnd := rand.New(rand.NewPCG(1, 2))
	a := ArrivalTimes(ArrivalTrace, 0, 0, 0, tr, rnd)
	require.Len(t, a, 40)
	perSec := map[int]int{}
	for i, d := range a {
		if i > 0 {
			require.GreaterOrEqual(t, d, a[i-1], "sorted")
		}
		perSec[int(d/time.Second)]++
	}
	require.Equal(t, map[int]int{0: 10, 2: 30}, perSec)

	// Scaled to 100 meters: same shape, exact total.
	a = ArrivalTimes(ArrivalTrace, 100, 0, 0, tr, rnd)
	require.Len(t, a, 100)
	perSec = map[int]int{}
	for _, d := range a {
		perSec[int(d/time.Second)]++
	}
	require.Equal(t, map[int]int{0: 25, 2: 75}, perSec)

	// Rounding: 3 points of 1 scaled to 2 still sums to 2.
	a = ArrivalTimes(ArrivalTrace, 2, 0, 0, []TracePoint{{0, 1}, {1, 1}, {2, 1}}, rnd)
	require.Len(t, a, 2)
}

func TestDistSample(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	require.Equal(t, 7.0, Dist{Dist: DistFixed, Value: 7}.Sample(rnd))
	var sum float64
	for i := 0; i < 10000; i++ {
		v := Dist{Dist: DistUniform, Min: 10, Max: 20}.Sample(rnd)
		require.True(t, v >= 10 && v <= 20)
		e := Dist{Dist: DistExponential, Mean: 100, Max: 300}.Sample(rnd)
		require.True(t, e >= 0 && e <= 300)
		sum += Dist{Dist: DistExponential, Mean: 100}.Sample(rnd)
	}
	require.InDelta(t, 100, sum/10000, 5)
}

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Observe(time.Duration(i) * time.Millisecond)
	}
	s := h.Snapshot()
	require.Equal(t, uint64(1000), s.Count())
	require.InEpsilon(t, 500, s.Quantile(0.5), 0.06)
	require.InEpsilon(t, 990, s.Quantile(0.99), 0.06)
	before := s
	h.Observe(5 * time.Second)
	d := h.Snapshot().Sub(before)
	require.Equal(t, uint64(1), d.Count())
	require.InEpsilon(t, 5000, d.Quantile(0.99), 0.06)
	var empty HistSnap
	require.Zero(t, empty.Quantile(0.99))
}

func TestAppendPayload(t *testing.T) {
	p := appendPayload(nil, "lt-00001", 42, 1700000000000000000, 200)
	require.Len(t, p, 200)
	require.True(t, strings.HasPrefix(string(p), `{"m":"lt-00001","s":42,"t":1700000000000000000,"p":"xx`))
	small := appendPayload(nil, "lt-00001", 42, 1, minRecordSize)
	require.LessOrEqual(t, len(small), minRecordSize)
}
