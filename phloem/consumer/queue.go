package consumer

import "sync"

// queue is the bounded hand-off between the poll loop (the only producer) and one
// sink's connector goroutine (the only consumer). It is bounded in records and in
// bytes; the bound covers both the records waiting and the batch the connector is
// delivering (taken but not yet released), so a sink's memory is capped whatever its
// peer does.
//
// Overflow policy: refuse. The poll loop checks room before pushing and, when a
// queue is full, pauses fetching for the partition instead of waiting (it never
// blocks). The queue remembers that it refused work; once it drains below its
// low-water mark it signals wake so the poll loop re-offers what it kept back and
// resumes the partition. The gap between full and low water is the hysteresis that
// stops a partition flapping between paused and fetching on every record.
type queue struct {
	maxRecs  int
	maxBytes int64
	lowRecs  int
	lowBytes int64
	wake     func()        // wakes the poll loop; never blocks
	notEmpty chan struct{} // buffer 1: the connector waits on it

	mu    sync.Mutex
	buf   []*item // ring
	head  int
	n     int   // records waiting in buf
	recs  int   // waiting + taken-not-released
	bytes int64 // likewise
	full  bool  // refused an offer since it last drained below low water
}

func newQueue(maxRecs int, maxBytes int64, lowWater float64, wake func()) *queue {
	return &queue{
		maxRecs:  maxRecs,
		maxBytes: maxBytes,
		lowRecs:  int(float64(maxRecs) * lowWater),
		lowBytes: int64(float64(maxBytes) * lowWater),
		wake:     wake,
		notEmpty: make(chan struct{}, 1),
	}
}

// refuse records that an offer did not fit; if the queue already drained below low
// water meanwhile (the connector is fast), it wakes the poll loop at once so the
// partition is not left paused waiting for a signal that already passed.
func (q *queue) refuse() {
	q.mu.Lock()
	q.full = true
	below := q.belowLowLocked()
	q.mu.Unlock()
	if below {
		q.signalWake()
	}
}

func (q *queue) belowLowLocked() bool { return q.recs <= q.lowRecs && q.bytes <= q.lowBytes }

func (q *queue) signalWake() {
	if q.wake != nil {
		q.wake()
	}
}

// fits returns how many of items, in order, fit in the queue now. A record larger
// than the byte bound fits in an empty queue, so that one oversized record cannot
// wedge a partition.
func (q *queue) fits(items []*item) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	recs, bytes := q.recs, q.bytes
	for i, it := range items {
		if recs >= q.maxRecs || (recs > 0 && bytes+it.size > q.maxBytes) {
			return i
		}
		recs++
		bytes += it.size
	}
	return len(items)
}

// push appends items; the caller checked that they fit. Only the poll loop pushes,
// and only the connector removes, so room cannot shrink between the check and the
// push.
func (q *queue) push(items ...*item) {
	q.mu.Lock()
	wasEmpty := q.n == 0
	for _, it := range items {
		if q.n == len(q.buf) {
			q.growLocked()
		}
		i := q.head + q.n
		if i >= len(q.buf) {
			i -= len(q.buf) // cheaper than %: push and take run per record
		}
		q.buf[i] = it
		q.n++
		q.recs++
		q.bytes += it.size
	}
	q.mu.Unlock()
	// The connector waits only after finding the queue empty, so only the
	// empty-to-non-empty transition needs a signal.
	if wasEmpty {
		select {
		case q.notEmpty <- struct{}{}:
		default:
		}
	}
}

// growLocked doubles the ring (up to maxRecs): queues start small because a process
// may run a sink per tenant for thousands of tenants, most of them quiet.
func (q *queue) growLocked() {
	size := max(64, 2*len(q.buf))
	size = min(size, max(q.maxRecs, 1))
	if size <= len(q.buf) {
		size = len(q.buf) + 1
	}
	nb := make([]*item, size)
	for i := 0; i < q.n; i++ {
		nb[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = nb, 0
}

// take moves up to maxN records (and about maxBytes) into dst and returns it. The
// records stay counted against the bound until release.
func (q *queue) take(dst []*item, maxN int, maxBytes int64) []*item {
	q.mu.Lock()
	defer q.mu.Unlock()
	var b int64
	for q.n > 0 && len(dst) < maxN {
		it := q.buf[q.head]
		if len(dst) > 0 && b+it.size > maxBytes {
			break
		}
		q.buf[q.head] = nil
		if q.head++; q.head == len(q.buf) {
			q.head = 0
		}
		q.n--
		b += it.size
		dst = append(dst, it)
	}
	return dst
}

// release returns the capacity of records taken earlier (delivered, skipped or
// abandoned) and wakes the poll loop when a queue that refused work drains below low
// water.
func (q *queue) release(recs int, bytes int64) {
	q.mu.Lock()
	q.recs -= recs
	q.bytes -= bytes
	wake := q.full && q.belowLowLocked()
	if wake {
		q.full = false
	}
	q.mu.Unlock()
	if wake {
		q.signalWake()
	}
}

// depth returns the records and bytes held (waiting plus being delivered).
func (q *queue) depth() (int, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.recs, q.bytes
}

// waiting returns the records not yet taken.
func (q *queue) waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// drainAll removes every waiting record (used when a sink is stopped) and returns
// them; their capacity is released.
func (q *queue) drainAll() []*item {
	q.mu.Lock()
	out := make([]*item, 0, q.n)
	var b int64
	for q.n > 0 {
		it := q.buf[q.head]
		q.buf[q.head] = nil
		q.head = (q.head + 1) % len(q.buf)
		q.n--
		b += it.size
		out = append(out, it)
	}
	q.mu.Unlock()
	q.release(len(out), b)
	return out
}
