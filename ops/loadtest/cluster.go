package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/collector"
	"phloem/hashring"
	"phloem/phloem/consumer"
	"phloem/phloem/control"
	"phloem/phloem/embedded"
	"phloem/phloem/kafkaconf"
	"phloem/phloem/topics"
)

// tenantID is the one tenant every meter of a run belongs to.
const tenantID = "loadtest"

// collectorIPBase: collector i listens on 127.0.0.(collectorIPBase+i), all on one
// port, so that a DNS name can list them as A records (dns:// discovery).
const collectorIPBase = 11

// cluster owns everything the harness starts besides the meters: the embedded
// broker, the control Watcher, the collectors, the phloem consumers and the sink.
// Methods are called from the run goroutine and the event goroutine; mu guards
// the collector slots and the broker pointer.
type cluster struct {
	sc     *Scenario
	logger *slog.Logger // components' log
	hlog   *slog.Logger // harness log
	work   string

	mu        sync.Mutex
	broker    *embedded.Broker
	brokerCfg embedded.Config
	kopts     []kgo.Opt
	slots     []*collectorSlot
	port      int
	token     string

	watcher       *control.Watcher
	watcherCancel context.CancelFunc
	watcherDone   chan error

	consumers []*consumerInst
	// dying holds the Run results of killed collectors, awaited by stop.
	dying []chan error

	sink *Sink
	ring hashring.Holder
	dns  *dnsResolver
	// hosts maps a collector address (host:port) to its slot index, for the
	// transport's per-collector counters. Guarded by mu; read through collectorIndex.
	hosts map[string]int

	// live collector instances' registries, sampled for ingress/egress bytes.
	ioMu   sync.Mutex
	ioLast map[*prometheus.Registry][2]float64
}

type collectorSlot struct {
	idx  int
	addr string
	inst *collectorInst // nil while down
}

