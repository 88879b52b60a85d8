package hashring

import (
	"fmt"
	"testing"
)

// go test ./hashring -run XXX -bench .

var benchSizes = []int{10, 200, 1000}

func BenchmarkLocate(b *testing.B) {
	keys := randomKeys(1<<20, 7)
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("nodes=", n), func(b *testing.B) {
			r := cachedRing(b, fmt.Sprint(n), namedNodes(n))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = r.Locate(keys[i&(1<<20-1)])
				i++
			}
		})
	}
}

// BenchmarkLocateParallel: readers through a Holder, as collectors and
// meters use it.
func BenchmarkLocateParallel(b *testing.B) {
	keys := randomKeys(1<<20, 8)
	var h Holder
	if err := h.Store(cachedRing(b, "200", namedNodes(200))); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_ = h.Load().Locate(keys[i&(1<<20-1)])
			i++
		}
	})
}

func BenchmarkSuccessors3(b *testing.B) {
	keys := randomKeys(1<<16, 9)
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("nodes=", n), func(b *testing.B) {
			r := cachedRing(b, fmt.Sprint(n), namedNodes(n))
			var buf [3]string
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = r.Successors(keys[i&(1<<16-1)], buf[:])
				i++
			}
		})
	}
}

func BenchmarkNew(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("nodes=", n), func(b *testing.B) {
			nodes := namedNodes(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := New(1, nodes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRebuild is the cost of one membership change (target <= 100 ms).
func BenchmarkRebuild(b *testing.B) {
	for _, n := range benchSizes {
		nodes := namedNodes(n)
		for _, change := range []struct {
			name  string
			nodes []Node
		}{
			{"add", append(namedNodes(n), Node{Name: "node-added"})},
			{"remove", without(nodes, n/2)},
		} {
			b.Run(fmt.Sprintf("%s/nodes=%d", change.name, n), func(b *testing.B) {
				r := cachedRing(b, fmt.Sprint(n), nodes)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := r.Rebuild(2, change.nodes); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkLocateDirect10(b *testing.B) {
	nodes := make([]Node, 10)
	for i := range nodes {
		nodes[i] = Node{Name: fmt.Sprintf("collector-%d:7070", i)}
	}
	r, err := NewDirect(1, nodes)
	if err != nil {
		b.Fatal(err)
	}
	key := []byte("meter-0001")
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Locate(key)
	}
}
