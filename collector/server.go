package collector

import (
	"context"
	"crypto/tls"
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
	"phloem/internal/admin"
	"phloem/internal/logx"
	"phloem/phloem/control"
)

// Paths served on the data listener.
const (
	PathIngest = "/v1/ingest"
	PathTap    = "/v1/tap"
)

// TenantSource is what the collector needs of the control Watcher: readiness and
// the current tenant snapshot. *control.Watcher implements it; main builds one
// Watcher and hands it to every component.
type TenantSource interface {
	Ready() <-chan struct{}
	State() *control.State
}

// ErrAlreadyRunning is returned by Run when it was already called.
var ErrAlreadyRunning = errors.New("collector: Run called twice")

// Collector is the ingest server. Build it with New and serve with Run.
type Collector struct {
	cfg     Config
	tenants TenantSource
	logger  *slog.Logger
	warn    *logx.Throttled
	reg     prometheus.Registerer
	m       *metrics
	adm     *admission
	hubs    *hubs
	rep     Republisher
	certs   *certReloader
	codec   *wire.Codec
	limits  wire.Limits
	blocked map[string]struct{}
	limbo   *limbo // nil when RetryDedupTTL is 0

	activity *meterActivity // meters seen, for Meters (ops.MeterActivity)
	conns    connTracker    // open connections of Run's server, for Meters' Connected

	handlers gate          // every data-listener handler runs inside it
	stopping chan struct{} // closed when shutdown begins: taps end, ingest answers 503
	stopOnce sync.Once
	started  atomic.Bool
}

// New validates cfg, builds the Kafka producer from cfg.KafkaOpts (unless
// cfg.Republisher is set) and registers metrics on reg (nil: not registered). It
// does not listen: Run does. A nil logger discards.
func New(cfg Config, tenants TenantSource, logger *slog.Logger, reg prometheus.Registerer) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if tenants == nil {
		return nil, errors.New("collector: a tenant source (the control Watcher) is required")
	}
	logger = logx.OrDiscard(logger).With(slog.String("component", "collector"), slog.String("collector_id", cfg.CollectorID))
	codec, err := wire.NewCodec(cfg.effectiveLimits())
	if err != nil {
		return nil, fmt.Errorf("collector: %w", err)
	}
	c := &Collector{
		cfg:      cfg,
		tenants:  tenants,
		logger:   logger,
		warn:     logx.NewThrottled(logger, 10*time.Second),
		reg:      reg,
		m:        newMetrics(cfg.MaxTenantLabels),
		adm:      newAdmission(cfg),
		codec:    codec,
		limits:   cfg.effectiveLimits(),
		blocked:  make(map[string]struct{}, len(cfg.BlockedMeters)),
		stopping: make(chan struct{}),
	}
	c.hubs = newHubs(cfg.TapBuffer, cfg.MaxTaps, c.m)
	c.activity = newMeterActivity(MaxMetersTracked, cfg.IdleTimeout, c.m)
	c.activity.window = cfg.MeterActiveWindow
	c.m.metersActive = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "phloem", Subsystem: "collector", Name: "meters_active",
		Help: "Meters active on this collector (a request admitted or answered within MeterActiveWindow): the load MaxMeters bounds."},
		func() float64 { return float64(c.activity.active(time.Now(), 0)) })
	if cfg.RetryDedupTTL > 0 {
		c.limbo = newLimbo(cfg.RetryDedupTTL, cfg.RetryDedupEntries)
	}
	for _, id := range cfg.BlockedMeters {
		c.blocked[id] = struct{}{}
	}
	if cfg.TLSCertFile != "" {
		if c.certs, err = newCertReloader(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return nil, fmt.Errorf("collector: %w", err)
		}
	}
	if err := c.m.register(reg); err != nil {
		return nil, err
	}
	rep := cfg.Republisher
	if rep == nil {
		kr, err := newKafkaRepublisher(cfg, c.m)
		if err != nil {
			c.m.unregister(reg)
			return nil, fmt.Errorf("collector: %w", err)
		}
		rep = kr
	}
	c.rep = activityRepublisher{Republisher: rep, act: c.activity}
	return c, nil
}

