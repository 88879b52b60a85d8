package hashring

import "github.com/cespare/xxhash/v2"

// The table has numSlots slots. It is a constant, not a function of the node
// count, because a key's slot and every node's ranking of the slots must not
// change when membership changes: a table size that grew with n would
// reshuffle every key whenever it crossed a threshold.
//
// numSlots = 2^21 - 2^15 (2,064,384) keeps a one-byte-per-slot table plus the
// node list under 2 MiB up to 256 nodes while giving ~10,000 slots per node at
// 200 nodes, which is what the balance target needs (see doc.go).
const (
	permBits = 21
	permMask = 1<<permBits - 1
	// permShift >= permBits/2 makes x ^= x>>permShift its own inverse.
	permShift = 11
	numSlots  = 1<<permBits - 1<<15
)

// perm is a keyed pseudo-random bijection of [0, numSlots). Every node owns
// one, derived from its name: perm.rank(s) is the node's rank for slot s
// (lower is better), and perm.slot(k) is the slot the node ranks k-th. Because
// it is a bijection, each node's ranks over all slots are exactly 0..numSlots-1
// (stratified), which halves the variance of the slot counts compared with
// independent random scores, and it lets the table be built by enumerating
// each node's best slots (perm.slot) instead of scoring every node for every
// slot.
//
// The round function is xor/add a key, multiply by a keyed odd constant modulo
// 2^21, xorshift; three rounds. Every step is invertible modulo 2^21. Values
// >= numSlots are cycle-walked (applied again), which keeps the map a
// bijection of [0, numSlots); 98.4% of inputs need one pass.
type perm struct {
	k0, k1, k2 uint32 // additive/xor keys, 21 bits
	m0, m1, m2 uint32 // odd multipliers, 21 bits
	i0, i1, i2 uint32 // their inverses modulo 2^21
}

// newPerm derives a node's permutation from its name only, so every process
// that knows the same membership builds the same table. There is no string
// concatenation of name and slot number (the slot is an integer input to the
// bijection), so the "1"+"1node" == "11"+"node" ambiguity cannot arise.
func newPerm(name string) perm {
	state := xxhash.Sum64String(name)
	next := func() uint32 {
		// splitmix64: expands one 64-bit seed into independent-looking words.
		state += 0x9e3779b97f4a7c15
		z := state
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		return uint32(z^z>>31) & permMask
	}
	var p perm
	p.k0, p.k1, p.k2 = next(), next(), next()
	p.m0, p.m1, p.m2 = next()|1, next()|1, next()|1
	p.i0, p.i1, p.i2 = inverseOdd(p.m0), inverseOdd(p.m1), inverseOdd(p.m2)
	return p
}

// inverseOdd returns m^-1 modulo 2^21 for odd m (Newton iteration: each step
// doubles the number of correct low bits; 3 correct bits to start).
func inverseOdd(m uint32) uint32 {
	inv := m
	for range 5 {
		inv *= 2 - m*inv
	}
	return inv & permMask
}

func (p *perm) fwd(x uint32) uint32 {
	x = ((x ^ p.k0) * p.m0) & permMask
	x ^= x >> permShift
	x = ((x + p.k1) * p.m1) & permMask
	x ^= x >> permShift
	x = ((x ^ p.k2) * p.m2) & permMask
	x ^= x >> permShift
	return x
}

func (p *perm) inv(x uint32) uint32 {
	x ^= x >> permShift
	x = ((x * p.i2) & permMask) ^ p.k2
	x ^= x >> permShift
	x = ((x * p.i1) - p.k1) & permMask
	x ^= x >> permShift
	x = ((x * p.i0) & permMask) ^ p.k0
	return x
}

// rank returns the node's rank of slot s (s < numSlots).
func (p *perm) rank(s uint32) uint32 {
	x := p.fwd(s)
	for x >= numSlots {
		x = p.fwd(x)
	}
	return x
}

// slot returns the slot the node ranks k-th (k < numSlots); inverse of rank.
func (p *perm) slot(k uint32) uint32 {
	x := p.inv(k)
	for x >= numSlots {
		x = p.inv(x)
	}
	return x
}
