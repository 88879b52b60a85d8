package meter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"phloem/collector/wire"
	"phloem/hashring"
	"phloem/internal/logx"
)

// Meter is one agent: Append spools records, Run delivers them. See the package
// documentation for the goroutines and the shutdown order.
type Meter struct {
	cfg      Config
	logger   *slog.Logger
	throttle *logx.Throttled
	met      *metrics
	spool    *spool
	disc     *discovery
	holder   *hashring.Holder
	client   *http.Client
	codec    *wire.Codec

	started   atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Stats is a snapshot of a meter's counters, for load-test harnesses and tests.
type Stats struct {
	Spooled, Sent, Acked, Dropped, Retries, Attempts uint64
	// CorruptEntries counts spool entries skipped as corrupt or torn (recovery
	// included).
	CorruptEntries uint64
	// NextSeq is the sequence number the next Append gets; AckedSeq the highest
	// acknowledged one. NextSeq-1-AckedSeq records are pending.
	NextSeq, AckedSeq uint64
	SpoolBytes        int64
	// Collector is the collector that last acknowledged a batch.
	Collector string
	// RingVersion is the version of the collector ring in use (0: none yet).
	RingVersion uint64
}

// New validates cfg, opens (and recovers) the spool and prepares the sender. It
// does not contact any collector: Run does. Corrupt spool entries found while
// recovering are logged and counted before New returns. logger nil discards;
// reg nil registers nothing.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Meter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	spec := collectorSpec{}
	if cfg.Ring == nil {
		spec, _ = parseCollectors(cfg.Collectors) // validated above
	}
	logger = logx.OrDiscard(logger).With("meter_id", cfg.MeterID)
	m := &Meter{
		cfg:      cfg,
		logger:   logger,
		throttle: logx.NewThrottled(logger, cfg.LogInterval),
		holder:   cfg.Ring,
	}
	if m.holder == nil {
		m.holder = &hashring.Holder{}
	}
	var err error
	if m.met, err = newMetrics(reg); err != nil {
		return nil, err
	}
	if m.codec, err = wire.NewCodec(cfg.Limits); err != nil {
		m.met.unregister()
		return nil, fmt.Errorf("cannot build meter codec: %w", err)
	}
	tlsConf, err := buildTLS(cfg.TLS, spec.tlsName())
	if err != nil {
		m.met.unregister()
		return nil, err
	}
	rt := cfg.Transport
	if rt == nil {
		rt = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       tlsConf,
			TLSHandshakeTimeout:   cfg.DialTimeout,
			ForceAttemptHTTP2:     tlsConf != nil,
			MaxIdleConns:          4,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: cfg.RequestTimeout,
		}
	}
	m.client = &http.Client{Transport: rt, Timeout: cfg.RequestTimeout}
	resolver := cfg.Resolver
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	m.disc = &discovery{
		spec: spec, resolver: resolver, holder: m.holder,
		interval: cfg.DiscoveryInterval, minGap: cfg.DiscoveryMinInterval,
		logger: logger, throttle: m.throttle,
		onNodes: func(n int) { m.met.collectors.Set(float64(n)) },
		kick:    make(chan struct{}, 1),
	}
	if cfg.Ring == nil && spec.kind == specStatic {
		// A static set never changes: build its ring once, now.
		if err := m.disc.install(spec.static); err != nil {
			m.met.unregister()
			return nil, fmt.Errorf("cannot build collector ring: %w", err)
		}
	}
	m.spool, err = openSpool(spoolOptions{
		dir:            cfg.SpoolDir,
		segmentBytes:   cfg.SegmentBytes,
		maxBytes:       cfg.MaxSpoolBytes,
		fsync:          cfg.Fsync,
		full:           cfg.Full,
		maxRecordBytes: cfg.Limits.MaxRecordBytes,
		logger:         logger,
		throttle:       m.throttle,
		onCorrupt:      m.met.addCorrupt,
		onDrop:         func(n int) { m.met.addDropped(DropSpoolFull, n) },
		onBytes:        m.met.setSpoolBytes,
	})
	if err != nil {
		m.met.unregister()
		return nil, err
	}
	if c := m.met.nCorrupt.Load(); c > 0 {
		logger.Warn("spool recovered with corrupt entries skipped", "dir", cfg.SpoolDir, "corrupt_entries", c)
	}
	next, acked, _, _ := m.spool.state()
	if next-1 > acked {
		logger.Info("spool holds unacknowledged records from a previous run; resending them", "records", next-1-acked, "first_seq", acked+1)
	}
	return m, nil
}

func (m *Meter) ring() *hashring.Holder { return m.holder }

