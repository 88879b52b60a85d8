package collector

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"phloem/collector/wire"
	"phloem/phloem/control"
)

// Request and response headers of the ingest protocol.
const (
	HeaderXMeterID   = "X-Meter-Id"
	HeaderXRequestID = "X-Request-Id"
	// HeaderXSeqBase gives the sequence number of the first record of an NDJSON
	// body (records are numbered base, base+1, ...). Default 0. Binary batches
	// carry their own sequence numbers.
	HeaderXSeqBase = "X-Seq-Base"
)

// FailoverMeterFactor × Config.MaxMeters bounds the active meters up to which
// a meter sent with X-Phloem-Placement: failover is admitted. It bounds a
// cascade (each lost collector moves its meters onto the survivors) while
// leaving room for one or two losses to be absorbed by ring successors.
const FailoverMeterFactor = 2

// ingestResult is the JSON body of a 200.
type ingestResult struct {
	Accepted int `json:"accepted"`
}

// errorBody is the JSON body of every refusal.
type errorBody struct {
	Error     string `json:"error"`
	Reason    string `json:"reason"`
	RequestID string `json:"request_id"`
}

// refusal is one non-200 answer.
type refusal struct {
	code       int
	reason     string
	msg        string
	retryAfter time.Duration // > 0: Retry-After header
}

