package collector

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"phloem/phloem/control"
)

// admission bounds the work the collector takes on: in-flight requests and bytes
// globally, and each tenant's records/s and bytes/s. Nothing queues: beyond a
// bound the request is refused at once with a Retry-After, so that a spike is
// shed at the door instead of piling up in memory (DESIGN.md, failure table).
//
// All methods are safe for concurrent use.
type admission struct {
	maxReqs       int64
	maxBytes      int64
	maxRetryAfter time.Duration

	reqs  atomic.Int64
	bytes atomic.Int64

	// Rates of admitted and refused requests over the last second, for
	// Retry-After; see retryAfterOverload.
	admitted rateMeter
	refused  rateMeter

	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket // tenant id -> bucket; bounded by the tenant count
}

func newAdmission(cfg Config) *admission {
	return &admission{
		maxReqs:       int64(cfg.MaxInflightRequests),
		maxBytes:      cfg.MaxInflightBytes,
		maxRetryAfter: cfg.MaxRetryAfter,
		now:           time.Now,
		buckets:       make(map[string]*bucket),
	}
}

// acquireRequest takes one in-flight request slot; false when none is left.
func (a *admission) acquireRequest() bool {
	if a.reqs.Add(1) > a.maxReqs {
		a.reqs.Add(-1)
		a.refused.add(a.now(), 1)
		return false
	}
	a.admitted.add(a.now(), 1)
	return true
}

func (a *admission) releaseRequest() { a.reqs.Add(-1) }

// acquireBytes reserves n bytes of body memory; false (nothing reserved) when it
// would pass the bound.
func (a *admission) acquireBytes(n int64) bool {
	if n <= 0 {
		return true
	}
	if a.bytes.Add(n) > a.maxBytes {
		a.bytes.Add(-n)
		a.refused.add(a.now(), 1)
		return false
	}
	return true
}

func (a *admission) releaseBytes(n int64) {
	if n > 0 {
		a.bytes.Add(-n)
	}
}

// retryAfterOverload is the Retry-After of a 503 for overload. The refused
// clients of the last second need about refused/admitted seconds of the
// collector's throughput to be served; spreading their return uniformly over
// that window (at least 1s, at most maxRetryAfter) lets the collector absorb
// them instead of meeting the same herd one second later. The spread is random
// per answer, so even a constant load does not give a constant value.
func (a *admission) retryAfterOverload() time.Duration {
	now := a.now()
	adm := a.admitted.rate(now)
	ref := a.refused.rate(now)
	window := 1.0
	if adm > 0 {
		window += ref / adm
	} else {
		window += ref / 10 // nothing admitted lately: assume a small capacity
	}
	// Load factor of the bounds themselves: a collector at its byte bound with
	// few requests still needs time to drain.
	load := math.Max(float64(a.reqs.Load())/float64(a.maxReqs), float64(a.bytes.Load())/float64(a.maxBytes))
	window += load
	d := time.Duration((1 + rand.Float64()*window) * float64(time.Second))
	return min(d, a.maxRetryAfter)
}

// retryAfterUnavailable is the Retry-After when Kafka is unavailable or the
// deadline passed: Kafka outages last seconds at least, and the whole fleet saw
// the same failure, so spread over [1s, 1s+5s·load].
func (a *admission) retryAfterUnavailable() time.Duration {
	load := math.Max(float64(a.reqs.Load())/float64(a.maxReqs), float64(a.bytes.Load())/float64(a.maxBytes))
	d := time.Duration((1 + rand.Float64()*(2+5*load)) * float64(time.Second))
	return min(d, a.maxRetryAfter)
}

// tenantBucket returns the bucket of tenant t, updated to its current limits,
// or nil when the tenant is unlimited.
func (a *admission) tenantBucket(t control.Tenant) *bucket {
	if t.Limits.RecordsPerSec <= 0 && t.Limits.BytesPerSec <= 0 {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.buckets[t.ID]
	if !ok {
		b = &bucket{records: newTokens(t.Limits.RecordsPerSec, a.now()), bytes: newTokens(t.Limits.BytesPerSec, a.now())}
		a.buckets[t.ID] = b
		return b
	}
	b.mu.Lock()
	b.records.setRate(t.Limits.RecordsPerSec)
	b.bytes.setRate(t.Limits.BytesPerSec)
	b.mu.Unlock()
	return b
}

// bucket is a tenant's pair of token buckets. Tokens may go negative (debt): a
// batch is admitted while the balance is positive and charged in full, so any
// batch size fits whatever the rate, and the debt is what Retry-After repays.
type bucket struct {
	mu      sync.Mutex
	records tokens
	bytes   tokens
}

// check reports how long the tenant must wait before its next batch (0: go).
func (b *bucket) check(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(b.records.wait(now), b.bytes.wait(now))
}

// charge takes n records and sz bytes.
func (b *bucket) charge(now time.Time, n, sz float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.records.take(now, n)
	b.bytes.take(now, sz)
}

// tokens is one token bucket with a burst of one second of its rate.
type tokens struct {
	rate  float64 // per second; <= 0 unlimited
	level float64
	last  time.Time
}

func newTokens(rate float64, now time.Time) tokens {
	return tokens{rate: rate, level: rate, last: now}
}

func (t *tokens) setRate(rate float64) {
	if rate != t.rate {
		t.rate = rate
		t.level = min(t.level, rate)
	}
}

func (t *tokens) refill(now time.Time) {
	if t.rate <= 0 {
		return
	}
	if dt := now.Sub(t.last).Seconds(); dt > 0 {
		t.level = min(t.rate, t.level+dt*t.rate)
	}
	t.last = now
}

// wait is 0 while the balance is positive, else the time to repay the debt.
func (t *tokens) wait(now time.Time) time.Duration {
	if t.rate <= 0 {
		return 0
	}
	t.refill(now)
	if t.level > 0 {
		return 0
	}
	// A tiny rate (a limit of 0.0001 bytes/s is valid) makes the debt take longer
	// than a Duration can hold: converting that float would overflow to a
	// negative wait, which admits the tenant. Cap it; Retry-After is capped
	// lower anyway (MaxRetryAfter).
	w := (-t.level + 1) / t.rate * float64(time.Second)
	if !(w < float64(maxDebtWait)) {
		return maxDebtWait
	}
	return time.Duration(w)
}

// maxDebtWait bounds tokens.wait, far above any MaxRetryAfter, and far enough
// below the largest Duration that callers may add jitter to it.
const maxDebtWait = 24 * time.Hour

func (t *tokens) take(now time.Time, n float64) {
	if t.rate <= 0 {
		return
	}
	t.refill(now)
	t.level -= n
}

// rateMeter counts events per second over the last complete second and the
// current one, lock-free.
type rateMeter struct {
	sec  atomic.Int64 // unix second of cur
	cur  atomic.Int64
	prev atomic.Int64
}

func (r *rateMeter) roll(now time.Time) {
	s := now.Unix()
	old := r.sec.Load()
	if s == old || !r.sec.CompareAndSwap(old, s) {
		return
	}
	c := r.cur.Swap(0)
	if s == old+1 {
		r.prev.Store(c)
	} else {
		r.prev.Store(0)
	}
}

func (r *rateMeter) add(now time.Time, n int64) {
	r.roll(now)
	r.cur.Add(n)
}

// rate is events per second: the last complete second, or the current one if it
// already saw more.
func (r *rateMeter) rate(now time.Time) float64 {
	r.roll(now)
	return float64(max(r.prev.Load(), r.cur.Load()))
}

// retryAfterSeconds renders d as Retry-After delay-seconds: at least 1, rounded up.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
