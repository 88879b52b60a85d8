package loadtest

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"phloem/meter"
)

// maxCollectors bounds the per-collector counter arrays; the last slot counts
// requests to addresses the harness does not know.
const maxCollectors = 256

// sharedConnsPerCollector caps the shared transport's connections per collector.
const sharedConnsPerCollector = 400

// minRecordSize is the smallest payload: the verification header
// {"m":"lt-00000","s":N,"t":N,"p":""} must fit.
const minRecordSize = 64

// counters are the fleet's request counters, written by the meters' transports
// (sender goroutines) and swapped to zero by the sampler every tick.
type counters struct {
	attempts [maxCollectors]atomic.Uint64 // requests sent to collector i
	accepted [maxCollectors]atomic.Uint64 // requests collector i answered 200 (the load it carried)
	retries  [maxCollectors]atomic.Uint64 // requests by a meter whose previous attempt failed
	ok       atomic.Uint64
	s503     atomic.Uint64
	s429     atomic.Uint64
	other    atomic.Uint64 // any other status
	connErr  atomic.Uint64 // no HTTP answer (refused, reset, timeout)
	ingest   Histogram     // latency of 200 answers
}

// meterTransport wraps a meter's HTTP transport to count attempts, retries and
// answers per collector and to time successful requests. A meter's sender calls
// it from one goroutine; failed is atomic anyway so that the wrapper stays
// correct if a meter ever sends concurrently.
type meterTransport struct {
	base   http.RoundTripper
	shared bool
	c      *counters
	index  func(host string) int
	failed atomic.Bool
}

func (t *meterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ci := t.index(req.URL.Host)
	if ci < 0 || ci >= maxCollectors-1 {
		ci = maxCollectors - 1
	}
	if t.failed.Load() {
		t.c.retries[ci].Add(1)
	}
	t.c.attempts[ci].Add(1)
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		t.c.connErr.Add(1)
		t.failed.Store(true)
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		t.c.ok.Add(1)
		t.c.accepted[ci].Add(1)
		t.c.ingest.Observe(time.Since(start))
	case http.StatusServiceUnavailable:
		t.c.s503.Add(1)
	case http.StatusTooManyRequests:
		t.c.s429.Add(1)
	default:
		t.c.other.Add(1)
	}
	t.failed.Store(resp.StatusCode != http.StatusOK)
	return resp, nil
}

// CloseIdleConnections lets the meter release its own connections at shutdown.
func (t *meterTransport) CloseIdleConnections() {
	if t.shared {
		return
	}
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// fleet is the set of meters of a run.
type fleet struct {
	sc     *Scenario
	cl     *cluster
	v      *Verifier
	c      *counters
	logger *slog.Logger
	hlog   *slog.Logger
	meters []*fleetMeter

	started   atomic.Int64
	appended  atomic.Uint64
	appendErr atomic.Uint64

	wg sync.WaitGroup // appenders and meter Runs
}

type fleetMeter struct {
	idx    int
	id     string
	arrive time.Duration
	rate   float64
	m      *meter.Meter
	done   chan error // Run's result once started
	run    atomic.Bool
}

func meterID(i int) string { return fmt.Sprintf("lt-%05d", i) }

func newFleet(sc *Scenario, cl *cluster, v *Verifier, c *counters, arrivals []time.Duration, logger, hlog *slog.Logger) *fleet {
	f := &fleet{sc: sc, cl: cl, v: v, c: c, logger: logger, hlog: hlog}
	rnd := rand.New(rand.NewPCG(uint64(sc.Seed), 7))
	for i, at := range arrivals {
		r := sc.Meters.Rate.Sample(rnd)
		if r < 0.001 {
			r = 0.001
		}
		f.meters = append(f.meters, &fleetMeter{idx: i, id: meterID(i), arrive: at, rate: r, done: make(chan error, 1)})
	}
	return f
}

// create builds every meter (spool dir, transport); New contacts nobody, so the
// spike starts only when the meters are started.
func (f *fleet) create(ctx context.Context, work string) error {
	sc := f.sc
	var shared http.RoundTripper
	if sc.Meters.SharedTransport {
		// Bounded: a storm of slow requests must not open thousands of sockets
		// (both ends live in this process; see MeterSpec.SharedTransport).
		shared = newBaseTransport(sc, sharedConnsPerCollector)
		shared.(*http.Transport).MaxConnsPerHost = sharedConnsPerCollector
	}
	var collectors string
	if sc.Meters.Discovery == DiscoveryDNS {
		collectors = "dns://collectors.loadtest:" + strconv.Itoa(f.cl.port)
	}
	for _, fm := range f.meters {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cfg := meter.DefaultConfig()
		cfg.MeterID = fm.id
		cfg.Token = f.cl.token
		if collectors != "" {
			cfg.Collectors = collectors
			cfg.Resolver = f.cl.dns
			cfg.DiscoveryInterval = 5 * time.Second
			cfg.DiscoveryMinInterval = time.Second
		} else {
			cfg.Ring = &f.cl.ring
		}
		cfg.SpoolDir = filepath.Join(work, "meters", fm.id)
		if err := os.MkdirAll(cfg.SpoolDir, 0o755); err != nil {
			return fmt.Errorf("cannot create spool dir: %w", err)
		}
		cfg.SegmentBytes = 64 << 10
		cfg.MaxSpoolBytes = 32 << 20
		cfg.Fsync = meter.FsyncNever // thousands of meters on one disk; a process crash loses nothing anyway
		cfg.BatchMaxRecords = sc.Meters.BatchMaxRecords
		cfg.BatchMaxBytes = 256 << 10
		cfg.Linger = sc.Meters.Linger.D
		cfg.Compression = sc.Meters.Compression
		cfg.RequestTimeout = sc.Meters.RequestTimeout.D
		cfg.DialTimeout = 2 * time.Second
		cfg.BackoffBase = sc.Meters.BackoffBase.D
		cfg.BackoffCap = sc.Meters.BackoffCap.D
		cfg.FailoverHold = sc.Meters.FailoverHold.D
		cfg.ShutdownGrace = time.Second
		cfg.LogInterval = 30 * time.Second
		base := shared
		if base == nil {
			base = newBaseTransport(sc, 2)
		}
		cfg.Transport = &meterTransport{base: base, shared: shared != nil, c: f.c, index: f.cl.collectorIndex}
		m, err := meter.New(cfg, f.logger.With("meter", fm.id), nil)
		if err != nil {
			return fmt.Errorf("cannot build meter %s: %w", fm.id, err)
		}
		fm.m = m
	}
	return nil
}

func newBaseTransport(sc *Scenario, idle int) *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          idle * 4,
		MaxIdleConnsPerHost:   idle,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: sc.Meters.RequestTimeout.D,
	}
}

