package collector

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrTooManyTaps is returned by hubs.subscribe when Config.MaxTaps taps are
// already open; the tap request is answered 503.
var ErrTooManyTaps = errors.New("too many live taps on this collector")

// hubs is the in-process pub/sub of tenant streams. A tenant's hub is created by
// its first subscriber and removed with its last one (reference counting), so an
// idle tenant costs nothing and a hub can never outlive its subscribers.
//
// The Kafka republisher is the hub's permanent, synchronous subscriber: the ingest
// path hands it every batch and waits for Kafka's acknowledgement before it
// answers 200, so it is not a member of the subscriber list (whose members must
// never slow ingest). Live taps are the asynchronous subscribers: publish copies
// a batch's rendered lines into each tap's bounded ring and returns at once.
//
// Besides subscriptions, hubs counts receivers: tap handlers alive on behalf of
// a connected client. Each tap handler is the owner of exactly one subscription,
// so subscriptions beyond receivers are subscriptions nobody will ever read or
// remove: the leak DESIGN.md warns about. Both counts are exported from one
// read under mu (hubGauges), for the ops subscription-leak detector.
//
// Lock order: hubs.mu, then subscriber.mu. publish takes no lock of hubs (it
// reads the map under the read lock and the copy-on-write subscriber slice
// atomically), so a subscribe or unsubscribe never waits for a publish and the
// reverse.
type hubs struct {
	tapBuffer int
	maxTaps   int
	m         *metrics

	mu        sync.RWMutex
	byTen     map[string]*hub
	taps      int // total subscribers, guarded by mu
	receivers int // tap handlers between receiverEnter and receiverLeave, guarded by mu
}

// hub is one tenant's stream.
type hub struct {
	tenant string
	// subs is replaced (copy on write) under hubs.mu and read atomically by
	// publish.
	subs atomic.Pointer[[]*subscriber]
}

// newHubs builds the hubs and hands m the collector that exports their gauges.
func newHubs(tapBuffer, maxTaps int, m *metrics) *hubs {
	h := &hubs{tapBuffer: tapBuffer, maxTaps: maxTaps, m: m, byTen: make(map[string]*hub)}
	m.hubGauges = newHubGauges(h)
	return h
}

// hubStats is one consistent reading of the hubs' counts.
type hubStats struct {
	subscribers, receivers, hubs int
}

// stats reads every count under one lock, so that subscribers and receivers
// are never compared across two instants.
func (h *hubs) stats() hubStats {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return hubStats{subscribers: h.taps, receivers: h.receivers, hubs: len(h.byTen)}
}

// receiverEnter counts a tap handler that is about to subscribe on behalf of its
// client; receiverLeave, called once after that handler unsubscribed (or failed
// to subscribe), uncounts it. The order (receiver first in, last out) keeps
// subscribers <= receivers in a healthy process at every instant.
func (h *hubs) receiverEnter() {
	h.mu.Lock()
	h.receivers++
	h.mu.Unlock()
}

func (h *hubs) receiverLeave() {
	h.mu.Lock()
	h.receivers--
	h.mu.Unlock()
}

// has reports whether tenant has a hub, i.e. at least one live subscriber. The
// ingest path renders tap lines only when it does.
func (h *hubs) has(tenant string) bool {
	h.mu.RLock()
	_, ok := h.byTen[tenant]
	h.mu.RUnlock()
	return ok
}

// subscribe adds a subscriber to tenant's hub, creating the hub on first use.
// The caller must call unsubscribe exactly once when its receiver goes away
// (tap handlers do it in a defer, so every exit path is covered).
func (h *hubs) subscribe(tenant string) (*subscriber, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.taps >= h.maxTaps {
		return nil, ErrTooManyTaps
	}
	hb, ok := h.byTen[tenant]
	if !ok {
		hb = &hub{tenant: tenant}
		empty := []*subscriber{}
		hb.subs.Store(&empty)
		h.byTen[tenant] = hb
	}
	s := &subscriber{hub: hb, ring: make([]tapItem, h.tapBuffer), notify: make(chan struct{}, 1)}
	old := *hb.subs.Load()
	next := make([]*subscriber, len(old), len(old)+1)
	copy(next, old)
	next = append(next, s)
	hb.subs.Store(&next)
	h.taps++
	return s, nil
}