type collectorInst struct {
	c      *collector.Collector
	ln     *trackingListener
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

type consumerInst struct {
	c      *consumer.Consumer
	cancel context.CancelFunc
	done   chan error
}

func newCluster(sc *Scenario, work string, logger, hlog *slog.Logger) *cluster {
	return &cluster{sc: sc, work: work, logger: logger, hlog: hlog, hosts: map[string]int{},
		ioLast: map[*prometheus.Registry][2]float64{}}
}

// start brings up Kafka, the control state, the sink, the collectors and the
// consumers, and waits until they serve.
func (cl *cluster) start(ctx context.Context, v *Verifier, e2e *Histogram) error {
	sc := cl.sc
	sink, err := StartSink(sc.Phloems.SinkAddr, v, e2e)
	if err != nil {
		return err
	}
	cl.sink = sink
	if len(sc.Collectors.External) > 0 {
		// The system under test runs elsewhere: its phloem must have a sink that
		// posts to ours. Nothing else starts here.
		cl.token = sc.Collectors.Token
		for i, a := range sc.Collectors.External {
			cl.slots = append(cl.slots, &collectorSlot{idx: i, addr: a})
			cl.hosts[a] = i
		}
		cl.hlog.Warn("external collectors: configure a sink posting to the harness", "url", sink.URL())
		return cl.publishMembership()
	}
	if len(sc.Kafka.Brokers) == 0 {
		cl.brokerCfg = embedded.DefaultConfig()
		cl.brokerCfg.DataDir = filepath.Join(cl.work, "kafka")
		cl.brokerCfg.DefaultPartitions = sc.Kafka.Partitions
		b, err := embedded.Start(cl.brokerCfg, cl.logger.With("component", "broker"))
		if err != nil {
			return fmt.Errorf("cannot start the embedded broker: %w", err)
		}
		cl.broker = b
		// Restarts (stop_broker) must come back on the same port: clients only know it.
		cl.brokerCfg.Addr = b.Addrs()[0]
	}
	kc := kafkaconf.DefaultConfig()
	kc.ClientID = "loadtest"
	kc.Brokers = sc.Kafka.Brokers
	if cl.broker != nil {
		kc.Brokers = cl.broker.Addrs()
	}
	opts, err := kc.Opts()
	if err != nil {
		return fmt.Errorf("cannot build Kafka options: %w", err)
	}
	cl.kopts = opts

	if err := cl.setupControl(ctx); err != nil {
		return err
	}
	wc := control.DefaultWatcherConfig()
	wc.KafkaOpts = cl.kopts
	w, err := control.NewWatcher(wc, cl.logger.With("component", "watcher"), nil)
	if err != nil {
		return fmt.Errorf("cannot build the control watcher: %w", err)
	}
	cl.watcher = w
	wctx, wcancel := context.WithCancel(context.Background())
	cl.watcherCancel = wcancel
	cl.watcherDone = make(chan error, 1)
	go func() { cl.watcherDone <- w.Run(wctx) }()
	select {
	case <-w.Ready():
	case err := <-cl.watcherDone:
		cl.watcherDone <- err
		return fmt.Errorf("control watcher stopped before it was ready: %w", err)
	case <-time.After(30 * time.Second):
		return errors.New("control watcher not ready after 30s")
	case <-ctx.Done():
		return ctx.Err()
	}
	// The watcher must have the tenant and the sink before meters arrive.
	if err := waitFor(ctx, 30*time.Second, func() bool {
		st := w.State()
		_, ok := st.Tenant(tenantID)
		return ok && len(st.SinksFor(tenantID)) > 0
	}); err != nil {
		return fmt.Errorf("control state never showed the tenant and sink: %w", err)
	}

	if err := cl.pickPort(sc.Collectors.Count + countAdds(sc.Events)); err != nil {
		return err
	}
	for i := 0; i < sc.Collectors.Count; i++ {
		if err := cl.addSlot(); err != nil {
			return err
		}
	}
	for i := 0; i < sc.Phloems.Count; i++ {
		if err := cl.startConsumer(i); err != nil {
			return err
		}
	}
	// Wait until the collectors answer and one consumer has joined.
	if err := waitFor(ctx, 60*time.Second, func() bool {
		for _, s := range cl.snapshotSlots() {
			if s.inst == nil || s.inst.c.Ready(ctx) != nil {
				return false
			}
		}
		for _, c := range cl.consumers {
			if c.c.Ready(ctx) == nil {
				return true
			}
		}
		return false
	}); err != nil {
		return fmt.Errorf("collectors or consumers not ready: %w", err)
	}
	return nil
}

func (cl *cluster) setupControl(ctx context.Context) error {
	client, err := kgo.NewClient(cl.kopts...)
	if err != nil {
		return fmt.Errorf("cannot build the setup Kafka client: %w", err)
	}
	defer client.Close()
	adm := kadm.NewClient(client)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := control.EnsureTopic(ctx, adm, control.DefaultTopic); err != nil {
		return fmt.Errorf("cannot create the control topic: %w", err)
	}
	tc := topics.DefaultConfig()
	topic, err := topics.Ensure(ctx, adm, tc, tenantID, cl.sc.Kafka.Partitions)
	if err != nil {
		return fmt.Errorf("cannot create the tenant topic: %w", err)
	}
	tok, err := control.NewToken()
	if err != nil {
		return fmt.Errorf("cannot make a token: %w", err)
	}
	cl.token = tok
	w := control.NewWriter(client, control.DefaultTopic)
	if err := w.PutTenant(ctx, control.Tenant{
		ID: tenantID, TokenHash: control.HashToken(tok), Status: control.StatusActive,
		Limits: control.Limits{RecordsPerSec: cl.sc.Collectors.TenantRecordsPerSec},
		Topic:  topic, Partitions: cl.sc.Kafka.Partitions, Version: 1,
	}); err != nil {
		return fmt.Errorf("cannot register the tenant: %w", err)
	}
	if err := w.PutSink(ctx, control.Sink{
		ID: "loadtest", Tenant: control.AllTenants, Type: control.SinkHTTP, Version: 1,
		Params: map[string]string{"url": cl.sink.URL(), "timeout": cl.sc.Phloems.SinkTimeout.D.String()},
	}); err != nil {
		return fmt.Errorf("cannot register the sink: %w", err)
	}
	return nil
}

// pickPort finds one port free on every collector IP we will use.
func (cl *cluster) pickPort(n int) error {
	for try := 0; try < 50; try++ {
		ln, err := net.Listen("tcp", collectorIP(0)+":0")
		if err != nil {
			return fmt.Errorf("cannot listen on %s (loopback aliases 127.0.0.x are needed): %w", collectorIP(0), err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		held := []net.Listener{ln}
		for i := 1; i < n; i++ {
			l2, err := net.Listen("tcp", net.JoinHostPort(collectorIP(i), strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, l2)
		}
		for _, l := range held {
			_ = l.Close() // probe listeners only
		}
		if ok {
			cl.port = port
			return nil
		}
	}
	return errors.New("cannot find a port free on every collector loopback IP")
}

func collectorIP(i int) string { return "127.0.0." + strconv.Itoa(collectorIPBase+i) }

// addSlot creates collector slot len(slots), starts it and publishes it (ring,
// DNS answers).
func (cl *cluster) addSlot() error {
	cl.mu.Lock()
	idx := len(cl.slots)
	s := &collectorSlot{idx: idx, addr: net.JoinHostPort(collectorIP(idx), strconv.Itoa(cl.port))}
	cl.slots = append(cl.slots, s)
	cl.hosts[s.addr] = idx
	cl.mu.Unlock()
	if err := cl.startCollector(idx); err != nil {
		return err
	}
	return cl.publishMembership()
}

// publishMembership installs a new ring version with every slot (killed
// collectors stay: like DNS, the ring does not know a collector crashed).
func (cl *cluster) publishMembership() error {
	slots := cl.snapshotSlots()
	nodes := make([]hashring.Node, len(slots))
	addrs := make([]string, len(slots))
	for i, s := range slots {
		nodes[i] = hashring.Node{Name: s.addr}
		addrs[i] = s.addr
	}
	if cl.dns != nil {
		cl.dns.setAddrs(addrs)
	}
	if cl.sc.Meters.Discovery != DiscoveryRing {
		return nil
	}
	var ver uint64 = 1
	if r := cl.ring.Load(); r != nil {
		ver = r.Version() + 1
	}
	r, err := hashring.New(ver, nodes)
	if err != nil {
		return fmt.Errorf("cannot build the collector ring: %w", err)
	}
	if err := cl.ring.Store(r); err != nil {
		return fmt.Errorf("cannot install the collector ring: %w", err)
	}
	return nil
}

func (cl *cluster) snapshotSlots() []collectorSlot {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	out := make([]collectorSlot, len(cl.slots))
	for i, s := range cl.slots {
		out[i] = *s
	}
	return out
}

func (cl *cluster) collectorIndex(host string) int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if i, ok := cl.hosts[host]; ok {
		return i
	}
	return -1
}

func (cl *cluster) numSlots() int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return len(cl.slots)
}

// slot returns slot idx, or an error when it does not exist (yet): an event may
// name a collector that an add_collector later in the run creates, so a bad
// order fails that event instead of the whole harness.
func (cl *cluster) slot(idx int) (*collectorSlot, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if idx < 0 || idx >= len(cl.slots) {
		return nil, fmt.Errorf("collector %d does not exist (%d collectors so far)", idx, len(cl.slots))
	}
	return cl.slots[idx], nil
}

// startCollector starts slot idx's collector on its address.
func (cl *cluster) startCollector(idx int) error {
	s, err := cl.slot(idx)
	if err != nil {
		return err
	}
	cl.mu.Lock()
	running := s.inst != nil
	cl.mu.Unlock()
	if running {
		return fmt.Errorf("collector %d is already running", idx)
	}
	sc := cl.sc
	cfg := collector.DefaultConfig()
	cfg.CollectorID = "c" + strconv.Itoa(idx)
	cfg.KafkaOpts = cl.kopts
	cfg.MaxInflightRequests = sc.Collectors.MaxInflightRequests
	cfg.IngestTimeout = sc.Collectors.IngestTimeout.D
	cfg.ShutdownGrace = sc.Collectors.ShutdownGrace.D
	cfg.FlushTimeout = 5 * time.Second
	if cfg.ProduceRequestTimeout > cfg.IngestTimeout {
		cfg.ProduceRequestTimeout = cfg.IngestTimeout
	}
	if cfg.RecordDeliveryTimeout > cfg.IngestTimeout {
		cfg.RecordDeliveryTimeout = cfg.IngestTimeout
	}
	// Listen first: a Collector that is built but never Run has no way to
	// close its Kafka client.
	var ln net.Listener
	// The port may linger for a moment after a kill; retry briefly.
	for try := 0; ; try++ {
		ln, err = net.Listen("tcp", s.addr)
		if err == nil || try >= 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("cannot listen for collector %d on %s: %w", idx, s.addr, err)
	}
	reg := prometheus.NewRegistry()
	c, err := collector.New(cfg, cl.watcher, cl.logger.With("component", "collector", "collector", cfg.CollectorID), reg)
	if err != nil {
		_ = ln.Close() // nothing served on it yet; the build error is the one to report
		return fmt.Errorf("cannot build collector %d: %w", idx, err)
	}
	tl := newTrackingListener(ln)
	ctx, cancel := context.WithCancel(context.Background())
	inst := &collectorInst{c: c, ln: tl, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { inst.done <- c.Run(ctx, tl) }()
	cl.mu.Lock()
	s.inst = inst
	cl.mu.Unlock()
	return nil
}

// killCollector stops slot idx's collector abruptly: the listener and every
// connection are closed at once (in-flight requests see a reset, as in a crash),
// and Run's context is cancelled so that its goroutines and producer go away.
// It does not wait for Run: the address is free as soon as the listener closed.
func (cl *cluster) killCollector(idx int) error {
	s, err := cl.slot(idx)
	if err != nil {
		return err
	}
	cl.mu.Lock()
	inst := s.inst
	s.inst = nil
	cl.mu.Unlock()
	if inst == nil {
		return fmt.Errorf("collector %d is not running", idx)
	}
	inst.cancel()
	inst.ln.closeAll()
	cl.mu.Lock()
	cl.dying = append(cl.dying, inst.done)
	cl.mu.Unlock()
	return nil
}

func (cl *cluster) startConsumer(i int) error {
	sc := cl.sc
	cfg := consumer.DefaultConfig()
	cfg.KafkaOpts = cl.kopts
	cfg.Group = "loadtest"
	cfg.SessionTimeout = sc.Phloems.SessionTimeout.D
	cfg.HTTPTimeout = sc.Phloems.SinkTimeout.D
	cfg.RetryCap = 2 * time.Second
	c, err := consumer.New(cfg, cl.watcher, cl.logger.With("component", "consumer", "phloem", i), prometheus.NewRegistry())
	if err != nil {
		return fmt.Errorf("cannot build phloem consumer %d: %w", i, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := &consumerInst{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { inst.done <- c.Run(ctx, nil) }()
	cl.consumers = append(cl.consumers, inst)
	return nil
}

// stopBroker closes the embedded broker (state flushed to its data dir).
func (cl *cluster) stopBroker() error {
	cl.mu.Lock()
	b := cl.broker
	cl.broker = nil
	cl.mu.Unlock()
	if b == nil {
		return errors.New("broker is not running")
	}
	if err := b.Close(); err != nil {
		return fmt.Errorf("cannot close the embedded broker: %w", err)
	}
	return nil
}

// startBroker starts the embedded broker again on the same port and data dir.
func (cl *cluster) startBroker() error {
	var b *embedded.Broker
	var err error
	for try := 0; try < 50; try++ {
		b, err = embedded.Start(cl.brokerCfg, cl.logger.With("component", "broker"))
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("cannot restart the embedded broker on %s: %w", cl.brokerCfg.Addr, err)
	}
	cl.mu.Lock()
	cl.broker = b
	cl.mu.Unlock()
	return nil
}

// ioBytes returns the ingress and egress bytes of every running collector's hub
// since the previous call (phloem_collector_ingress_bytes_total and
// egress_bytes_total). A restarted collector's counters start again at zero.
func (cl *cluster) ioBytes() (in, out float64) {
	cl.ioMu.Lock()
	defer cl.ioMu.Unlock()
	seen := map[*prometheus.Registry]bool{}
	for _, s := range cl.snapshotSlots() {
		if s.inst == nil {
			continue
		}
		reg := s.inst.reg
		seen[reg] = true
		mfs, err := reg.Gather()
		if err != nil {
			continue
		}
		var cur [2]float64
		for _, mf := range mfs {
			var k int
			switch mf.GetName() {
			case "phloem_collector_ingress_bytes_total":
				k = 0
			case "phloem_collector_egress_bytes_total":
				k = 1
			default:
				continue
			}
			for _, m := range mf.GetMetric() {
				cur[k] += m.GetCounter().GetValue()
			}
		}
		last := cl.ioLast[reg]
		if cur[0] >= last[0] {
			in += cur[0] - last[0]
		}
		if cur[1] >= last[1] {
			out += cur[1] - last[1]
		}
		cl.ioLast[reg] = cur
	}
	for reg := range cl.ioLast {
		if !seen[reg] {
			delete(cl.ioLast, reg)
		}
	}
	return in, out
}

// collectorsUp counts running collectors.
func (cl *cluster) collectorsUp() int {
	n := 0
	for _, s := range cl.snapshotSlots() {
		if s.inst != nil || len(cl.sc.Collectors.External) > 0 {
			n++
		}
	}
	return n
}

// stop shuts everything down, consumers last but one (they must have delivered
// what the drain waited for) and the broker last.
func (cl *cluster) stop() {
	var wg sync.WaitGroup
	for _, s := range cl.snapshotSlots() {
		if s.inst == nil {
			continue
		}
		inst := s.inst
		inst.cancel()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := <-inst.done; err != nil {
				cl.hlog.Warn("collector stopped with an error", "collector", s.idx, "error", err)
			}
		}()
	}
	for i, c := range cl.consumers {
		c.cancel()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := <-c.done; err != nil {
				cl.hlog.Warn("consumer stopped with an error", "phloem", i, "error", err)
			}
		}()
	}
	cl.mu.Lock()
	dying := cl.dying
	cl.dying = nil
	cl.mu.Unlock()
	for _, d := range dying {
		if err := <-d; err != nil {
			cl.hlog.Debug("killed collector's Run returned an error", "error", err)
		}
	}
	wg.Wait()
	if cl.watcherCancel != nil {
		cl.watcherCancel()
		if err := <-cl.watcherDone; err != nil {
			cl.hlog.Warn("control watcher stopped with an error", "error", err)
		}
	}
	if cl.sink != nil {
		if err := cl.sink.Close(); err != nil {
			cl.hlog.Warn("sink", "error", err)
		}
	}
	cl.mu.Lock()
	b := cl.broker
	cl.broker = nil
	cl.mu.Unlock()
	if b != nil {
		if err := b.Close(); err != nil {
			cl.hlog.Warn("embedded broker close", "error", err)
		}
	}
}

// waitFor polls cond every 50ms until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// trackingListener remembers accepted connections so that a kill can close them
// all at once. Close is idempotent.
type trackingListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	once   sync.Once
}

func newTrackingListener(ln net.Listener) *trackingListener {
	return &trackingListener{Listener: ln, conns: map[net.Conn]struct{}{}}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = c.Close() // killed while accepting
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, l: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

func (l *trackingListener) Close() error {
	var err error
	l.once.Do(func() { err = l.Listener.Close() })
	return err
}

func (l *trackingListener) closeAll() {
	_ = l.Close() // idempotent; a second close error is meaningless here
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	for c := range conns {
		_ = c.(*trackedConn).Conn.Close() // abrupt by design
	}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// dnsResolver answers the meters' dns:// lookups with the collector IPs, the
// chosen "first" collector first (the skew a caching DNS produced in the field).
type dnsResolver struct {
	mu    sync.Mutex
	ips   []net.IPAddr
	first int
}

func (d *dnsResolver) setAddrs(addrs []string) {
	ips := make([]net.IPAddr, 0, len(addrs))
	for _, a := range addrs {
		h, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		ips = append(ips, net.IPAddr{IP: net.ParseIP(h)})
	}
	d.mu.Lock()
	d.ips = ips
	d.mu.Unlock()
}

func (d *dnsResolver) setFirst(i int) {
	d.mu.Lock()
	d.first = i
	d.mu.Unlock()
}

// LookupIPAddr implements meter.Resolver.
func (d *dnsResolver) LookupIPAddr(_ context.Context, _ string) ([]net.IPAddr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]net.IPAddr, 0, len(d.ips))
	if d.first >= 0 && d.first < len(d.ips) {
		out = append(out, d.ips[d.first])
	}
	for i, ip := range d.ips {
		if i != d.first {
			out = append(out, ip)
		}
	}
	return out, nil
}

// LookupSRV implements meter.Resolver; the harness serves no SRV records.
func (d *dnsResolver) LookupSRV(context.Context, string, string, string) (string, []*net.SRV, error) {
	return "", nil, errors.New("loadtest resolver: no SRV records")
}
