package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/internal/jitter"
	"phloem/internal/logx"
)

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	// Topic is the control topic. Default (and when empty) DefaultTopic.
	Topic string
	// KafkaOpts are the client options (seed brokers, TLS, SASL, timeouts), usually
	// kafkaconf.Config.Opts(). The Watcher builds its own client from them and adds
	// its consume options; do not pass consumer-group or consume-topic options.
	KafkaOpts []kgo.Opt
	// FetchMaxWait bounds how long the broker holds a fetch open when there is no new
	// control record. New records are returned at once either way; this only bounds
	// how often an idle Watcher polls. Zero means 1s.
	FetchMaxWait time.Duration
	// RequestTimeout bounds each admin request Run makes at start (the high-water
	// mark lookup). Zero means 10s.
	RequestTimeout time.Duration
}

// DefaultWatcherConfig returns a config with DefaultTopic and no Kafka options.
func DefaultWatcherConfig() WatcherConfig {
	return WatcherConfig{Topic: DefaultTopic, FetchMaxWait: time.Second, RequestTimeout: 10 * time.Second}
}

// Validate reports the first invalid field.
func (c WatcherConfig) Validate() error {
	if c.FetchMaxWait < 0 || c.RequestTimeout < 0 {
		return errors.New("control watcher: FetchMaxWait and RequestTimeout must not be negative")
	}
	if err := kgo.ValidateOpts(c.KafkaOpts...); err != nil {
		return fmt.Errorf("control watcher: invalid Kafka options: %w", err)
	}
	return nil
}

func (c *WatcherConfig) defaults() {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.FetchMaxWait == 0 {
		c.FetchMaxWait = time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 10 * time.Second
	}
}

// Watcher replays the control topic from its start on its own Kafka client, then
// follows it, keeping an immutable State that it swaps atomically. Build exactly one
// per process, in main, and pass it to every component (see the package doc).
type Watcher struct {
	cfg     WatcherConfig
	logger  *slog.Logger
	warn    *logx.Throttled
	reg     prometheus.Registerer
	metrics *metrics

	state   atomic.Pointer[State]
	started atomic.Bool
	ready   chan struct{}

	// mu guards subs and stopped, and serialises publish with Subscribe so that a
	// subscriber never misses the change that follows the snapshot it was given.
	mu      sync.Mutex
	subs    map[*subscription]struct{}
	stopped bool
}

type subscription struct {
	ch   chan *State
	stop func() bool // stops the context.AfterFunc
}

// NewWatcher validates cfg and registers the Watcher's metrics on reg (nil: not
// registered). It does not connect: Run does. A nil logger discards.
func NewWatcher(cfg WatcherConfig, logger *slog.Logger, reg prometheus.Registerer) (*Watcher, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.KafkaOpts = slices.Clone(cfg.KafkaOpts)
	m := newMetrics()
	if reg != nil {
		if err := m.register(reg); err != nil {
			return nil, fmt.Errorf("control watcher: cannot register metrics (is a second Watcher being built? build one in main and share it): %w", err)
		}
	}
	logger = logx.OrDiscard(logger).With(slog.String("component", "control"), slog.String("topic", cfg.Topic))
	w := &Watcher{
		cfg:     cfg,
		logger:  logger,
		warn:    logx.NewThrottled(logger, 10*time.Second),
		reg:     reg,
		metrics: m,
		ready:   make(chan struct{}),
		subs:    make(map[*subscription]struct{}),
	}
	w.state.Store(&State{})
	return w, nil
}

// Ready returns a channel closed once the Watcher has applied every record below the
// high-water mark it saw at start. It is never closed if Run stops before that.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// WaitReady blocks until the Watcher is ready or ctx is done.
func (w *Watcher) WaitReady(ctx context.Context) error {
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("control watcher not caught up with topic %q: %w", w.cfg.Topic, ctx.Err())
	}
}

// State returns the current snapshot (an atomic load; never nil).
func (w *Watcher) State() *State { return w.state.Load() }

// Subscribe returns the current snapshot and a channel that carries the latest State
// after each change. The channel has a buffer of one and coalesces: a slow subscriber
// finds the newest state, never a backlog, and never blocks the Watcher. The channel is
// closed when ctx is done or the Watcher stops (at once if either already happened).
func (w *Watcher) Subscribe(ctx context.Context) (*State, <-chan *State) {
	ch := make(chan *State, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	cur := w.state.Load()
	if w.stopped || ctx.Err() != nil {
		close(ch)
		return cur, ch
	}
	sub := &subscription{ch: ch}
	w.subs[sub] = struct{}{}
	w.metrics.subscribers.Set(float64(len(w.subs)))
	// AfterFunc runs in its own goroutine, so taking mu there cannot deadlock with
	// this call even if ctx is cancelled before we return.
	sub.stop = context.AfterFunc(ctx, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, ok := w.subs[sub]; ok {
			delete(w.subs, sub)
			close(sub.ch)
			w.metrics.subscribers.Set(float64(len(w.subs)))
		}
	})
	return cur, ch
}