// arrive starts each meter at its arrival time (relative to t0) until loadCtx
// ends. runCtx is the meters' Run context (cancelled at teardown).
func (f *fleet) arrive(loadCtx, runCtx context.Context, t0 time.Time) {
	for _, fm := range f.meters {
		d := time.Until(t0.Add(fm.arrive))
		if d > 0 {
			t := time.NewTimer(d)
			select {
			case <-loadCtx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if loadCtx.Err() != nil {
			return
		}
		fm.run.Store(true)
		f.started.Add(1)
		f.wg.Add(2)
		go func() {
			defer f.wg.Done()
			fm.done <- fm.m.Run(runCtx)
		}()
		go func() {
			defer f.wg.Done()
			f.appendLoop(loadCtx, fm)
		}()
	}
}

// appendLoop appends records at the meter's rate until ctx ends. The payload
// carries the meter id, the meter's own sequence number and the append time, so
// the sink can verify (meter, seq) and measure end-to-end latency.
func (f *fleet) appendLoop(ctx context.Context, fm *fleetMeter) {
	rnd := rand.New(rand.NewPCG(uint64(f.sc.Seed), uint64(fm.idx)+1000))
	interval := time.Duration(float64(time.Second) / fm.rate)
	buf := make([]byte, 0, 256)
	next := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for {
		size := int(f.sc.Meters.RecordSize.Sample(rnd))
		// Only this goroutine appends to this meter, so NextSeq is the number
		// Append is about to assign.
		seq := fm.m.Stats().NextSeq
		buf = appendPayload(buf[:0], fm.id, seq, time.Now().UnixNano(), size)
		if err := fm.m.Append(ctx, buf); err != nil {
			if ctx.Err() != nil {
				return
			}
			f.appendErr.Add(1)
		} else {
			f.v.Produced(fm.idx, seq)
			f.appended.Add(1)
		}
		next = next.Add(interval)
		d := time.Until(next)
		if d < 0 {
			// Behind (Append blocked on a full spool): do not burst to catch up.
			next = time.Now()
			d = 0
		}
		t.Reset(d)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// appendPayload builds {"m":"<id>","s":<seq>,"t":<ns>,"p":"xxx…"} of about size bytes.
func appendPayload(dst []byte, id string, seq uint64, ts int64, size int) []byte {
	dst = append(dst, `{"m":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","s":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"p":"`...)
	for n := size - len(dst) - 2; n > 0; n-- {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

// fleetStats is a snapshot over the started meters.
type fleetStats struct {
	started, connected int
	acked              uint64 // records acknowledged by collectors
	pending            uint64 // appended, not yet acknowledged
	dropped            uint64
}

func (f *fleet) stats() fleetStats {
	var s fleetStats
	for _, fm := range f.meters {
		if !fm.run.Load() {
			continue
		}
		st := fm.m.Stats()
		s.started++
		if st.Collector != "" {
			s.connected++
		}
		s.acked += st.Acked
		s.dropped += st.Dropped
		if st.NextSeq > 0 && st.NextSeq-1 > st.AckedSeq {
			s.pending += st.NextSeq - 1 - st.AckedSeq
		}
	}
	return s
}

// wait cancels nothing itself: the caller cancels the load and run contexts;
// wait returns once every appender and meter Run has returned, and closes the
// meters that never started.
func (f *fleet) wait() {
	f.wg.Wait()
	for _, fm := range f.meters {
		if fm.m == nil {
			continue
		}
		if fm.run.Load() {
			if err := <-fm.done; err != nil {
				f.hlog.Warn("meter stopped with an error", "meter", fm.id, "error", err)
			}
			continue
		}
		if err := fm.m.Close(); err != nil {
			f.hlog.Warn("cannot close an unstarted meter", "meter", fm.id, "error", err)
		}
	}
}
