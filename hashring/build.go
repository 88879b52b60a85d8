package hashring

import (
	"fmt"
	"math"
)

// Building the table: every slot is owned by the node that ranks it best
// under Ring.less (rendezvous hashing over slots). Scoring every node for
// every slot would cost numSlots*n permutation evaluations (400 million at 200
// nodes); instead buildScratch runs a race: each node enumerates only its
// best-ranked slots (perm.slot), a slot keeps the best claim it receives, and
// the few slots nobody claimed, or whose best claim might be beaten by a claim
// nobody made, are scored in full. The result is exactly the full-scoring
// result whatever the enumeration depth; the depth only trades claims
// (c*numSlots random writes) against full scorings (n*numSlots*e^-c).

// raceDepth returns c, the expected number of claims per slot.
func raceDepth(n int) float64 { return math.Log(float64(n)) + 1 }

func (r *Ring) buildScratch() {
	n := len(r.nodes)
	if n == 0 {
		return
	}
	owners := make([]uint16, numSlots)
	if r.uniform {
		r.raceUniform(owners)
	} else {
		r.raceWeighted(owners)
	}
	r.setTable(owners)
}

// Claims are not applied as they are generated: consecutive claims of one
// node hit random slots, and at ~13 million claims over an 8-16 MiB array that
// is a cache miss each (~70 ns). They are appended instead to one of
// claimBuckets buffers by slot range and applied a bucket at a time, so the
// applied range (64K slots) stays in the CPU cache. Buffers are flushed every
// claimBatch claims to bound the build's memory.
const (
	claimBucketShift = 16
	claimBuckets     = (numSlots + 1<<claimBucketShift - 1) >> claimBucketShift
	claimBatch       = 1 << 20
)

// claimer buffers packed claims (low slot bits << 40 | payload) per bucket.
type claimer struct {
	buf   [claimBuckets][]uint64
	n     int
	apply func(s uint32, payload uint64)
}

func newClaimer(apply func(s uint32, payload uint64)) *claimer {
	c := &claimer{apply: apply}
	for b := range c.buf {
		c.buf[b] = make([]uint64, 0, 2*claimBatch/claimBuckets)
	}
	return c
}

// add queues a claim; payload must fit in 40 bits.
func (c *claimer) add(s uint32, payload uint64) {
	b := s >> claimBucketShift
	c.buf[b] = append(c.buf[b], uint64(s&(1<<claimBucketShift-1))<<40|payload)
	if c.n++; c.n >= claimBatch {
		c.flush()
	}
}

func (c *claimer) flush() {
	for b := range c.buf {
		base := uint32(b) << claimBucketShift
		for _, e := range c.buf[b] {
			c.apply(base|uint32(e>>40), e&(1<<40-1))
		}
		c.buf[b] = c.buf[b][:0]
	}
	c.n = 0
}

// raceUniform: with equal weights the order is (rank, index), which packs
// into one integer rank*n+index (< 2^32: depth*n is about (ln n + 1)*numSlots),
// so a slot's best claim is a plain minimum.
func (r *Ring) raceUniform(owners []uint16) {
	n := len(r.nodes)
	depth := uint32(min(float64(numSlots), math.Ceil(raceDepth(n)*numSlots/float64(n))))
	best := make([]uint32, numSlots)
	for s := range best {
		best[s] = math.MaxUint32
	}
	c := newClaimer(func(s uint32, v uint64) {
		if uint32(v) < best[s] {
			best[s] = uint32(v)
		}
	})
	for i := range r.perms {
		p := &r.perms[i]
		for k := range depth {
			c.add(p.slot(k), uint64(k)*uint64(n)+uint64(i))
		}
	}
	c.flush()
	for s, v := range best {
		if v == math.MaxUint32 {
			// Every node ranks this slot >= depth: nobody claimed it.
			owners[s] = uint16(r.bestAt(uint32(s)))
		} else {
			// Unvisited claims have rank >= depth > this one's: it wins.
			owners[s] = uint16(v % uint32(n))
		}
	}
}

