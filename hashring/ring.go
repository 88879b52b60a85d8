package hashring

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// MaxNodes is the largest membership New accepts: node indexes are stored in
// two bytes per table slot.
const MaxNodes = 1<<16 - 1

// ErrInvalidNode is wrapped by the errors New and Rebuild return for an empty
// or duplicate name or a negative, NaN or infinite weight.
var ErrInvalidNode = errors.New("invalid hash ring node")

// Node is one member of a ring.
type Node struct {
	// Name identifies the node (e.g. a collector address). It must be
	// non-empty and unique within a ring; keys are placed by name, so every
	// process must use the same spelling.
	Name string
	// Weight is the node's relative share of keys. 0 means 1. It must be
	// finite and not negative.
	Weight float64
}

// Ring is an immutable consistent-hash table over a set of nodes. All methods
// are safe for concurrent use; a nil *Ring behaves as an empty ring.
type Ring struct {
	version uint64
	nodes   []Node   // sorted by Name; Weight normalised (0 -> 1)
	perms   []perm   // perms[i] ranks the slots for nodes[i]
	uniform bool     // all weights equal: compare ranks as integers
	owner8  []uint8  // slot -> node index, when len(nodes) <= 256
	owner16 []uint16 // slot -> node index, otherwise
	direct  bool     // no table: owners are computed per lookup (NewDirect)
}

// New builds the ring for nodes at the given version. The nodes' order does
// not matter. It returns an error wrapping ErrInvalidNode for an empty or
// duplicate name or a negative, NaN or infinite weight. An empty node list
// gives an empty ring (Locate returns "").
//
// New costs a few hundred milliseconds for any node count (it is linear in
// the table size); to apply a membership change to an existing ring, use
// Ring.Rebuild, which produces the same table in a few milliseconds.
func New(version uint64, nodes []Node) (*Ring, error) {
	r, err := newShell(version, nodes)
	if err != nil {
		return nil, err
	}
	r.buildScratch()
	return r, nil
}

// NewDirect builds a ring without a table: the same placement and failover
// order as New for the same nodes (it ranks the key's slot exactly as the
// table would have), but Locate scores every node, O(Len()), instead of one
// table load. It takes no scratch memory and no build time, so it suits
// clients that locate rarely, such as a meter choosing its collector: a
// process that runs thousands of meters would otherwise hold thousands of
// 2 MiB tables. Rebuild on a direct ring returns a direct ring.
func NewDirect(version uint64, nodes []Node) (*Ring, error) {
	r, err := newShell(version, nodes)
	if err != nil {
		return nil, err
	}
	r.direct = true
	return r, nil
}

// newShell validates and normalises nodes and returns a ring without a table.
func newShell(version uint64, nodes []Node) (*Ring, error) {
	if len(nodes) > MaxNodes {
		return nil, fmt.Errorf("%w: %d nodes, at most %d are supported", ErrInvalidNode, len(nodes), MaxNodes)
	}
	ns := make([]Node, len(nodes))
	for i, n := range nodes {
		switch {
		case n.Name == "":
			return nil, fmt.Errorf("%w: node %d has an empty name", ErrInvalidNode, i)
		case math.IsNaN(n.Weight) || math.IsInf(n.Weight, 0):
			return nil, fmt.Errorf("%w: node %q has weight %v, want a finite number", ErrInvalidNode, n.Name, n.Weight)
		case n.Weight < 0:
			return nil, fmt.Errorf("%w: node %q has negative weight %v", ErrInvalidNode, n.Name, n.Weight)
		}
		if n.Weight == 0 {
			n.Weight = 1
		}
		ns[i] = n
	}
	slices.SortFunc(ns, func(a, b Node) int { return cmp.Compare(a.Name, b.Name) })
	for i := 1; i < len(ns); i++ {
		if ns[i].Name == ns[i-1].Name {
			return nil, fmt.Errorf("%w: duplicate node name %q", ErrInvalidNode, ns[i].Name)
		}
	}
	r := &Ring{version: version, nodes: ns, perms: make([]perm, len(ns)), uniform: true}
	for i := range ns {
		r.perms[i] = newPerm(ns[i].Name)
		if ns[i].Weight != ns[0].Weight {
			r.uniform = false
		}
	}
	return r, nil
}

// Version returns the membership version the ring was built with.
func (r *Ring) Version() uint64 {
	if r == nil {
		return 0
	}
	return r.version
}

// Len returns the number of nodes.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.nodes)
}

// Nodes returns a copy of the ring's nodes sorted by name, with zero weights
// reported as 1.
func (r *Ring) Nodes() []Node {
	if r == nil {
		return nil
	}
	return slices.Clone(r.nodes)
}

