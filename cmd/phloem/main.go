// Command phloem runs the phloem consumer tier: one consumer-group member over every
// tenant topic, delivering records to the sinks configured on the control topic.
//
// It serves the stream sink's subscribers on --listen (data) and /metrics, /healthz
// and /readyz on --admin-listen. Without --brokers it starts the embedded broker
// (persisting to --data-dir when given). Every flag has a PHLOEM_* environment
// fallback; run "phloem --help".
//
// main is wiring only: flags, then the components, run so that the first failure
// stops the rest. Shutdown order: the consumer stops first (drain, final commit,
// leave the group), then the watcher, the admin listener and the embedded broker.
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
	"runtime/debug"
	"syscall"

	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/internal/admin"
	"phloem/internal/envflag"
	"phloem/internal/logx"
	"phloem/internal/procrun"
	"phloem/phloem/consumer"
	"phloem/phloem/control"
	"phloem/phloem/kafkaconf"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command line, after env fallbacks.
type options struct {
	kafka        kafkaconf.Config
	consumer     consumer.Config
	listen       string
	adminListen  string
	controlTopic string
	dataDir      string
	embeddedAddr string
	logLevel     string
	logFormat    string
	pprof        bool
	memoryLimit  int64
}

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{kafka: kafkaconf.DefaultConfig(), consumer: consumer.DefaultConfig()}
	fs := flag.NewFlagSet("phloem", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: phloem [flags]\n\nConsumes every tenant topic in one consumer group and delivers to the sinks of the control topic.\nEvery flag falls back to the PHLOEM_* environment variable named in its help.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var ee envflag.Errors
	c := &o.consumer
	o.kafka.RegisterFlags(fs)
	fs.StringVar(&o.listen, "listen", envflag.String("LISTEN", "127.0.0.1:8090"), "data listener: GET /v1/stream for stream sinks (PHLOEM_LISTEN)")
	fs.StringVar(&o.adminListen, "admin-listen", envflag.String("ADMIN_LISTEN", "127.0.0.1:9091"), "admin listener: /metrics /healthz /readyz (PHLOEM_ADMIN_LISTEN)")
	fs.BoolVar(&o.pprof, "pprof", envflag.String("PPROF", "") == "true", "serve /debug/pprof on the admin listener (PHLOEM_PPROF=true)")
	fs.StringVar(&c.Group, "group", envflag.String("GROUP", c.Group), "consumer group id (PHLOEM_GROUP)")
	fs.StringVar(&c.Topics.Template, "topic-template", envflag.String("TOPIC_TEMPLATE", c.Topics.Template), "tenant topic name template (PHLOEM_TOPIC_TEMPLATE)")
	fs.StringVar(&o.controlTopic, "control-topic", envflag.String("CONTROL_TOPIC", control.DefaultTopic), "control topic (PHLOEM_CONTROL_TOPIC)")
	fs.StringVar(&o.dataDir, "data-dir", envflag.String("DATA_DIR", ""), "embedded broker's data directory when --brokers is empty; empty keeps data in memory (PHLOEM_DATA_DIR)")
	fs.StringVar(&o.embeddedAddr, "embedded-addr", envflag.String("EMBEDDED_ADDR", "127.0.0.1:9092"), "embedded broker's loopback listen address (PHLOEM_EMBEDDED_ADDR)")
	fs.DurationVar(&c.CommitInterval, "commit-interval", ee.Duration("COMMIT_INTERVAL", c.CommitInterval), "how often acknowledged offsets are committed; bounds duplicates after a crash (PHLOEM_COMMIT_INTERVAL)")
	fs.DurationVar(&c.SessionTimeout, "session-timeout", ee.Duration("SESSION_TIMEOUT", c.SessionTimeout), "group session timeout: how long a dead member keeps its partitions (PHLOEM_SESSION_TIMEOUT)")
	fs.DurationVar(&c.MetadataMaxAge, "metadata-max-age", ee.Duration("METADATA_MAX_AGE", c.MetadataMaxAge), "metadata refresh interval: how soon a new tenant topic is consumed (PHLOEM_METADATA_MAX_AGE)")
	fs.IntVar(&c.SinkQueueRecords, "sink-queue-records", int(ee.Int("SINK_QUEUE_RECORDS", int64(c.SinkQueueRecords))), "per-sink queue bound in records; a full queue pauses its partitions (PHLOEM_SINK_QUEUE_RECORDS)")
	fs.Int64Var(&c.SinkQueueBytes, "sink-queue-bytes", ee.Int("SINK_QUEUE_BYTES", c.SinkQueueBytes), "per-sink queue bound in bytes (PHLOEM_SINK_QUEUE_BYTES)")
	fs.IntVar(&c.MaxPollRecords, "max-poll-records", int(ee.Int("MAX_POLL_RECORDS", int64(c.MaxPollRecords))), "records per poll (PHLOEM_MAX_POLL_RECORDS)")
	fetchMax := fs.Int64("fetch-max-bytes", ee.Int("FETCH_MAX_BYTES", int64(c.FetchMaxBytes)), "franz-go fetch buffer bound in bytes (PHLOEM_FETCH_MAX_BYTES)")
	fs.Int64Var(&c.PendingMaxBytes, "pending-max-bytes", ee.Int("PENDING_MAX_BYTES", c.PendingMaxBytes), "records held back, over all partitions, while their sink queue is full, before partitions pause (PHLOEM_PENDING_MAX_BYTES)")
	fs.Int64Var(&c.PendingPartitionBytes, "pending-partition-bytes", ee.Int("PENDING_PARTITION_BYTES", c.PendingPartitionBytes), "records one partition may hold back before it pauses (PHLOEM_PENDING_PARTITION_BYTES)")
	fs.Int64Var(&o.memoryLimit, "memory-limit", ee.Int("MEMORY_LIMIT", 0), "soft limit of the process's memory in bytes (Go's GOMEMLIMIT; set it to the container's limit); must exceed the data bound fetch + pending + one poll + one sink queue; 0: Go's default (PHLOEM_MEMORY_LIMIT)")
	fs.IntVar(&c.SinkBatchRecords, "sink-batch-records", int(ee.Int("SINK_BATCH_RECORDS", int64(c.SinkBatchRecords))), "records per sink delivery (PHLOEM_SINK_BATCH_RECORDS)")
	fs.DurationVar(&c.HTTPTimeout, "http-sink-timeout", ee.Duration("HTTP_SINK_TIMEOUT", c.HTTPTimeout), "default per-request timeout of http sinks (PHLOEM_HTTP_SINK_TIMEOUT)")
	fs.DurationVar(&c.SinkDrainTimeout, "sink-drain-timeout", ee.Duration("SINK_DRAIN_TIMEOUT", c.SinkDrainTimeout), "how long a removed sink may drain its queue (PHLOEM_SINK_DRAIN_TIMEOUT)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", ee.Duration("SHUTDOWN_TIMEOUT", c.ShutdownTimeout), "how long sinks drain at shutdown before the final commit (PHLOEM_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&o.logLevel, "log-level", envflag.String("LOG_LEVEL", "info"), "debug, info, warn or error (PHLOEM_LOG_LEVEL)")
	fs.StringVar(&o.logFormat, "log-format", envflag.String("LOG_FORMAT", "text"), "text or json (PHLOEM_LOG_FORMAT)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *fetchMax < 1 || *fetchMax > 1<<31-1 {
		ee = append(ee, fmt.Errorf("--fetch-max-bytes %d must be in [1, 2^31)", *fetchMax))
	}
	c.FetchMaxBytes = int32(*fetchMax)
	c.FetchMaxPartitionBytes = min(c.FetchMaxPartitionBytes, c.FetchMaxBytes)
	if o.memoryLimit < 0 {
		ee = append(ee, fmt.Errorf("--memory-limit %d must not be negative", o.memoryLimit))
	} else if b := dataBound(c); o.memoryLimit > 0 && o.memoryLimit <= b {
		ee = append(ee, fmt.Errorf("--memory-limit %d is not above the data bound %d (fetch %d + pending %d + one poll + one sink queue %d); raise it or lower those bounds",
			o.memoryLimit, b, c.FetchMaxBytes, c.PendingMaxBytes, c.SinkQueueBytes))
	}
	if err := o.kafka.Validate(); err != nil {
		ee = append(ee, err)
	}
	// Check the consumer settings now (with a stand-in broker list, which the
	// embedded broker or --brokers provides later) so that a bad flag exits 2.
	check := *c
	check.KafkaOpts = []kgo.Opt{kgo.SeedBrokers("127.0.0.1:9092")}
	if err := check.Validate(); err != nil {
		ee = append(ee, err)
	}
	return o, errors.Join(ee...)
}

// dataBound is the memory the consumer's bounded structures may hold with one
// sink: franz-go's fetch buffers, the pending budget, one poll's records and one
// sink queue. Each further sink adds SinkQueueBytes.
func dataBound(c *consumer.Config) int64 {
	return int64(c.FetchMaxBytes) + c.PendingMaxBytes + int64(c.MaxPollRecords)*512 + c.SinkQueueBytes
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "phloem: %v\n", err)
		return 2
	}
	logger, err := logx.New(o.logLevel, o.logFormat, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "phloem: %v\n", err)
		return 2
	}
	if err := serve(ctx, o, logger); err != nil {
		logger.Error("phloem stopped", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, o *options, logger *slog.Logger) (err error) {
	if o.memoryLimit > 0 {
		// The queues, fetch buffers and pending budget are bounded in bytes; the
		// soft limit makes the garbage collector keep the heap (and so RSS) under
		// the operator's figure instead of letting it grow to twice the live data.
		debug.SetMemoryLimit(o.memoryLimit)
		logger.Info("memory limit set", "bytes", o.memoryLimit, "data_bound_one_sink", dataBound(&o.consumer))
	}
	// Infrastructure (broker, watcher, admin) outlives the consumer, so that its
	// final commit still has a broker.
	p, err := procrun.Start(ctx, procrun.Kafka{Config: o.kafka, EmbeddedAddr: o.embeddedAddr, DataDir: o.dataDir, ControlTopic: o.controlTopic}, logger)
	defer func() { err = errors.Join(err, p.Infra.Stop()) }()
	if err != nil {
		return err
	}

	o.consumer.KafkaOpts = p.Opts
	c, err := consumer.New(o.consumer, p.Watcher, logger, p.Reg)
	if err != nil {
		return err
	}
	dataLn, err := p.Listen(procrun.Listeners{Admin: o.adminListen, Data: o.listen, Pprof: o.pprof,
		Ready: func(a *admin.Server) { a.AddReadyCheck("consumer", c.Ready) }, Instance: "phloem"}, logger)
	if err != nil {
		return err
	}
	logger.Info("phloem consuming", "group", o.consumer.Group, "topic_regexp", o.consumer.Topics.Regexp())
	return c.Run(p.AppCtx, dataLn) // infra stops after it, in the deferred Stop
}