// Handler returns the data listener's handler (POST /v1/ingest, GET /v1/tap).
// Run serves it; tests and the fuzz target may call it directly.
func (c *Collector) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathIngest, c.serveIngest)
	mux.HandleFunc("GET "+PathTap, c.serveTap)
	return mux
}

// TLSConfig returns the data listener's TLS configuration, or nil for plain HTTP.
func (c *Collector) TLSConfig() *tls.Config {
	if c.certs == nil {
		return nil
	}
	return c.certs.tlsConfig()
}

// Run serves the data listener ln (wrapped in TLS when configured) until ctx is
// done, then shuts down in this order: new ingest requests and taps are refused
// or ended (503 / end of stream); the HTTP server stops accepting and waits up to
// ShutdownGrace for in-flight requests; Run waits for every handler to return
// (each is bounded by its own deadline); the producer is flushed within
// FlushTimeout and closed; metrics are unregistered. Run returns only after all
// of that, and owns no goroutine afterwards. It returns nil after a shutdown
// caused by ctx.
func (c *Collector) Run(ctx context.Context, ln net.Listener) error {
	if !c.started.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer c.m.unregister(c.reg)
	if c.certs != nil {
		ln = tls.NewListener(ln, c.certs.tlsConfig())
	}
	srv := &http.Server{
		Handler:           c.Handler(),
		ReadHeaderTimeout: c.cfg.ReadHeaderTimeout,
		ReadTimeout:       c.cfg.ReadTimeout,
		IdleTimeout:       c.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(c.logger.Handler(), slog.LevelWarn),
		// Connection tracking for Meters' Connected (see activity.go).
		ConnContext: c.conns.connContext,
		ConnState:   c.conns.connState,
		// Handlers derive their contexts from the request's; BaseContext is left
		// to the server so that nothing ties requests to the app's context.
	}
	// Drain begins the moment ctx ends, before Shutdown waits for idleness:
	// taps are never idle, so they must be told first.
	stop := context.AfterFunc(ctx, c.beginDrain)
	defer stop()
	c.logger.Info("collector serving", "addr", ln.Addr().String(), "tls", c.certs != nil)
	serveErr := admin.Serve(ctx, srv, ln, c.cfg.ShutdownGrace)
	c.beginDrain()
	<-c.handlers.close()

	fctx, cancel := context.WithTimeout(context.Background(), c.cfg.FlushTimeout)
	defer cancel()
	flushErr := c.rep.Flush(fctx)
	if flushErr != nil {
		c.logger.Error("producer flush at shutdown did not complete; unacknowledged records were answered 503 and will be retried by meters", "err", flushErr)
	}
	c.rep.Close()
	c.logger.Info("collector stopped")
	if serveErr != nil {
		return fmt.Errorf("collector: %w", serveErr)
	}
	return nil
}

func (c *Collector) beginDrain() { c.stopOnce.Do(func() { close(c.stopping) }) }

func (c *Collector) draining() bool {
	select {
	case <-c.stopping:
		return true
	default:
		return false
	}
}

// Ready reports whether the collector can serve: the control Watcher caught up
// and Kafka answers.
func (c *Collector) Ready(ctx context.Context) error {
	if err := c.controlReady(ctx); err != nil {
		return err
	}
	return c.rep.Ping(ctx)
}

func (c *Collector) controlReady(context.Context) error {
	select {
	case <-c.tenants.Ready():
		return nil
	default:
		return errors.New("control watcher has not caught up with the control topic yet")
	}
}

// RegisterReadyChecks adds the collector's readiness checks ("control", "kafka")
// to the admin server.
func (c *Collector) RegisterReadyChecks(a *admin.Server) {
	a.AddReadyCheck("control", c.controlReady)
	a.AddReadyCheck("kafka", c.rep.Ping)
}

// gate counts running handlers and refuses new ones once closed, so that Run can
// wait for every handler even after http.Server.Close abandoned them.
type gate struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{}
}

func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
}

// close refuses new entries and returns a channel closed when none is running.
func (g *gate) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	ch := make(chan struct{})
	if g.n == 0 {
		close(ch)
	} else {
		g.idle = ch
	}
	return ch
}
