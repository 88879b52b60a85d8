package meter

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"phloem/hashring"
)

func ringOf(t testing.TB, version uint64, names []string) *hashring.Ring {
	t.Helper()
	ns := make([]hashring.Node, len(names))
	for i, n := range names {
		ns[i] = hashring.Node{Name: n}
	}
	r, err := hashring.New(version, ns)
	require.NoError(t, err)
	return r
}

// TestPlacementBalanceAndRemoval measures PURE consistent hashing (the ring
// order alone, no load bound): 1,000 meters over 10 collectors; one collector
// removed, its meters spread over the others with no survivor taking more than
// 2x its fair share of them, and no other meter moves. Pure hashing cannot meet
// the peak/mean <= 1.10 (sampling noise, below): the acceptance check of
// that is collector.TestBoundedLoadPlacement, where collectors enforce
// Config.MaxMeters and meters follow X-Phloem-Full to their next ring successor
// (consistent hashing with bounded loads).
func TestPlacementBalanceAndRemoval(t *testing.T) {
	const meters, collectors = 1000, 10
	var names []string
	for i := range collectors {
		names = append(names, fmt.Sprintf("collector-%d.phloem.internal:7070", i))
	}
	r := ringOf(t, 1, names)
	owner := make([]string, meters)
	load := map[string]int{}
	for i := range meters {
		p := Placement(r, fmt.Sprintf("host-%04d.customer.example", i), nil)
		require.Len(t, p, collectors)
		owner[i] = p[0]
		load[p[0]]++
	}
	peak := 0
	for _, n := range load {
		peak = max(peak, n)
	}
	mean := float64(meters) / collectors
	ratio := float64(peak) / mean
	t.Logf("1000 meters (host-0000..host-0999) over 10 collectors: loads %v, peak/mean = %.3f", sortedLoads(load), ratio)
	// 1,000 independent placements over 10 bins carry binomial noise (sigma 9.5
	// meters per collector): even a perfect uniform assignment exceeds 1.10 in
	// about three samples out of four (see TestPlacementSamplingFloor). The
	// placement's own imbalance is what the code controls; it is checked there.
	// Here: the sample stays within 4 sigma.
	require.LessOrEqual(t, ratio, 1.40)

	// Remove the most loaded collector (the worst case for its neighbours).
	var victim string
	for n, l := range load {
		if l == peak {
			victim = n
		}
	}
	rest := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == victim })
	r2, err := r.Rebuild(2, nodesOf(rest))
	require.NoError(t, err)
	took := map[string]int{}
	moved := 0
	for i := range meters {
		id := fmt.Sprintf("host-%04d.customer.example", i)
		p := Placement(r2, id, nil)
		if owner[i] != victim {
			require.Equal(t, owner[i], p[0], "meter %s moved although its collector stayed", id)
			continue
		}
		moved++
		took[p[0]]++
		// Failover order and new placement agree: the new owner was the first successor.
		require.Equal(t, Placement(r, id, nil)[1], p[0])
	}
	fair := float64(moved) / float64(collectors-1)
	worst := 0
	for _, n := range took {
		worst = max(worst, n)
	}
	t.Logf("removed %s: %d meters moved, spread %v, fair share %.1f, worst survivor took %d (%.2fx fair)",
		victim, moved, sortedLoads(took), fair, worst, float64(worst)/fair)
	require.Equal(t, peak, moved)
	require.LessOrEqual(t, float64(worst), 2*fair)
}

func nodesOf(names []string) []hashring.Node {
	ns := make([]hashring.Node, len(names))
	for i, n := range names {
		ns[i] = hashring.Node{Name: n}
	}
	return ns
}

func sortedLoads(m map[string]int) []int {
	var out []int
	for _, v := range m {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// TestPlacementSamplingFloor separates the ring's imbalance from the sampling
// noise of 1,000 meters. (1) With 1,000,000 meter ids the per-collector share
// peak/mean is within 1.02: the placement itself is balanced. (2) Over many random
// fleets of 1,000 meter ids, the distribution of peak/mean matches that of a
// perfect uniform random assignment: nothing in the placement makes it worse.
func TestPlacementSamplingFloor(t *testing.T) {
	const collectors = 10
	var names []string
	for i := range collectors {
		names = append(names, fmt.Sprintf("collector-%d.phloem.internal:7070", i))
	}
	r := ringOf(t, 1, names)
	idx := map[string]int{}
	for i, n := range names {
		idx[n] = i
	}
	rnd := rand.New(rand.NewPCG(7, 11))
	var key [16]byte
	randomKey := func() []byte {
		binary.LittleEndian.PutUint64(key[:], rnd.Uint64())
		binary.LittleEndian.PutUint64(key[8:], rnd.Uint64())
		return key[:]
	}
	peakMean := func(counts []int, n int) float64 {
		return float64(slices.Max(counts)) / (float64(n) / collectors)
	}
	big := make([]int, collectors)
	const many = 1_000_000
	for range many {
		big[idx[r.Locate(randomKey())]]++
	}
	bigRatio := peakMean(big, many)
	t.Logf("1,000,000 meter ids: peak/mean %.4f", bigRatio)
	require.LessOrEqual(t, bigRatio, 1.02)

	const fleets, fleet = 1000, 1000
	var ringSum, idealSum float64
	var ringOK, idealOK int
	for range fleets {
		rc, ic := make([]int, collectors), make([]int, collectors)
		for range fleet {
			rc[idx[r.Locate(randomKey())]]++
			ic[rnd.IntN(collectors)]++
		}
		rr, ir := peakMean(rc, fleet), peakMean(ic, fleet)
		ringSum += rr
		idealSum += ir
		if rr <= 1.10 {
			ringOK++
		}
		if ir <= 1.10 {
			idealOK++
		}
	}
	t.Logf("%d random fleets of 1,000 meters: mean peak/mean %.3f (perfect uniform assignment %.3f); "+
		"fleets within 1.10: %.1f%% (perfect uniform %.1f%%)",
		fleets, ringSum/fleets, idealSum/fleets, 100*float64(ringOK)/fleets, 100*float64(idealOK)/fleets)
	require.InDelta(t, idealSum/fleets, ringSum/fleets, 0.01)
}
