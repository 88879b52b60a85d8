package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"phloem/internal/logx"
)

// Defaults used by DefaultConfig and for zero fields.
const (
	DefaultAddr              = "127.0.0.1:0"
	DefaultRetentionMs       = int64(24 * time.Hour / time.Millisecond)
	DefaultRetentionBytes    = int64(1 << 30)
	DefaultRetentionInterval = time.Minute
	DefaultCompactInterval   = time.Hour
	DefaultPartitions        = int32(3)
)

// ErrNotLoopback is returned (wrapped) by Config.Validate and Start when Addr is not a
// loopback address. The embedded broker has no authentication and is meant for one
// machine; binding it to a routable interface would publish every tenant's data.
var ErrNotLoopback = errors.New("embedded broker address must be loopback")

// ErrDataDirLocked is returned (wrapped) by Start when another process (or another
// Broker in this process) already runs on the same DataDir. Two kfake clusters
// writing one directory would corrupt it.
var ErrDataDirLocked = errors.New("data dir is in use by another embedded broker")

// Config configures the embedded broker. The zero value of every field means its
// default, so Config{} is valid (an in-memory broker on a random loopback port).
type Config struct {
	// Addr is the loopback host:port to listen on. Default (and zero) "127.0.0.1:0",
	// a random free port. The host must be a loopback IP or "localhost"; anything
	// else (including an empty host, which means every interface) is refused.
	Addr string

	// DataDir is where topics, records, committed offsets and producer state are
	// kept across restarts and kill -9 (kfake.DataDir). Zero ("") keeps everything
	// in memory only. The directory is created if needed and locked while the
	// broker runs.
	DataDir string

	// RetentionMs is the retention.ms set on every delete-policy topic the broker
	// creates (also the broker-wide log.retention.ms). Default (and zero) 24h.
	// Explicit larger or unlimited (-1) values in a CreateTopics request are
	// lowered to this bound. Must not be negative.
	RetentionMs int64

	// RetentionBytes is the retention.bytes per partition set on every
	// delete-policy topic the broker creates (also the broker-wide
	// log.retention.bytes). Default (and zero) 1 GiB. Explicit larger or
	// unlimited values are lowered to this bound. Must not be negative.
	RetentionBytes int64

	// RetentionInterval is how often the broker's own timer enforces retention
	// (kfake's ApplyRetention). Default (and zero) 1 minute. kfake only starts its
	// own timer when a topic is created or altered, never after a restart from
	// DataDir, so without this timer a restarted broker would keep everything.
	RetentionInterval time.Duration

	// CompactInterval is how often compacted topics (such as the control topic)
	// are compacted. Default (and zero) 1 hour, kfake's own default, which it
	// likewise forgets after a restart.
	CompactInterval time.Duration

	// DefaultPartitions is the partition count of topics created with -1
	// partitions (and of auto-created topics). Default (and zero) 3.
	DefaultPartitions int32

	// SyncWrites fsyncs every produced batch before it is acknowledged. Default
	// false: batches are written to the segment file before the produce is
	// acknowledged, so acknowledged records survive kill -9 of this process,
	// but a power loss or kernel crash can lose the last seconds (the same
	// trade-off as Kafka's default log.flush settings). True survives power loss
	// at a large throughput cost.
	SyncWrites bool

	// AllowAutoTopicCreation lets a Metadata request create a topic that does
	// not exist. Default false: Phloem creates its topics explicitly, and an
	// auto-created topic from a typo in a consumer would otherwise be silently
	// created with default settings. Auto-created topics get the broker-wide
	// retention bounds.
	AllowAutoTopicCreation bool
}

