package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"phloem/internal/jitter"
	"phloem/phloem/control"
)

// deliverer is one sink type's transport. Only its runner's connector goroutine
// calls it, so implementations need no locking of their own. deliver returns nil
// only when the peer durably took every record of batch (that is what the sink's
// acknowledgement, and so the commit, means); it must honour ctx.
type deliverer interface {
	deliver(ctx context.Context, batch []*item) error
	close() error
}

// retryAfterError carries a peer's Retry-After so the connector never retries
// sooner than asked.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// brokenDeliverer stands in for a sink whose params are invalid: it fails every
// delivery with the configuration error. Its tenant's records are held (their
// partitions pause) instead of being committed undelivered; fixing the sink record
// releases them.
type brokenDeliverer struct{ err error }

func (b brokenDeliverer) deliver(context.Context, []*item) error { return b.err }
func (b brokenDeliverer) close() error                           { return nil }

// discardDeliverer acknowledges without delivering (benchmarks and tests).
type discardDeliverer struct{}

func (discardDeliverer) deliver(context.Context, []*item) error { return nil }
func (discardDeliverer) close() error                           { return nil }

// sinkRunner owns one sink: its bounded queue (built when the sink appears, before
// any record is routed to it) and its connector goroutine, which owns every
// network or disk operation of the sink: dialing, delivery, health, reconnection
// with full-jitter backoff. The poll loop only pushes to the queue.
type sinkRunner struct {
	c  *Consumer
	id string
	q  *queue

	mu      sync.Mutex
	spec    control.Sink
	updated chan struct{} // buffer 1: spec changed

	stopping chan struct{} // closed: drain the queue, then exit
	stopOnce sync.Once
	cancel   context.CancelFunc // abandons: exit now
	done     chan struct{}
}

func (c *Consumer) newSinkRunner(spec control.Sink) *sinkRunner {
	return &sinkRunner{
		c:        c,
		id:       spec.ID,
		q:        newQueue(c.cfg.SinkQueueRecords, c.cfg.SinkQueueBytes, c.cfg.LowWater, c.poke),
		spec:     spec,
		updated:  make(chan struct{}, 1),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
	}
}

// update hands the runner a changed spec; the connector rebuilds its transport
// between batches and keeps the queue, so queued records go to the new settings.
func (r *sinkRunner) update(spec control.Sink) {
	r.mu.Lock()
	r.spec = spec
	r.mu.Unlock()
	select {
	case r.updated <- struct{}{}:
	default:
	}
}

func (r *sinkRunner) currentSpec() control.Sink {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spec
}

// stop asks the connector to deliver what is queued and exit, and abandons what is
// left after drain. It returns after the connector exited. The caller must already
// have removed the runner from the routes (so nothing new is pushed).
func (r *sinkRunner) stop(drain time.Duration) {
	r.stopOnce.Do(func() { close(r.stopping) })
	t := time.NewTimer(drain)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
		r.cancel()
		<-r.done
	}
}

func (r *sinkRunner) build(spec control.Sink) deliverer {
	d, err := r.c.newDeliverer(spec)
	if err != nil {
		r.c.metrics.sinkErrors.WithLabelValues(r.id).Inc()
		r.c.warn.Error("sink-config/"+r.id, "sink is misconfigured: its records are held until the sink record is fixed or deleted",
			"sink", r.id, "type", spec.Type, "err", err)
		return brokenDeliverer{err: err}
	}
	return d
}