// publish swaps in s and notifies every subscriber without blocking.
func (w *Watcher) publish(s *State) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state.Store(s)
	for sub := range w.subs {
		// Drain a state the subscriber has not read yet, then send. We hold mu and
		// are the only sender, so after the drain the buffer has room.
		select {
		case <-sub.ch:
		default:
		}
		sub.ch <- s
	}
	w.metrics.tenants.Set(float64(s.NumTenants()))
	w.metrics.sinks.Set(float64(s.NumSinks()))
}

// shutdown closes every subscription and refuses new ones.
func (w *Watcher) shutdown() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	for sub := range w.subs {
		sub.stop()
		close(sub.ch)
	}
	clear(w.subs)
	w.metrics.subscribers.Set(0)
}

// Run replays the control topic from the start, closes Ready once caught up, then
// applies updates until ctx is done. It returns nil after a clean stop (ctx done), and
// only after its Kafka client is closed, its subscriptions are closed and its metrics
// are unregistered. A second call returns ErrAlreadyRunning at once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer w.shutdown()
	defer func() {
		if w.reg != nil {
			w.metrics.unregister(w.reg)
		}
	}()

	opts := append(slices.Clone(w.cfg.KafkaOpts),
		kgo.ConsumeTopics(w.cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(w.cfg.FetchMaxWait),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("control watcher: cannot create Kafka client: %w", err)
	}
	defer cl.Close()

	start := time.Now()
	hwm, err := w.highWaterMarks(ctx, kadm.NewClient(cl))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	next := make(map[int32]int64, len(hwm))
	isReady := false
	checkReady := func() {
		if isReady {
			return
		}
		for p, end := range hwm {
			if next[p] < end {
				return
			}
		}
		isReady = true
		close(w.ready)
		w.metrics.ready.Set(1)
		w.metrics.catchUp.Set(time.Since(start).Seconds())
		s := w.State()
		w.logger.Info("control state caught up", slog.Int("tenants", s.NumTenants()), slog.Int("sinks", s.NumSinks()), slog.Duration("took", time.Since(start)))
	}
	checkReady()

	bo := jitter.NewFullJitter(100*time.Millisecond, 5*time.Second, nil)
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var fetchErr bool
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
				return
			}
			fetchErr = true
			w.metrics.fetchErrors.Inc()
			w.warn.Warn("fetch", "control topic fetch failed; retrying", slog.Int("partition", int(p)), slog.Any("err", err))
		})
		// One builder per fetch: maps are copied once per fetch, not per record.
		b := newBuilder(w.State())
		n := 0
		fetches.EachRecord(func(r *kgo.Record) {
			n++
			if reason := b.apply(r.Key, r.Value); reason != "" {
				w.metrics.ignored.WithLabelValues(reason).Inc()
				if reason == ReasonInvalid || reason == ReasonUnknownKey {
					w.warn.Warn("ignored-"+reason, "ignoring control record", slog.String("key", string(r.Key)), slog.Int64("offset", r.Offset), slog.String("reason", reason))
				}
			} else {
				w.metrics.applied.Inc()
			}
			if r.Offset+1 > next[r.Partition] {
				next[r.Partition] = r.Offset + 1
			}
		})
		if s := b.build(); s != w.State() {
			w.publish(s)
		}
		checkReady()
		if fetchErr && n == 0 {
			// Back off so that a persistent error does not spin the loop.
			t := time.NewTimer(bo.NextBackOff())
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		} else if n > 0 {
			bo.Reset()
		}
	}
}

// highWaterMarks returns the end offset of every partition of the control topic,
// retrying with backoff until it succeeds or ctx is done. A missing topic has no
// partitions: the Watcher is ready at once with an empty state and picks up the topic
// when it is created.
func (w *Watcher) highWaterMarks(ctx context.Context, adm *kadm.Client) (map[int32]int64, error) {
	bo := jitter.NewFullJitter(100*time.Millisecond, 5*time.Second, nil)
	for {
		rctx, cancel := context.WithTimeout(ctx, w.cfg.RequestTimeout)
		ends, err := adm.ListEndOffsets(rctx, w.cfg.Topic)
		var starts kadm.ListedOffsets
		if err == nil {
			starts, err = adm.ListStartOffsets(rctx, w.cfg.Topic)
		}
		cancel()
		if err == nil {
			hwm := make(map[int32]int64)
			var perr error
			ends.Each(func(o kadm.ListedOffset) {
				switch {
				case errors.Is(o.Err, kerr.UnknownTopicOrPartition):
				case o.Err != nil:
					perr = o.Err
				default:
					// A partition whose records were all deleted has start == end and
					// nothing to wait for.
					if s, ok := starts.Lookup(o.Topic, o.Partition); ok && s.Err == nil && s.Offset >= o.Offset {
						return
					}
					hwm[o.Partition] = o.Offset
				}
			})
			if perr == nil {
				return hwm, nil
			}
			err = perr
		}
		w.metrics.fetchErrors.Inc()
		w.warn.Warn("hwm", "cannot read control topic high-water mark; retrying", slog.Any("err", err))
		t := time.NewTimer(bo.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("control watcher: cannot read high-water mark of %q: %w (last error: %v)", w.cfg.Topic, ctx.Err(), err)
		case <-t.C:
		}
	}
}
