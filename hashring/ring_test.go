package hashring

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewRejectsInvalidNodes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes []Node
		want  string
	}{
		{"empty name", []Node{{Name: "a"}, {Name: ""}}, "node 1 has an empty name"},
		{"duplicate", []Node{{Name: "a"}, {Name: "b"}, {Name: "a"}}, `duplicate node name "a"`},
		{"negative", []Node{{Name: "a", Weight: -1}}, `node "a" has negative weight -1`},
		{"NaN", []Node{{Name: "a", Weight: math.NaN()}}, `node "a" has weight NaN`},
		{"+Inf", []Node{{Name: "a", Weight: math.Inf(1)}}, `node "a" has weight +Inf`},
		{"-Inf", []Node{{Name: "a", Weight: math.Inf(-1)}}, `node "a" has weight -Inf`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(1, tc.nodes)
			require.ErrorIs(t, err, ErrInvalidNode)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestEmptyAndNilRing(t *testing.T) {
	r, err := New(7, nil)
	require.NoError(t, err)
	var nilRing *Ring
	for _, rr := range []*Ring{r, nilRing} {
		require.Equal(t, "", rr.Locate([]byte("k")))
		require.Empty(t, rr.Successors([]byte("k"), make([]string, 3)))
		require.Zero(t, rr.Len())
	}
	require.EqualValues(t, 7, r.Version())
	require.Zero(t, nilRing.Version())
}

func TestNodesSortedAndZeroWeightIsOne(t *testing.T) {
	r, err := New(1, []Node{{Name: "b", Weight: 2}, {Name: "a"}})
	require.NoError(t, err)
	require.Equal(t, []Node{{Name: "a", Weight: 1}, {Name: "b", Weight: 2}}, r.Nodes())
	// Weight 0 and weight 1 are the same membership: same table.
	r1, err := New(1, []Node{{Name: "b", Weight: 2}, {Name: "a", Weight: 1}})
	require.NoError(t, err)
	requireSameTable(t, r, r1)
}

// TestTableIsFullRendezvous checks the race build against scoring every node
// for sampled slots, for uniform and weighted rings of several sizes.
func TestTableIsFullRendezvous(t *testing.T) {
	weighted := namedNodes(37)
	for i := range weighted {
		weighted[i].Weight = 0.5 + float64(i%5)
	}
	for _, tc := range []struct {
		name  string
		nodes []Node
	}{
		{"1", namedNodes(1)}, {"10", namedNodes(10)}, {"200", namedNodes(200)},
		{"1000", namedNodes(1000)}, {"weighted37", weighted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cachedRing(t, tc.name, tc.nodes)
			for s := uint32(0); s < numSlots; s += 101 {
				require.Equal(t, r.bestAt(s), r.ownerAt(s), "slot %d", s)
			}
		})
	}
}

// TestRebuildEqualsNew: the incremental path must produce exactly the table
// a scratch build would, or processes that built their rings along different
// histories would disagree on placement.
func TestRebuildEqualsNew(t *testing.T) {
	base := namedNodes(200)
	r := cachedRing(t, "200", base)
	grown := append(namedNodes(200), Node{Name: "node-new"})
	mixed := append(without(base, 3), Node{Name: "node-heavy", Weight: 2.5})
	for _, tc := range []struct {
		name  string
		nodes []Node
	}{
		{"remove", without(base, 17)},
		{"add", grown},
		{"remove+add weighted", mixed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inc, err := r.Rebuild(2, tc.nodes)
			require.NoError(t, err)
			scratch, err := New(2, tc.nodes)
			require.NoError(t, err)
			requireSameTable(t, inc, scratch)
		})
	}
	_, err := r.Rebuild(1, base)
	require.ErrorIs(t, err, ErrStaleVersion)
}

// TestRemovalMovesOnlyRemovedNodesKeys and TestAdditionMovesOnlyToNewNode are
// the minimal-movement properties, on every table slot (exact) and on 100k
// random keys.
func TestRemovalMovesOnlyRemovedNodesKeys(t *testing.T) {
	keys := randomKeys(100_000, 1)
	for _, n := range []int{2, 10, 200} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			nodes := namedNodes(n)
			r := cachedRing(t, fmt.Sprint(n), nodes)
			for _, victim := range []int{0, n / 2, n - 1} {
				gone := nodes[victim].Name
				r2, err := r.Rebuild(2, without(nodes, victim))
				require.NoError(t, err)
				for s := range uint32(numSlots) {
					before := r.nodes[r.ownerAt(s)].Name
					after := r2.nodes[r2.ownerAt(s)].Name
					if before != gone {
						require.Equal(t, before, after, "slot %d moved although its owner stayed", s)
					}
				}
				var buf [2]string
				for _, k := range keys {
					before, after := r.Locate(k), r2.Locate(k)
					if before != gone {
						require.Equal(t, before, after)
					} else {
						// Failover order: the key lands on its second choice.
						require.Equal(t, r.Successors(k, buf[:])[1], after)
					}
				}
			}
		})
	}
}

