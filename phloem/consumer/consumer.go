package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/errgroup"

	"phloem/internal/admin"
	"phloem/internal/logx"
	"phloem/phloem/control"
)

// stateSource is what the consumer needs of a *control.Watcher.
type stateSource interface {
	Ready() <-chan struct{}
	State() *control.State
	Subscribe(ctx context.Context) (*control.State, <-chan *control.State)
}

// ErrAlreadyRunning is returned by Run when it was already called on that Consumer.
var ErrAlreadyRunning = errors.New("consumer: Run called twice")

type tp struct {
	topic     string
	partition int32
}

// partState is the poll loop's view of one assigned partition. Guarded by stateMu.
type partState struct {
	topic     string
	partition int32
	tenant    string
	tr        *tracker
	lastOff   int64 // last offset pushed into tr, -1 if none
	hwm       int64 // high-water mark seen in the last fetch
	// held: pending is not empty and the partition is in Consumer.held. New
	// records of a held partition go to the end of pending, never to a queue, so
	// that every sink sees the partition in offset order.
	held bool
	// fetchPaused: the partition is paused in the client (PauseFetchPartitions),
	// because its pending records exceed the pending budget.
	fetchPaused bool
	// pending holds, in order, the records of a congested partition that did not
	// fit a sink queue. They are already pushed into tr (rem = 1, the poll loop's
	// hold), so the watermark cannot pass them. pendingBytes counts their
	// item.size. Bounded by the pending budget (Config.PendingPartitionBytes and
	// PendingMaxBytes) plus one poll's records: once the budget is exceeded the
	// partition is paused and franz-go returns nothing more for it.
	pending      []*item
	pendingBytes int64
}

// routeTable maps tenants to the sinks that receive their records. Immutable once
// published; the poll loop loads it once per batch.
type routeTable struct {
	byTenant map[string][]*sinkRunner // tenant's own sinks plus the "*" sinks
	wildcard []*sinkRunner
}

func (rt *routeTable) forTenant(tenant string) []*sinkRunner {
	if r, ok := rt.byTenant[tenant]; ok {
		return r
	}
	return rt.wildcard
}

// Consumer is the phloem consumer tier: one consumer-group member over every tenant
// topic, delivering to the sinks of the control state. See the package doc.
type Consumer struct {
	cfg     Config
	src     stateSource
	logger  *slog.Logger
	warn    *logx.Throttled
	reg     prometheus.Registerer
	metrics *metrics
	hub     *hub
	stdout  *lockedWriter

	started      atomic.Bool
	watcherReady atomic.Bool
	joined       atomic.Bool

	// Wake-up of a poll that waits for data while partitions are paused; see poke.
	woken      atomic.Bool
	pollCancel atomic.Pointer[context.CancelFunc]

	routes  atomic.Pointer[routeTable]
	runners map[string]*sinkRunner // owned by the reconciling goroutine
	sinkWG  sync.WaitGroup

	client *kgo.Client

	// Lock order: commitMu, then stateMu. commitMu serialises commits (periodic,
	// revoke, shutdown) and offset rewinds; stateMu guards parts, held,
	// pendingBytes and nFetchPaused.
	commitMu     sync.Mutex
	stateMu      sync.Mutex
	parts        map[tp]*partState
	held         map[tp]*partState // partitions with pending records
	pendingBytes int64             // sum of the held partitions' pendingBytes
	nFetchPaused int               // partitions paused in the client

	abandonedMu sync.Mutex
	abandoned   map[*tracker]struct{}

	scratch []*item // poll loop only

	dataLn atomic.Pointer[net.Listener] // for tests: the data listener's address

	// observeCallback, when set (tests), also receives every rebalance callback
	// duration, for exact percentiles.
	observeCallback func(name string, d time.Duration)
}

func (c *Consumer) observeRebalance(name string, start time.Time) {
	d := time.Since(start)
	c.metrics.rebalance.WithLabelValues(name).Observe(d.Seconds())
	if c.observeCallback != nil {
		c.observeCallback(name, d)
	}
}

