package collector

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"phloem/ops"
)

// MaxMetersTracked bounds the meter activity table behind Meters: beyond it the
// least recently seen meter is evicted (phloem_collector_meters_evicted_total).
// 10,000 entries cost a few MB; a collector serving more meters than that
// reports the most recently active ones.
const MaxMetersTracked = 10_000

// The collector is the ops package's meter activity source (zombie-meter
// detector). ops does not import collector, so this import has no cycle.
var _ ops.MeterActivity = (*Collector)(nil)

// Meters returns the meters this collector has seen, most recently seen first,
// at most MaxMetersTracked of them (ops.MeterActivity). The slice is a copy the
// caller may keep. It takes one lock for a copy of the table: no I/O.
//
// A meter enters the table when the collector hands one of its batches to Kafka
// and Kafka answers (acknowledgement or failure): that is after authentication,
// so the tenant is the token's. For each meter:
//
//   - LastRecord is when Kafka last acknowledged one of its batches; for a meter
//     none of whose batches was acknowledged yet, when it was first seen (so a
//     meter that connects and never delivers becomes a zombie After that, not at
//     once).
//   - Connected reports whether the connection that carried its latest batch is
//     still open (tracked through the http.Server's ConnContext and ConnState
//     when Run serves). When the handler is served by something other than Run
//     (Handler in a test server), connections cannot be seen, and Connected
//     means "its latest batch arrived within IdleTimeout", the time an idle
//     keep-alive connection stays open.
func (c *Collector) Meters() []ops.MeterSeen {
	return c.activity.snapshot(time.Now())
}

// meterKey identifies a meter: meter ids are chosen by agents, so two tenants
// may use the same one.
type meterKey struct{ tenant, id string }

// meterEntry is one meter in the activity table, linked in least-recently-seen
// order.
type meterEntry struct {
	key        meterKey
	conn       *connTrack // connection of its latest batch; nil outside Run
	firstSeen  time.Time
	lastSeen   time.Time // latest batch answered by Kafka, acknowledged or not
	lastRecord time.Time // latest batch acknowledged; zero if none yet
	prev, next *meterEntry
}

// meterActivity is the bounded table of meters seen on ingest. One mutex
// guards it: it is taken once per batch (when Kafka answers) and once per
// Meters call, each time for a map access and a few pointer moves, far below
// the cost of the batch itself.
type meterActivity struct {
	max    int
	idle   time.Duration // Connected window when connections are not tracked
	window time.Duration // MeterActiveWindow: seen within it = active (bounded loads)
	m      *metrics

	mu         sync.Mutex
	byKey      map[meterKey]*meterEntry
	head, tail *meterEntry // head: most recently seen
}

func newMeterActivity(max int, idle time.Duration, m *metrics) *meterActivity {
	return &meterActivity{max: max, idle: idle, m: m, byKey: make(map[meterKey]*meterEntry)}
}

// observe records that Kafka answered a batch of meter (acknowledged when ok)
// that arrived on connection ct (nil: unknown). It must stay cheap: it runs on
// the producer's promise goroutine.
func (a *meterActivity) observe(tenant, meter string, ct *connTrack, ok bool, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.byKey[meterKey{tenant, meter}]
	if e == nil {
		if len(a.byKey) >= a.max {
			a.evictOldest()
		}
		// Clone: the key outlives the request whose header memory it came from.
		e = &meterEntry{key: meterKey{strings.Clone(tenant), strings.Clone(meter)}, firstSeen: now}
		a.byKey[e.key] = e
		a.m.metersTracked.Set(float64(len(a.byKey)))
	} else {
		a.unlink(e)
	}
	a.pushFront(e)
	e.conn = ct
	e.lastSeen = now
	if ok {
		e.lastRecord = now
	}
}

func (a *meterActivity) evictOldest() {
	e := a.tail
	if e == nil {
		return
	}
	a.unlink(e)
	delete(a.byKey, e.key)
	a.m.metersEvicted.Inc()
}

