package collector

import (
	"strconv"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

// limbo remembers batches whose request was answered 503 while their records were
// still inside the producer, so that the meter's retry of the same batch joins
// them instead of producing a second copy.
//
// Why: when the broker goes away after kgo sent a produce request, the idempotent
// producer cannot fail those records (it does not know whether the broker stored
// them); it keeps retrying and stores them once the broker returns. The request
// was already answered 503 at its deadline, so the meter resends the batch. Without
// limbo the topic would then hold the batch twice for one acknowledgement. With it,
// the retry (same tenant, meter, sequence range and body hash) waits for the
// orphaned records instead: 200 if they were stored, a fresh produce if they
// failed. Retries that go to another collector still duplicate, as the delivery
// contract allows (identifiable by meter id and seq).
//
// Only orphaned batches are recorded (the hot path does one read-locked lookup in
// a map that is empty in normal operation). Stored entries expire after ttl; the
// map is bounded to max entries (oldest dropped first, counted as evicted).
type limbo struct {
	ttl time.Duration
	max int

	mu      sync.RWMutex
	pending map[string]*flight   // orphaned, records still in the producer
	stored  map[string]time.Time // orphaned and later stored: key -> expiry
	order   []storedKey          // FIFO of stored, for expiry and the bound
}

type storedKey struct {
	key    string
	expiry time.Time
}

// flight is one batch handed to the Republisher.
type flight struct {
	key  string
	done chan struct{} // closed once the Republisher called done
	err  error         // valid after done is closed
}

func newLimbo(ttl time.Duration, max int) *limbo {
	return &limbo{ttl: ttl, max: max, pending: map[string]*flight{}, stored: map[string]time.Time{}}
}

// batchKey identifies a batch across retries.
func batchKey(tenant, meter string, body []byte, firstSeq, lastSeq uint64, n int) string {
	b := make([]byte, 0, len(tenant)+len(meter)+64)
	b = append(b, tenant...)
	b = append(b, 0)
	b = append(b, meter...)
	b = append(b, 0)
	b = strconv.AppendUint(b, firstSeq, 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, lastSeq, 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, '/')
	b = strconv.AppendUint(b, xxhash.Sum64(body), 16)
	return string(b)
}

// lookup returns the orphaned flight of key still in progress, or stored=true
// when an orphaned copy was already stored.
func (l *limbo) lookup(key string, now time.Time) (f *flight, stored bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if len(l.pending) == 0 && len(l.stored) == 0 {
		return nil, false
	}
	if exp, ok := l.stored[key]; ok && now.Before(exp) {
		return nil, true
	}
	return l.pending[key], false
}

// orphan records f, whose request is being answered 503, unless it already
// failed.
func (l *limbo) orphan(f *flight, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-f.done:
		if f.err == nil {
			l.storeLocked(f.key, now)
		}
	default:
		l.pending[f.key] = f
	}
}

// complete is called when f's records are all acknowledged or failed.
func (l *limbo) complete(f *flight, now time.Time) {
	l.mu.RLock()
	cur := l.pending[f.key]
	l.mu.RUnlock()
	if cur != f {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending[f.key] != f {
		return
	}
	delete(l.pending, f.key)
	if f.err == nil {
		l.storeLocked(f.key, now)
	}
}

func (l *limbo) storeLocked(key string, now time.Time) {
	for len(l.order) > 0 && (len(l.order) >= l.max || !now.Before(l.order[0].expiry)) {
		if exp, ok := l.stored[l.order[0].key]; ok && exp.Equal(l.order[0].expiry) {
			delete(l.stored, l.order[0].key)
		}
		l.order[0] = storedKey{}
		l.order = l.order[1:]
	}
	exp := now.Add(l.ttl)
	l.stored[key] = exp
	l.order = append(l.order, storedKey{key: key, expiry: exp})
}