// New builds a consumer. watcher is the process's one control Watcher (main runs
// it); New starts nothing and dials nothing: Run does.
func New(cfg Config, watcher *control.Watcher, logger *slog.Logger, reg prometheus.Registerer) (*Consumer, error) {
	if watcher == nil {
		return nil, errors.New("consumer: nil control watcher")
	}
	return newConsumer(cfg, watcher, logger, reg)
}

func newConsumer(cfg Config, src stateSource, logger *slog.Logger, reg prometheus.Registerer) (*Consumer, error) {
	if cfg.MetadataMaxAge == 0 {
		cfg.MetadataMaxAge = 5 * time.Second
	}
	if cfg.FetchMaxWait <= 0 {
		cfg.FetchMaxWait = 500 * time.Millisecond
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger = logx.OrDiscard(logger).With("component", "consumer")
	m := newMetrics()
	if err := m.register(reg); err != nil {
		return nil, err
	}
	out := cfg.Stdout
	if out == nil {
		out = os.Stdout
	}
	c := &Consumer{
		cfg:       cfg,
		src:       src,
		logger:    logger,
		warn:      logx.NewThrottled(logger, 10*time.Second),
		reg:       reg,
		metrics:   m,
		hub:       newHub(cfg.StreamBuffer, m.streamDropped, m.streamSubs),
		stdout:    &lockedWriter{w: out},
		runners:   make(map[string]*sinkRunner),
		parts:     make(map[tp]*partState),
		held:      make(map[tp]*partState),
		abandoned: make(map[*tracker]struct{}),
	}
	c.routes.Store(&routeTable{byTenant: map[string][]*sinkRunner{}})
	return c, nil
}

// Ready reports nil once the control state is loaded and the member has joined its
// group (received its first assignment). For /readyz.
func (c *Consumer) Ready(context.Context) error {
	if !c.watcherReady.Load() {
		return errors.New("control state not loaded yet")
	}
	if !c.joined.Load() {
		return errors.New("consumer group not joined yet")
	}
	return nil
}

// Handler returns the data listener's handler (GET /v1/stream), for embedding in
// another server; Run serves it on its data listener.
func (c *Consumer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/stream", c.serveStream)
	return mux
}

func (c *Consumer) dataAddr() string {
	if ln := c.dataLn.Load(); ln != nil {
		return (*ln).Addr().String()
	}
	return ""
}

// poke wakes the poll loop if it waits for data: a sink queue drained below low
// water, or a sink abandoned records. Never blocks; safe from any goroutine.
//
// Race walk-through: the loop stores its cancel func (A), then swaps woken to false
// (B), then polls. poke stores woken=true (C), then loads the cancel func (D). If C
// happens before B, the loop sees woken and cancels its own poll; if after, D runs
// after A and cancels the poll. Either way no wake-up is lost.
func (c *Consumer) poke() {
	c.woken.Store(true)
	if f := c.pollCancel.Load(); f != nil {
		(*f)()
	}
}

// Run consumes until ctx is done. It serves the stream endpoint on dataLn (nil: no
// data listener), waits for the control state, builds the sinks, joins the group
// and runs the poll loop and the committer. On shutdown it stops polling, lets the
// sinks drain for ShutdownTimeout, commits, leaves the group and stops the sinks.
// It returns after every goroutine it started has exited.
func (c *Consumer) Run(ctx context.Context, dataLn net.Listener) (err error) {
	if !c.started.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer c.metrics.unregister(c.reg)

	g, gctx := errgroup.WithContext(ctx)
	if dataLn != nil {
		c.dataLn.Store(&dataLn)
		srv := &http.Server{
			Handler:           c.Handler(),
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       2 * time.Minute,
			// Stream requests end with gctx, so shutdown does not wait on them.
			BaseContext: func(net.Listener) context.Context { return gctx },
			ErrorLog:    slog.NewLogLogger(c.logger.Handler(), slog.LevelWarn),
		}
		g.Go(func() error { return admin.Serve(gctx, srv, dataLn, 5*time.Second) })
	}

	// Sinks outlive ctx: at shutdown they drain before the final commit.
	sinkCtx, cancelSinks := context.WithCancel(context.Background())
	defer func() {
		cancelSinks()
		c.sinkWG.Wait()
	}()

	select {
	case <-c.src.Ready():
	case <-gctx.Done():
		return g.Wait()
	}
	c.watcherReady.Store(true)
	// Build the sinks before the first poll: a record polled before its tenant's
	// sinks exist would be committed as unrouted.
	st, updates := c.src.Subscribe(gctx)
	c.reconcile(sinkCtx, st)
	g.Go(func() error {
		for st := range updates {
			c.reconcile(sinkCtx, st)
		}
		return nil
	})

	client, err := kgo.NewClient(c.kafkaOpts()...)
	if err != nil {
		_ = g.Wait()
		return fmt.Errorf("consumer: cannot create Kafka client: %w", err)
	}
	c.client = client
	var loops errgroup.Group
	pollCtx, cancelPoll := context.WithCancel(gctx)
	loops.Go(func() error { defer cancelPoll(); return c.pollLoop(pollCtx) })
	loops.Go(func() error { return c.commitLoop(pollCtx) })
	runErr := loops.Wait()
	cancelPoll()

	c.shutdown(client)
	return errors.Join(runErr, g.Wait())
}

func (c *Consumer) kafkaOpts() []kgo.Opt {
	opts := append([]kgo.Opt(nil), c.cfg.KafkaOpts...)
	return append(opts,
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(c.cfg.Topics.Regexp()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		// Rebalance callbacks run between batches, never while the poll loop is
		// handing a batch out: the loop never blocks, so a rebalance waits at most
		// one batch, and the callbacks see consistent partition state.
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(c.onAssigned),
		kgo.OnPartitionsRevoked(c.onRevoked),
		kgo.OnPartitionsLost(c.onLost),
		kgo.SessionTimeout(c.cfg.SessionTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, c.cfg.SessionTimeout/3)),
		kgo.MetadataMaxAge(c.cfg.MetadataMaxAge),
		kgo.MetadataMinAge(min(c.cfg.MetadataMaxAge, time.Second)),
		kgo.FetchMaxWait(c.cfg.FetchMaxWait),
		kgo.FetchMaxBytes(c.cfg.FetchMaxBytes),
		kgo.FetchMaxPartitionBytes(c.cfg.FetchMaxPartitionBytes),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
}

// shutdown runs after the poll loop stopped: drain, final commit, leave the group.
func (c *Consumer) shutdown(client *kgo.Client) {
	deadline := time.Now().Add(c.cfg.ShutdownTimeout)
	for time.Now().Before(deadline) {
		busy := false
		for _, r := range c.routes.Load().all() {
			if n, _ := r.q.depth(); n > 0 {
				busy = true
				break
			}
		}
		if !busy {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cctx, cancel := context.WithTimeout(context.Background(), c.cfg.CommitTimeout)
	c.commitOnce(cctx)
	cancel()
	// Close leaves the group; the revoke callback commits once more (a no-op when
	// nothing moved since the commit above).
	client.Close()
}

// all returns every runner of the table, each once.
func (rt *routeTable) all() []*sinkRunner {
	seen := make(map[*sinkRunner]struct{})
	var out []*sinkRunner
	add := func(rs []*sinkRunner) {
		for _, r := range rs {
			if _, ok := seen[r]; !ok {
				seen[r] = struct{}{}
				out = append(out, r)
			}
		}
	}
	add(rt.wildcard)
	for _, rs := range rt.byTenant {
		add(rs)
	}
	return out
}

// reconcile makes the running sinks match st (plus Config.ExtraSinks): new sinks
// start, changed sinks get their new spec (their queue is kept), removed sinks leave
// the routes first and then drain for SinkDrainTimeout in the background. Called
// from one goroutine at a time (Run, then the subscription loop).
func (c *Consumer) reconcile(sinkCtx context.Context, st *control.State) {
	desired := make(map[string]control.Sink)
	for _, s := range c.cfg.ExtraSinks {
		if s.Version == 0 {
			s.Version = 1
		}
		desired[s.ID] = s
	}
	for _, s := range st.Sinks() {
		desired[s.ID] = s
	}
	var removed []*sinkRunner
	for id, r := range c.runners {
		if _, ok := desired[id]; !ok {
			removed = append(removed, r)
			delete(c.runners, id)
		}
	}
	for id, spec := range desired {
		if r, ok := c.runners[id]; ok {
			old := r.currentSpec()
			if old.Version != spec.Version || old.Type != spec.Type || old.Tenant != spec.Tenant || !maps.Equal(old.Params, spec.Params) {
				c.logger.Info("sink changed", "sink", id, "type", spec.Type, "tenant", spec.Tenant, "version", spec.Version)
				r.update(spec)
			}
			continue
		}
		r := c.newSinkRunner(spec)
		rctx, cancel := context.WithCancel(sinkCtx)
		r.cancel = cancel
		c.runners[id] = r
		c.sinkWG.Add(1)
		go func() {
			defer c.sinkWG.Done()
			defer cancel()
			r.run(rctx)
		}()
		c.logger.Info("sink started", "sink", id, "type", spec.Type, "tenant", spec.Tenant, "version", spec.Version)
	}

	rt := &routeTable{byTenant: make(map[string][]*sinkRunner)}
	ids := make([]string, 0, len(c.runners))
	for id := range c.runners {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		r := c.runners[id]
		if t := r.currentSpec().Tenant; t == control.AllTenants {
			rt.wildcard = append(rt.wildcard, r)
		} else {
			rt.byTenant[t] = append(rt.byTenant[t], r)
		}
	}
	for t, rs := range rt.byTenant {
		rt.byTenant[t] = append(rs, rt.wildcard...)
	}
	// Publishing under stateMu is a barrier: once it returns, no batch still uses
	// the old table, so nothing more is pushed to a removed sink.
	c.stateMu.Lock()
	c.routes.Store(rt)
	c.stateMu.Unlock()

	for _, r := range removed {
		c.logger.Info("sink removed; draining its queue", "sink", r.id, "drain_timeout", c.cfg.SinkDrainTimeout)
		c.sinkWG.Add(1)
		go func() {
			defer c.sinkWG.Done()
			r.stop(c.cfg.SinkDrainTimeout)
			c.metrics.forgetSink(r.id)
		}()
	}
	// Paused partitions may now fit (a sink left) or have new routes.
	c.poke()
}

// abandon is called by a sink's connector with the records it will never
// acknowledge (it was removed and did not drain in time, or the process is
// stopping). They are not committed; the poll loop rewinds their partitions so they
// are read again and delivered to the sinks that exist now.
func (c *Consumer) abandon(sinkID string, items []*item) {
	if len(items) == 0 {
		return
	}
	c.metrics.dropped.WithLabelValues("abandoned").Add(float64(len(items)))
	c.logger.Warn("sink abandoned queued records; their partitions will be re-read from the committed watermark",
		"sink", sinkID, "records", len(items))
	c.abandonedMu.Lock()
	for _, it := range items {
		if !it.tr.dead.Load() {
			c.abandoned[it.tr] = struct{}{}
		}
	}
	c.abandonedMu.Unlock()
	c.poke()
}

func (c *Consumer) pollLoop(ctx context.Context) error {
	cl := c.client
	for {
		if ctx.Err() != nil {
			return nil
		}
		pctx, cancel := context.WithCancel(ctx)
		c.pollCancel.Store(&cancel)
		if c.woken.Swap(false) {
			cancel()
		}
		fetches := cl.PollRecords(pctx, c.cfg.MaxPollRecords)
		c.pollCancel.Store(nil)
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			c.metrics.fetchErrors.Inc()
			c.warn.Warn("fetch/"+topic, "fetch error", "topic", topic, "partition", p, "err", err)
		})
		c.rewindAbandoned(cl)
		c.process(cl, fetches)
		cl.AllowRebalance()
	}
}

// process hands a poll's records to the sink queues without blocking. The records
// of a congested partition (a sink queue is full) are held in its pending slice;
// the partition is paused only when its pending records exceed the pending budget.
func (c *Consumer) process(cl *kgo.Client, fetches kgo.Fetches) {
	var nrec, nbytes int
	c.stateMu.Lock()
	rt := c.routes.Load()
	resumed := c.reofferLocked(rt, nil)
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		ps := c.parts[tp{fp.Topic, fp.Partition}]
		if ps == nil {
			return // revoked meanwhile: the new owner reads these
		}
		if fp.HighWatermark > ps.hwm {
			ps.hwm = fp.HighWatermark
		}
		// One allocation for the partition's items; the slab lives as long as
		// any of its items is queued or pending (bounded by the queues and the
		// pending budget).
		slab := make([]item, len(fp.Records))
		batch := c.scratch[:0]
		for i, r := range fp.Records {
			if r.Offset <= ps.lastOff {
				continue // never track an offset twice (the tracker needs increasing offsets)
			}
			nrec++
			nbytes += len(r.Value)
			it := &slab[i]
			it.fill(ps.tenant, r)
			it.tr = ps.tr
			it.ent = ps.tr.push(r.Offset)
			ps.lastOff = r.Offset
			batch = append(batch, it)
		}
		c.scratch = batch[:0]
		if len(batch) == 0 {
			return
		}
		if ps.held {
			// Behind records that did not fit yet: keep the partition's order.
			c.holdLocked(ps, batch)
		} else if k := c.offer(rt, batch); k < len(batch) {
			c.holdLocked(ps, batch[k:])
		}
		clear(batch)
	})
	var pause map[string][]int32
	if c.overBudgetLocked() {
		// Pausing makes franz-go drop the partition's buffered, already decoded
		// records and fetch them again, so before pausing yield the processor to let
		// runnable connectors drain (on a busy machine a fast sink's connector is
		// often merely waiting for a CPU), re-offering after each yield, until the
		// held records are back under budget or maxYields/maxYieldTime are used up.
		// Yielding is not waiting: nothing here sleeps or blocks, a connector busy on
		// a slow peer simply drains nothing, and the bound keeps the cost of a stuck
		// sink to one short burst per pause.
		start := time.Now()
		for range maxYields {
			c.stateMu.Unlock()
			runtime.Gosched()
			c.stateMu.Lock()
			// Re-load the routes: the state lock was released, and a reconcile may
			// have published a new table (the barrier described in reconcile).
			rt = c.routes.Load()
			resumed = c.reofferLocked(rt, resumed)
			if !c.overBudgetLocked() || time.Since(start) > maxYieldTime {
				break
			}
		}
		for _, ps := range c.held {
			if ps.fetchPaused || !c.partOverBudgetLocked(ps) {
				continue
			}
			ps.fetchPaused = true
			c.nFetchPaused++
			if pause == nil {
				pause = make(map[string][]int32)
			}
			pause[ps.topic] = append(pause[ps.topic], ps.partition)
		}
	}
	var resume map[string][]int32
	for _, ps := range resumed {
		if !ps.fetchPaused {
			continue // never paused in the client
		}
		ps.fetchPaused = false
		c.nFetchPaused--
		if resume == nil {
			resume = make(map[string][]int32)
		}
		resume[ps.topic] = append(resume[ps.topic], ps.partition)
	}
	npaused, pending := c.nFetchPaused, c.pendingBytes
	c.stateMu.Unlock()
	if len(pause) > 0 {
		cl.PauseFetchPartitions(pause)
		for _, ps := range pause {
			c.metrics.pauses.Add(float64(len(ps)))
		}
	}
	if len(resume) > 0 {
		cl.ResumeFetchPartitions(resume)
	}
	c.metrics.pausedPartitions.Set(float64(npaused))
	c.metrics.pendingBytes.Set(float64(pending))
	c.metrics.recordsIn.Add(float64(nrec))
	c.metrics.bytesIn.Add(float64(nbytes))
}