func TestAdditionMovesOnlyToNewNode(t *testing.T) {
	keys := randomKeys(100_000, 2)
	for _, n := range []int{1, 10, 200} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			nodes := namedNodes(n)
			r := cachedRing(t, fmt.Sprint(n), nodes)
			r2, err := r.Rebuild(2, append(namedNodes(n), Node{Name: "node-added"}))
			require.NoError(t, err)
			moved := 0
			for s := range uint32(numSlots) {
				before := r.nodes[r.ownerAt(s)].Name
				after := r2.nodes[r2.ownerAt(s)].Name
				if before != after {
					require.Equal(t, "node-added", after, "slot %d moved to an old node", s)
					moved++
				}
			}
			ideal := float64(numSlots) / float64(n+1)
			require.LessOrEqual(t, float64(moved), 1.05*ideal, "slots moved on addition")
			require.GreaterOrEqual(t, float64(moved), 0.95*ideal, "new node's share")
			keysMoved := 0
			for _, k := range keys {
				if before, after := r.Locate(k), r2.Locate(k); before != after {
					require.Equal(t, "node-added", after)
					keysMoved++
				}
			}
			// The moved slot fraction above is exactly the fraction of the key
			// space that moved. A sample of 100k keys adds binomial noise
			// (sigma ~4.5% of the ideal at 200 nodes), so the key count gets
			// the same 1.05 bound plus four standard deviations.
			idealKeys := float64(len(keys)) / float64(n+1)
			require.LessOrEqual(t, float64(keysMoved), 1.05*idealKeys+4*math.Sqrt(idealKeys))
		})
	}
}

func TestSuccessorsDistinctAndOwnerFirst(t *testing.T) {
	keys := randomKeys(20_000, 3)
	for _, n := range []int{1, 3, 10, 200} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := cachedRing(t, fmt.Sprint(n), namedNodes(n))
			small := make([]string, 3)
			big := make([]string, 20) // beyond the stack selection
			for i, k := range keys {
				got := r.Successors(k, small)
				require.Len(t, got, min(3, n))
				require.Equal(t, r.Locate(k), got[0])
				requireDistinct(t, got)
				if i%50 == 0 {
					all := r.Successors(k, big)
					require.Len(t, all, min(20, n))
					require.Equal(t, got, all[:len(got)], "a longer list must extend a shorter one")
					requireDistinct(t, all)
				}
			}
		})
	}
}

func requireDistinct(t *testing.T, names []string) {
	t.Helper()
	seen := map[string]bool{}
	for _, s := range names {
		require.False(t, seen[s], "successor %q repeated in %v", s, names)
		seen[s] = true
	}
}

// TestWeights: a node's share of the table is weight/sum(weights) within 5%.
func TestWeights(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []float64
	}{
		{"1-2", []float64{1, 2, 1, 2, 1, 2, 1, 2, 1, 2}},
		{"spread", []float64{0.25, 1, 1, 3, 10, 1, 0.5, 2, 4, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := namedNodes(len(tc.weights))
			var total float64
			for i, w := range tc.weights {
				nodes[i].Weight = w
				total += w
			}
			r, err := New(1, nodes)
			require.NoError(t, err)
			counts := make([]int, len(nodes))
			for s := range uint32(numSlots) {
				counts[r.ownerAt(s)]++
			}
			for i, nd := range r.Nodes() {
				want := nd.Weight / total
				got := float64(counts[i]) / numSlots
				require.InDelta(t, 1, got/want, 0.05, "node %s weight %v: share %.4f, want %.4f", nd.Name, nd.Weight, got, want)
			}
		})
	}
}

func TestLocateAndSuccessorsDoNotAllocate(t *testing.T) {
	r := cachedRing(t, "200", namedNodes(200))
	key := []byte("meter-0001")
	var buf [3]string
	require.Zero(t, testing.AllocsPerRun(1000, func() { _ = r.Locate(key) }))
	require.Zero(t, testing.AllocsPerRun(1000, func() { _ = r.LocateString("meter-0001") }))
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = r.Successors(key, buf[:]) }))
}

func TestHolderRefusesStaleVersions(t *testing.T) {
	var h Holder
	require.Nil(t, h.Load())
	require.Equal(t, "", h.Load().Locate([]byte("k")))
	r5, err := New(5, []Node{{Name: "a"}})
	require.NoError(t, err)
	r4, err := r5.Rebuild(6, []Node{{Name: "b"}})
	require.NoError(t, err)
	require.NoError(t, h.Store(r5))
	require.Equal(t, "a", h.Load().Locate([]byte("k")))
	err = h.Store(r5)
	require.ErrorIs(t, err, ErrStaleVersion, "equal version")
	require.ErrorContains(t, err, "version 5 with version 5")
	require.NoError(t, h.Store(r4))
	require.ErrorIs(t, h.Store(r5), ErrStaleVersion, "older version")
	require.Same(t, r4, h.Load())
	require.Error(t, h.Store(nil))
}

