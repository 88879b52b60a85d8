package collector

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"phloem/collector/wire"
)

// renderTap renders records as tap lines, once for every tap of the tenant:
//
//	{"meter_id":"m1","seq":7,"ts":1700000000000000000,"request_id":"ab12","payload":{...}}
//
// payload is the record itself when it is valid JSON, else "payload_b64" holds it
// base64-encoded. meter and request id are restricted to characters that need no
// JSON escaping (ValidMeterID, safeToken). All lines share one fresh buffer, so
// the request's body buffer can return to its pool.
func renderTap(recs []wire.Record, meter, rid string) []tapItem {
	size := 0
	for i := range recs {
		size += 96 + len(meter) + len(rid) + base64.StdEncoding.EncodedLen(len(recs[i].Payload))
	}
	buf := make([]byte, 0, size)
	items := make([]tapItem, len(recs))
	for i := range recs {
		r := &recs[i]
		s := len(buf)
		buf = append(buf, `{"meter_id":"`...)
		buf = append(buf, meter...)
		buf = append(buf, `","seq":`...)
		buf = strconv.AppendUint(buf, r.Seq, 10)
		buf = append(buf, `,"ts":`...)
		buf = strconv.AppendInt(buf, r.Timestamp, 10)
		buf = append(buf, `,"request_id":"`...)
		buf = append(buf, rid...)
		if json.Valid(r.Payload) {
			buf = append(buf, `","payload":`...)
			buf = append(buf, r.Payload...)
		} else {
			buf = append(buf, `","payload_b64":"`...)
			buf = base64.StdEncoding.AppendEncode(buf, r.Payload)
			buf = append(buf, '"')
		}
		buf = append(buf, "}\n"...)
		items[i] = tapItem{line: buf[s:len(buf):len(buf)], payload: len(r.Payload)}
	}
	return items
}

// serveTap is GET /v1/tap: a live NDJSON stream of the token's tenant's records
// as they are stored. The tenant comes from the token alone; query parameters and
// headers select nothing. Lines are records (see renderTap), {"dropped":N} when
// the tap was too slow and lost its N oldest records, and {"heartbeat":unix_ms}
// when idle.
//
// The subscription lives exactly as long as this handler: it ends (deferred
// unsubscribe) when the request context ends (client gone, connection closed),
// a write fails or misses its deadline, or the collector shuts down. The handler
// counts itself as the subscription's receiver (tap_receivers) around that
// lifetime; see hubGauges.
func (c *Collector) serveTap(w http.ResponseWriter, r *http.Request) {
	rid := requestID(r)
	w.Header().Set(HeaderXRequestID, rid)
	if !c.handlers.enter() {
		c.refuse(w, PathTap, rid, refusal{code: 503, reason: reasonShuttingDown, msg: "collector shutting down", retryAfter: c.adm.retryAfterUnavailable()})
		return
	}
	defer c.handlers.leave()
	if c.draining() {
		c.refuse(w, PathTap, rid, refusal{code: 503, reason: reasonShuttingDown, msg: "collector shutting down", retryAfter: c.adm.retryAfterUnavailable()})
		return
	}
	tenant, f := c.authenticate(r)
	if f != nil {
		c.refuse(w, PathTap, rid, *f)
		return
	}
	// still reports whether the token still opens this tenant's stream: a
	// disabled tenant or a rotated token ends the taps opened before.
	hash := tenant.TokenHash
	still := func() bool {
		t, ok := c.tenants.State().TenantByTokenHash(hash)
		return ok && t.ID == tenant.ID && t.Active()
	}
	// This handler is the subscription's receiver: counted (tap_receivers)
	// before it subscribes and uncounted after it unsubscribed (defers run in
	// reverse), so a scrape never sees this subscription without its receiver.
	c.hubs.receiverEnter()
	defer c.hubs.receiverLeave()
	sub, err := c.hubs.subscribe(tenant.ID)
	if err != nil {
		c.refuse(w, PathTap, rid, refusal{code: 503, reason: reasonOverTaps, msg: err.Error(), retryAfter: c.adm.retryAfterOverload()})
		return
	}
	defer c.hubs.unsubscribe(sub)

	rc := http.NewResponseController(w)
	// A tap is a long-lived stream: lift the server's whole-request read
	// deadline (ReadTimeout), which would otherwise cancel the request context
	// through the server's background read. Liveness comes from per-write
	// deadlines, heartbeats and TCP keep-alive instead.
	_ = rc.SetReadDeadline(time.Time{}) // unsupported only on test recorders
	h := w.Header()
	h.Set("Content-Type", wire.ContentTypeNDJSON)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	c.m.requests.WithLabelValues(PathTap, "200").Inc()
	c.logger.Debug("tap opened", "tenant", tenant.ID, "request_id", rid)

	write := func(b []byte) error {
		if err := rc.SetWriteDeadline(time.Now().Add(c.cfg.TapWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		return nil
	}
	w.WriteHeader(http.StatusOK)
	if err := write(nil); err != nil { // flush the headers so the client sees the stream open
		return
	}

	heartbeat := time.NewTicker(c.cfg.TapHeartbeat)
	defer heartbeat.Stop()
	var (
		items []tapItem
		out   []byte
		idle  = true
	)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.stopping:
			return
		case <-heartbeat.C:
			if !still() {
				return
			}
			if !idle {
				idle = true
				continue
			}
			out = append(out[:0], `{"heartbeat":`...)
			out = strconv.AppendInt(out, time.Now().UnixMilli(), 10)
			out = append(out, "}\n"...)
			if err := write(out); err != nil {
				return
			}
		case <-sub.notify:
			if !still() {
				return
			}
			idle = false
			var dropped uint64
			items, dropped = sub.take(items[:0])
			out = out[:0]
			if dropped > 0 {
				out = append(out, `{"dropped":`...)
				out = strconv.AppendUint(out, dropped, 10)
				out = append(out, "}\n"...)
				c.warn.Warn("tap-dropped:"+tenant.ID, "slow tap lost its oldest records", "tenant", tenant.ID, "dropped", dropped, "request_id", rid)
			}
			payload := 0
			for _, it := range items {
				out = append(out, it.line...)
				payload += it.payload
			}
			clear(items) // do not pin published lines until the next take
			if len(out) == 0 {
				continue
			}
			if err := write(out); err != nil {
				return
			}
			c.m.egressTap.Add(float64(payload))
			if cap(out) > 1<<20 {
				out = nil // a burst should not pin a large buffer for the tap's life
			}
		}
	}
}