// maxYields and maxYieldTime bound the yields of one poll before over-budget
// partitions are paused. Measured with BenchmarkThroughputVsBare on 2 shared cores:
// 4 yields left about two pauses per run, 512 (about 1 ms at most) about 0.2.
const (
	maxYields    = 512
	maxYieldTime = time.Millisecond
)

// holdLocked appends items (the partition's next records, in order) to ps's
// pending records and accounts them against the pending budget.
func (c *Consumer) holdLocked(ps *partState, items []*item) {
	if !ps.held {
		ps.held = true
		c.held[tp{ps.topic, ps.partition}] = ps
	}
	ps.pending = append(ps.pending, items...)
	for _, it := range items {
		ps.pendingBytes += it.size
		c.pendingBytes += it.size
	}
}

// unholdLocked forgets ps's pending records (placed, or dropped with their
// partition) and returns whether it was paused in the client; the caller resumes
// it there if so.
func (c *Consumer) unholdLocked(ps *partState) (wasPaused bool) {
	clear(ps.pending)
	ps.pending = nil
	c.pendingBytes -= ps.pendingBytes
	ps.pendingBytes = 0
	if ps.held {
		ps.held = false
		delete(c.held, tp{ps.topic, ps.partition})
	}
	if ps.fetchPaused {
		ps.fetchPaused = false
		c.nFetchPaused--
		return true
	}
	return false
}

