package consumer

import "sync/atomic"

// chunkSize is the number of offsets one tracker chunk holds. Entries live in
// fixed chunks so that a pointer to an entry (held by every queued copy of a record)
// stays valid while the tracker grows, and so that tracking costs one allocation per
// chunkSize records instead of one per record.
const chunkSize = 256

// entry is the in-flight state of one consumed offset. rem counts the
// acknowledgements still owed: the poll loop creates it with 1 (its own hold while
// the record is not yet handed to every sink), adds len(sinks)-1 when it hands the
// record over, and each sink subtracts 1 when it acknowledges. rem is the only field
// touched by other goroutines; off is written once before the entry is published.
type entry struct {
	off int64
	rem atomic.Int32
}

// ack records one sink's acknowledgement. Safe from any goroutine.
func (e *entry) ack() { e.rem.Add(-1) }

type chunk struct {
	e [chunkSize]entry
	n int // entries pushed into this chunk
}

// tracker computes the contiguous watermark of one partition assignment: the lowest
// offset whose record is not yet acknowledged by every sink, which is the offset to
// commit. Acknowledgements may come in any order (several sinks, each at its own
// pace); the watermark only moves over a prefix of fully acknowledged offsets, so a
// commit never covers a record some sink still owes.
//
// One tracker lives for one assignment of a partition. When the partition is revoked
// or lost the tracker is marked dead: sinks skip the records of a dead tracker
// (the new owner redelivers them from the committed offset) and late acks are
// harmless because they only touch entries nobody reads any more.
//
// push and watermark must be called under the consumer's state lock; ack
// (entry.ack) and dead are safe from any goroutine.
type tracker struct {
	dead atomic.Bool

	chunks []*chunk // FIFO; chunks[0] holds the head
	head   int      // index of the head entry in chunks[0]
	count  int      // entries not yet popped

	// next is the offset after the last popped entry: the watermark when every
	// pushed entry is acknowledged. -1 until the first push.
	next int64
	// committed is the last watermark committed to Kafka, -1 if none.
	committed int64
}

func newTracker() *tracker { return &tracker{next: -1, committed: -1} }

// push starts tracking offset off (offsets must be pushed in increasing order, as a
// partition delivers them) and returns its entry with rem = 1.
func (t *tracker) push(off int64) *entry {
	var c *chunk
	if n := len(t.chunks); n > 0 && t.chunks[n-1].n < chunkSize {
		c = t.chunks[n-1]
	} else {
		c = new(chunk)
		t.chunks = append(t.chunks, c)
	}
	e := &c.e[c.n]
	e.off = off
	e.rem.Store(1)
	c.n++
	t.count++
	if t.next < 0 {
		t.next = off
	}
	return e
}

// watermark pops the acknowledged prefix and returns the offset to commit: the
// lowest unacknowledged offset, or one past the last pushed offset when everything
// is acknowledged. It returns -1 when nothing was ever pushed.
func (t *tracker) watermark() int64 {
	for t.count > 0 {
		c := t.chunks[0]
		e := &c.e[t.head]
		if e.rem.Load() > 0 {
			return e.off
		}
		t.next = e.off + 1
		t.head++
		t.count--
		if t.head == chunkSize || (t.head == c.n && t.count == 0) {
			// The chunk is exhausted (or empty and will be refilled from a new one):
			// drop it so its memory goes back to the GC.
			t.chunks[0] = nil
			t.chunks = t.chunks[1:]
			t.head = 0
		}
	}
	return t.next
}

// inflight returns the number of offsets pushed and not yet popped by watermark.
func (t *tracker) inflight() int { return t.count }
