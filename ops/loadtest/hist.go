package loadtest

import (
	"math"
	"sync/atomic"
	"time"
)

// Histogram is a lock-free log-bucketed latency histogram: buckets grow by 5%
// from 100µs to ~15 min, so a percentile is exact to within 5%.
type Histogram struct {
	b [histBuckets]atomic.Uint64
}

const (
	histMin     = 100 * time.Microsecond
	histGrowth  = 1.05
	histBuckets = 330
)

var histLogGrowth = math.Log(histGrowth)

func histIndex(d time.Duration) int {
	if d <= histMin {
		return 0
	}
	i := int(math.Log(float64(d)/float64(histMin))/histLogGrowth) + 1
	if i >= histBuckets {
		i = histBuckets - 1
	}
	return i
}

// histUpper is the upper bound of bucket i.
func histUpper(i int) time.Duration {
	return time.Duration(float64(histMin) * math.Pow(histGrowth, float64(i)))
}

// Observe adds one sample.
func (h *Histogram) Observe(d time.Duration) { h.b[histIndex(d)].Add(1) }

// Snapshot copies the counts.
func (h *Histogram) Snapshot() HistSnap {
	var s HistSnap
	for i := range h.b {
		s[i] = h.b[i].Load()
	}
	return s
}

// HistSnap is a copy of a Histogram's counts.
type HistSnap [histBuckets]uint64

// Sub returns s minus prev (the samples observed between two snapshots).
func (s HistSnap) Sub(prev HistSnap) HistSnap {
	for i := range s {
		s[i] -= prev[i]
	}
	return s
}

// Count returns the number of samples.
func (s *HistSnap) Count() uint64 {
	var n uint64
	for _, c := range s {
		n += c
	}
	return n
}

// Quantile returns the q-quantile (0..1) in milliseconds, or 0 without samples.
func (s *HistSnap) Quantile(q float64) float64 {
	n := s.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var acc uint64
	for i, c := range s {
		acc += c
		if acc >= rank {
			return float64(histUpper(i)) / float64(time.Millisecond)
		}
	}
	return float64(histUpper(histBuckets-1)) / float64(time.Millisecond)
}