// DefaultConfig returns the defaults spelled out.
func DefaultConfig() Config {
	return Config{
		Addr:              DefaultAddr,
		RetentionMs:       DefaultRetentionMs,
		RetentionBytes:    DefaultRetentionBytes,
		RetentionInterval: DefaultRetentionInterval,
		CompactInterval:   DefaultCompactInterval,
		DefaultPartitions: DefaultPartitions,
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if c.RetentionMs == 0 {
		c.RetentionMs = d.RetentionMs
	}
	if c.RetentionBytes == 0 {
		c.RetentionBytes = d.RetentionBytes
	}
	if c.RetentionInterval == 0 {
		c.RetentionInterval = d.RetentionInterval
	}
	if c.CompactInterval == 0 {
		c.CompactInterval = d.CompactInterval
	}
	if c.DefaultPartitions == 0 {
		c.DefaultPartitions = d.DefaultPartitions
	}
	return c
}

// Validate reports the first invalid field, after zero fields took their defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := checkLoopback(c.Addr); err != nil {
		return err
	}
	if c.RetentionMs < 0 {
		return fmt.Errorf("embedded broker retention must be positive, got %d ms: the broker keeps bounded data only", c.RetentionMs)
	}
	if c.RetentionBytes < 0 {
		return fmt.Errorf("embedded broker retention bytes must be positive, got %d: the broker keeps bounded data only", c.RetentionBytes)
	}
	if c.RetentionInterval < 0 {
		return fmt.Errorf("embedded broker retention interval must be positive, got %s", c.RetentionInterval)
	}
	if c.CompactInterval < 0 {
		return fmt.Errorf("embedded broker compact interval must be positive, got %s", c.CompactInterval)
	}
	if c.DefaultPartitions < 0 {
		return fmt.Errorf("embedded broker default partitions must be positive, got %d", c.DefaultPartitions)
	}
	return nil
}

// checkLoopback accepts "localhost:port" and loopback IPs (127.0.0.0/8, ::1).
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid embedded broker address %q (want host:port, e.g. 127.0.0.1:9092): %w", addr, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("invalid embedded broker port in %q: %w", addr, err)
	} else if p > 65535 {
		return fmt.Errorf("invalid embedded broker port in %q", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: got %q; use 127.0.0.1:<port>, or give --brokers to use a real Kafka cluster reachable from other machines", ErrNotLoopback, addr)
	}
	return nil
}

// Broker is a running embedded broker. Its methods are safe for concurrent use.
type Broker struct {
	cfg    Config
	logger *slog.Logger
	kl     *kfakeLogger
	c      *kfake.Cluster
	addrs  []string
	lock   *dirLock

	stop     chan struct{} // closed by Close: stops the maintenance goroutine
	maintEnd chan struct{} // closed when the maintenance goroutine returned
	closed   chan struct{} // closed when Close finished

	closeOnce sync.Once
	closeErr  error
}

