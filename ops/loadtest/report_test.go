package loadtest

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func ticksOf(counts []uint64) []Tick {
	out := make([]Tick, len(counts))
	for i, c := range counts {
		out[i] = Tick{T: float64(i+1) / 10, Retries: c, Attempts: c}
	}
	return out
}

// A herd that failed together and retries without jitter comes back in waves
// base·2^n apart; with full jitter the same retries are spread. The burst ratio
// must tell them apart.
func TestReconnectBurst(t *testing.T) {
	const meters = 3000
	lockstep := make([]uint64, 200)
	spread := make([]uint64, 200)
	rnd := rand.New(rand.NewPCG(1, 1))
	for m := 0; m < meters; m++ {
		// Buckets: the fleet fails within 300 ms of 1 s (as measured in the herd
		// scenario), base 100 ms.
		at, ceil := 10.0+rnd.Float64()*3, 1.0
		atJ := at
		for n := 0; n < 5; n++ {
			at += ceil
			atJ += rnd.Float64() * ceil
			if int(at) < len(lockstep) {
				lockstep[int(at)]++
			}
			if int(atJ) < len(spread) {
				spread[int(atJ)]++
			}
			ceil *= 2
		}
	}
	hr, _ := reconnectBurst(ticksOf(lockstep))
	jr, _ := reconnectBurst(ticksOf(spread))
	t.Logf("burst ratio: lockstep %.2f, jittered %.2f", hr, jr)
	require.Greater(t, hr, 6.0, "lockstep waves")
	require.Less(t, jr, 6.0, "jittered")

	// Below burstMinRetries nothing counts.
	r, _ := reconnectBurst(ticksOf([]uint64{0, 0, 50, 0, 0}))
	require.Zero(t, r)
}

func TestSummarizeAndEvaluate(t *testing.T) {
	secs := []Second{
		{T: 1, Acked: 100, Requests: 50, OK: 40, S503: 10, Answered: []uint64{30, 20}, SharePeakToMean: 1.2, IngressBytes: 1000, EgressBytes: 1000},
		{T: 2, Acked: 300, Requests: 60, OK: 60, Answered: []uint64{20, 40}, SharePeakToMean: 1.33, IngressBytes: 1000, EgressBytes: 3000, Ratio: 3},
		{T: 3, Acked: 50, Answered: []uint64{0, 0}}, // drain
	}
	ticks := ticksOf([]uint64{0, 4, 0, 2, 0})
	var ing, e2e Histogram
	s := summarize(secs, ticks, 2, ing.Snapshot(), e2e.Snapshot())
	require.Equal(t, 200.0, s.RecordsPerSecMean)
	require.Equal(t, uint64(300), s.RecordsPerSecPeak)
	require.Equal(t, uint64(10), s.S503)
	require.Equal(t, 1.33, s.SharePeakToMean)
	require.InDeltaSlice(t, []float64{50.0 / 110, 60.0 / 110}, s.ShareTotal, 1e-9)
	require.Equal(t, uint64(4), s.ReconnectPeakPer100ms)
	require.InDelta(t, 2.0, s.ReconnectMeanPer100ms, 1e-9) // 6 retries over 3 buckets
	require.InDelta(t, 2.0, s.ReconnectPeakToMean, 1e-9)
	require.Equal(t, 2.0, s.EgressIngressRatio)
	require.Equal(t, 3.0, s.RatioMax)

	zero, two := int64(0), int64(2)
	slo := SLO{MaxLost: &zero, MaxDuplicates: &two, MaxSharePeakToMean: 1.3, MinRecordsPerSec: 150}
	r := &Report{Summary: s, Verdict: Verdict{Lost: 0, Duplicates: 3}}
	res := evaluate(slo, r)
	got := map[string]bool{}
	for _, x := range res {
		got[x.Name] = x.Pass
	}
	require.Equal(t, map[string]bool{"lost": true, "duplicates": false, "share_peak_to_mean": false,
		"records_per_sec_mean": true, "unexpected_records": true}, got)
}

func TestWindowShare(t *testing.T) {
	even := shareSample{ok: 300, up: 3, span: 1}
	even.acc[0], even.acc[1], even.acc[2] = 100, 100, 100
	require.InDelta(t, 1.0, windowShare([]shareSample{even, even}, 3), 1e-9)

	// All load on c0 (a meter fleet that follows DNS order): 3x the mean.
	skew := shareSample{ok: 300, up: 3, span: 1}
	skew.acc[0] = 300
	require.InDelta(t, 3.0, windowShare([]shareSample{skew, skew, skew}, 3), 1e-9)

	// One collector down for the whole window: the mean is over the 2 running.
	two := shareSample{ok: 300, up: 2, span: 1}
	two.acc[0], two.acc[2] = 150, 150
	require.InDelta(t, 1.0, windowShare([]shareSample{two}, 3), 1e-9)

	// Too few requests, or too many refusals: not judged.
	few := shareSample{ok: 30, up: 3, span: 1}
	few.acc[0] = 30
	require.Zero(t, windowShare([]shareSample{few}, 3))
	refusing := skew
	refusing.refused = 100
	require.Zero(t, windowShare([]shareSample{refusing}, 3))
}