// TestHolderConcurrentReadersAndSwaps runs readers against a writer that
// swaps rings (run with -race): readers must always see a complete ring
// whose answer is one of the live memberships.
func TestHolderConcurrentReadersAndSwaps(t *testing.T) {
	base := namedNodes(10)
	r1 := cachedRing(t, "10", base)
	r2, err := r1.Rebuild(2, without(base, 4))
	require.NoError(t, err)
	var h Holder
	require.NoError(t, h.Store(r1))
	keys := randomKeys(1000, 4)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf [2]string
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := h.Load()
				for _, k := range keys {
					owner := r.Locate(k)
					if owner == "" || r.Successors(k, buf[:])[0] != owner {
						t.Errorf("inconsistent lookup for version %d", r.Version())
						return
					}
				}
			}
		}()
	}
	// Alternate memberships with increasing versions; stale offers in
	// between must be refused without disturbing readers.
	cur := r1
	for v := uint64(3); v < 200; v++ {
		next := *r2
		if v%2 == 1 {
			next = *r1
		}
		next.version = v
		require.NoError(t, h.Store(&next))
		require.True(t, errors.Is(h.Store(cur), ErrStaleVersion))
		cur = &next
	}
	close(stop)
	wg.Wait()
}

// TestMeterPlacement is the meter's use: 1,000 meters "meter-0001".."meter-1000"
// placed by Locate on 10 collectors; when one collector is removed, no
// survivor may take more than twice its fair share (1/9) of the dead
// collector's meters.
//
// The meter asked for a per-collector peak/mean <= 1.10. No hash placement of
// 1,000 independent keys can promise that: each collector's count is
// Binomial(1000, 0.1) (sigma 9.5 meters), so the expected peak of 10 is ~116.
// Over 2,000 different collector name sets this ring gave peak/mean p50 1.15,
// p95 1.25, p99 1.30, and only 15% of the sets were <= 1.10; the ring itself
// adds nothing (its table shares at 10 nodes are within 0.3% of 1/10). So
// this test holds the bound the statistics allow, 1.25 (p95), on one fixed
// name set, and logs the figure; see the hashring report for the rest.
func TestMeterPlacement(t *testing.T) {
	collectors := make([]Node, 10)
	for i := range collectors {
		collectors[i] = Node{Name: fmt.Sprintf("collector-%d:7070", i)}
	}
	r := cachedRing(t, "collectors10", collectors)
	meters := make([][]byte, 1000)
	for i := range meters {
		meters[i] = fmt.Appendf(nil, "meter-%04d", i+1)
	}
	load := map[string]int{}
	for _, m := range meters {
		load[r.Locate(m)]++
	}
	require.Len(t, load, 10)
	peak := 0
	for _, c := range load {
		peak = max(peak, c)
	}
	t.Logf("meters per collector: %v (peak/mean %.3f)", load, float64(peak)/100)
	require.LessOrEqual(t, float64(peak)/100, 1.25)
	for dead := range collectors {
		r2, err := r.Rebuild(2, without(collectors, dead))
		require.NoError(t, err)
		took := map[string]int{}
		orphans := 0
		for _, m := range meters {
			if r.Locate(m) == collectors[dead].Name {
				orphans++
				took[r2.Locate(m)]++
			}
		}
		fair := float64(orphans) / 9
		worst := 0
		for name, c := range took {
			worst = max(worst, c)
			require.LessOrEqual(t, float64(c), 2*fair, "collector %s took %d of %d orphans of %s", name, c, orphans, collectors[dead].Name)
		}
		t.Logf("removing %s: %d orphans, largest survivor share %d (%.2f x fair)", collectors[dead].Name, orphans, worst, float64(worst)/fair)
	}
}

// A direct ring must place and order every key exactly as the table does,
// before and after a membership change.
func TestDirectMatchesTable(t *testing.T) {
	nodes := make([]Node, 12)
	for i := range nodes {
		nodes[i] = Node{Name: fmt.Sprintf("collector-%d:7070", i)}
	}
	table, err := New(1, nodes)
	require.NoError(t, err)
	direct, err := NewDirect(1, nodes)
	require.NoError(t, err)
	check := func(a, b *Ring) {
		t.Helper()
		var bufA, bufB [4]string
		for i := range 20000 {
			key := fmt.Appendf(nil, "meter-%d", i)
			require.Equal(t, a.Locate(key), b.Locate(key))
			require.Equal(t, a.LocateString(string(key)), b.Locate(key))
			require.Equal(t, a.Successors(key, bufA[:]), b.Successors(key, bufB[:]))
		}
	}
	check(table, direct)

	table2, err := table.Rebuild(2, nodes[1:])
	require.NoError(t, err)
	direct2, err := direct.Rebuild(2, nodes[1:])
	require.NoError(t, err)
	require.True(t, direct2.direct)
	check(table2, direct2)
	require.Zero(t, testing.AllocsPerRun(100, func() { direct2.Locate([]byte("meter-1")) }))
}