// partOverBudgetLocked reports whether ps holds more pending records than the
// pending budget allows: its own share, or the total across partitions.
func (c *Consumer) partOverBudgetLocked(ps *partState) bool {
	return ps.held && (ps.pendingBytes > c.cfg.PendingPartitionBytes || c.pendingBytes > c.cfg.PendingMaxBytes)
}

// overBudgetLocked reports whether some held partition that is still fetching is
// over the pending budget (and so is to be paused).
func (c *Consumer) overBudgetLocked() bool {
	for _, ps := range c.held {
		if !ps.fetchPaused && c.partOverBudgetLocked(ps) {
			return true
		}
	}
	return false
}

// offer pushes the longest prefix of items (all of one tenant, in offset order)
// that fits every sink of the tenant, and returns its length. Every record goes to
// all of its sinks or to none: the prefix length is the minimum over the sinks of
// what fits (only the poll loop pushes, so room cannot vanish between the check and
// the push). The sinks that limited the prefix are marked as having refused work,
// so that they wake the poll loop when they drain.
func (c *Consumer) offer(rt *routeTable, items []*item) int {
	sinks := rt.forTenant(items[0].tenant)
	if len(sinks) == 0 {
		c.metrics.unrouted.Add(float64(len(items)))
		for _, it := range items {
			it.ent.ack()
		}
		return len(items)
	}
	k := len(items)
	for _, s := range sinks {
		if f := s.q.fits(items[:k]); f < k {
			k = f
		}
	}
	if k < len(items) {
		for _, s := range sinks {
			if s.q.fits(items[k:k+1]) == 0 {
				s.q.refuse()
			}
		}
	}
	if k == 0 {
		return 0
	}
	// Add the sinks' acks before any sink can ack, then drop the poll loop's hold.
	for _, it := range items[:k] {
		it.ent.rem.Add(int32(len(sinks)) - 1)
	}
	for _, s := range sinks {
		s.q.push(items[:k]...)
	}
	return k
}