// slotOf maps a key to its table slot: the high half of hash*numSlots, an
// unbiased-enough range reduction without a division.
func slotOf(key []byte) uint32 {
	hi, _ := bits.Mul64(xxhash.Sum64(key), numSlots)
	return uint32(hi)
}

// Locate returns the name of the node that owns key, or "" for an empty ring.
// It does not allocate.
func (r *Ring) Locate(key []byte) string {
	if r == nil || len(r.nodes) == 0 {
		return ""
	}
	return r.nodes[r.ownerAt(slotOf(key))].Name
}

// LocateString is Locate for a string key; it does not allocate.
func (r *Ring) LocateString(key string) string {
	if r == nil || len(r.nodes) == 0 {
		return ""
	}
	hi, _ := bits.Mul64(xxhash.Sum64String(key), numSlots)
	return r.nodes[r.ownerAt(uint32(hi))].Name
}

func (r *Ring) ownerAt(s uint32) int {
	if r.direct {
		return r.bestAt(s)
	}
	if r.owner8 != nil {
		return int(r.owner8[s])
	}
	return int(r.owner16[s])
}

// maxStackSuccessors bounds the single-pass selection in Successors; larger
// requests fall back to one pass over the nodes per successor.
const maxStackSuccessors = 16

// Successors writes the failover order for key into dst and returns
// dst[:m], m = min(len(dst), Len()). The names are distinct; the first is
// Locate(key), the second the node that would own key if the first were
// removed, and so on (the key's rendezvous ranking). It uses len(dst), not
// cap(dst), and does not allocate: pass a stack array, e.g.
//
//	var buf [3]string
//	for _, name := range ring.Successors(key, buf[:]) { ... }
//
// It scores every node for the key's slot, so it costs O(Len()) (about 1 µs at
// 200 nodes): call it on failover, not per record.
func (r *Ring) Successors(key []byte, dst []string) []string {
	m := min(len(dst), r.Len())
	if m == 0 {
		return dst[:0]
	}
	s := slotOf(key)
	if m == 1 {
		dst[0] = r.nodes[r.ownerAt(s)].Name
		return dst[:1]
	}
	return r.successorsAt(s, dst[:m])
}

// successorsAt ranks all nodes for slot s into dst (len(dst) <= Len()).
func (r *Ring) successorsAt(s uint32, dst []string) []string {
	m := len(dst)
	if m == 0 {
		return dst
	}
	if m <= maxStackSuccessors {
		// Keep the best m candidates seen so far, sorted, in a stack array.
		var top [maxStackSuccessors]cand
		cnt := 0
		for i := range r.nodes {
			c := r.candidate(i, s)
			if cnt == m && !r.less(c, top[cnt-1]) {
				continue
			}
			j := min(cnt, m-1)
			for j > 0 && r.less(c, top[j-1]) {
				top[j] = top[j-1]
				j--
			}
			top[j] = c
			if cnt < m {
				cnt++
			}
		}
		for i := range m {
			dst[i] = r.nodes[top[i].node].Name
		}
		return dst[:m]
	}
	// Large requests: select the next best strictly after the previous pick.
	var prev cand
	for out := range m {
		var best cand
		found := false
		for i := range r.nodes {
			c := r.candidate(i, s)
			if out > 0 && !r.less(prev, c) {
				continue
			}
			if !found || r.less(c, best) {
				best, found = c, true
			}
		}
		dst[out] = r.nodes[best.node].Name
		prev = best
	}
	return dst[:m]
}

// cand is one node's claim on one slot.
type cand struct {
	node  int
	rank  uint32
	score float64 // weighted rings only: expScore(rank) / weight
}

func (r *Ring) candidate(i int, s uint32) cand {
	k := r.perms[i].rank(s)
	c := cand{node: i, rank: k}
	if !r.uniform {
		c.score = expScore(k) / r.nodes[i].Weight
	}
	return c
}

// expScore maps a rank to an exponentially distributed score: with u =
// (k+0.5)/numSlots uniform in (0,1), -ln(1-u) is Exp(1), and min over nodes
// of Exp(1)/w_i is won by node i with probability w_i/sum(w). This is
// weighted rendezvous hashing.
func expScore(k uint32) float64 {
	return -math.Log1p(-(float64(k) + 0.5) / numSlots)
}

// less is the total order every slot uses to rank nodes: lower score first
// (weighted rings), then lower rank, then lower index, i.e. the node name
// that sorts first. For equal weights the score is a non-decreasing function
// of the rank, so this order equals (rank, name) and uniform rings can skip
// the floating point entirely; that is what makes a ring's table depend on
// the membership only, not on how it was built.
func (r *Ring) less(a, b cand) bool {
	if !r.uniform && a.score != b.score {
		return a.score < b.score
	}
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.node < b.node
}
