package loadtest

import (
	"fmt"
	"sync"
)

// maxSeq bounds the per-meter sequence numbers the verifier tracks (bitsets
// indexed by sequence): a fresh meter in a run of minutes stays far below it.
const maxSeq = 1 << 24

// Verifier checks every (meter, seq) a meter produced against what the sink saw:
// lost (produced, never seen), duplicated (seen more than once) and reordered
// (seen after a higher sequence of the same meter had been seen, first delivery
// only). Meters are registered up front; all methods are safe for concurrent use.
type Verifier struct {
	mu     sync.Mutex
	ids    map[string]int
	meters []meterTrack

	unknown     uint64 // records of meters the harness does not know
	outOfRange  uint64 // sequences above maxSeq
	seqMismatch uint64 // the sink's seq differs from the one in the payload
	seqMissing  uint64 // the sink delivered no seq
}

type meterTrack struct {
	id       string
	produced bitset
	seen     bitset
	nProd    uint64
	nSeen    uint64 // first deliveries
	maxSeen  uint64
	anySeen  bool
	dups     uint64
	reorders uint64
}

type bitset []uint64

func (b *bitset) set(i uint64) (was bool) {
	w := i / 64
	for uint64(len(*b)) <= w {
		*b = append(*b, 0)
	}
	m := uint64(1) << (i % 64)
	was = (*b)[w]&m != 0
	(*b)[w] |= m
	return was
}

func (b bitset) has(i uint64) bool {
	w := i / 64
	return w < uint64(len(b)) && b[w]&(1<<(i%64)) != 0
}

// NewVerifier returns a verifier for the given meter ids (index = position).
func NewVerifier(ids []string) *Verifier {
	v := &Verifier{ids: make(map[string]int, len(ids)), meters: make([]meterTrack, len(ids))}
	for i, id := range ids {
		v.ids[id] = i
		v.meters[i].id = id
	}
	return v
}

// Produced records that meter idx's Append returned nil for sequence seq.
func (v *Verifier) Produced(idx int, seq uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if seq >= maxSeq {
		v.outOfRange++
		return
	}
	m := &v.meters[idx]
	if !m.produced.set(seq) {
		m.nProd++
	}
}

// Delivery is one record as the sink saw it.
type Delivery struct {
	Meter string
	Seq   uint64 // from the payload (the meter's own sequence)
	// SinkSeq is the seq the pipeline delivered alongside (Kafka header); HasSinkSeq
	// is false when it was missing.
	SinkSeq    uint64
	HasSinkSeq bool
}

// Seen records deliveries, in the order the sink received them.
func (v *Verifier) Seen(ds []Delivery) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, d := range ds {
		if !d.HasSinkSeq {
			v.seqMissing++
		} else if d.SinkSeq != d.Seq {
			v.seqMismatch++
		}
		idx, ok := v.ids[d.Meter]
		if !ok {
			v.unknown++
			continue
		}
		if d.Seq >= maxSeq {
			v.outOfRange++
			continue
		}
		m := &v.meters[idx]
		if m.seen.set(d.Seq) {
			m.dups++
			continue
		}
		m.nSeen++
		if m.anySeen && d.Seq < m.maxSeen {
			m.reorders++
		}
		if !m.anySeen || d.Seq > m.maxSeen {
			m.maxSeen = d.Seq
		}
		m.anySeen = true
	}
}

// Outstanding returns how many produced records have not been seen yet.
func (v *Verifier) Outstanding() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	var n uint64
	for i := range v.meters {
		m := &v.meters[i]
		if m.nProd > m.nSeen {
			n += m.nProd - m.nSeen
		}
	}
	// nSeen may include records seen but not (yet) marked produced; the exact
	// count is in Result.
	return n
}

// Verdict is the verifier's result.
type Verdict struct {
	Produced   uint64 `json:"produced"`
	Delivered  uint64 `json:"delivered_unique"`
	Lost       uint64 `json:"lost"`
	Duplicates uint64 `json:"duplicates"`
	Reordered  uint64 `json:"reordered"`
	// Unexpected counts records seen that no meter reported as produced.
	Unexpected uint64 `json:"unexpected"`
	Unknown    uint64 `json:"unknown_meter"`
	OutOfRange uint64 `json:"seq_out_of_range"`
	// SeqMismatch / SeqMissing compare the pipeline's seq (Kafka header) with the
	// meter's sequence carried in the payload.
	SeqMismatch uint64 `json:"seq_header_mismatch"`
	SeqMissing  uint64 `json:"seq_header_missing"`
	// MetersWithLoss and LostExamples name the first lost records ("meter#seq").
	MetersWithLoss int      `json:"meters_with_loss"`
	LostExamples   []string `json:"lost_examples,omitempty"`
	MetersWithDups int      `json:"meters_with_duplicates"`
}

// Result computes the verdict now.
func (v *Verifier) Result() Verdict {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := Verdict{Unknown: v.unknown, OutOfRange: v.outOfRange, SeqMismatch: v.seqMismatch, SeqMissing: v.seqMissing}
	for i := range v.meters {
		m := &v.meters[i]
		r.Produced += m.nProd
		r.Duplicates += m.dups
		r.Reordered += m.reorders
		if m.dups > 0 {
			r.MetersWithDups++
		}
		lost := 0
		n := len(m.produced)
		if len(m.seen) > n {
			n = len(m.seen)
		}
		for w := 0; w < n; w++ {
			var p, s uint64
			if w < len(m.produced) {
				p = m.produced[w]
			}
			if w < len(m.seen) {
				s = m.seen[w]
			}
			r.Delivered += uint64(popcount(p & s))
			r.Unexpected += uint64(popcount(s &^ p))
			if miss := p &^ s; miss != 0 {
				c := popcount(miss)
				r.Lost += uint64(c)
				lost += c
				for b := 0; b < 64 && len(r.LostExamples) < 20; b++ {
					if miss&(1<<b) != 0 {
						r.LostExamples = append(r.LostExamples, fmt.Sprintf("%s#%d", m.id, w*64+b))
					}
				}
			}
		}
		if lost > 0 {
			r.MetersWithLoss++
		}
	}
	return r
}

func popcount(x uint64) int {
	n := 0
	for x != 0 {
		x &= x - 1
		n++
	}
	return n
}