func (c *Collector) refuse(w http.ResponseWriter, path, rid string, f refusal) {
	c.m.rejected.WithLabelValues(f.reason).Inc()
	if f.reason == reasonClientGone {
		// Nobody is listening; the write below fails silently, which is fine.
		c.m.requests.WithLabelValues(path, "499").Inc()
	} else {
		c.m.requests.WithLabelValues(path, codeLabel(f.code)).Inc()
	}
	if f.reason == reasonMetersFull {
		// Not a failure: placement working as designed.
		h := w.Header()
		h.Set(wire.HeaderFull, wire.FullMeters)
		c.logger.Debug("request refused", "path", path, "code", f.code, "reason", f.reason, "request_id", rid, "err", f.msg)
	} else if f.code >= 500 {
		c.warn.Warn("refuse:"+f.reason, "request refused", "path", path, "code", f.code, "reason", f.reason, "request_id", rid, "err", f.msg)
	} else {
		c.logger.Debug("request refused", "path", path, "code", f.code, "reason", f.reason, "request_id", rid, "err", f.msg)
	}
	h := w.Header()
	if f.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfterSeconds(f.retryAfter)))
	}
	if f.code == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="phloem"`)
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(f.code)
	b, _ := json.Marshal(errorBody{Error: f.msg, Reason: f.reason, RequestID: rid}) // cannot fail on strings
	b = append(b, '\n')
	_, _ = w.Write(b) // the client may be gone; nothing more to do about it
}

// requestID returns the client's X-Request-Id when it is sane, else a fresh one.
func requestID(r *http.Request) string {
	if id := r.Header.Get(HeaderXRequestID); id != "" && len(id) <= 128 && safeToken(id) {
		return id
	}
	var b [16]byte
	x, y := rand.Uint64(), rand.Uint64()
	const hexd = "0123456789abcdef"
	for i := 0; i < 8; i++ {
		b[i] = hexd[(x>>(4*i))&15]
		b[8+i] = hexd[(y>>(4*i))&15]
	}
	return string(b[:])
}

// safeToken reports whether s has only characters that need no escaping in
// JSON, logs or headers.
func safeToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:@/-", c) >= 0) {
			return false
		}
	}
	return true
}

// authenticate maps the bearer token to its tenant. The tenant comes from the
// token alone: nothing else in the request can select another tenant.
func (c *Collector) authenticate(r *http.Request) (control.Tenant, *refusal) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		if !c.isControlReady() {
			return control.Tenant{}, c.notReady()
		}
		return control.Tenant{}, &refusal{code: 401, reason: reasonUnauthenticated, msg: "missing bearer token: send Authorization: Bearer <tenant token>"}
	}
	hash := control.HashToken(token)
	t, found := c.tenants.State().TenantByTokenHash(hash)
	// The lookup is a map access on the hash; the constant-time comparison
	// makes the final check independent of how much of the hash matched, in
	// case the state's index is ever anything but an exact-match map.
	if !found || subtle.ConstantTimeCompare([]byte(t.TokenHash), []byte(hash)) != 1 {
		if !c.isControlReady() {
			// During replay the state is partial: "unknown" may be "not yet".
			return control.Tenant{}, c.notReady()
		}
		return control.Tenant{}, &refusal{code: 401, reason: reasonUnauthenticated, msg: "unknown token"}
	}
	if !t.Active() {
		return control.Tenant{}, &refusal{code: 403, reason: reasonTenantDisabled, msg: fmt.Sprintf("tenant %q is %s", t.ID, t.Status)}
	}
	return t, nil
}

func (c *Collector) isControlReady() bool {
	select {
	case <-c.tenants.Ready():
		return true
	default:
		return false
	}
}

func (c *Collector) notReady() *refusal {
	return &refusal{code: 503, reason: reasonNotReady, msg: "collector starting: tenant registry not loaded yet", retryAfter: c.adm.retryAfterUnavailable()}
}

// topicOf is the tenant's topic: the control record's, else the template's.
func (c *Collector) topicOf(t control.Tenant) string {
	if t.Topic != "" {
		return t.Topic
	}
	return c.cfg.Topics.Name(t.ID)
}

// serveIngest is POST /v1/ingest. See doc.go for the protocol and its answers.
func (c *Collector) serveIngest(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rid := requestID(r)
	w.Header().Set(HeaderXRequestID, rid)
	if !c.handlers.enter() {
		c.refuse(w, PathIngest, rid, refusal{code: 503, reason: reasonShuttingDown, msg: "collector shutting down", retryAfter: c.adm.retryAfterUnavailable()})
		return
	}
	defer c.handlers.leave()
	defer func() { c.m.requestLatency.Observe(time.Since(start).Seconds()) }()

	// All work runs under the request's context, bounded by the server's
	// deadline (IngestTimeout, shorter than the meter's client timeout). The
	// same deadline applies to reading the body and writing the answer.
	deadline := start.Add(c.cfg.IngestTimeout)
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(deadline)                   // unsupported only on exotic writers (recorders): the server's ReadTimeout still applies
	_ = rc.SetWriteDeadline(deadline.Add(time.Second)) // likewise; room to write the 503 of a deadline

	n, f := c.ingest(ctx, w, r, rid, start, deadline)
	if f != nil {
		if f.reason == reasonDeadline && r.Context().Err() != nil {
			f.reason = reasonClientGone
		}
		c.refuse(w, PathIngest, rid, *f)
		return
	}
	c.m.requests.WithLabelValues(PathIngest, "200").Inc()
	if c.logger.Enabled(ctx, slog.LevelDebug) {
		c.logger.LogAttrs(ctx, slog.LevelDebug, "batch accepted", slog.String("request_id", rid),
			slog.String("meter_id", r.Header.Get(HeaderXMeterID)), slog.Int("records", n), slog.Duration("took", time.Since(start)))
	}
	w.Header().Set("Content-Type", "application/json")
	b, _ := json.Marshal(ingestResult{Accepted: n}) // cannot fail
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		// Stored but the meter will not know: it retries, and the duplicate is
		// identifiable by (meter id, seq).
		c.warn.Warn("ack-write", "cannot write 200 to meter after Kafka acknowledged; the meter will resend (duplicate)", "request_id", rid, "meter_id", r.Header.Get(HeaderXMeterID), "err", err)
	}
}

// ingest does the work of one ingest request and returns the accepted count, or
// the refusal to send.
func (c *Collector) ingest(ctx context.Context, w http.ResponseWriter, r *http.Request, rid string, start, deadline time.Time) (int, *refusal) {
	// 1. Who: the token decides the tenant, and so the topic and the hub.
	tenant, f := c.authenticate(r)
	if f != nil {
		return 0, f
	}
	meter := r.Header.Get(HeaderXMeterID)
	if err := ValidMeterID(meter); err != nil {
		return 0, &refusal{code: 400, reason: reasonBadMeter, msg: "header " + HeaderXMeterID + ": " + err.Error()}
	}
	if _, ok := c.blocked[meter]; ok {
		return 0, &refusal{code: 403, reason: reasonMeterBlocked, msg: fmt.Sprintf("meter %q is blocked on this collector", meter)}
	}

	// 2. What: media type and encoding, before reading anything.
	ct, f := parseContentType(r.Header.Get("Content-Type"))
	if f != nil {
		return 0, f
	}
	enc, err := wire.ParseEncoding(r.Header.Get("Content-Encoding"))
	if err != nil {
		return 0, &refusal{code: 415, reason: reasonUnsupportedType, msg: err.Error()}
	}
	var seqBase uint64
	if ct == wire.ContentTypeNDJSON {
		if s := r.Header.Get(HeaderXSeqBase); s != "" {
			if seqBase, err = strconv.ParseUint(s, 10, 64); err != nil {
				return 0, &refusal{code: 400, reason: reasonMalformed, msg: fmt.Sprintf("header %s: %q is not an unsigned decimal integer", HeaderXSeqBase, truncate(s, 40))}
			}
		}
	}

	// 3. How big: a body announced too large is refused before one byte of it
	// is read (a 1 GiB upload costs nothing but its headers).
	maxBody := c.cfg.maxBodyBytes()
	if r.ContentLength > maxBody {
		return 0, &refusal{code: 413, reason: reasonTooLarge, msg: fmt.Sprintf("body of %d bytes exceeds the limit of %d bytes", r.ContentLength, maxBody)}
	}

	// 4. Admission: placement (bounded loads), global capacity, then the
	// tenant's rate.
	if c.draining() {
		return 0, &refusal{code: 503, reason: reasonShuttingDown, msg: "collector shutting down", retryAfter: c.adm.retryAfterUnavailable()}
	}
	if c.cfg.MaxMeters > 0 {
		bound, fallback := c.cfg.MaxMeters, false
		switch r.Header.Get(wire.HeaderPlacement) {
		case wire.PlacementFallback:
			fallback = true
		case wire.PlacementFailover:
			bound *= FailoverMeterFactor
		}
		if !c.activity.admit(tenant.ID, meter, bound, fallback, time.Now()) {
			// Retry-After is for meters that do not know X-Phloem-Full: they
			// come back here later instead of at their backoff's pace.
			return 0, &refusal{code: 503, reason: reasonMetersFull, msg: fmt.Sprintf("collector holds its maximum of %d active meters: use the next collector of your ring order", c.cfg.MaxMeters),
				retryAfter: c.adm.retryAfterUnavailable()}
		}
	}
	if !c.adm.acquireRequest() {
		return 0, &refusal{code: 503, reason: reasonOverRequests, msg: "collector over capacity (in-flight requests)", retryAfter: c.adm.retryAfterOverload()}
	}
	c.m.inflightReqs.Inc()
	defer func() {
		c.adm.releaseRequest()
		c.m.inflightReqs.Dec()
	}()
	bucket := c.adm.tenantBucket(tenant)
	if bucket != nil {
		if wait := bucket.check(start); wait > 0 {
			return 0, &refusal{code: 429, reason: reasonRateLimited, msg: fmt.Sprintf("tenant %q over its rate limit (%g records/s, %g bytes/s)", tenant.ID, tenant.Limits.RecordsPerSec, tenant.Limits.BytesPerSec),
				retryAfter: min(wait+time.Duration(rand.Int64N(int64(min(wait, time.Second))+1)), c.cfg.MaxRetryAfter)}
		}
	}

	// 5. Read and decode. The lease holds the body's memory until both this
	// handler and the republisher are done with it.
	l := newLease(c)
	defer l.release()
	if f := c.readBody(l, w, r, enc, maxBody); f != nil {
		return 0, f
	}
	now := start.UnixNano()
	switch ct {
	case wire.ContentTypeBatch:
		err = wire.DecodeBatch(l.buf, c.limits, func(rec wire.Record) error {
			if rec.Timestamp == 0 {
				rec.Timestamp = now
			}
			l.recs = append(l.recs, rec)
			return nil
		})
	default:
		err = wire.DecodeNDJSON(l.buf, c.limits, func(i int, p []byte) error {
			l.recs = append(l.recs, wire.Record{Seq: seqBase + uint64(i), Timestamp: now, Payload: p})
			return nil
		})
	}
	if err != nil {
		return 0, decodeRefusal(err)
	}
	var payload int
	for i := range l.recs {
		payload += len(l.recs[i].Payload)
	}
	// Ingress counts what the collector accepted, i.e. what Kafka acknowledged
	// (counted below with the egress), so that a Kafka outage or a retried batch
	// does not inflate it: the ops ratio compares it with what left for Kafka.
	accepted := func() {
		tc := c.m.forTenant(tenant.ID)
		tc.records.Add(float64(len(l.recs)))
		tc.bytes.Add(float64(payload))
		c.m.egressKafka.Add(float64(payload))
	}
	if bucket != nil {
		bucket.charge(start, float64(len(l.recs)), float64(payload))
	}

	// 6. Store: the answer waits for Kafka's acknowledgement of every record.
	// A retry of a batch whose earlier attempt is still in the producer joins
	// it (see limbo) rather than storing a second copy.
	var key string
	if c.limbo != nil {
		key = batchKey(tenant.ID, meter, l.buf, l.recs[0].Seq, l.recs[len(l.recs)-1].Seq, len(l.recs))
		prev, stored := c.limbo.lookup(key, start)
		if prev != nil {
			select {
			case <-prev.done:
				stored = prev.err == nil // failed: produce anew below
			case <-ctx.Done():
				return 0, c.deadlineRefusal()
			}
		}
		if stored {
			// The earlier attempt's answer (503) went out before its records were
			// acknowledged, so they were never counted: count them now, once.
			c.m.retriesJoined.Inc()
			accepted()
			return len(l.recs), nil
		}
	}
	b := &Batch{Tenant: tenant.ID, Topic: c.topicOf(tenant), Partitions: tenant.Partitions, MeterID: meter, RequestID: rid,
		Received: start, Records: l.recs, Deadline: deadline}
	fl := &flight{key: key, done: make(chan struct{})}
	l.refs.Add(1) // the republisher's reference, dropped in its done
	c.rep.Publish(ctx, b, func(err error) {
		fl.err = err
		close(fl.done)
		if key != "" {
			c.limbo.complete(fl, time.Now())
		}
		l.release()
	})
	select {
	case <-fl.done:
		err = fl.err
	case <-ctx.Done():
		if key != "" {
			c.limbo.orphan(fl, time.Now())
		}
		return 0, c.deadlineRefusal()
	}
	if err != nil {
		if errors.Is(err, kerr.MessageTooLarge) {
			return 0, &refusal{code: 413, reason: reasonTooLarge, msg: "a record is larger than Kafka accepts: " + err.Error()}
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, c.deadlineRefusal()
		}
		return 0, &refusal{code: 503, reason: reasonKafkaUnavailable, msg: "Kafka unavailable: " + err.Error(), retryAfter: c.adm.retryAfterUnavailable()}
	}
	accepted()

	// 7. Live taps see what was stored, once it was stored.
	if c.hubs.has(tenant.ID) {
		c.hubs.publish(tenant.ID, renderTap(l.recs, meter, rid))
	}
	return len(l.recs), nil
}

func (c *Collector) deadlineRefusal() *refusal {
	return &refusal{code: 503, reason: reasonDeadline, retryAfter: c.adm.retryAfterUnavailable(),
		msg: fmt.Sprintf("Kafka did not acknowledge within the server deadline of %s; retry", c.cfg.IngestTimeout)}
}

func parseContentType(v string) (string, *refusal) {
	mt, _, err := mime.ParseMediaType(v)
	if err != nil || (mt != wire.ContentTypeBatch && mt != wire.ContentTypeNDJSON) {
		return "", &refusal{code: 415, reason: reasonUnsupportedType,
			msg: fmt.Sprintf("unsupported Content-Type %q: use %s or %s", truncate(v, 80), wire.ContentTypeBatch, wire.ContentTypeNDJSON)}
	}
	return mt, nil
}

// decodeRefusal maps a decoder error: limits give 413, anything else 400 with
// the decoder's "what and where".
func decodeRefusal(err error) *refusal {
	if errors.Is(err, wire.ErrTooManyRecords) || errors.Is(err, wire.ErrRecordTooLarge) || errors.Is(err, wire.ErrBatchTooLarge) {
		return &refusal{code: 413, reason: reasonTooLarge, msg: err.Error()}
	}
	return &refusal{code: 400, reason: reasonMalformed, msg: "malformed body: " + err.Error()}
}

// errOverBytes: the in-flight byte bound was reached while reading a body.
var errOverBytes = errors.New("collector over capacity (in-flight bytes)")

// errBodyTooLarge: the decompressed body passed max_batch_bytes.
var errBodyTooLarge = errors.New("body too large")

// countingReader counts raw body bytes for ingress_body_bytes_total.
type countingReader struct {
	r io.Reader
	n int64
}

func (cr *countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	cr.n += int64(n)
	return n, err
}

// readBody reads the (decompressed) body into l.buf, reserving its memory from
// the in-flight byte bound as the buffer grows, and maps every failure to an
// answer: size limits 413, byte bound 503, deadline 503, anything the client
// sent wrong 400.
func (c *Collector) readBody(l *lease, w http.ResponseWriter, r *http.Request, enc string, maxBody int64) *refusal {
	raw := &countingReader{r: http.MaxBytesReader(w, r.Body, maxBody)}
	defer func() { c.m.ingressBody.Add(float64(raw.n)) }()
	limit := c.limits.MaxBatchBytes
	hint := 64 << 10
	if enc == wire.EncodingIdentity && r.ContentLength >= 0 {
		hint = int(r.ContentLength) + 1 // +1: see EOF without growing
	}
	dec, err := c.codec.NewDecompressReader(enc, raw)
	if err != nil {
		return readRefusal(err, enc)
	}
	defer func() { _ = dec.Close() }() // returns the decoder to its pool; cannot fail
	if err := l.read(dec, limit, hint); err != nil {
		return readRefusal(err, enc)
	}
	return nil
}

func readRefusal(err error, enc string) *refusal {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &refusal{code: 413, reason: reasonTooLarge, msg: fmt.Sprintf("body exceeds the limit of %d bytes", mbe.Limit)}
	case errors.Is(err, errBodyTooLarge):
		return &refusal{code: 413, reason: reasonTooLarge, msg: err.Error()}
	case errors.Is(err, errOverBytes):
		return &refusal{code: 503, reason: reasonOverBytes, msg: err.Error()}
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return &refusal{code: 503, reason: reasonDeadline, msg: "body not received within the server deadline: " + err.Error()}
	}
	what := "body"
	if enc != wire.EncodingIdentity {
		what = enc + " body"
	}
	return &refusal{code: 400, reason: reasonMalformed, msg: fmt.Sprintf("cannot read %s: %v", what, err)}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Body buffers are pooled in power-of-two size classes from 64 KiB; a buffer's
// whole capacity counts against the in-flight byte bound while it is leased.
const (
	minClassShift = 16 // 64 KiB
	maxPooled     = 16 << 20
)

var bufPools [9]sync.Pool // 64 KiB .. 16 MiB

func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

func getBuf(n int) []byte {
	k := classOf(n)
	if k < len(bufPools) {
		if b, ok := bufPools[k].Get().(*[]byte); ok {
			return (*b)[:0]
		}
		return make([]byte, 0, 1<<(k+minClassShift))
	}
	return make([]byte, 0, n)
}

func putBuf(b []byte) {
	c := cap(b)
	if c < 1<<minClassShift || c > maxPooled || c&(c-1) != 0 {
		return
	}
	k := classOf(c)
	b = b[:0]
	bufPools[k].Put(&b)
}

var recsPool = sync.Pool{New: func() any { s := make([]wire.Record, 0, 512); return &s }}

// lease owns one request's body buffer, decoded records and byte reservation.
// The handler holds one reference, the republisher another (until its done):
// Kafka records alias the buffer, so it may return to the pool only when both
// are finished, which can be after the handler answered 503.
type lease struct {
	c        *Collector
	buf      []byte
	recs     []wire.Record
	reserved int64
	refs     atomic.Int32
}

func newLease(c *Collector) *lease {
	l := &lease{c: c}
	l.refs.Store(1)
	l.recs = (*recsPool.Get().(*[]wire.Record))[:0]
	return l
}

func (l *lease) release() {
	if l.refs.Add(-1) != 0 {
		return
	}
	if l.buf != nil {
		putBuf(l.buf)
		l.buf = nil
	}
	clear(l.recs) // drop payload references before pooling
	recs := l.recs[:0]
	if cap(recs) <= 1<<16 {
		recsPool.Put(&recs)
	}
	l.recs = nil
	l.c.adm.releaseBytes(l.reserved)
	l.c.m.inflightBytes.Sub(float64(l.reserved))
	l.reserved = 0
}

// grow replaces l.buf by a buffer of at least n bytes, reserving the difference.
func (l *lease) grow(n int) error {
	nb := getBuf(n)
	add := int64(cap(nb)) - int64(cap(l.buf))
	if !l.c.adm.acquireBytes(add) {
		putBuf(nb)
		return errOverBytes
	}
	l.c.m.inflightBytes.Add(float64(add))
	l.reserved += add
	nb = append(nb, l.buf...)
	if l.buf != nil {
		putBuf(l.buf)
	}
	l.buf = nb
	return nil
}

// read reads r to EOF into l.buf; more than limit bytes is errBodyTooLarge (at
// most limit+1 bytes are read).
func (l *lease) read(r io.Reader, limit, hint int) error {
	if err := l.grow(min(max(hint, 1), limit+1)); err != nil {
		return err
	}
	for {
		if len(l.buf) == cap(l.buf) {
			if len(l.buf) > limit {
				return fmt.Errorf("%w: more than %d bytes after decompression (max_batch_bytes)", errBodyTooLarge, limit)
			}
			if err := l.grow(min(2*cap(l.buf), limit+1)); err != nil {
				return err
			}
		}
		n, err := r.Read(l.buf[len(l.buf):cap(l.buf)])
		l.buf = l.buf[:len(l.buf)+n]
		if len(l.buf) > limit {
			return fmt.Errorf("%w: more than %d bytes after decompression (max_batch_bytes)", errBodyTooLarge, limit)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
