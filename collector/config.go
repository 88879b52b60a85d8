package collector

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/collector/wire"
	"phloem/phloem/topics"
)

// Defaults of Config. Each is documented on its field.
const (
	DefaultIngestTimeout       = 10 * time.Second
	DefaultReadHeaderTimeout   = 5 * time.Second
	DefaultReadTimeout         = 30 * time.Second
	DefaultIdleTimeout         = 2 * time.Minute
	DefaultShutdownGrace       = 15 * time.Second
	DefaultFlushTimeout        = 10 * time.Second
	DefaultMaxInflightRequests = 1024
	DefaultMaxInflightBytes    = 256 << 20
	DefaultTapBuffer           = 1024
	DefaultTapWriteTimeout     = 5 * time.Second
	DefaultTapHeartbeat        = 15 * time.Second
	DefaultMaxTaps             = 1024
	DefaultMaxTenantLabels     = 100
	DefaultProducerLinger      = time.Duration(0)
	DefaultMaxBufferedRecords  = 100_000
	DefaultMaxBufferedBytes    = 128 << 20
	DefaultCompression         = "lz4"
	DefaultMaxRetryAfter       = 30 * time.Second
	DefaultTopicEnsureTimeout  = 5 * time.Second
	DefaultRetryDedupTTL       = 5 * time.Minute
	DefaultRetryDedupEntries   = 65536
	DefaultMeterActiveWindow   = 2 * time.Minute
)

// MeterClientTimeout is the meter's default client timeout for one ingest request
// (meter package default). The collector's IngestTimeout must stay below it, so
// that the collector answers (200, or 503 with Retry-After) before the meter gives
// up and retries blindly.
const MeterClientTimeout = 30 * time.Second