// Append assigns payload the next sequence number and the current time and writes
// it to the spool; it returns once the record is written (see FsyncPolicy for
// durability). Under FullBlock it waits, under ctx, while the spool is full.
// It returns ErrClosed after Run returned, ErrRecordTooLarge for a payload above
// Limits.MaxRecordBytes. Safe for concurrent use; payload is not retained.
func (m *Meter) Append(ctx context.Context, payload []byte) error {
	if len(payload) > m.cfg.Limits.MaxRecordBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrRecordTooLarge, len(payload), m.cfg.Limits.MaxRecordBytes)
	}
	if _, err := m.spool.append(ctx, time.Now().UnixNano(), payload); err != nil {
		return err
	}
	m.met.addSpooled(1)
	return nil
}

// AppendBatch is Append for several records: they get consecutive sequence
// numbers and are written with one write(2) per 256 KiB (per segment roll, per
// wait for room), which is what keeps a meter fed by a busy input cheap. It
// returns how many records were spooled, in order, before an error; on error
// the rest were not. A payload above Limits.MaxRecordBytes stops the batch there
// with ErrRecordTooLarge.
func (m *Meter) AppendBatch(ctx context.Context, payloads [][]byte) (int, error) {
	ok := len(payloads)
	var tooLarge error
	for i, p := range payloads {
		if len(p) > m.cfg.Limits.MaxRecordBytes {
			ok = i
			tooLarge = fmt.Errorf("%w: record %d has %d bytes, limit %d", ErrRecordTooLarge, i, len(p), m.cfg.Limits.MaxRecordBytes)
			break
		}
	}
	_, n, err := m.spool.appendMany(ctx, func(int) int64 { return time.Now().UnixNano() }, payloads[:ok])
	m.met.addSpooled(n)
	if err != nil {
		return n, err
	}
	return n, tooLarge
}

// Flush waits until every record appended before the call is acknowledged (or
// dropped by policy), or ctx is done.
func (m *Meter) Flush(ctx context.Context) error {
	next, _, _, _ := m.spool.state()
	target := next - 1
	for {
		_, acked, _, ch := m.spool.state()
		if acked >= target {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("flush: %d records still unacknowledged: %w", target-acked, ctx.Err())
		case <-ch:
		}
	}
}

// Stats returns a snapshot of the meter's counters. Safe for concurrent use.
func (m *Meter) Stats() Stats {
	next, acked, total, _ := m.spool.state()
	mt := m.met
	return Stats{
		Spooled: mt.nSpooled.Load(), Sent: mt.nSent.Load(), Acked: mt.nAcked.Load(),
		Dropped: mt.nDropped.Load(), Retries: mt.nRetries.Load(), Attempts: mt.nAttempts.Load(),
		CorruptEntries: mt.nCorrupt.Load(),
		NextSeq:        next, AckedSeq: acked, SpoolBytes: total,
		Collector:   mt.currentCollector(),
		RingVersion: m.holder.Load().Version(),
	}
}

// Run delivers spooled records until ctx is done, then keeps sending for up to
// ShutdownGrace (what is left stays spooled for the next start), stops every
// goroutine it started, closes the spool and returns. It returns nil after a
// shutdown caused by ctx. Run may be called once.
func (m *Meter) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("meter: Run called twice")
	}
	// hard is cancelled ShutdownGrace after ctx: it aborts an in-flight request
	// and the backoff sleep. The sender itself stops earlier if it drains.
	hard, cancelHard := context.WithCancel(context.Background())
	defer cancelHard()

	var wg sync.WaitGroup
	senderDone := make(chan struct{})
	snd := newSender(m, m.client, m.codec)
	wg.Go(func() {
		defer close(senderDone)
		snd.run(hard, ctx.Done())
	})
	if m.cfg.Ring == nil && m.disc.spec.kind != specStatic {
		wg.Go(func() {
			m.disc.refresh(hard)
			m.disc.run(hard)
		})
	}
	if m.cfg.Fsync == FsyncInterval {
		wg.Go(func() {
			t := time.NewTicker(m.cfg.FsyncInterval)
			defer t.Stop()
			for {
				select {
				case <-hard.Done():
					return
				case <-t.C:
					if err := m.spool.sync(); err != nil {
						m.throttle.Error("fsync", "spool fsync failed", "error", err)
					}
				}
			}
		})
	}

	select {
	case <-ctx.Done():
	case <-senderDone: // cannot happen before ctx is done; defensive
	}
	grace := time.NewTimer(m.cfg.ShutdownGrace)
	select {
	case <-senderDone:
	case <-grace.C:
		m.logger.Warn("shutdown grace over; unacknowledged records stay spooled for the next start")
	}
	grace.Stop()
	cancelHard()
	wg.Wait()
	return m.Close()
}

// Close closes the spool and unregisters the metrics. Run calls it; call it
// yourself only for a Meter whose Run was never called. Idempotent.
func (m *Meter) Close() error {
	m.closeOnce.Do(func() {
		if t, ok := m.client.Transport.(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
		next, acked, _, _ := m.spool.state()
		m.closeErr = m.spool.close()
		if next-1 > acked {
			m.logger.Info("meter stopped with records spooled", "records", next-1-acked, "dir", m.cfg.SpoolDir)
		}
		m.met.unregister()
	})
	return m.closeErr
}