// unsubscribe removes s; the hub goes with its last subscriber. Idempotent.
func (h *hubs) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	gone := s.closed
	s.closed = true
	s.ring = nil // drop references to published lines at once
	s.mu.Unlock()
	if gone {
		return
	}
	hb := s.hub
	old := *hb.subs.Load()
	next := make([]*subscriber, 0, len(old))
	for _, o := range old {
		if o != s {
			next = append(next, o)
		}
	}
	hb.subs.Store(&next)
	if len(next) == 0 && h.byTen[hb.tenant] == hb {
		delete(h.byTen, hb.tenant)
	}
	h.taps--
}

// LeakSubscriptionForTest injects the fault the subscription-leak detector
// exists for: a subscription to tenant's hub with no receiver. The hub keeps
// offering it every record of the tenant (bounded by TapBuffer, the excess
// counted in tap_dropped_records_total) until release, which unsubscribes it
// (idempotent). Nothing in Phloem calls it: it is exported only so that tests
// outside this package (ops' acceptance test of its detectors against a real
// collector) can create the leak, which the tap handler's deferred unsubscribe
// otherwise makes impossible. It fails like a tap does at MaxTaps.
func (c *Collector) LeakSubscriptionForTest(tenant string) (release func(), err error) {
	s, err := c.hubs.subscribe(tenant)
	if err != nil {
		return nil, err
	}
	return func() { c.hubs.unsubscribe(s) }, nil
}

// count returns the number of live subscribers.
func (h *hubs) count() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.taps
}

// publish offers items to every subscriber of tenant. It never blocks on a
// subscriber: a full ring drops its oldest items (counted). items must not be
// modified afterwards: subscribers share them.
func (h *hubs) publish(tenant string, items []tapItem) {
	h.mu.RLock()
	hb, ok := h.byTen[tenant]
	h.mu.RUnlock()
	if !ok {
		return
	}
	for _, s := range *hb.subs.Load() {
		if d := s.push(items); d > 0 {
			h.m.tapDropped.Add(float64(d))
		}
	}
}

// tapItem is one rendered NDJSON line of a record, shared by every tap of the
// tenant. payload is the record's payload size, for egress accounting.
type tapItem struct {
	line    []byte
	payload int
}

// subscriber is one tap's bounded ring of pending lines. The publisher pushes
// under mu; the tap handler takes everything pending under mu and writes it
// without holding mu.
type subscriber struct {
	hub    *hub
	notify chan struct{} // buffer 1: "something is pending"

	mu      sync.Mutex
	ring    []tapItem
	head, n int
	dropped uint64 // dropped since the tap was last told
	closed  bool
}

// push appends items, dropping the oldest beyond capacity, and returns how many
// it dropped.
func (s *subscriber) push(items []tapItem) int {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0
	}
	dropped := 0
	c := len(s.ring)
	if len(items) > c {
		// Only the newest c items can survive this push.
		dropped += len(items) - c
		items = items[len(items)-c:]
	}
	for _, it := range items {
		if s.n == c {
			s.ring[s.head] = tapItem{}
			s.head = (s.head + 1) % c
			s.n--
			dropped++
		}
		s.ring[(s.head+s.n)%c] = it
		s.n++
	}
	s.dropped += uint64(dropped)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return dropped
}

// take moves every pending item into dst and returns it with the number of
// items dropped since the previous take.
func (s *subscriber) take(dst []tapItem) ([]tapItem, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := len(s.ring)
	for i := 0; i < s.n; i++ {
		k := (s.head + i) % c
		dst = append(dst, s.ring[k])
		s.ring[k] = tapItem{}
	}
	s.head, s.n = 0, 0
	d := s.dropped
	s.dropped = 0
	return dst, d
}