// reofferLocked re-offers the pending records of held partitions, in order, and
// appends to resumed the partitions whose pending records are all placed (they are
// no longer held; the caller resumes those paused in the client).
func (c *Consumer) reofferLocked(rt *routeTable, resumed []*partState) []*partState {
	for _, ps := range c.held {
		i := c.offer(rt, ps.pending)
		if i == 0 {
			continue
		}
		for _, it := range ps.pending[:i] {
			ps.pendingBytes -= it.size
			c.pendingBytes -= it.size
		}
		clear(ps.pending[:i])
		ps.pending = ps.pending[i:]
		if len(ps.pending) > 0 {
			continue
		}
		ps.pending = nil
		ps.held = false
		delete(c.held, tp{ps.topic, ps.partition})
		resumed = append(resumed, ps)
	}
	return resumed
}

// rewindAbandoned re-reads partitions with abandoned records from their watermark:
// the old tracker dies (its records still queued elsewhere are skipped), a new one
// starts, and the client's fetch offset moves back. Runs in the poll loop between
// PollRecords and AllowRebalance, so no revoke runs concurrently (SetOffsets'
// requirement).
func (c *Consumer) rewindAbandoned(cl *kgo.Client) {
	c.abandonedMu.Lock()
	set := c.abandoned
	if len(set) == 0 {
		c.abandonedMu.Unlock()
		return
	}
	c.abandoned = make(map[*tracker]struct{})
	c.abandonedMu.Unlock()

	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	offsets := make(map[string]map[int32]kgo.EpochOffset)
	resume := make(map[string][]int32)
	c.stateMu.Lock()
	for _, ps := range c.parts {
		if _, ok := set[ps.tr]; !ok {
			continue
		}
		wm := ps.tr.watermark()
		ps.tr.dead.Store(true)
		nt := newTracker()
		nt.committed = ps.tr.committed
		ps.tr = nt
		ps.lastOff = wm - 1
		if c.unholdLocked(ps) {
			resume[ps.topic] = append(resume[ps.topic], ps.partition)
		}
		if offsets[ps.topic] == nil {
			offsets[ps.topic] = make(map[int32]kgo.EpochOffset)
		}
		offsets[ps.topic][ps.partition] = kgo.EpochOffset{Epoch: -1, Offset: wm}
		c.metrics.rewinds.Inc()
	}
	c.stateMu.Unlock()
	if len(offsets) > 0 {
		cl.SetOffsets(offsets)
	}
	if len(resume) > 0 {
		cl.ResumeFetchPartitions(resume)
	}
}