// run is the connector goroutine. It returns when ctx is cancelled (abandoning the
// queue) or, after stop, once the queue is empty.
func (r *sinkRunner) run(ctx context.Context) {
	defer close(r.done)
	m := r.c.metrics
	d := r.build(r.currentSpec())
	defer func() {
		if err := d.close(); err != nil {
			r.c.logger.Warn("cannot close sink", "sink", r.id, "err", err)
		}
	}()
	bo := jitter.NewFullJitter(r.c.cfg.RetryBase, r.c.cfg.RetryCap, nil)
	healthy := m.sinkHealthy.WithLabelValues(r.id)
	healthy.Set(1)
	records := m.recordsOut.WithLabelValues(r.id)
	bytesOut := m.bytesOut.WithLabelValues(r.id)
	errs := m.sinkErrors.WithLabelValues(r.id)
	depth := m.queueDepth.WithLabelValues(r.id)
	depthBytes := m.queueBytes.WithLabelValues(r.id)
	rebuild := func() {
		if err := d.close(); err != nil {
			r.c.logger.Warn("cannot close sink before applying its new settings", "sink", r.id, "err", err)
		}
		d = r.build(r.currentSpec())
		bo.Reset()
	}
	var batch []*item
	for {
		select {
		case <-r.updated:
			rebuild()
		default:
		}
		n, b := r.q.depth()
		depth.Set(float64(n))
		depthBytes.Set(float64(b))
		batch = r.q.take(batch[:0], r.c.cfg.SinkBatchRecords, r.c.cfg.SinkBatchBytes)
		if len(batch) == 0 {
			select {
			case <-r.q.notEmpty:
			case <-r.updated:
				rebuild()
			case <-r.stopping:
				if r.q.waiting() == 0 {
					return
				}
			case <-ctx.Done():
				r.c.abandon(r.id, r.q.drainAll())
				return
			}
			continue
		}
		// Records of revoked partitions are skipped: their new owner redelivers them
		// from the committed offset, and delivering them here too would only add
		// duplicates.
		live := batch[:0:0]
		var liveBytes, deadBytes int64
		var lastTr *tracker
		lastDead := false
		for _, it := range batch {
			// A batch holds runs of one partition's records: load each run's flag once.
			if it.tr != lastTr {
				lastTr, lastDead = it.tr, it.tr.dead.Load()
			}
			if lastDead {
				deadBytes += it.size
				continue
			}
			live = append(live, it)
			liveBytes += it.size
		}
		if skipped := len(batch) - len(live); skipped > 0 {
			m.dropped.WithLabelValues("revoked").Add(float64(skipped))
			r.q.release(skipped, deadBytes)
		}
		if len(live) == 0 {
			continue
		}
		for {
			err := d.deliver(ctx, live)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				r.q.release(len(live), liveBytes)
				r.c.abandon(r.id, append(live, r.q.drainAll()...))
				return
			}
			errs.Inc()
			healthy.Set(0)
			r.c.warn.Warn("sink-deliver/"+r.id, "sink delivery failed; retrying with backoff", "sink", r.id, "records", len(live), "err", err)
			wait := bo.NextBackOff()
			var ra *retryAfterError
			if errors.As(err, &ra) {
				wait = jitter.AtLeast(wait, ra.after, time.Second, nil)
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-r.updated:
				t.Stop()
				rebuild()
			case <-ctx.Done():
				t.Stop()
			}
		}
		bo.Reset()
		healthy.Set(1)
		for _, it := range live {
			it.ent.ack()
		}
		records.Add(float64(len(live)))
		bytesOut.Add(float64(liveBytes - int64(len(live))*itemOverhead))
		r.q.release(len(live), liveBytes)
	}
}

// newDeliverer builds the transport of spec. It never dials or opens files: that
// happens on first delivery, in the connector goroutine.
func (c *Consumer) newDeliverer(spec control.Sink) (deliverer, error) {
	switch spec.Type {
	case control.SinkHTTP:
		return newHTTPDeliverer(spec, c.cfg.HTTPTimeout)
	case control.SinkFile:
		return newFileDeliverer(spec)
	case control.SinkStdout:
		return newStdoutDeliverer(c.stdout), nil
	case control.SinkStream:
		return &streamDeliverer{hub: c.hub, id: spec.ID}, nil
	case SinkDiscard:
		return discardDeliverer{}, nil
	}
	return nil, fmt.Errorf("sink %q: unknown type %q", spec.ID, spec.Type)
}
