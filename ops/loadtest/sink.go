package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Sink is the harness-owned HTTP endpoint the phloem consumer's http sink posts
// NDJSON batches to. It records every (meter, seq) in the Verifier, measures
// end-to-end latency from the timestamp in the payload, and can be switched to a
// blackhole that accepts requests and never answers them (the consumer's
// per-request timeout then fails each attempt; nothing it sent is recorded, so
// it must deliver again).
type Sink struct {
	v   *Verifier
	e2e *Histogram
	ln  net.Listener
	srv *http.Server

	blackhole atomic.Bool
	// hold is closed at shutdown so blackholed handlers return.
	hold chan struct{}

	records    atomic.Uint64 // deliveries recorded (duplicates included)
	bytes      atomic.Uint64 // request body bytes of recorded batches
	requests   atomic.Uint64
	blackholed atomic.Uint64 // requests swallowed by the blackhole
	bad        atomic.Uint64 // lines that did not parse
	done       chan error
}

// sinkLine is one NDJSON line of the consumer's http sink (phloem/consumer
// appendLine) with the harness's payload inside.
type sinkLine struct {
	Meter   string  `json:"meter"`
	Seq     *uint64 `json:"seq"`
	Payload struct {
		M string `json:"m"`
		S uint64 `json:"s"`
		T int64  `json:"t"`
	} `json:"payload"`
}

// maxSinkBody bounds one request body (the consumer's batches are ~1 MiB).
const maxSinkBody = 64 << 20

// StartSink listens on addr (loopback) and serves until Close.
func StartSink(addr string, v *Verifier, e2e *Histogram) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen for the sink on %s: %w", addr, err)
	}
	s := &Sink{v: v, e2e: e2e, ln: ln, hold: make(chan struct{}), done: make(chan error, 1)}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// URL is what the consumer's http sink posts to.
func (s *Sink) URL() string { return "http://" + s.ln.Addr().String() + "/ingest" }

// SetBlackhole switches the blackhole on or off.
func (s *Sink) SetBlackhole(on bool) { s.blackhole.Store(on) }

// ServeHTTP implements http.Handler.
func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if s.blackhole.Load() {
		// Accept and never answer: hold the request until the client gives up or the
		// harness stops. Records in it are not recorded.
		s.blackholed.Add(1)
		select {
		case <-r.Context().Done():
		case <-s.hold:
		}
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSinkBody))
	if err != nil {
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	now := time.Now().UnixNano()
	ds := make([]Delivery, 0, bytes.Count(body, []byte{'\n'})+1)
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), maxSinkBody)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var l sinkLine
		if err := json.Unmarshal(line, &l); err != nil || l.Payload.M == "" {
			s.bad.Add(1)
			continue
		}
		d := Delivery{Meter: l.Payload.M, Seq: l.Payload.S}
		if l.Seq != nil {
			d.SinkSeq, d.HasSinkSeq = *l.Seq, true
		}
		ds = append(ds, d)
		if l.Payload.T > 0 && now > l.Payload.T {
			s.e2e.Observe(time.Duration(now - l.Payload.T))
		}
	}
	// Recorded before answering: once the consumer hears 200 it may commit.
	s.v.Seen(ds)
	s.records.Add(uint64(len(ds)))
	s.bytes.Add(uint64(len(body)))
	w.WriteHeader(http.StatusOK)
}

// Close stops the server and releases blackholed requests.
func (s *Sink) Close() error {
	close(s.hold)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	if serr := <-s.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("cannot stop the sink: %w", err)
	}
	return nil
}