// Start validates cfg, locks cfg.DataDir (if any), binds cfg.Addr, loads any state
// persisted in the data dir, and starts serving. The returned Broker owns one
// maintenance goroutine (retention and compaction timers) plus kfake's goroutines;
// Close or Run stops all of them. A nil logger discards.
func Start(cfg Config, logger *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	logger = logx.OrDiscard(logger).With("component", "embedded-kafka")

	var lock *dirLock
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("cannot create embedded broker data dir %q: %w", cfg.DataDir, err)
		}
		var err error
		if lock, err = lockDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	releaseLock := func() {
		if lock != nil {
			_ = lock.release() // best effort on the error path: the start error is what matters
		}
	}

	// We bind the listener ourselves so that we can listen on any loopback
	// address (kfake always asks for 127.0.0.1:<port>) and so that a busy port
	// is reported before kfake loads the data dir.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		releaseLock()
		return nil, fmt.Errorf("cannot listen on %s for the embedded broker (is another broker running there? choose another address or give --brokers): %w", cfg.Addr, err)
	}
	// kfake starts accepting inside NewCluster, before we can install the
	// CreateTopics hook; the gate holds connections in the backlog until the
	// hook is in place, so that no topic is ever created without its bounds.
	gate := &gatedListener{Listener: ln, open: make(chan struct{}), done: make(chan struct{})}
	var handedOff bool
	listenFn := func(_, _ string) (net.Listener, error) {
		if handedOff {
			return nil, errors.New("embedded broker has a single listener")
		}
		handedOff = true
		return gate, nil
	}

	kl := &kfakeLogger{l: logger}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.ListenFn(listenFn),
		kfake.ClusterID("phloem-embedded"),
		kfake.WithLogger(kl),
		kfake.DefaultNumPartitions(int(cfg.DefaultPartitions)),
		// Broker-wide bounds: they apply to every topic without topic-level
		// retention (auto-created ones, ones created before this config),
		// and they override what an earlier run persisted in the data dir.
		kfake.BrokerConfigs(map[string]string{
			"log.retention.ms":       strconv.FormatInt(cfg.RetentionMs, 10),
			"log.retention.bytes":    strconv.FormatInt(cfg.RetentionBytes, 10),
			"log.cleaner.backoff.ms": strconv.FormatInt(cfg.CompactInterval.Milliseconds(), 10),
		}),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if cfg.SyncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	if cfg.AllowAutoTopicCreation {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		_ = ln.Close() // kfake closes it only if it got as far as asking for it
		releaseLock()
		return nil, fmt.Errorf("cannot start embedded broker on %s (data dir %q): %w", cfg.Addr, cfg.DataDir, err)
	}

	b := &Broker{
		cfg:      cfg,
		logger:   logger,
		kl:       kl,
		c:        c,
		addrs:    []string{ln.Addr().String()},
		lock:     lock,
		stop:     make(chan struct{}),
		maintEnd: make(chan struct{}),
		closed:   make(chan struct{}),
	}
	c.ControlKey(int16(kmsg.CreateTopics), b.boundCreateTopics)
	close(gate.open)
	go b.maintain()
	logger.Info("embedded kafka broker started", "addr", b.addrs[0], "data_dir", cfg.DataDir,
		"retention_ms", cfg.RetentionMs, "retention_bytes", cfg.RetentionBytes,
		"retention_interval", cfg.RetentionInterval)
	return b, nil
}

// gatedListener holds Accept until open is closed (or the listener is closed).
type gatedListener struct {
	net.Listener
	open      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (g *gatedListener) Accept() (net.Conn, error) {
	select {
	case <-g.open:
	case <-g.done:
		return nil, net.ErrClosed
	}
	return g.Listener.Accept()
}

func (g *gatedListener) Close() error {
	g.closeOnce.Do(func() { close(g.done) })
	return g.Listener.Close()
}

// Addrs returns the seed brokers to give Kafka clients, e.g. "127.0.0.1:39123".
func (b *Broker) Addrs() []string { return append([]string(nil), b.addrs...) }

// Run blocks until ctx is done or the broker is closed, then closes it and returns
// Close's error. Cancelling ctx is the clean shutdown: state is flushed to DataDir.
func (b *Broker) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-b.closed:
	}
	return b.Close()
}

// Close stops the maintenance goroutine, then closes the listener and every client
// connection, flushes all state to DataDir and releases its lock. It is idempotent:
// later calls wait for the first to finish and return its result.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		// Order matters: kfake's ApplyRetention blocks forever on a closed
		// cluster, so the maintenance goroutine must be gone first.
		close(b.stop)
		<-b.maintEnd
		b.kl.capture(true)
		b.c.Close()
		errs := b.kl.capture(false)
		if b.lock != nil {
			errs = append(errs, b.lock.release())
		}
		if err := errors.Join(errs...); err != nil {
			b.closeErr = fmt.Errorf("embedded broker shutdown: %w", err)
		}
		b.logger.Info("embedded kafka broker stopped", "addr", b.addrs[0], "err", b.closeErr)
		close(b.closed)
	})
	<-b.closed
	return b.closeErr
}

