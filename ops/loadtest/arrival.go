package loadtest

import (
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// Arrival kinds.
const (
	ArrivalAllAtOnce = "all_at_once"
	ArrivalRamp      = "ramp"
	ArrivalTrace     = "trace"
)

// ArrivalTimes returns when each meter starts, relative to the start of the run,
// sorted ascending; len(result) is the meter count (for a trace with count 0,
// the trace's total). A ramp spreads n arrivals evenly over [0, over); a trace
// scales its per-second counts to n (largest remainder, so the total is exact)
// and spreads each second's arrivals uniformly at random inside that second.
// start shifts every arrival.
func ArrivalTimes(kind string, n int, start, over time.Duration, trace []TracePoint, rnd *rand.Rand) []time.Duration {
	switch kind {
	case ArrivalRamp:
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = start + time.Duration(float64(over)*float64(i)/float64(n))
		}
		return out
	case ArrivalTrace:
		counts := scaleTrace(trace, n)
		var out []time.Duration
		for i, p := range trace {
			for j := 0; j < counts[i]; j++ {
				off := time.Duration(rnd.Float64() * float64(time.Second))
				out = append(out, start+time.Duration(p.Second)*time.Second+off)
			}
		}
		sort.Slice(out, func(a, b int) bool { return out[a] < out[b] })
		return out
	default:
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = start
		}
		return out
	}
}

// scaleTrace returns per-point counts summing to n (or the trace total when n is 0).
func scaleTrace(trace []TracePoint, n int) []int {
	total := 0
	for _, p := range trace {
		total += p.Arrivals
	}
	counts := make([]int, len(trace))
	if n == 0 || n == total {
		for i, p := range trace {
			counts[i] = p.Arrivals
		}
		return counts
	}
	type rem struct {
		i int
		r float64
	}
	rems := make([]rem, len(trace))
	got := 0
	for i, p := range trace {
		exact := float64(p.Arrivals) * float64(n) / float64(total)
		counts[i] = int(math.Floor(exact))
		got += counts[i]
		rems[i] = rem{i, exact - math.Floor(exact)}
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r > rems[b].r })
	for k := 0; got < n; k++ {
		counts[rems[k%len(rems)].i]++
		got++
	}
	return counts
}