func (a *meterActivity) unlink(e *meterEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		a.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		a.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (a *meterActivity) pushFront(e *meterEntry) {
	e.next = a.head
	if a.head != nil {
		a.head.prev = e
	}
	a.head = e
	if a.tail == nil {
		a.tail = e
	}
}

// ActiveMeters returns how many meters are active on this collector: admitted
// or answered within Config.MeterActiveWindow. It is the load Config.MaxMeters
// bounds (phloem_collector_meters_active).
func (c *Collector) ActiveMeters() int {
	return c.activity.active(time.Now(), 0)
}

// admit applies the bounded-load rule (Config.MaxMeters) to a request of meter:
// a meter already active here is admitted (one map lookup under the lock); a
// new one only while fewer than max meters are active, or when the meter says
// every live collector refused it (fallback). An admitted meter is entered in
// the table at once, before Kafka answers, so that concurrent newcomers count
// against the bound and cannot all squeeze into the last free place.
func (a *meterActivity) admit(tenant, meter string, max int, fallback bool, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.byKey[meterKey{tenant, meter}]
	if e != nil && now.Sub(e.lastSeen) <= a.window {
		return true
	}
	if !fallback && a.activeLocked(now, max) >= max {
		return false
	}
	if e == nil {
		if len(a.byKey) >= a.max {
			a.evictOldest()
		}
		e = &meterEntry{key: meterKey{strings.Clone(tenant), strings.Clone(meter)}, firstSeen: now}
		a.byKey[e.key] = e
		a.m.metersTracked.Set(float64(len(a.byKey)))
	} else {
		a.unlink(e)
	}
	a.pushFront(e)
	e.lastSeen = now
	return true
}

// active counts the meters seen within the window, stopping at limit when
// limit > 0. The list is in order of lastSeen (every update moves its entry to
// the front with the current time), so the walk stops at the first stale
// entry: O(active meters), bounded by limit on the admission path.
func (a *meterActivity) active(now time.Time, limit int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.activeLocked(now, limit)
}

func (a *meterActivity) activeLocked(now time.Time, limit int) int {
	n := 0
	for e := a.head; e != nil && now.Sub(e.lastSeen) <= a.window; e = e.next {
		n++
		if limit > 0 && n >= limit {
			break
		}
	}
	return n
}

// snapshot copies the table, most recently seen first.
func (a *meterActivity) snapshot(now time.Time) []ops.MeterSeen {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]ops.MeterSeen, 0, len(a.byKey))
	for e := a.head; e != nil; e = e.next {
		last := e.lastRecord
		if last.IsZero() {
			last = e.firstSeen
		}
		var connected bool
		if e.conn != nil {
			connected = !e.conn.closed.Load()
		} else {
			connected = now.Sub(e.lastSeen) <= a.idle
		}
		out = append(out, ops.MeterSeen{ID: e.key.id, Tenant: e.key.tenant, Connected: connected, LastRecord: last})
	}
	return out
}

// connTrack is one accepted connection of the data listener; closed is set when
// the server reports it closed (or hijacked).
type connTrack struct{ closed atomic.Bool }

// connKey is the request-context key of the request's connection's connTrack.
type connKey struct{}

// connTracker links the http.Server's two connection hooks: ConnContext puts a
// connTrack in the connection's context (inherited by every request on it, and
// so by the ingest request's context), ConnState marks it closed. Its map holds
// open connections only: an entry is removed when its connection closes.
type connTracker struct {
	open sync.Map // net.Conn -> *connTrack
}

func (t *connTracker) connContext(ctx context.Context, nc net.Conn) context.Context {
	ct := &connTrack{}
	t.open.Store(nc, ct)
	return context.WithValue(ctx, connKey{}, ct)
}

func (t *connTracker) connState(nc net.Conn, s http.ConnState) {
	if s != http.StateClosed && s != http.StateHijacked {
		return
	}
	if v, ok := t.open.LoadAndDelete(nc); ok {
		v.(*connTrack).closed.Store(true)
	}
}

// activityRepublisher wraps the Republisher to feed the activity table: its done
// callback is the one place the outcome of every batch handed to Kafka passes
// (whatever the answer to the meter), and Publish's context is the request's,
// which carries the connection's connTrack. It adds one closure per batch.
type activityRepublisher struct {
	Republisher
	act *meterActivity
}

func (r activityRepublisher) Publish(ctx context.Context, b *Batch, done func(error)) {
	ct, _ := ctx.Value(connKey{}).(*connTrack)
	tenant, meter := b.Tenant, b.MeterID
	r.Republisher.Publish(ctx, b, func(err error) {
		r.act.observe(tenant, meter, ct, err == nil, time.Now())
		done(err)
	})
}
