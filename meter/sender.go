package meter

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"phloem/collector/wire"
	"phloem/internal/jitter"
)

// IngestPath is the collector endpoint meters POST batches to.
const IngestPath = "/v1/ingest"

// maxRetryAfter caps a collector's Retry-After: a bogus header must not park a
// meter for hours.
const maxRetryAfter = 5 * time.Minute

// rejectAttempts is how many times a batch refused as malformed (400) is tried
// before it is dropped: a collector in the middle of an upgrade may refuse what
// the next one accepts, but a truly poisoned batch must not wedge the meter.
const rejectAttempts = 3

// outcome classifies one ingest attempt.
type outcome int

const (
	outOK        outcome = iota
	outRetry             // 5xx, 429, 408, 401/403 (fixable by an operator), 415
	outConnError         // no response: dial refused, timeout, reset
	outTooLarge          // 413
	outRejected          // 400 and other 4xx
	outFull              // 503 + X-Phloem-Full: placed elsewhere (bounded loads)
)

type result struct {
	kind       outcome
	code       int
	retryAfter time.Duration
	detail     string
}

// sender reads batches from the spool, sends them to the collector placement
// chooses and acknowledges them in the spool. One goroutine, owned by Meter.Run;
// it holds at most one batch, so records leave in sequence order.
type sender struct {
	m      *Meter
	client *http.Client
	codec  *wire.Codec
	bo     backoff.BackOff
	rnd    *rand.Rand
	b      batch
	body   []byte
	enc    []byte

	ringVer uint64
	cands   []string
	down    map[string]time.Time // collector -> skip until (connection failure)
	full    map[string]time.Time // collector -> skip until (X-Phloem-Full)
}

func newSender(m *Meter, client *http.Client, codec *wire.Codec) *sender {
	s := &sender{
		m: m, client: client, codec: codec,
		rnd:  rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		down: make(map[string]time.Time),
		full: make(map[string]time.Time),
	}
	if m.cfg.NewBackOff != nil {
		s.bo = m.cfg.NewBackOff()
	} else {
		s.bo = jitter.NewFullJitter(m.cfg.BackoffBase, m.cfg.BackoffCap, nil)
	}
	return s
}

// run sends until ctx is done, or until stop is closed and the spool is drained.
func (s *sender) run(ctx context.Context, stop <-chan struct{}) {
	for {
		s.b.reset()
		if !s.gather(ctx, stop) {
			return
		}
		if err := s.deliver(ctx, s.b.recs); err != nil {
			return // ctx done: the batch stays spooled (unacknowledged) for next time
		}
	}
}

// gather fills s.b: it returns once the batch is full, or Linger after its first
// record, or at once when stopping. false means there is nothing to send and the
// sender should exit.
func (s *sender) gather(ctx context.Context, stop <-chan struct{}) bool {
	cfg := &s.m.cfg
	var deadline <-chan time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	stopping := false
	for {
		if s.m.spool.read(&s.b, cfg.BatchMaxRecords, cfg.BatchMaxBytes) {
			return true
		}
		if n := len(s.b.recs); n > 0 {
			if stopping || cfg.Linger <= 0 {
				return true
			}
			if timer == nil {
				timer = time.NewTimer(cfg.Linger)
				deadline = timer.C
			}
		} else if stopping {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-s.m.spool.appended:
		case <-deadline:
			return true
		case <-stop:
			stopping = true
			stop = nil
		}
	}
}

