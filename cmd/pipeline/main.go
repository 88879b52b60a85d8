// Command pipeline runs the whole of Phloem in one process, for a first look and
// for demos: the embedded Kafka broker with a data directory, the control topic, a
// demo tenant (its token printed), a collector, the phloem consumer tier with a file
// sink under the data directory, demo meters sending this host's metrics, and the
// ops monitor with its status page. With --brokers it runs against an external
// Kafka or Redpanda cluster instead of the embedded broker.
//
// main is wiring only. Shutdown (Ctrl-C) runs in dependency order: meters first
// (what they cannot send in time stays in their spools), then the collector
// (in-flight requests finish, the producer flushes), the consumer (final commit),
// and last the infrastructure they all need (watcher, admin, broker); the whole
// sequence is bounded by --shutdown-timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"phloem/collector"
	"phloem/internal/admin"
	"phloem/internal/envflag"
	"phloem/meter"
	"phloem/meter/hostmetrics"
	"phloem/ops"
	"phloem/phloem/consumer"
	"phloem/phloem/control"
	"phloem/phloem/embedded"
	"phloem/phloem/kafkaconf"
	"phloem/phloem/topics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	kafka           kafkaconf.Config
	dataDir         string
	embeddedAddr    string
	listen          string
	phloemListen    string
	adminListen     string
	tenant          string
	meters          int
	interval        time.Duration
	shutdownTimeout time.Duration
	logLevel        string
}

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{kafka: kafkaconf.DefaultConfig()}
	fs := flag.NewFlagSet("pipeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: pipeline [flags]

Runs all of Phloem in one process: an embedded Kafka broker (unless --brokers is
given), the control topic with a demo tenant, a collector, the phloem consumer tier
delivering to NDJSON files under --data-dir, demo meters sending this host's metrics,
and the ops monitor. It prints the demo tenant's token and the URLs to look at.
State (Kafka data, spools, sink files, the demo token) lives under --data-dir, so a
restart carries on where the last run stopped. Ctrl-C stops everything cleanly.

Every flag falls back to the PHLOEM_* environment variable named in its help.

Flags:
`)
		fs.PrintDefaults()
	}
	o.kafka.RegisterFlags(fs)
	fs.StringVar(&o.dataDir, "data-dir", envflag.String("DATA_DIR", "phloem-data"), "directory for Kafka data (embedded broker), meter spools, sink files and the demo token (PHLOEM_DATA_DIR)")
	fs.StringVar(&o.embeddedAddr, "embedded-addr", envflag.String("EMBEDDED_ADDR", "127.0.0.1:0"), "embedded broker's loopback address when --brokers is empty; port 0 picks a free one (PHLOEM_EMBEDDED_ADDR)")
	fs.StringVar(&o.listen, "listen", envflag.String("LISTEN", "127.0.0.1:8080"), "collector data listener: POST /v1/ingest, GET /v1/tap (PHLOEM_LISTEN)")
	fs.StringVar(&o.phloemListen, "phloem-listen", envflag.String("PHLOEM_LISTEN", "127.0.0.1:8081"), "phloem data listener: GET /v1/stream for stream sinks (PHLOEM_PHLOEM_LISTEN)")
	fs.StringVar(&o.adminListen, "admin-listen", envflag.String("ADMIN_LISTEN", "127.0.0.1:9090"), "admin listener: /status/ page, /metrics, /healthz, /readyz (PHLOEM_ADMIN_LISTEN)")
	fs.StringVar(&o.tenant, "tenant", envflag.String("TENANT", "demo"), "demo tenant id (PHLOEM_TENANT)")
	fs.IntVar(&o.meters, "meters", 3, "number of demo meters sending host metrics; 0 sends nothing (then use curl or cmd/meter)")
	fs.DurationVar(&o.interval, "interval", time.Second, "how often each demo meter samples host metrics")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 5*time.Second, "bound on the whole shutdown after Ctrl-C")
	fs.StringVar(&o.logLevel, "log-level", envflag.String("LOG_LEVEL", "info"), "debug, info, warn or error (PHLOEM_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if o.meters < 0 || o.meters > 1000 {
		errs = append(errs, fmt.Errorf("--meters %d: want 0 to 1000", o.meters))
	}
	if o.interval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("--interval %v: want at least 10ms", o.interval))
	}
	if o.shutdownTimeout <= time.Second {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %v: want more than 1s", o.shutdownTimeout))
	}
	if err := topics.ValidTenantID(o.tenant); err != nil {
		errs = append(errs, fmt.Errorf("--tenant: %w", err))
	}
	if o.dataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if err := o.kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	return o, errors.Join(errs...)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "pipeline: %v\n", err)
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "pipeline: --log-level %q: %v\n", o.logLevel, err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	if err := serve(ctx, o, logger, stdout); err != nil {
		logger.Error("pipeline stopped", "err", err)
		return 1
	}
	return 0
}

// stage is a group of components stopped together; stages stop in reverse order
// of start, each after the previous one has returned.
type stage struct {
	cancel context.CancelFunc
	g      *errgroup.Group
}

func newStage(parent context.Context) (*stage, context.Context) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	g, gctx := errgroup.WithContext(ctx)
	return &stage{cancel: cancel, g: g}, gctx
}

func serve(ctx context.Context, o *options, logger *slog.Logger, stdout io.Writer) (err error) {
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return fmt.Errorf("cannot create data directory: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// failed is cancelled when any component fails, so that the whole pipeline
	// shuts down instead of limping on without one of its parts.
	failed, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	var stages []*stage
	defer func() {
		stopErr := stopStages(stages, o.shutdownTimeout, logger)
		err = errors.Join(err, stopErr)
	}()
	start := func() (*stage, context.Context) {
		s, sctx := newStage(ctx)
		stages = append(stages, s)
		return s, sctx
	}
	goStage := func(s *stage, name string, fn func() error) {
		s.g.Go(func() error {
			if err := fn(); err != nil {
				fail(fmt.Errorf("%s: %w", name, err))
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}

	// Infrastructure: broker, watcher, admin listener.
	infra, infraCtx := start()
	brokerNote := "external Kafka " + strings.Join(o.kafka.Brokers, ",")
	if len(o.kafka.Brokers) == 0 {
		b, err := embedded.Start(embedded.Config{Addr: o.embeddedAddr, DataDir: filepath.Join(o.dataDir, "kafka")}, logger)
		if err != nil {
			return fmt.Errorf("cannot start the embedded broker: %w", err)
		}
		goStage(infra, "embedded broker", func() error { return b.Run(infraCtx) })
		o.kafka.Brokers = b.Addrs()
		brokerNote = "embedded broker on " + strings.Join(b.Addrs(), ",") + " (data in " + filepath.Join(o.dataDir, "kafka") + ")"
	}
	kopts, err := o.kafka.Opts()
	if err != nil {
		return err
	}
	if err := kafkaconf.Probe(failed, kopts, 10*time.Second); err != nil {
		return err
	}
	adminClient, err := kgo.NewClient(kopts...)
	if err != nil {
		return fmt.Errorf("cannot create Kafka admin client: %w", err)
	}
	defer adminClient.Close()
	adm := kadm.NewClient(adminClient)
	setupCtx, cancelSetup := context.WithTimeout(failed, 30*time.Second)
	defer cancelSetup()
	if err := control.EnsureTopic(setupCtx, adm, control.DefaultTopic); err != nil {
		return err
	}
	watcher, err := control.NewWatcher(control.WatcherConfig{Topic: control.DefaultTopic, KafkaOpts: kopts}, logger, reg)
	if err != nil {
		return err
	}
	goStage(infra, "control watcher", func() error { return watcher.Run(infraCtx) })
	if err := watcher.WaitReady(setupCtx); err != nil {
		return fmt.Errorf("control watcher did not catch up: %w", err)
	}
	token, err := ensureDemo(setupCtx, o, adm, control.NewWriter(adminClient, control.DefaultTopic), watcher)
	if err != nil {
		return err
	}

	// Listen before building the components: a collector or consumer that was
	// built never runs without its listener, and only Run releases its client.
	lns, err := listenAll(map[string]string{"admin": o.adminListen, "collector": o.listen, "phloem": o.phloemListen})
	if err != nil {
		return err
	}
	adminLn, collLn, phLn := lns["admin"], lns["collector"], lns["phloem"]
	adm1 := admin.New(admin.Config{}, logger.With("component", "admin"), reg)

	// Data tier: collector and consumer.
	data, dataCtx := start()
	ccfg := collector.DefaultConfig()
	ccfg.CollectorID = "pipeline-collector"
	ccfg.KafkaOpts = kopts
	ccfg.ShutdownGrace = time.Second
	ccfg.FlushTimeout = time.Second
	coll, err := collector.New(ccfg, watcher, logger, reg)
	if err != nil {
		return err
	}
	coll.RegisterReadyChecks(adm1)
	goStage(data, "collector", func() error { return coll.Run(dataCtx, collLn) })

	pcfg := consumer.DefaultConfig()
	pcfg.KafkaOpts = kopts
	pcfg.ShutdownTimeout = time.Second
	cons, err := consumer.New(pcfg, watcher, logger, reg)
	if err != nil {
		return err
	}
	adm1.AddReadyCheck("phloem", cons.Ready)
	goStage(data, "phloem consumer", func() error { return cons.Run(dataCtx, phLn) })

	mon, err := ops.New(ops.DefaultConfig(), ops.Sources{Gatherer: reg, Meters: coll, Instance: "pipeline"}, logger, reg)
	if err != nil {
		return err
	}
	adm1.Handle("/status/", ops.StatusHandler(mon))
	goStage(infra, "ops monitor", func() error { return mon.Run(infraCtx) })
	goStage(infra, "admin listener", func() error { return adm1.Run(infraCtx, adminLn) })

	// Edge: the demo meters.
	edge, edgeCtx := start()
	for i := range o.meters {
		id := fmt.Sprintf("demo-meter-%d", i+1)
		mcfg := meter.DefaultConfig()
		mcfg.MeterID = id
		mcfg.Token = token
		mcfg.Collectors = collLn.Addr().String()
		mcfg.SpoolDir = filepath.Join(o.dataDir, "meters", id)
		mcfg.Linger = 200 * time.Millisecond
		mcfg.ShutdownGrace = time.Second
		m, err := meter.New(mcfg, logger.With("component", "meter", "meter", id), prometheus.WrapRegistererWith(prometheus.Labels{"meter": id}, reg))
		if err != nil {
			return err
		}
		goStage(edge, id, func() error { return m.Run(edgeCtx) })
		goStage(edge, id+" host metrics", func() error { return sendHostMetrics(edgeCtx, m, id, o.interval, logger) })
	}

	printURLs(stdout, o, token, brokerNote, collLn.Addr().String(), phLn.Addr().String(), adminLn.Addr().String())
	<-failed.Done()
	if cause := context.Cause(failed); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	logger.Info("shutting down", "timeout", o.shutdownTimeout)
	return nil
}

// listenAll opens every named address, or none: on an error it closes the
// listeners it opened.
func listenAll(addrs map[string]string) (map[string]net.Listener, error) {
	lns := make(map[string]net.Listener, len(addrs))
	for name, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			var errs []error
			for _, l := range lns {
				errs = append(errs, l.Close())
			}
			return nil, errors.Join(append(errs, fmt.Errorf("cannot listen on %s address %s: %w", name, addr, err))...)
		}
		lns[name] = ln
	}
	return lns, nil
}

// stopStages stops stages last-started first, within timeout in all.
func stopStages(stages []*stage, timeout time.Duration, logger *slog.Logger) error {
	deadline := time.After(timeout)
	var errs []error
	for i := len(stages) - 1; i >= 0; i-- {
		s := stages[i]
		s.cancel()
		done := make(chan error, 1)
		go func() { done <- s.g.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, err)
			}
		case <-deadline:
			logger.Error("shutdown timed out; exiting with components still running", "timeout", timeout)
			return errors.Join(append(errs, fmt.Errorf("shutdown took longer than %v", timeout))...)
		}
	}
	return errors.Join(errs...)
}

// sendHostMetrics appends one host-metrics record per interval to m.
func sendHostMetrics(ctx context.Context, m *meter.Meter, id string, interval time.Duration, logger *slog.Logger) error {
	s := hostmetrics.NewSampler("/proc", id)
	t := time.NewTicker(interval)
	defer t.Stop()
	failures := 0
	for {
		rec, err := s.Sample(time.Now())
		if err != nil {
			// /proc is missing on non-Linux hosts: say so once and stop sampling.
			failures++
			if failures == 1 {
				logger.Warn("cannot read host metrics; this demo meter sends nothing", "meter", id, "err", err)
			}
		} else if err := m.Append(ctx, rec); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("cannot append host metrics: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func printURLs(w io.Writer, o *options, token, brokerNote, collAddr, phAddr, adminAddr string) {
	fmt.Fprintf(w, `
Phloem is running (%s).

  Status page   http://%s/status/
  Metrics       http://%s/metrics
  Ingest        http://%s/v1/ingest      (collector)
  Live tap      curl -N -H 'Authorization: Bearer %s' http://%s/v1/tap
  Stream sink   http://%s/v1/stream      (phloem data listener)
  File sink     %s
  Tenant        %s, token %s
                (also in %s)
  Meters        %d demo meters sending host metrics every %v

Send your own record:
  curl -H 'Authorization: Bearer %s' -H 'X-Meter-Id: my-laptop' \
       -H 'Content-Type: application/x-ndjson' --data-binary '{"hello":"world"}' \
       http://%s/v1/ingest

Ctrl-C stops everything.
`, brokerNote, adminAddr, adminAddr, collAddr, token, collAddr, phAddr,
		filepath.Join(o.dataDir, "sink"), o.tenant, token, tokenFile(o), o.meters, o.interval,
		token, collAddr)
}