// Config configures a Collector. Start from DefaultConfig; the zero value of a
// duration or limit is NOT "unlimited" unless its doc says so.
type Config struct {
	// CollectorID names this collector in Kafka record headers (phloem-collector)
	// and logs. Default: the host name, or "collector" when it is unknown.
	CollectorID string

	// KafkaOpts are the franz-go options for seed brokers, TLS, SASL and timeouts,
	// usually kafkaconf.Config.Opts(). The collector appends its producer settings
	// (acks=all, idempotence, linger, compression, buffer bounds, timeouts) after
	// them, so producer options given here are overridden. Required unless a
	// Republisher is supplied to New through Options.
	KafkaOpts []kgo.Opt

	// Republisher, when set, replaces the Kafka producer (KafkaOpts and the
	// producer settings below are then unused). Default nil: Kafka. Meant for
	// DiscardRepublisher in benchmarks and HTTP-only tests; it owns its own
	// lifetime except that Run calls its Flush and Close at shutdown.
	Republisher Republisher

	// Topics names the tenant topics when a tenant record carries no Topic.
	// Default topics.DefaultConfig().
	Topics topics.Config
	// EnsureTopics creates a tenant's topic (topics.Ensure) the first time this
	// process produces to it. Default true: topics are created when a tenant is
	// added, but a collector started on a fresh embedded broker must still work.
	EnsureTopics bool
	// TopicEnsureTimeout bounds that creation. Default 5s.
	TopicEnsureTimeout time.Duration

	// Limits bound one decoded batch (records, record size, decompressed size).
	// Default wire.DefaultLimits().
	Limits wire.Limits
	// MaxBodyBytes bounds the raw (possibly compressed) request body. A request
	// announcing more in Content-Length is refused with 413 before a byte of the
	// body is read. Default (and zero) Limits.MaxBatchBytes.
	MaxBodyBytes int64

	// MaxInflightRequests bounds concurrent ingest requests; beyond it the answer
	// is 503 with Retry-After. Default 1024.
	MaxInflightRequests int
	// MaxInflightBytes bounds the memory held by the bodies of in-flight ingest
	// requests (decoded buffers, counted until Kafka released them); beyond it the
	// answer is 503. Default 256 MiB.
	MaxInflightBytes int64
	// MaxRetryAfter caps the Retry-After of 429 and 503 answers. Default 30s.
	MaxRetryAfter time.Duration

	// IngestTimeout is the server's deadline for one ingest request, from the
	// end of its headers to the answer: body read, Kafka acknowledgement. Past it
	// the answer is 503. Default 10s, below the meter's MeterClientTimeout (30s).
	IngestTimeout time.Duration

	// ReadHeaderTimeout, ReadTimeout and IdleTimeout configure the data
	// listener's http.Server. Defaults 5s, 30s and 2m. There is no global
	// WriteTimeout: ingest answers and tap writes set their own write deadlines,
	// and a global one would cut every long-lived tap.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
	// ShutdownGrace bounds how long Run waits for in-flight requests when its
	// context ends. Default 15s.
	ShutdownGrace time.Duration
	// FlushTimeout bounds the final producer flush at shutdown. Default 10s.
	FlushTimeout time.Duration

	// RetryDedupTTL is how long the collector remembers a batch that was
	// answered 503 but stored afterwards (the broker went away after the send),
	// so that the meter's retry of it is answered 200 without a second copy.
	// Default 5m; 0 disables (retries then may duplicate, as at-least-once allows).
	RetryDedupTTL time.Duration
	// RetryDedupEntries bounds that memory. Default 65536.
	RetryDedupEntries int

	// TapBuffer is the number of records a live tap may have queued; a slow tap
	// loses its oldest records beyond it and is told how many. Default 1024.
	TapBuffer int
	// TapWriteTimeout is the write deadline of each write to a tap; a tap that
	// cannot take a write within it is disconnected. Default 5s.
	TapWriteTimeout time.Duration
	// TapHeartbeat is how often an idle tap receives a heartbeat line, so that a
	// vanished receiver is noticed even when no record flows. Default 15s.
	TapHeartbeat time.Duration
	// MaxTaps bounds concurrent taps over all tenants (503 beyond). Default 1024.
	MaxTaps int

	// MaxTenantLabels caps the distinct tenant label values of per-tenant
	// metrics; later tenants are counted under tenant="other". Default 100.
	MaxTenantLabels int

	// TLSCertFile and TLSKeyFile are the data listener's certificate and key
	// (PEM). Both empty: plain HTTP (loopback, tests). Reload re-reads them.
	TLSCertFile string
	TLSKeyFile  string

	// MaxMeters bounds the meters placed on this collector: consistent hashing
	// with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2016), enforced here.
	// A request from a meter that is not active on this collector (see
	// MeterActiveWindow), while MaxMeters meters are, is refused with 503,
	// reason meters_full and header X-Phloem-Full: meters; the meter then moves
	// at once to the next collector of its ring order. A request carrying
	// X-Phloem-Placement: fallback (the meter found every live collector full)
	// is always admitted: no meter is ever left without a collector. Operators
	// set it to about ceil(1.1 × fleet size / collectors), which keeps the
	// busiest collector within 1.10 × the mean; after a collector is lost the
	// survivors' headroom is what absorbs its meters (beyond it, fallbacks).
	// Default 0: unbounded (pure consistent hashing). At most MaxMetersTracked.
	MaxMeters int
	// MeterActiveWindow is how long a meter stays active on this collector
	// (counted against MaxMeters, and admitted without the check) after its
	// latest request was admitted or answered. It must exceed the meters'
	// retry cap (meter BackoffCap, default 30s) and their idle gaps, or a
	// meter in backoff loses its place. Default 2m.
	MeterActiveWindow time.Duration

	// BlockedMeters are meter ids refused with 403 whatever their token (an
	// operator's switch for a misbehaving agent). Default none.
	BlockedMeters []string

	// Producer settings (appended to KafkaOpts).
	//
	// ProducerLinger is how long a partition batch waits for more records.
	// Default 0, set on purpose: every ingest request waits for its records'
	// acknowledgement, so a linger is pure added latency per request; batching
	// still happens, because records that arrive while a produce request is in
	// flight (up to 5 per broker, idempotent) are sent together in the next
	// one. Measured with BenchmarkIngest (32 meters, 500 x 200 B batches): 0
	// gave 1.1 M records/s and p50 12 ms, 5ms gave 0.47 M records/s and p50
	// 27 ms. Raise it for many tiny requests if broker request rate matters.
	ProducerLinger time.Duration
	// Compression is the Kafka batch compression: "lz4" (default), "zstd",
	// "snappy", "gzip" or "none".
	Compression string
	// MaxBufferedRecords and MaxBufferedBytes bound the producer's buffer;
	// when full, produce blocks until the request deadline (then 503). Defaults
	// 100,000 records and 128 MiB.
	MaxBufferedRecords int
	MaxBufferedBytes   int
	// ProduceRequestTimeout is the broker-side timeout of a produce request.
	// Default (and zero) IngestTimeout.
	ProduceRequestTimeout time.Duration
	// RecordDeliveryTimeout fails records not delivered within it (when kgo can
	// do so safely). Default (and zero) IngestTimeout: a record whose request was
	// already answered 503 should not linger in the buffer.
	RecordDeliveryTimeout time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	id, err := os.Hostname()
	if err != nil || id == "" {
		id = "collector"
	}
	return Config{
		CollectorID:         id,
		Topics:              topics.DefaultConfig(),
		EnsureTopics:        true,
		TopicEnsureTimeout:  DefaultTopicEnsureTimeout,
		Limits:              wire.DefaultLimits(),
		MaxInflightRequests: DefaultMaxInflightRequests,
		MaxInflightBytes:    DefaultMaxInflightBytes,
		MaxRetryAfter:       DefaultMaxRetryAfter,
		IngestTimeout:       DefaultIngestTimeout,
		ReadHeaderTimeout:   DefaultReadHeaderTimeout,
		ReadTimeout:         DefaultReadTimeout,
		IdleTimeout:         DefaultIdleTimeout,
		ShutdownGrace:       DefaultShutdownGrace,
		FlushTimeout:        DefaultFlushTimeout,
		RetryDedupTTL:       DefaultRetryDedupTTL,
		RetryDedupEntries:   DefaultRetryDedupEntries,
		MeterActiveWindow:   DefaultMeterActiveWindow,
		TapBuffer:           DefaultTapBuffer,
		TapWriteTimeout:     DefaultTapWriteTimeout,
		TapHeartbeat:        DefaultTapHeartbeat,
		MaxTaps:             DefaultMaxTaps,
		MaxTenantLabels:     DefaultMaxTenantLabels,
		ProducerLinger:      DefaultProducerLinger,
		Compression:         DefaultCompression,
		MaxBufferedRecords:  DefaultMaxBufferedRecords,
		MaxBufferedBytes:    DefaultMaxBufferedBytes,
	}
}

