package consumer

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/phloem/control"
	"phloem/phloem/topics"
)

// Config configures a Consumer. Start from DefaultConfig; each field says its default
// and what zero means.
type Config struct {
	// KafkaOpts are the client options (seed brokers, TLS, SASL, timeouts), usually
	// kafkaconf.Config.Opts(). The consumer adds its group and consume options; do
	// not pass consumer-group or consume-topic options. Required.
	KafkaOpts []kgo.Opt
	// Group is the consumer group id. Default "phloem".
	Group string
	// Topics names the tenant topics; the consumer subscribes to Topics.Regexp().
	// Default topics.DefaultConfig().
	Topics topics.Config
	// MetadataMaxAge is how often the client refreshes metadata, which bounds how
	// long a new tenant topic waits before it is consumed. Default 5s; zero means 5s.
	MetadataMaxAge time.Duration

	// SessionTimeout is the group session timeout: how long the group waits for a
	// member that stopped heartbeating (e.g. killed) before it reassigns its
	// partitions. Default 45s (franz-go's default); heartbeats go every third of it,
	// at most every 3s.
	SessionTimeout time.Duration

	// CommitInterval is how often acknowledged watermarks are committed. It also
	// bounds the duplicates after a crash: at most one interval's worth of
	// acknowledged records is redelivered. Default 1s.
	CommitInterval time.Duration
	// CommitTimeout bounds each commit request. Default 10s.
	CommitTimeout time.Duration
	// MaxPollRecords bounds the records taken per poll, and so how far one poll can
	// overshoot the pending budget. Default 5_000: a quarter of a default sink
	// queue, so that one poll alone does not fill a queue.
	MaxPollRecords int
	// FetchMaxBytes and FetchMaxPartitionBytes bound franz-go's fetch buffers
	// (kgo.FetchMaxBytes, kgo.FetchMaxPartitionBytes). Defaults 16 MiB and 1 MiB.
	FetchMaxBytes          int32
	FetchMaxPartitionBytes int32
	// FetchMaxWait is how long a fetch waits for data (kgo.FetchMaxWait). A
	// fetch in flight does not include partitions assigned after it was sent, so
	// this also bounds how long a newly assigned partition waits for its first
	// record (with kgo's 5s default, TestStartupWith1000Topics was bimodal:
	// 50 ms or 5.05 s). Default 500ms; zero means the default.
	FetchMaxWait time.Duration

	// SinkQueueRecords and SinkQueueBytes bound each sink's queue, including the
	// batch being delivered. A full queue pauses the partitions that feed it.
	// Defaults 20_000 records and 16 MiB. The records bound is four polls
	// (MaxPollRecords): pausing makes franz-go drop the partition's buffered records
	// and fetch them again, so a fast sink whose connector goroutine is briefly off
	// CPU (a busy machine) should not pause. Each queued record counts its payload
	// plus about 512 bytes (itemOverhead), so for small records SinkQueueBytes is
	// the bound that caps memory.
	SinkQueueRecords int
	SinkQueueBytes   int64
	// PendingMaxBytes and PendingPartitionBytes are the pending budget: when a sink
	// queue is full, the records of the partitions that feed it are held back, in
	// order, in the poll loop (counted like queued records: payload plus
	// itemOverhead) and re-offered as the queue drains, and a partition is paused
	// (kgo PauseFetchPartitions) only once its held records exceed
	// PendingPartitionBytes or all partitions' held records exceed PendingMaxBytes.
	// Pausing is expensive (franz-go drops the partition's buffered, decoded records
	// and fetches them again), and on a busy machine a fast sink's connector is
	// often off CPU for a few milliseconds; the budget absorbs that. The
	// per-partition share stops one stuck sink's partitions from taking the whole
	// budget: they pause when they reach their share and leave the rest to the
	// others. Held records may exceed the budget by at most one poll
	// (MaxPollRecords records), since a partition is paused after the poll that
	// crossed it; they are part of the memory bound (see the package doc). Defaults
	// 16 MiB (the default FetchMaxBytes) and 4 MiB; zero pauses a congested
	// partition at once.
	PendingMaxBytes       int64
	PendingPartitionBytes int64
	// LowWater is the fraction of the queue bounds below which a sink that refused
	// records lets paused partitions resume. Default 0.5; must be in [0, 1).
	LowWater float64
	// SinkBatchRecords and SinkBatchBytes bound one delivery (one HTTP POST, one
	// file write). Defaults 1_000 records and 1 MiB.
	SinkBatchRecords int
	SinkBatchBytes   int64
	// SinkDrainTimeout is how long a removed sink may keep delivering its queued
	// records before the rest are abandoned (see the package doc: abandoned records
	// are never committed). Default 5s; zero abandons at once.
	SinkDrainTimeout time.Duration
	// RetryBase and RetryCap shape the full-jitter backoff between delivery
	// attempts of a failing sink. Defaults 100ms and 10s.
	RetryBase, RetryCap time.Duration
	// HTTPTimeout bounds each HTTP sink request (dial included) unless the sink's
	// "timeout" param says otherwise. Default 10s.
	HTTPTimeout time.Duration
	// StreamBuffer is the per-subscriber buffer of the stream sink, in lines; when
	// it is full the oldest line is dropped and counted. Default 1_024.
	StreamBuffer int
	// ShutdownTimeout bounds the drain of all sinks at shutdown before the final
	// commit. Default 10s.
	ShutdownTimeout time.Duration

	// ExtraSinks are sinks that exist beside the control topic's (same semantics;
	// a control sink with the same id wins). They may use the type "discard", which
	// acknowledges without delivering and exists for benchmarks and tests.
	ExtraSinks []control.Sink
	// Stdout is where "stdout" sinks write. nil means os.Stdout.
	Stdout io.Writer
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Group:                  "phloem",
		Topics:                 topics.DefaultConfig(),
		MetadataMaxAge:         5 * time.Second,
		SessionTimeout:         45 * time.Second,
		CommitInterval:         time.Second,
		CommitTimeout:          10 * time.Second,
		MaxPollRecords:         5_000,
		FetchMaxBytes:          16 << 20,
		FetchMaxPartitionBytes: 1 << 20,
		FetchMaxWait:           500 * time.Millisecond,
		SinkQueueRecords:       20_000,
		SinkQueueBytes:         16 << 20,
		PendingMaxBytes:        16 << 20,
		PendingPartitionBytes:  4 << 20,
		LowWater:               0.5,
		SinkBatchRecords:       1_000,
		SinkBatchBytes:         1 << 20,
		SinkDrainTimeout:       5 * time.Second,
		RetryBase:              100 * time.Millisecond,
		RetryCap:               10 * time.Second,
		HTTPTimeout:            10 * time.Second,
		StreamBuffer:           1_024,
		ShutdownTimeout:        10 * time.Second,
	}
}