// raceWeighted: node i enumerates the ranks whose score is about <= a common
// threshold, so heavier nodes enumerate more. A slot's best claim is certain
// only if its score is below the lowest score any node did not enumerate.
func (r *Ring) raceWeighted(owners []uint16) {
	n := len(r.nodes)
	var total float64
	for _, nd := range r.nodes {
		total += nd.Weight
	}
	threshold := raceDepth(n) / total
	depths := make([]uint32, n)
	var maxDepth uint32
	bound := math.Inf(1) // lowest score of any rank not enumerated
	for i, nd := range r.nodes {
		d := math.Ceil(numSlots * -math.Expm1(-threshold*nd.Weight))
		if !(d >= 0) { // NaN from 0*Inf etc.: enumerate nothing
			d = 0
		}
		depths[i] = uint32(min(d, numSlots))
		maxDepth = max(maxDepth, depths[i])
		if depths[i] < numSlots {
			bound = min(bound, expScore(depths[i])/nd.Weight)
		}
	}
	allVisited := math.IsInf(bound, 1) // every node enumerated every rank
	// fcache[k] == expScore(k): computed the same way, so identical values.
	fcache := make([]float64, maxDepth)
	for k := range fcache {
		fcache[k] = expScore(uint32(k))
	}
	bestScore := make([]float64, numSlots)
	bestKey := make([]uint64, numSlots) // rank<<16 | index: ties by rank, then name
	for s := range bestScore {
		bestScore[s] = math.Inf(1)
		bestKey[s] = math.MaxUint64
	}
	c := newClaimer(func(s uint32, v uint64) {
		sc := fcache[v>>16] / r.nodes[v&0xffff].Weight
		if sc < bestScore[s] || (sc == bestScore[s] && v < bestKey[s]) {
			bestScore[s], bestKey[s] = sc, v
		}
	})
	for i := range r.perms {
		p := &r.perms[i]
		for k := range depths[i] {
			c.add(p.slot(k), uint64(k)<<16|uint64(i))
		}
	}
	c.flush()
	for s := range owners {
		if bestKey[s] != math.MaxUint64 && (allVisited || bestScore[s] < bound) {
			owners[s] = uint16(bestKey[s] & 0xffff)
		} else {
			owners[s] = uint16(r.bestAt(uint32(s)))
		}
	}
}

// bestAt scores every node for slot s and returns the winner's index.
func (r *Ring) bestAt(s uint32) int {
	best := r.candidate(0, s)
	for i := 1; i < len(r.nodes); i++ {
		if c := r.candidate(i, s); r.less(c, best) {
			best = c
		}
	}
	return best.node
}

func (r *Ring) setTable(owners []uint16) {
	if len(r.nodes) <= 256 {
		r.owner8 = make([]uint8, numSlots)
		for s, o := range owners {
			r.owner8[s] = uint8(o)
		}
		return
	}
	r.owner16 = owners
}

// maxIncrementalCost bounds removed + 2*added for Rebuild's incremental path:
// each removed node costs one full scoring of its slots (about numSlots
// permutation evaluations in all) and each added node two evaluations per
// slot, against roughly (ln n + 1)*numSlots random writes for a scratch build.
const maxIncrementalCost = 8

// Rebuild returns the ring for nodes at version, reusing r's table. The
// result is identical to New(version, nodes) (the table depends on the
// membership only), but a small change costs milliseconds instead of a
// scratch build: slots of kept owners are only challenged by added nodes,
// and only the slots of removed nodes are scored in full. version must be
// greater than r.Version(); otherwise Rebuild returns an error wrapping
// ErrStaleVersion. A nil or empty r builds from scratch.
func (r *Ring) Rebuild(version uint64, nodes []Node) (*Ring, error) {
	if r != nil && version <= r.version {
		return nil, fmt.Errorf("cannot rebuild ring version %d as version %d: %w", r.version, version, ErrStaleVersion)
	}
	nr, err := newShell(version, nodes)
	if err != nil {
		return nil, err
	}
	if r != nil && r.direct {
		nr.direct = true
		return nr, nil
	}
	if r.Len() == 0 || len(nr.nodes) == 0 {
		nr.buildScratch()
		return nr, nil
	}
	// Both node lists are sorted by name: merge them. A node whose weight
	// changed counts as removed and added.
	oldToNew := make([]int32, len(r.nodes))
	kept := make([]bool, len(nr.nodes))
	removed := 0
	for i, j := 0, 0; i < len(r.nodes); i++ {
		for j < len(nr.nodes) && nr.nodes[j].Name < r.nodes[i].Name {
			j++
		}
		if j < len(nr.nodes) && nr.nodes[j] == r.nodes[i] {
			oldToNew[i] = int32(j)
			kept[j] = true
		} else {
			oldToNew[i] = -1
			removed++
		}
	}
	var added []int
	for j, k := range kept {
		if !k {
			added = append(added, j)
		}
	}
	if removed+2*len(added) > maxIncrementalCost {
		nr.buildScratch()
		return nr, nil
	}
	// Write straight into the final table (no 2-byte scratch copy).
	set := func(s uint32, o int) { nr.owner16[s] = uint16(o) }
	if len(nr.nodes) <= 256 {
		nr.owner8 = make([]uint8, numSlots)
		set = func(s uint32, o int) { nr.owner8[s] = uint8(o) }
	} else {
		nr.owner16 = make([]uint16, numSlots)
	}
	for s := range uint32(numSlots) {
		o := oldToNew[r.ownerAt(s)]
		switch {
		case o < 0:
			// The owner left: its slots go to their next-ranked node, which
			// may be an added one.
			set(s, nr.bestAt(s))
		case len(added) == 0:
			set(s, int(o))
		default:
			// The owner beat every kept node; only added nodes can beat it.
			best := nr.candidate(int(o), s)
			for _, a := range added {
				if c := nr.candidate(a, s); nr.less(c, best) {
					best = c
				}
			}
			set(s, best.node)
		}
	}
	return nr, nil
}
