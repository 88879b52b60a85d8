// Command collector runs Phloem's ingest server: meters POST batches to
// /v1/ingest on --listen, live taps stream from /v1/tap, and /metrics, /healthz and
// /readyz answer on --admin-listen. Without --brokers it starts the embedded broker
// (persisting to --data-dir when given). Every flag has a PHLOEM_* environment
// fallback; run "collector --help".
//
// main is wiring only: flags, then the components, run so that the first failure
// stops the rest. Signals: SIGINT/SIGTERM shut down (the collector first: refuse
// new work, finish or 503 in-flight requests, flush the producer; then the
// watcher, the admin listener and the embedded broker); SIGHUP reloads the TLS
// certificate and key.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/collector"
	"phloem/internal/envflag"
	"phloem/internal/logx"
	"phloem/internal/procrun"
	"phloem/phloem/control"
	"phloem/phloem/kafkaconf"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	code := run(ctx, os.Args[1:], os.Stderr, hup)
	signal.Stop(hup)
	stop()
	os.Exit(code)
}

// options are the command line, after env fallbacks.
type options struct {
	kafka        kafkaconf.Config
	collector    collector.Config
	listen       string
	adminListen  string
	controlTopic string
	dataDir      string
	embeddedAddr string
	blocked      string
	logLevel     string
	logFormat    string
	pprof        bool
}

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{kafka: kafkaconf.DefaultConfig(), collector: collector.DefaultConfig()}
	c := &o.collector
	fs := flag.NewFlagSet("collector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: collector [flags]

Phloem's ingest server. Meters POST batches to /v1/ingest (Authorization: Bearer
<tenant token>); the collector answers 200 only after Kafka stored every record,
and 400/401/403/413/415/429/503 otherwise (429 and 503 with Retry-After). GET
/v1/tap streams a tenant's records live as NDJSON. Tenants and tokens come from the
control topic (phloemctl). Without --brokers an embedded single-machine broker runs
in this process.

Signals: SIGINT/SIGTERM shut down gracefully; SIGHUP reloads --tls-cert/--tls-key.
Every flag falls back to the PHLOEM_* environment variable named in its help.

