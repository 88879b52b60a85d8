package consumer

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"phloem/phloem/control"
)

// The stream sink is a live view: subscribers connect to GET /v1/stream on the
// phloem data listener with their tenant's token and receive that tenant's records
// as NDJSON while they stay connected.
//
// It acknowledges every record as soon as it has been offered to the current
// subscribers (possibly none). A live view has no notion of "delivered": holding
// offsets for a subscriber that may never come back would stall the tenant's other
// sinks and grow its lag. So the stream sink never pauses a partition, and each
// subscriber has a bounded buffer (Config.StreamBuffer lines) whose oldest line is
// dropped, and counted, when the subscriber reads too slowly.

// streamDeliverer publishes batches to the hub under the sink's id.
type streamDeliverer struct {
	hub  *hub
	id   string
	line []byte
}

func (s *streamDeliverer) deliver(_ context.Context, batch []*item) error {
	for _, it := range batch {
		if !s.hub.has(s.id, it.tenant) {
			continue
		}
		// Each subscriber keeps the line after we return, so it gets its own copy.
		s.hub.publish(s.id, it.tenant, appendLine(nil, it))
	}
	return nil
}

func (s *streamDeliverer) close() error { return nil }

type subKey struct{ sink, tenant string }

type subscriber struct {
	ch chan []byte
}

// hub holds the live subscribers of the stream sinks. Subscriptions are tied to the
// HTTP request's context: the handler removes its subscriber when the request ends,
// so a departed subscriber never leaks. Safe for concurrent use.
type hub struct {
	buffer  int
	dropped prometheus.Counter
	gauge   prometheus.Gauge

	mu   sync.RWMutex
	subs map[subKey]map[*subscriber]struct{}
}

func newHub(buffer int, dropped prometheus.Counter, gauge prometheus.Gauge) *hub {
	return &hub{buffer: buffer, dropped: dropped, gauge: gauge, subs: make(map[subKey]map[*subscriber]struct{})}
}

func (h *hub) has(sink, tenant string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs[subKey{sink, tenant}]) > 0
}

func (h *hub) subscribe(sink, tenant string) *subscriber {
	s := &subscriber{ch: make(chan []byte, h.buffer)}
	k := subKey{sink, tenant}
	h.mu.Lock()
	m := h.subs[k]
	if m == nil {
		m = make(map[*subscriber]struct{})
		h.subs[k] = m
	}
	m[s] = struct{}{}
	h.mu.Unlock()
	h.gauge.Inc()
	return s
}

func (h *hub) unsubscribe(sink, tenant string, s *subscriber) {
	k := subKey{sink, tenant}
	h.mu.Lock()
	delete(h.subs[k], s)
	if len(h.subs[k]) == 0 {
		delete(h.subs, k)
	}
	h.mu.Unlock()
	h.gauge.Dec()
}

// publish offers line to every subscriber of (sink, tenant) without blocking:
// a full buffer loses its oldest line.
func (h *hub) publish(sink, tenant string, line []byte) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs[subKey{sink, tenant}] {
		select {
		case s.ch <- line:
			continue
		default:
		}
		select {
		case <-s.ch:
			h.dropped.Inc()
		default:
		}
		select {
		case s.ch <- line:
		default:
			h.dropped.Inc()
		}
	}
}

// streamWriteTimeout bounds each write to a subscriber: a peer that stops reading
// is disconnected instead of holding a goroutine forever.
const streamWriteTimeout = 10 * time.Second

// serveStream handles GET /v1/stream. Authorization: Bearer <tenant token>.
// Optional ?sink=<id> picks one of several stream sinks of the tenant (default: the
// first by id). Answers 401 (no or unknown token), 403 (tenant disabled), 404 (no
// stream sink for the tenant), else 200 and NDJSON lines until the client leaves.
func (c *Consumer) serveStream(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		http.Error(w, "missing Authorization: Bearer <tenant token>", http.StatusUnauthorized)
		return
	}
	tenant, ok := c.src.State().TenantByTokenHash(control.HashToken(tok))
	if !ok {
		http.Error(w, "unknown token", http.StatusUnauthorized)
		return
	}
	if !tenant.Active() {
		http.Error(w, fmt.Sprintf("tenant %q is disabled", tenant.ID), http.StatusForbidden)
		return
	}
	want := r.URL.Query().Get("sink")
	sinkID := ""
	for _, sr := range c.routes.Load().forTenant(tenant.ID) {
		if sr.currentSpec().Type != control.SinkStream || (want != "" && sr.id != want) {
			continue
		}
		if sinkID == "" || sr.id < sinkID {
			sinkID = sr.id
		}
	}
	if sinkID == "" {
		http.Error(w, fmt.Sprintf("no stream sink configured for tenant %q", tenant.ID), http.StatusNotFound)
		return
	}
	sub := c.hub.subscribe(sinkID, tenant.ID)
	defer c.hub.unsubscribe(sinkID, tenant.ID, sub)

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case line := <-sub.ch:
			_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			if _, err := w.Write(line); err != nil {
				return
			}
			// Write what is already buffered before flushing once.
			for more := true; more; {
				select {
				case line = <-sub.ch:
					if _, err := w.Write(line); err != nil {
						return
					}
				default:
					more = false
				}
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}