// SinkDiscard is the sink type that acknowledges every record without delivering
// it. Only ExtraSinks may use it (the control topic rejects unknown types): it
// measures the consumer's own throughput.
const SinkDiscard = "discard"

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if len(c.KafkaOpts) == 0 {
		return errors.New("consumer: KafkaOpts is empty: pass the seed brokers (kafkaconf.Config.Opts)")
	}
	if err := kgo.ValidateOpts(c.KafkaOpts...); err != nil {
		return fmt.Errorf("consumer: invalid Kafka options: %w", err)
	}
	if c.Group == "" {
		return errors.New("consumer: Group must not be empty")
	}
	if err := c.Topics.Validate(); err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	for name, d := range map[string]time.Duration{
		"CommitInterval": c.CommitInterval, "CommitTimeout": c.CommitTimeout,
		"RetryBase": c.RetryBase, "RetryCap": c.RetryCap, "HTTPTimeout": c.HTTPTimeout,
		"ShutdownTimeout": c.ShutdownTimeout, "SessionTimeout": c.SessionTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("consumer: %s %v must be positive", name, d)
		}
	}
	if c.MetadataMaxAge < 0 || c.SinkDrainTimeout < 0 {
		return errors.New("consumer: MetadataMaxAge and SinkDrainTimeout must not be negative")
	}
	if c.MaxPollRecords < 1 || c.SinkQueueRecords < 1 || c.SinkBatchRecords < 1 || c.StreamBuffer < 1 {
		return errors.New("consumer: MaxPollRecords, SinkQueueRecords, SinkBatchRecords and StreamBuffer must be at least 1")
	}
	if c.SinkQueueBytes < 1 || c.SinkBatchBytes < 1 || c.FetchMaxBytes < 1 || c.FetchMaxPartitionBytes < 1 {
		return errors.New("consumer: SinkQueueBytes, SinkBatchBytes, FetchMaxBytes and FetchMaxPartitionBytes must be positive")
	}
	if c.PendingMaxBytes < 0 || c.PendingPartitionBytes < 0 {
		return errors.New("consumer: PendingMaxBytes and PendingPartitionBytes must not be negative")
	}
	if c.LowWater < 0 || c.LowWater >= 1 {
		return fmt.Errorf("consumer: LowWater %v must be in [0, 1)", c.LowWater)
	}
	for _, s := range c.ExtraSinks {
		if err := validateSink(s); err != nil {
			return fmt.Errorf("consumer: extra sink: %w", err)
		}
	}
	return nil
}

// validateSink is control.Sink.Validate extended with the test-only types.
func validateSink(s control.Sink) error {
	if s.Type == SinkDiscard {
		s.Type = control.SinkStdout // validate everything else
		if s.Version == 0 {
			s.Version = 1
		}
	}
	if s.Version == 0 {
		s.Version = 1
	}
	return s.Validate()
}