// deliver sends recs until a collector acknowledges them (or they are dropped by
// policy) and then acknowledges them in the spool. It returns an error only when
// ctx is done. A 413 splits the batch in halves, delivered in order.
func (s *sender) deliver(ctx context.Context, recs []wire.Record) error {
	cfg := &s.m.cfg
	s.body = wire.AppendBatch(s.body[:0], recs)
	var err error
	s.enc, err = s.codec.Compress(s.enc[:0], cfg.Compression, s.body)
	if err != nil {
		// Cannot happen with a validated encoding; send uncompressed rather than stall.
		s.m.throttle.Error("compress", "cannot compress batch; sending it uncompressed", "error", err)
		s.enc = append(s.enc[:0], s.body...)
	}
	encoding := cfg.Compression
	if err != nil {
		encoding = wire.EncodingIdentity
	}
	last := recs[len(recs)-1].Seq
	rejected := 0
	// fullMoves counts the immediate (no backoff) moves after X-Phloem-Full
	// since the last sleep. Marks normally stop the moves after one per
	// collector (then fallback), but a mark may expire before the next pick
	// (FullHold shorter than a round trip), so the bound is also kept here: a
	// meter whose collectors all answer full must never loop without sleeping.
	fullMoves := 0
	for attempt := 0; ; attempt++ {
		target, placement := s.pick()
		fallback := placement == wire.PlacementFallback
		var res result
		if target == "" {
			s.m.throttle.Warn("no-collector", "no collector known yet; waiting for discovery", "collectors", s.m.cfg.Collectors)
			s.m.disc.requestRefresh()
			res = result{kind: outRetry}
		} else {
			if attempt > 0 {
				s.m.met.incRetries()
			}
			s.m.met.incAttempts()
			s.m.met.addSent(len(recs))
			if cb := cfg.OnAttempt; cb != nil {
				cb(target)
			}
			res = s.post(ctx, target, encoding, placement)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		switch res.kind {
		case outOK:
			s.bo.Reset()
			s.m.met.addAcked(len(recs))
			s.m.met.setCurrent(target)
			s.ack(last)
			return nil
		case outTooLarge:
			if len(recs) > 1 {
				// The collector's limits are lower than ours: halve and resend.
				s.m.throttle.Warn("split", "collector refused batch as too large; splitting it", "collector", target, "records", len(recs), "detail", res.detail)
				h := len(recs) / 2
				if err := s.deliver(ctx, recs[:h]); err != nil {
					return err
				}
				return s.deliver(ctx, recs[h:])
			}
			// Throttled: a collector whose record limit is below every record
			// drops them one by one, as fast as it answers (no backoff here).
			s.m.met.addDropped(DropTooLarge, 1)
			s.m.throttle.Error("drop-too-large", "collector refused a single record as too large; dropped it",
				"collector", target, "seq", last, "bytes", len(recs[0].Payload), "detail", res.detail)
			s.ack(last)
			return nil
		case outRejected:
			rejected++
			if rejected >= rejectAttempts {
				s.m.met.addDropped(DropRejected, len(recs))
				s.m.logger.Error("collector rejected the batch as malformed; dropped it",
					"collector", target, "code", res.code, "first_seq", recs[0].Seq, "last_seq", last, "detail", res.detail)
				s.ack(last)
				return nil
			}
		case outConnError:
			s.down[target] = time.Now().Add(cfg.FailoverHold)
			if s.allDown() {
				s.m.disc.requestRefresh()
			}
		case outFull:
			// Bounded loads: the collector is full of other meters. Skip it for
			// FullHold (jittered) and try the next collector of the ring order
			// at once: this is placement, not overload, so no backoff. At most
			// one immediate attempt per collector, then the fallback attempt
			// (which a collector must admit). A collector that refuses even the
			// fallback is out of protocol: back off as for any 503.
			s.full[target] = time.Now().Add(cfg.FullHold + time.Duration(s.rnd.Int64N(int64(cfg.FullHold/2)+1)))
			if !fallback && fullMoves < len(s.cands) {
				fullMoves++
				s.m.logger.Debug("collector full; trying the next one of the ring order", "collector", target, "detail", res.detail)
				continue
			}
		}
		if target != "" {
			s.m.throttle.Warn("attempt:"+strconv.Itoa(int(res.kind)), "ingest attempt failed; backing off",
				"collector", target, "code", res.code, "retry_after", res.retryAfter, "detail", res.detail, "records", len(recs))
		}
		d := s.bo.NextBackOff()
		if d == backoff.Stop || d < 0 {
			d = cfg.BackoffCap
		}
		// Retry-After is a floor; the spread (as long again) keeps every meter told
		// the same Retry-After from returning in the same instant.
		d = jitter.AtLeast(d, res.retryAfter, res.retryAfter, s.rnd)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		fullMoves = 0
	}
}

func (s *sender) ack(seq uint64) {
	if err := s.m.spool.ack(seq); err != nil {
		// The collector has the records; a lost cursor only means duplicates
		// after a restart.
		s.m.throttle.Error("ack", "cannot persist spool acknowledgement; records may be resent after a restart", "error", err)
	}
}

// pick returns the collector for the next attempt: the first of the meter's
// placement that is neither held down after a connection failure nor marked
// full (bounded loads). When every live one is marked full, the first live one,
// with fallback set (sent as X-Phloem-Placement: fallback, which the collector
// must admit). When all are held down, the one whose hold ends first.
//
// Placement is thus sticky: a meter stays on the collector that accepted it
// until that collector fails or a mark before it in the ring order expires;
// then it tries its owner (and the ones before) again.
//
// The placement returned is "" (normal), wire.PlacementFailover (a collector before
// target in the ring order is held down) or wire.PlacementFallback.
func (s *sender) pick() (target, placement string) {
	r := s.m.ring().Load()
	if r.Len() == 0 {
		return "", ""
	}
	if v := r.Version(); v != s.ringVer {
		var prevOwner string
		if len(s.cands) > 0 {
			prevOwner = s.cands[0]
		}
		s.cands = Placement(r, s.m.cfg.MeterID, s.cands)
		s.ringVer = v
		s.prune()
		if prevOwner != "" && prevOwner != s.cands[0] {
			s.m.logger.Info("placement changed", "from", prevOwner, "to", s.cands[0], "ring_version", v)
		}
	}
	now := time.Now()
	best, firstFull := "", ""
	var bestUntil time.Time
	failover := ""
	for _, c := range s.cands {
		until, held := s.down[c]
		if held && now.After(until) {
			delete(s.down, c)
			held = false
		}
		if held {
			if best == "" || until.Before(bestUntil) {
				best, bestUntil = c, until
			}
			failover = wire.PlacementFailover
			continue
		}
		if s.isFull(c, now) {
			if firstFull == "" {
				firstFull = c
			}
			continue
		}
		return c, failover
	}
	if firstFull != "" {
		return firstFull, wire.PlacementFallback
	}
	if s.isFull(best, now) {
		return best, wire.PlacementFallback
	}
	return best, ""
}

// isFull reports whether c is marked full, forgetting an expired mark.
func (s *sender) isFull(c string, now time.Time) bool {
	until, ok := s.full[c]
	if ok && now.After(until) {
		delete(s.full, c)
		return false
	}
	return ok
}

// prune forgets marks of collectors that left the placement, so that the maps
// stay bounded by the candidates however often membership changes.
func (s *sender) prune() {
	for _, m := range []map[string]time.Time{s.down, s.full} {
		for c := range m {
			if !slices.Contains(s.cands, c) {
				delete(m, c)
			}
		}
	}
}

func (s *sender) allDown() bool {
	now := time.Now()
	for _, c := range s.cands {
		if until, held := s.down[c]; !held || now.After(until) {
			return false
		}
	}
	return true
}

// post sends s.enc to target once.
func (s *sender) post(ctx context.Context, target, encoding, placement string) result {
	url := collectorURL(target, s.m.cfg.TLS.Enabled) + IngestPath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(s.enc))
	if err != nil {
		return result{kind: outConnError, detail: err.Error()}
	}
	rid := requestID()
	req.Header.Set("Authorization", "Bearer "+s.m.cfg.Token)
	req.Header.Set("Content-Type", wire.ContentTypeBatch)
	if encoding != wire.EncodingIdentity {
		req.Header.Set("Content-Encoding", encoding)
	}
	req.Header.Set("X-Meter-Id", s.m.cfg.MeterID)
	req.Header.Set("X-Request-Id", rid)
	if placement != "" {
		req.Header.Set(wire.HeaderPlacement, placement)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.m.met.responses.WithLabelValues("error").Inc()
		return result{kind: outConnError, detail: fmt.Sprintf("request %s: %v", rid, err)}
	}
	// Read a bounded prefix for the log, then drain a little more so the
	// connection can be reused; a huge error body is cut.
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close() // response fully handled; a close error changes nothing
	s.m.met.responses.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()
	res := result{code: resp.StatusCode, detail: strings.TrimSpace(string(msg))}
	if res.detail != "" {
		res.detail = fmt.Sprintf("request %s: %s", rid, res.detail)
	} else {
		res.detail = "request " + rid
	}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		res.kind = outOK
	case c == http.StatusServiceUnavailable && resp.Header.Get(wire.HeaderFull) != "":
		res.kind = outFull
	case c == http.StatusRequestEntityTooLarge:
		res.kind = outTooLarge
	case c == http.StatusTooManyRequests || c == http.StatusRequestTimeout || c >= 500 ||
		c == http.StatusUnauthorized || c == http.StatusForbidden || c == http.StatusUnsupportedMediaType:
		// 401/403/415 are configuration problems an operator fixes (token, tenant,
		// encoding): keep the data spooled and keep trying.
		res.kind = outRetry
		res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	default:
		res.kind = outRejected
	}
	return res
}

// collectorURL returns the base URL of a collector address.
func collectorURL(addr string, tls bool) string {
	if strings.Contains(addr, "://") {
		return addr
	}
	if tls {
		return "https://" + addr
	}
	return "http://" + addr
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP-date
// (RFC 9110 §10.2.3). Unparseable or past values give 0; the result is capped at
// maxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// requestID returns 16 random bytes in hex.
func requestID() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
