package hashring

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/require"
)

// vnodeRing is the comparison peer: a plain xxhash ring with 160 virtual
// nodes per node, a separator between name and replica number, and
// collisions ordered by name. It exists only to put our figures next to it.
type vnodeRing struct {
	hashes []uint64
	owners []string
}

func newVnodeRing(nodes []Node, replicas int) *vnodeRing {
	type point struct {
		h    uint64
		name string
	}
	pts := make([]point, 0, len(nodes)*replicas)
	for _, n := range nodes {
		for v := range replicas {
			pts = append(pts, point{xxhash.Sum64String(n.Name + "\x00" + strconv.Itoa(v)), n.Name})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		return cmp.Or(cmp.Compare(a.h, b.h), cmp.Compare(a.name, b.name))
	})
	r := &vnodeRing{hashes: make([]uint64, len(pts)), owners: make([]string, len(pts))}
	for i, p := range pts {
		r.hashes[i], r.owners[i] = p.h, p.name
	}
	return r
}

func (r *vnodeRing) Locate(key []byte) string {
	h := xxhash.Sum64(key)
	i, _ := slices.BinarySearch(r.hashes, h)
	if i == len(r.hashes) {
		i = 0
	}
	return r.owners[i]
}

type locator interface{ Locate([]byte) string }

// reportRow is one line of the comparison table.
type reportRow struct {
	impl                 string
	nodes                int
	nsPerOp              float64
	peakMean, cv         float64
	addMove, addMin      float64 // moved keys ÷ N/(n+1); ÷ keys the new node took
	removeMove, remMin   float64 // moved keys ÷ N/n; ÷ keys the removed node had
	failoverShare        float64 // largest share of the removed node's keys on one survivor
	memBytes             uint64
	build, rebuild, radd time.Duration
}

// TestReport prints the measured table quoted in doc.go. It takes about a
// minute, so it runs only with PHLOEM_RING_REPORT=1:
//
//	PHLOEM_RING_REPORT=1 go test ./hashring -run TestReport -v
func TestReport(t *testing.T) {
	if os.Getenv("PHLOEM_RING_REPORT") == "" {
		t.Skip("set PHLOEM_RING_REPORT=1 to print the measured table")
	}
	keys := randomKeys(1_000_000, 42)
	var rows []reportRow
	for _, n := range []int{10, 200, 1000} {
		nodes := namedNodes(n)
		added := append(namedNodes(n), Node{Name: "node-added"})
		removed := without(nodes, n/2)
		gone := nodes[n/2].Name

		var row reportRow
		var r *Ring
		row.memBytes = heapDelta(func() any {
			start := time.Now()
			var err error
			r, err = New(1, nodes)
			require.NoError(t, err)
			row.build = time.Since(start)
			return r
		})
		var rAdd, rRem *Ring
		row.radd = minDuration(3, func() {
			var err error
			rAdd, err = r.Rebuild(2, added)
			require.NoError(t, err)
		})
		row.rebuild = minDuration(3, func() {
			var err error
			rRem, err = r.Rebuild(2, removed)
			require.NoError(t, err)
		})
		row.impl, row.nodes = "hashring (rendezvous table)", n
		measure(&row, keys, n, r, rAdd, rRem, gone)
		rows = append(rows, row)

		var vrow reportRow
		vrow.impl, vrow.nodes = "xxhash ring, 160 vnodes", n
		var vr *vnodeRing
		vrow.memBytes = heapDelta(func() any {
			start := time.Now()
			vr = newVnodeRing(nodes, 160)
			vrow.build = time.Since(start)
			return vr
		})
		vrow.rebuild = minDuration(3, func() { _ = newVnodeRing(removed, 160) })
		vrow.radd = vrow.rebuild
		measure(&vrow, keys, n, vr, newVnodeRing(added, 160), newVnodeRing(removed, 160), gone)
		rows = append(rows, vrow)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n1,000,000 random 16-byte keys; GOMAXPROCS=%d %s/%s\n", runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	b.WriteString("| impl | nodes | locate ns/op | peak/mean | CV | add: moved ÷ N/(n+1) | add: moved ÷ new node's keys | remove: moved ÷ N/n | remove: moved ÷ dead node's keys | largest share of dead node's keys on one survivor | memory/ring | New | Rebuild +1 | Rebuild -1 |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %.1f | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f | %.2f%% | %s | %s | %s | %s |\n",
			r.impl, r.nodes, r.nsPerOp, r.peakMean, r.cv, r.addMove, r.addMin, r.removeMove, r.remMin,
			100*r.failoverShare, fmtBytes(r.memBytes), r.build.Round(time.Millisecond), r.radd.Round(100*time.Microsecond), r.rebuild.Round(100*time.Microsecond))
	}
	t.Log(b.String())
}

func measure(row *reportRow, keys [][]byte, n int, base, add, rem locator, gone string) {
	owner := make([]string, len(keys))
	row.nsPerOp = math.Inf(1)
	for range 3 {
		start := time.Now()
		for i, k := range keys {
			owner[i] = base.Locate(k)
		}
		row.nsPerOp = min(row.nsPerOp, float64(time.Since(start).Nanoseconds())/float64(len(keys)))
	}
	load := map[string]int{}
	for _, o := range owner {
		load[o]++
	}
	mean := float64(len(keys)) / float64(n)
	var peak, ss float64
	for _, c := range load {
		peak = max(peak, float64(c))
		ss += (float64(c) - mean) * (float64(c) - mean)
	}
	ss += float64(n-len(load)) * mean * mean // nodes with no keys
	row.peakMean, row.cv = peak/mean, math.Sqrt(ss/float64(n))/mean

	movedAdd, newKeys := 0, 0
	for i, k := range keys {
		a := add.Locate(k)
		if a != owner[i] {
			movedAdd++
		}
		if a == "node-added" {
			newKeys++
		}
	}
	row.addMove = float64(movedAdd) / (float64(len(keys)) / float64(n+1))
	row.addMin = float64(movedAdd) / float64(newKeys)

	movedRem, deadKeys := 0, 0
	took := map[string]int{}
	for i, k := range keys {
		after := rem.Locate(k)
		if after != owner[i] {
			movedRem++
		}
		if owner[i] == gone {
			deadKeys++
			took[after]++
		}
	}
	worst := 0
	for _, c := range took {
		worst = max(worst, c)
	}
	row.removeMove = float64(movedRem) / (float64(len(keys)) / float64(n))
	row.remMin = float64(movedRem) / float64(deadKeys)
	row.failoverShare = float64(worst) / float64(deadKeys)
}

// heapDelta returns the live heap retained by the value build returns.
func heapDelta(build func() any) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := build()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(v)
	return after.HeapAlloc - before.HeapAlloc
}

func minDuration(runs int, fn func()) time.Duration {
	best := time.Duration(math.MaxInt64)
	for range runs {
		start := time.Now()
		fn()
		best = min(best, time.Since(start))
	}
	return best
}

func fmtBytes(b uint64) string {
	return fmt.Sprintf("%d (%.2f MiB)", b, float64(b)/(1<<20))
}