func (c *Consumer) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	start := time.Now()
	defer c.observeRebalance("assigned", start)
	c.stateMu.Lock()
	for topic, ps := range assigned {
		tenant, ok := c.cfg.Topics.Tenant(topic)
		if !ok {
			continue
		}
		for _, p := range ps {
			c.parts[tp{topic, p}] = &partState{topic: topic, partition: p, tenant: tenant, tr: newTracker(), lastOff: -1}
		}
	}
	n := len(c.parts)
	c.stateMu.Unlock()
	c.metrics.assigned.Set(float64(n))
	c.joined.Store(true)
}

// onRevoked commits what is acknowledged for the revoked partitions (the only
// network I/O of any callback) and forgets their in-flight state.
func (c *Consumer) onRevoked(_ context.Context, cl *kgo.Client, revoked map[string][]int32) {
	start := time.Now()
	defer c.observeRebalance("revoked", start)
	c.dropPartitions(cl, revoked, true)
}

// onLost forgets lost partitions without committing: the group no longer accepts
// our commits for them.
func (c *Consumer) onLost(_ context.Context, cl *kgo.Client, lost map[string][]int32) {
	start := time.Now()
	defer c.observeRebalance("lost", start)
	c.dropPartitions(cl, lost, false)
}

func (c *Consumer) dropPartitions(cl *kgo.Client, tps map[string][]int32, commit bool) {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	offsets := make(map[string]map[int32]kgo.EpochOffset)
	var resume map[string][]int32
	c.stateMu.Lock()
	for topic, parts := range tps {
		for _, p := range parts {
			k := tp{topic, p}
			ps := c.parts[k]
			if ps == nil {
				continue
			}
			if wm := ps.tr.watermark(); commit && wm > ps.tr.committed {
				if offsets[topic] == nil {
					offsets[topic] = make(map[int32]kgo.EpochOffset)
				}
				offsets[topic][p] = kgo.EpochOffset{Epoch: -1, Offset: wm}
			}
			ps.tr.dead.Store(true)
			delete(c.parts, k)
			if c.unholdLocked(ps) {
				// Pauses outlive assignments in franz-go: a partition that comes back
				// must not come back paused.
				if resume == nil {
					resume = make(map[string][]int32)
				}
				resume[topic] = append(resume[topic], p)
			}
		}
	}
	n, np, pb := len(c.parts), c.nFetchPaused, c.pendingBytes
	c.stateMu.Unlock()
	c.metrics.assigned.Set(float64(n))
	c.metrics.pausedPartitions.Set(float64(np))
	c.metrics.pendingBytes.Set(float64(pb))
	if len(resume) > 0 {
		cl.ResumeFetchPartitions(resume)
	}
	if len(offsets) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CommitTimeout)
		defer cancel()
		if err := c.commit(ctx, cl, offsets); err != nil {
			c.logger.Warn("cannot commit revoked partitions; their new owner redelivers from the last commit", "err", err)
		}
	}
}