// meterIDRe is the syntax of X-Meter-Id: it becomes a Kafka key, a header and a
// log field, so it is kept printable and short.
var meterIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$`)

// ValidMeterID reports whether id is an acceptable X-Meter-Id: 1-128 characters
// of [A-Za-z0-9._:@/-], starting with a letter or digit.
func ValidMeterID(id string) error {
	if !meterIDRe.MatchString(id) {
		return fmt.Errorf("invalid meter id %q: use 1-128 characters of A-Z, a-z, 0-9 and ._:@/-, starting with a letter or digit", truncate(id, 140))
	}
	return nil
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.CollectorID == "" {
		return errors.New("collector: CollectorID must not be empty")
	}
	if c.Republisher == nil && len(c.KafkaOpts) == 0 {
		return errors.New("collector: KafkaOpts must name the brokers (kgo.SeedBrokers), usually from kafkaconf.Config.Opts()")
	}
	if err := c.Topics.Validate(); err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	if err := c.Limits.Validate(); err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	if c.MaxBodyBytes < 0 {
		return errors.New("collector: MaxBodyBytes must not be negative")
	}
	if c.MaxInflightRequests < 1 || c.MaxInflightBytes < 1 || c.MaxTaps < 1 || c.TapBuffer < 1 || c.MaxTenantLabels < 0 {
		return errors.New("collector: MaxInflightRequests, MaxInflightBytes, MaxTaps and TapBuffer must be at least 1, MaxTenantLabels at least 0")
	}
	if lim := c.effectiveLimits(); int64(lim.MaxBatchBytes) > c.MaxInflightBytes {
		return fmt.Errorf("collector: MaxInflightBytes=%d is below the largest batch (max_batch_bytes=%d): such a batch could never be admitted", c.MaxInflightBytes, lim.MaxBatchBytes)
	}
	for name, d := range map[string]time.Duration{
		"IngestTimeout": c.IngestTimeout, "ReadHeaderTimeout": c.ReadHeaderTimeout, "ReadTimeout": c.ReadTimeout,
		"IdleTimeout": c.IdleTimeout, "ShutdownGrace": c.ShutdownGrace, "FlushTimeout": c.FlushTimeout,
		"TapWriteTimeout": c.TapWriteTimeout, "TapHeartbeat": c.TapHeartbeat, "MaxRetryAfter": c.MaxRetryAfter,
	} {
		if d <= 0 {
			return fmt.Errorf("collector: %s must be positive", name)
		}
	}
	if c.IngestTimeout >= MeterClientTimeout {
		return fmt.Errorf("collector: IngestTimeout %s must be shorter than the meter's client timeout %s, or meters give up before the collector answers", c.IngestTimeout, MeterClientTimeout)
	}
	if c.RetryDedupTTL < 0 || (c.RetryDedupTTL > 0 && c.RetryDedupEntries < 1) {
		return errors.New("collector: RetryDedupTTL must not be negative, and RetryDedupEntries must be at least 1 when it is set")
	}
	if c.EnsureTopics && c.TopicEnsureTimeout <= 0 {
		return errors.New("collector: TopicEnsureTimeout must be positive when EnsureTopics is set")
	}
	if c.ProducerLinger < 0 || c.ProduceRequestTimeout < 0 || c.RecordDeliveryTimeout < 0 {
		return errors.New("collector: ProducerLinger, ProduceRequestTimeout and RecordDeliveryTimeout must not be negative")
	}
	if c.MaxBufferedRecords < 1 || c.MaxBufferedBytes < 1 {
		return errors.New("collector: MaxBufferedRecords and MaxBufferedBytes must be at least 1")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("collector: set both TLSCertFile and TLSKeyFile, or neither")
	}
	if _, err := compressionCodec(c.Compression); err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	if c.MaxMeters < 0 || c.MaxMeters > MaxMetersTracked {
		return fmt.Errorf("collector: MaxMeters=%d must be in [0, %d] (0: unbounded)", c.MaxMeters, MaxMetersTracked)
	}
	if c.MaxMeters > 0 && c.MeterActiveWindow <= 0 {
		return errors.New("collector: MeterActiveWindow must be positive when MaxMeters is set")
	}
	for _, m := range c.BlockedMeters {
		if err := ValidMeterID(m); err != nil {
			return fmt.Errorf("collector: BlockedMeters: %w", err)
		}
	}
	return nil
}

func (c Config) effectiveLimits() wire.Limits {
	l := c.Limits
	d := wire.DefaultLimits()
	if l.MaxRecords == 0 {
		l.MaxRecords = d.MaxRecords
	}
	if l.MaxRecordBytes == 0 {
		l.MaxRecordBytes = d.MaxRecordBytes
	}
	if l.MaxBatchBytes == 0 {
		l.MaxBatchBytes = d.MaxBatchBytes
	}
	return l
}

func (c Config) maxBodyBytes() int64 {
	if c.MaxBodyBytes > 0 {
		return c.MaxBodyBytes
	}
	return int64(c.effectiveLimits().MaxBatchBytes)
}

func compressionCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "lz4", "":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "none":
		return kgo.NoCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("unknown Kafka compression %q: use lz4, zstd, snappy, gzip or none", name)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