Flags:
`)
		fs.PrintDefaults()
	}
	var ee envflag.Errors
	o.kafka.RegisterFlags(fs)
	fs.StringVar(&o.listen, "listen", envflag.String("LISTEN", "127.0.0.1:8080"), "data listener for meters and taps, host:port; use :8080 to accept remote meters (then set --tls-cert/--tls-key) (PHLOEM_LISTEN)")
	fs.StringVar(&o.adminListen, "admin-listen", envflag.String("ADMIN_LISTEN", "127.0.0.1:9090"), "admin listener: /metrics /healthz /readyz [/debug/pprof] (PHLOEM_ADMIN_LISTEN)")
	fs.BoolVar(&o.pprof, "pprof", ee.Bool("PPROF", false), "serve /debug/pprof on the admin listener (PHLOEM_PPROF)")
	fs.StringVar(&c.TLSCertFile, "tls-cert", envflag.String("TLS_CERT", ""), "PEM certificate of the data listener; empty: plain HTTP. Reloaded on SIGHUP (PHLOEM_TLS_CERT)")
	fs.StringVar(&c.TLSKeyFile, "tls-key", envflag.String("TLS_KEY", ""), "PEM private key of --tls-cert (PHLOEM_TLS_KEY)")
	fs.StringVar(&c.CollectorID, "collector-id", envflag.String("COLLECTOR_ID", c.CollectorID), "this collector's name in Kafka record headers and logs; default the host name (PHLOEM_COLLECTOR_ID)")
	fs.StringVar(&o.controlTopic, "control-topic", envflag.String("CONTROL_TOPIC", control.DefaultTopic), "control topic with tenants and tokens (PHLOEM_CONTROL_TOPIC)")
	fs.StringVar(&c.Topics.Template, "topic-template", envflag.String("TOPIC_TEMPLATE", c.Topics.Template), "tenant topic name template, used when a tenant record names no topic (PHLOEM_TOPIC_TEMPLATE)")
	fs.BoolVar(&c.EnsureTopics, "ensure-topics", ee.Bool("ENSURE_TOPICS", c.EnsureTopics), "create a tenant's topic on its first batch if it is missing (PHLOEM_ENSURE_TOPICS)")
	fs.StringVar(&o.dataDir, "data-dir", envflag.String("DATA_DIR", ""), "embedded broker's data directory when --brokers is empty; empty keeps data in memory only (PHLOEM_DATA_DIR)")
	fs.StringVar(&o.embeddedAddr, "embedded-addr", envflag.String("EMBEDDED_ADDR", "127.0.0.1:9092"), "embedded broker's loopback listen address when --brokers is empty (PHLOEM_EMBEDDED_ADDR)")

	fs.DurationVar(&c.IngestTimeout, "ingest-timeout", ee.Duration("INGEST_TIMEOUT", c.IngestTimeout), "server deadline of one ingest request (body, Kafka ack); must stay below the meter's 30s client timeout; past it the answer is 503 (PHLOEM_INGEST_TIMEOUT)")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", ee.Duration("READ_HEADER_TIMEOUT", c.ReadHeaderTimeout), "time allowed to send request headers; slower clients are cut off (PHLOEM_READ_HEADER_TIMEOUT)")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", ee.Duration("READ_TIMEOUT", c.ReadTimeout), "time allowed to read a whole request (PHLOEM_READ_TIMEOUT)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", ee.Duration("IDLE_TIMEOUT", c.IdleTimeout), "keep-alive connections idle longer are closed (PHLOEM_IDLE_TIMEOUT)")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", ee.Duration("SHUTDOWN_GRACE", c.ShutdownGrace), "how long in-flight requests may finish at shutdown (PHLOEM_SHUTDOWN_GRACE)")
	fs.DurationVar(&c.FlushTimeout, "flush-timeout", ee.Duration("FLUSH_TIMEOUT", c.FlushTimeout), "how long the final producer flush may take at shutdown (PHLOEM_FLUSH_TIMEOUT)")
	fs.IntVar(&c.MaxInflightRequests, "max-inflight-requests", int(ee.Int("MAX_INFLIGHT_REQUESTS", int64(c.MaxInflightRequests))), "concurrent ingest requests; beyond: 503 + Retry-After (PHLOEM_MAX_INFLIGHT_REQUESTS)")
	fs.Int64Var(&c.MaxInflightBytes, "max-inflight-bytes", ee.Int("MAX_INFLIGHT_BYTES", c.MaxInflightBytes), "body memory of in-flight requests; beyond: 503 + Retry-After (PHLOEM_MAX_INFLIGHT_BYTES)")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", ee.Int("MAX_BODY_BYTES", c.MaxBodyBytes), "largest raw (compressed) request body; 0: --max-batch-bytes; beyond: 413 (PHLOEM_MAX_BODY_BYTES)")
	fs.IntVar(&c.Limits.MaxBatchBytes, "max-batch-bytes", int(ee.Int("MAX_BATCH_BYTES", int64(c.Limits.MaxBatchBytes))), "largest decoded (decompressed) batch; beyond: 413 (PHLOEM_MAX_BATCH_BYTES)")
	fs.IntVar(&c.Limits.MaxRecords, "max-records", int(ee.Int("MAX_RECORDS", int64(c.Limits.MaxRecords))), "most records per batch; beyond: 413 (PHLOEM_MAX_RECORDS)")
	fs.IntVar(&c.Limits.MaxRecordBytes, "max-record-bytes", int(ee.Int("MAX_RECORD_BYTES", int64(c.Limits.MaxRecordBytes))), "largest record payload; beyond: 413 (PHLOEM_MAX_RECORD_BYTES)")
	fs.DurationVar(&c.MaxRetryAfter, "max-retry-after", ee.Duration("MAX_RETRY_AFTER", c.MaxRetryAfter), "cap of the Retry-After of 429 and 503 answers (PHLOEM_MAX_RETRY_AFTER)")
	fs.IntVar(&c.MaxMeters, "max-meters", int(ee.Int("MAX_METERS", int64(c.MaxMeters))), "most meters placed on this collector (bounded-load consistent hashing): a new meter beyond it is sent on to the next collector of its ring (503 + X-Phloem-Full); set about ceil(1.1 x meters / collectors); 0: unbounded (PHLOEM_MAX_METERS)")
	fs.StringVar(&o.blocked, "blocked-meters", envflag.String("BLOCKED_METERS", ""), "comma-separated meter ids refused with 403 (PHLOEM_BLOCKED_METERS)")
	fs.IntVar(&c.TapBuffer, "tap-buffer", int(ee.Int("TAP_BUFFER", int64(c.TapBuffer))), "records queued per live tap; a slower tap loses its oldest (PHLOEM_TAP_BUFFER)")
	fs.IntVar(&c.MaxTaps, "max-taps", int(ee.Int("MAX_TAPS", int64(c.MaxTaps))), "concurrent live taps; beyond: 503 (PHLOEM_MAX_TAPS)")
	fs.DurationVar(&c.TapWriteTimeout, "tap-write-timeout", ee.Duration("TAP_WRITE_TIMEOUT", c.TapWriteTimeout), "a tap that cannot take a write within this is disconnected (PHLOEM_TAP_WRITE_TIMEOUT)")
	fs.IntVar(&c.MaxTenantLabels, "max-tenant-labels", int(ee.Int("MAX_TENANT_LABELS", int64(c.MaxTenantLabels))), "distinct tenant label values in metrics; later tenants count as tenant=\"other\" (PHLOEM_MAX_TENANT_LABELS)")
	fs.StringVar(&c.Compression, "kafka-compression", envflag.String("KAFKA_COMPRESSION", c.Compression), "Kafka batch compression: lz4, zstd, snappy, gzip or none (PHLOEM_KAFKA_COMPRESSION)")
	fs.DurationVar(&c.ProducerLinger, "kafka-linger", ee.Duration("KAFKA_LINGER", c.ProducerLinger), "how long a Kafka partition batch waits for more records (PHLOEM_KAFKA_LINGER)")
	fs.IntVar(&c.MaxBufferedRecords, "kafka-max-buffered-records", int(ee.Int("KAFKA_MAX_BUFFERED_RECORDS", int64(c.MaxBufferedRecords))), "producer buffer bound in records; when full, requests wait until their deadline, then 503 (PHLOEM_KAFKA_MAX_BUFFERED_RECORDS)")
	fs.IntVar(&c.MaxBufferedBytes, "kafka-max-buffered-bytes", int(ee.Int("KAFKA_MAX_BUFFERED_BYTES", int64(c.MaxBufferedBytes))), "producer buffer bound in bytes (PHLOEM_KAFKA_MAX_BUFFERED_BYTES)")
	fs.StringVar(&o.logLevel, "log-level", envflag.String("LOG_LEVEL", "info"), "debug, info, warn or error (PHLOEM_LOG_LEVEL)")
	fs.StringVar(&o.logFormat, "log-format", envflag.String("LOG_FORMAT", "text"), "text or json (PHLOEM_LOG_FORMAT)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, m := range strings.Split(o.blocked, ",") {
		if m = strings.TrimSpace(m); m != "" {
			c.BlockedMeters = append(c.BlockedMeters, m)
		}
	}
	if err := o.kafka.Validate(); err != nil {
		ee = append(ee, err)
	}
	// Check the collector settings now (with a stand-in broker list, which the
	// embedded broker or --brokers provides later) so that a bad flag exits 2.
	check := *c
	check.KafkaOpts = []kgo.Opt{kgo.SeedBrokers("127.0.0.1:9092")}
	if err := check.Validate(); err != nil {
		ee = append(ee, err)
	}
	return o, errors.Join(ee...)
}

func run(ctx context.Context, args []string, stderr io.Writer, hup <-chan os.Signal) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "collector: %v\n", err)
		return 2
	}
	logger, err := logx.New(o.logLevel, o.logFormat, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "collector: %v\n", err)
		return 2
	}
	if err := serve(ctx, o, logger, hup); err != nil {
		logger.Error("collector stopped", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, o *options, logger *slog.Logger, hup <-chan os.Signal) (err error) {
	// Infrastructure (broker, watcher, admin) outlives the collector, so that its
	// final producer flush still has a broker.
	p, err := procrun.Start(ctx, procrun.Kafka{Config: o.kafka, EmbeddedAddr: o.embeddedAddr, DataDir: o.dataDir, ControlTopic: o.controlTopic}, logger)
	defer func() { err = errors.Join(err, p.Infra.Stop()) }()
	if err != nil {
		return err
	}
	infra := p.Infra

	o.collector.KafkaOpts = p.Opts
	c, err := collector.New(o.collector, p.Watcher, logger, p.Reg)
	if err != nil {
		return err
	}
	dataLn, err := p.Listen(procrun.Listeners{Admin: o.adminListen, Data: o.listen, Pprof: o.pprof,
		Ready: c.RegisterReadyChecks, Meters: c, Instance: o.collector.CollectorID}, logger)
	if err != nil {
		return err
	}
	logger.Info("collector serving", "tls", o.collector.TLSCertFile != "", "collector_id", o.collector.CollectorID, "kafka", o.kafka)
	infra.Go("tls reloader", func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				if err := c.Reload(); err != nil && !errors.Is(err, collector.ErrNoTLS) {
					logger.Error("SIGHUP: TLS reload failed, serving the previous certificate", "err", err)
				}
			}
		}
	})

	return c.Run(p.AppCtx, dataLn) // infra stops after it, in the deferred Stop
}
