package wire

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
)

// reseal recomputes the checksum trailer of b in place (b must be at least
// trailerLen long), so tests and fuzzers can reach the frame parser with
// corrupted frames.
func reseal(b []byte) []byte {
	if len(b) < trailerLen {
		return b
	}
	end := len(b) - trailerLen
	binary.LittleEndian.PutUint32(b[end:], Checksum(b[:end]))
	return b
}

// jsonPayload returns a JSON object of exactly size bytes (size >= 40).
func jsonPayload(i, size int) []byte {
	head := fmt.Sprintf(`{"host":"web-%03d","metric":"cpu","value":%d,"pad":"`, i%1000, i)
	tail := `"}`
	pad := size - len(head) - len(tail)
	if pad < 0 {
		pad = 0
	}
	b := make([]byte, 0, size)
	b = append(b, head...)
	for k := 0; k < pad; k++ {
		b = append(b, 'a'+byte(k%26))
	}
	return append(b, tail...)
}

// sampleRecords returns n records shaped like a meter's: consecutive sequence
// numbers, timestamps a few microseconds apart, JSON payloads of size bytes.
func sampleRecords(n, size int) []Record {
	rnd := rand.New(rand.NewPCG(1, 2))
	recs := make([]Record, n)
	seq := uint64(1_000_000)
	ts := int64(1_763_900_000_000_000_000)
	for i := range recs {
		seq++
		ts += int64(rnd.IntN(50_000))
		recs[i] = Record{Seq: seq, Timestamp: ts, Payload: jsonPayload(i, size)}
	}
	return recs
}

// collect decodes b and returns deep copies of its records.
func collect(b []byte, lim Limits) ([]Record, error) {
	var out []Record
	err := DecodeBatch(b, lim, func(r Record) error {
		r.Payload = append([]byte(nil), r.Payload...)
		out = append(out, r)
		return nil
	})
	return out, err
}

// normalize makes nil and empty payloads compare equal.
func normalize(recs []Record) []Record {
	out := make([]Record, len(recs))
	for i, r := range recs {
		if r.Payload == nil {
			r.Payload = []byte{}
		}
		out[i] = r
	}
	return out
}
