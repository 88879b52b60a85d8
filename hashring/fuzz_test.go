package hashring

import (
	"math"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/require"
)

// FuzzRing checks the ranking every table slot is built from, on arbitrary
// names, weights and keys: validation; Successors is distinct, full length and
// agrees with full rendezvous scoring; removing the owner hands the key (and
// no other sampled slot's owner changes) to its second successor; an added
// node only takes slots it ranks best; permutations are bijections. It works
// on rings without a table (a 2-million-slot build per input would allow one
// execution per second); TestTableIsFullRendezvous and TestRebuildEqualsNew
// check that built tables equal this ranking.
//
//	go test ./hashring -run XXX -fuzz FuzzRing -fuzztime 2m
func FuzzRing(f *testing.F) {
	f.Add("a,b,c", []byte{}, []byte("meter-0001"))
	f.Add("collector-0:7070,collector-1:7070", []byte{16, 32}, []byte{})
	f.Add("x", []byte{0}, []byte("k"))
	f.Add("1,11,1node,11node", []byte{1, 255, 7, 200}, []byte("1"))
	f.Fuzz(func(t *testing.T, names string, weights []byte, key []byte) {
		parts := strings.Split(names, ",")
		if len(parts) > 64 {
			parts = parts[:64]
		}
		nodes := make([]Node, len(parts))
		valid := true
		seen := map[string]bool{}
		for i, p := range parts {
			nodes[i].Name = p
			if i < len(weights) {
				switch w := weights[i]; w {
				case 254:
					nodes[i].Weight = -1
				case 255:
					nodes[i].Weight = math.NaN()
				default:
					nodes[i].Weight = float64(w) / 16 // 0 means 1
				}
			}
			if p == "" || seen[p] || nodes[i].Weight < 0 || math.IsNaN(nodes[i].Weight) {
				valid = false
			}
			seen[p] = true
		}
		r, err := newShell(1, nodes)
		if !valid {
			require.ErrorIs(t, err, ErrInvalidNode)
			return
		}
		require.NoError(t, err)
		n := r.Len()
		for i := range r.perms {
			k := uint32(xxhash.Sum64(key)%numSlots) ^ uint32(i)
			k %= numSlots
			require.Equal(t, k, r.perms[i].rank(r.perms[i].slot(k)), "permutation is not a bijection")
		}

		// The key's slot and 16 more derived from the key's hash.
		h := xxhash.Sum64(key)
		slots := []uint32{slotOf(key)}
		for range 16 {
			h = h*6364136223846793005 + 1442695040888963407
			slots = append(slots, uint32((h>>32)%numSlots))
		}
		var rest []Node
		var without *Ring
		added, err := newShell(2, append(r.Nodes(), Node{Name: "\x00added"}))
		require.NoError(t, err)
		for si, s := range slots {
			var buf [4]string
			succ := r.successorsAt(s, buf[:min(4, n)])
			require.Len(t, succ, min(4, n))
			requireDistinct(t, succ)
			owner := r.nodes[r.bestAt(s)].Name
			require.Equal(t, owner, succ[0])
			if n > 1 {
				if si == 0 {
					for _, nd := range r.nodes {
						if nd.Name != owner {
							rest = append(rest, nd)
						}
					}
					without, err = newShell(2, rest)
					require.NoError(t, err)
				}
				// Removing the key's owner: every sampled slot keeps its owner
				// unless that owner was removed, and then goes to its second.
				gone := slots[0]
				after := without.nodes[without.bestAt(s)].Name
				if owner != r.nodes[r.bestAt(gone)].Name {
					require.Equal(t, owner, after)
				} else {
					require.Equal(t, succ[1], after)
				}
			}
			if a := added.nodes[added.bestAt(s)].Name; a != owner {
				require.Equal(t, "\x00added", a)
			}
		}
	})
}
