package loadtest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func d(m string, seq uint64) Delivery {
	return Delivery{Meter: m, Seq: seq, SinkSeq: seq, HasSinkSeq: true}
}

func TestVerifierClean(t *testing.T) {
	v := NewVerifier([]string{"a", "b"})
	for s := uint64(1); s <= 100; s++ {
		v.Produced(0, s)
		v.Produced(1, s)
	}
	require.Equal(t, uint64(200), v.Outstanding())
	var ds []Delivery
	for s := uint64(1); s <= 100; s++ {
		ds = append(ds, d("a", s), d("b", s))
	}
	v.Seen(ds)
	r := v.Result()
	require.Equal(t, Verdict{Produced: 200, Delivered: 200}, r)
	require.Zero(t, v.Outstanding())
}

func TestVerifierLostDupReorder(t *testing.T) {
	v := NewVerifier([]string{"a", "b"})
	for s := uint64(1); s <= 10; s++ {
		v.Produced(0, s)
	}
	v.Produced(1, 1)
	// a: 1 2 3 5 4 (reorder) 3 (dup) 6..9, 10 lost; b: 1 1 (dup); unknown meter; one without seq header.
	v.Seen([]Delivery{d("a", 1), d("a", 2), d("a", 3), d("a", 5), d("a", 4), d("a", 3)})
	v.Seen([]Delivery{d("a", 6), d("a", 7), {Meter: "a", Seq: 8}, {Meter: "a", Seq: 9, SinkSeq: 90, HasSinkSeq: true}})
	v.Seen([]Delivery{d("b", 1), d("b", 1), d("zz", 1)})
	r := v.Result()
	require.Equal(t, uint64(11), r.Produced)
	require.Equal(t, uint64(10), r.Delivered)
	require.Equal(t, uint64(1), r.Lost)
	require.Equal(t, []string{"a#10"}, r.LostExamples)
	require.Equal(t, 1, r.MetersWithLoss)
	require.Equal(t, uint64(2), r.Duplicates)
	require.Equal(t, 2, r.MetersWithDups)
	require.Equal(t, uint64(1), r.Reordered)
	require.Equal(t, uint64(1), r.Unknown)
	require.Equal(t, uint64(1), r.SeqMissing)
	require.Equal(t, uint64(1), r.SeqMismatch)
	require.Zero(t, r.Unexpected)
}

// A redelivered run (after a crash) is duplicates, not reorders: 1..5, then 3..5
// again, then 6.
func TestVerifierRedeliveryIsNotReorder(t *testing.T) {
	v := NewVerifier([]string{"a"})
	for s := uint64(1); s <= 6; s++ {
		v.Produced(0, s)
	}
	for _, s := range []uint64{1, 2, 3, 4, 5, 3, 4, 5, 6} {
		v.Seen([]Delivery{d("a", s)})
	}
	r := v.Result()
	require.Zero(t, r.Lost)
	require.Equal(t, uint64(3), r.Duplicates)
	require.Zero(t, r.Reordered)
}

// Seen before Produced (the sink can be faster than the appender's bookkeeping)
// still balances; a record seen but never produced is unexpected.
func TestVerifierSeenBeforeProduced(t *testing.T) {
	v := NewVerifier([]string{"a"})
	v.Seen([]Delivery{d("a", 1), d("a", 2)})
	v.Produced(0, 1)
	r := v.Result()
	require.Equal(t, uint64(1), r.Delivered)
	require.Equal(t, uint64(1), r.Unexpected)
	require.Zero(t, r.Lost)
}

func TestVerifierManyMetersLost(t *testing.T) {
	ids := make([]string, 50)
	for i := range ids {
		ids[i] = meterID(i)
	}
	v := NewVerifier(ids)
	for i := range ids {
		for s := uint64(1); s <= 200; s++ {
			v.Produced(i, s)
		}
	}
	r := v.Result()
	require.Equal(t, uint64(50*200), r.Lost)
	require.Len(t, r.LostExamples, 20)
	require.Equal(t, 50, r.MetersWithLoss)
}