func (c *Consumer) commitLoop(ctx context.Context) error {
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, c.cfg.CommitTimeout)
		c.commitOnce(cctx)
		cancel()
		// Queue gauges are refreshed here too: a connector stuck retrying a dead
		// peer does not refresh them itself.
		for _, r := range c.routes.Load().all() {
			n, b := r.q.depth()
			c.metrics.queueDepth.WithLabelValues(r.id).Set(float64(n))
			c.metrics.queueBytes.WithLabelValues(r.id).Set(float64(b))
		}
		c.stateMu.Lock()
		held := len(c.held) > 0
		c.stateMu.Unlock()
		if held {
			// Safety net for the queue's low-water signal.
			c.poke()
		}
	}
}

// commitOnce commits every partition's watermark that moved, and updates the lag.
func (c *Consumer) commitOnce(ctx context.Context) {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	type moved struct {
		tr *tracker
		wm int64
	}
	offsets := make(map[string]map[int32]kgo.EpochOffset)
	var todo []moved
	var lag int64
	c.stateMu.Lock()
	for _, ps := range c.parts {
		wm := ps.tr.watermark()
		if wm < 0 {
			continue
		}
		if ps.hwm > wm {
			lag += ps.hwm - wm
		}
		if wm > ps.tr.committed {
			if offsets[ps.topic] == nil {
				offsets[ps.topic] = make(map[int32]kgo.EpochOffset)
			}
			offsets[ps.topic][ps.partition] = kgo.EpochOffset{Epoch: -1, Offset: wm}
			todo = append(todo, moved{ps.tr, wm})
		}
	}
	c.stateMu.Unlock()
	c.metrics.lag.Set(float64(lag))
	if len(offsets) == 0 {
		return
	}
	if err := c.commit(ctx, c.client, offsets); err != nil {
		c.warn.Warn("commit", "cannot commit offsets; will retry next interval", "err", err)
		return
	}
	c.stateMu.Lock()
	for _, m := range todo {
		m.tr.committed = max(m.tr.committed, m.wm)
	}
	c.stateMu.Unlock()
}

// commit commits offsets synchronously and returns the first error, request-level
// or per partition.
func (c *Consumer) commit(ctx context.Context, cl *kgo.Client, offsets map[string]map[int32]kgo.EpochOffset) error {
	start := time.Now()
	var rerr error
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			rerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					rerr = fmt.Errorf("topic %s partition %d: %w", t.Topic, p.Partition, err)
					return
				}
			}
		}
	})
	c.metrics.commitLatency.Observe(time.Since(start).Seconds())
	if rerr != nil {
		c.metrics.commitErrors.Inc()
		return fmt.Errorf("cannot commit offsets of group %q: %w", c.cfg.Group, rerr)
	}
	return nil
}
