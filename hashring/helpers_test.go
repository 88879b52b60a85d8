package hashring

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// namedNodes returns n unit-weight nodes "node-0000".. (the style of names
// the collectors use does not matter to the hash; these are distinct).
func namedNodes(n int) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = Node{Name: fmt.Sprintf("node-%04d", i)}
	}
	return nodes
}

// randomKeys returns n random 16-byte keys from a fixed seed, as one
// backing array so the benchmark and report loops stay cache-friendly.
func randomKeys(n int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	buf := make([]byte, 16*n)
	for i := 0; i < len(buf); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			buf[i+j] = byte(v >> (8 * j))
		}
	}
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = buf[16*i : 16*i+16 : 16*i+16]
	}
	return keys
}

// ringCache shares scratch builds between tests of one package run: a
// scratch build costs ~0.2 s, and several tests need the same rings.
var ringCache sync.Map // string -> *Ring

func cachedRing(t testing.TB, name string, nodes []Node) *Ring {
	t.Helper()
	if r, ok := ringCache.Load(name); ok {
		return r.(*Ring)
	}
	r, err := New(1, nodes)
	require.NoError(t, err)
	ringCache.Store(name, r)
	return r
}

// without returns nodes minus the one at index i, as a new slice.
func without(nodes []Node, i int) []Node {
	out := make([]Node, 0, len(nodes)-1)
	out = append(out, nodes[:i]...)
	return append(out, nodes[i+1:]...)
}

// requireSameTable fails unless a and b map every slot to the same name.
func requireSameTable(t *testing.T, a, b *Ring) {
	t.Helper()
	require.Equal(t, a.Nodes(), b.Nodes())
	diff := 0
	for s := range uint32(numSlots) {
		if a.ownerAt(s) != b.ownerAt(s) {
			diff++
		}
	}
	require.Zero(t, diff, "slots that differ")
}