// maintain is the broker's one long-lived goroutine: it enforces retention right
// away (data loaded from DataDir may already be past it) and then every
// RetentionInterval, and compacts every CompactInterval. Both kfake calls run on
// kfake's single state goroutine and block it while they run.
func (b *Broker) maintain() {
	defer close(b.maintEnd)
	b.applyRetention()
	rt := time.NewTicker(b.cfg.RetentionInterval)
	defer rt.Stop()
	ct := time.NewTicker(b.cfg.CompactInterval)
	defer ct.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-rt.C:
			b.applyRetention()
		case <-ct.C:
			start := time.Now()
			b.c.Compact()
			b.logger.Debug("compacted topics", "took", time.Since(start))
		}
	}
}

func (b *Broker) applyRetention() {
	start := time.Now()
	b.c.ApplyRetention()
	b.logger.Debug("applied retention", "took", time.Since(start))
}

// boundCreateTopics runs on kfake's state goroutine for every CreateTopics request
// before kfake handles it, and rewrites the request's topic configs so that every
// topic it creates carries topic-level retention.ms and retention.bytes:
//
//   - delete-policy topics (the default): missing values are set to the broker's
//     bounds, larger or unlimited (-1) values are lowered to them;
//   - compact-only topics (cleanup.policy=compact, like the control topic): both
//     are set to -1. kfake applies retention to compacted topics too, unlike
//     Kafka, so a bounded retention would delete live keys such as a tenant
//     that has not changed for a day. Compaction bounds these topics instead.
//
// It never handles the request itself (returns false), so kfake proceeds with the
// rewritten request. It must not block: kfake waits for it.
func (b *Broker) boundCreateTopics(kreq kmsg.Request) (kmsg.Response, error, bool) { //nolint:revive // kfake's control signature
	req, ok := kreq.(*kmsg.CreateTopicsRequest)
	if !ok {
		return nil, nil, false
	}
	for i := range req.Topics {
		t := &req.Topics[i]
		if isCompactOnly(t.Configs) {
			setTopicConfig(t, "retention.ms", -1, true)
			setTopicConfig(t, "retention.bytes", -1, true)
			continue
		}
		if setTopicConfig(t, "retention.ms", b.cfg.RetentionMs, false) {
			b.logger.Info("lowered retention.ms of new topic to the embedded broker's bound", "topic", t.Topic, "retention_ms", b.cfg.RetentionMs)
		}
		if setTopicConfig(t, "retention.bytes", b.cfg.RetentionBytes, false) {
			b.logger.Info("lowered retention.bytes of new topic to the embedded broker's bound", "topic", t.Topic, "retention_bytes", b.cfg.RetentionBytes)
		}
	}
	return nil, nil, false
}

// isCompactOnly reports whether cleanup.policy is "compact" without "delete".
func isCompactOnly(configs []kmsg.CreateTopicsRequestTopicConfig) bool {
	for _, c := range configs {
		if c.Name != "cleanup.policy" || c.Value == nil {
			continue
		}
		var compact, del bool
		for _, p := range strings.Split(*c.Value, ",") {
			switch strings.ToLower(strings.TrimSpace(p)) {
			case "compact":
				compact = true
			case "delete":
				del = true
			}
		}
		return compact && !del
	}
	return false
}

// setTopicConfig sets name to bound when it is missing or (force) different, or when
// it is unlimited or larger than bound. It reports whether it changed a value the
// client gave explicitly. Unparsable values are left for kfake to reject.
func setTopicConfig(t *kmsg.CreateTopicsRequestTopic, name string, bound int64, force bool) bool {
	v := strconv.FormatInt(bound, 10)
	for i := range t.Configs {
		c := &t.Configs[i]
		if c.Name != name {
			continue
		}
		if c.Value == nil {
			c.Value = &v
			return false
		}
		n, err := strconv.ParseInt(*c.Value, 10, 64)
		if err != nil {
			return false
		}
		if (force && n != bound) || (!force && (n < 0 || n > bound)) {
			c.Value = &v
			return true
		}
		return false
	}
	c := kmsg.NewCreateTopicsRequestTopicConfig()
	c.Name = name
	c.Value = &v
	t.Configs = append(t.Configs, c)
	return false
}
