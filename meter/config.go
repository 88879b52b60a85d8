package meter

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"phloem/collector/wire"
	"phloem/hashring"
)

// FsyncPolicy says when the spool calls fsync on the segment it appends to.
//
// What each policy guarantees (records are written to the segment file with one
// write(2) per Append, before Append returns, under every policy):
//   - a process crash (kill -9, OOM kill, panic): nothing is lost under any policy,
//     because written pages belong to the kernel, not to the process. After the
//     restart every unacknowledged record is sent again, in order, with its original
//     sequence number, and no sequence number is reused.
//   - an OS crash or power loss: FsyncAlways loses nothing Append returned for.
//     FsyncInterval loses at most the last FsyncInterval of appends, FsyncNever
//     whatever the kernel had not written back (typically up to 30 s). In those two
//     cases the lost records' sequence numbers may be reused by new records after the
//     reboot; if some of the lost records had already reached a collector, the
//     pair (meter id, seq) is then ambiguous. Use FsyncAlways where that matters.
type FsyncPolicy string

// Fsync policies.
const (
	FsyncAlways   FsyncPolicy = "always"
	FsyncInterval FsyncPolicy = "interval"
	FsyncNever    FsyncPolicy = "never"
)

// FullPolicy says what Append does when the spool holds MaxSpoolBytes.
type FullPolicy string

// Spool-full policies.
const (
	// FullBlock makes Append wait, under its context, until acknowledgements free a
	// segment. Nothing is dropped; the input backs up.
	FullBlock FullPolicy = "block"
	// FullDropOldest deletes the oldest unacknowledged segment to make room. The
	// records it held are counted in phloem_meter_records_dropped_total{reason="spool_full"}
	// and logged.
	FullDropOldest FullPolicy = "drop-oldest"
)

// Compression values (the Content-Encoding of ingest requests).
const (
	CompressionNone = wire.EncodingIdentity
	CompressionGzip = wire.EncodingGzip
	CompressionZstd = wire.EncodingZstd
)

// TLSConfig configures TLS to collectors.
type TLSConfig struct {
	// Enabled switches requests to https. Default false.
	Enabled bool
	// CAFile is a PEM bundle of CAs to trust instead of the system roots. Default ""
	// (system roots).
	CAFile string
	// CertFile and KeyFile are an optional client certificate (PEM). Both or neither.
	CertFile, KeyFile string
	// ServerName overrides the name verified in the collector's certificate. Default
	// "": the collector's host name, or for dns:// collectors the DNS name (the
	// resolved addresses are IPs, the certificate names the service).
	ServerName string
	// InsecureSkipVerify disables certificate verification. Tests only.
	InsecureSkipVerify bool
}

// Config configures a Meter. Build it from DefaultConfig and change what you need.
type Config struct {
	// MeterID identifies this meter to collectors (X-Meter-Id) and places it on the
	// collector ring. It must be stable across restarts: placement and the
	// (meter id, seq) duplicate key depend on it. Required.
	MeterID string
	// Token is the tenant's bearer token. Required.
	Token string
	// Collectors lists where collectors are: a comma-separated static list of
	// host:port (or http(s)://host:port), "dns://name:port" (A/AAAA records, each
	// address one collector) or "srv://_service._proto.name". Required unless Ring is
	// set.
	Collectors string
	// Ring, when non-nil, is used instead of the meter's own discovery: the caller
	// keeps it current and Collectors is ignored. For processes that run many meters
	// against one membership (load tests): a ring's table costs ~2 MiB and a build a
	// few hundred ms, which one shared ring pays once. Default nil.
	Ring *hashring.Holder
	// Resolver resolves dns:// and srv:// collectors. Default nil: net.DefaultResolver.
	Resolver Resolver
	// DiscoveryInterval is how often dns:// and srv:// collectors are re-resolved.
	// Default 30s. The meter also re-resolves (at most once per DiscoveryMinInterval)
	// when every collector it knows is failing.
	DiscoveryInterval time.Duration
	// DiscoveryMinInterval bounds re-resolution on failure. Default 5s.
	DiscoveryMinInterval time.Duration

	// SpoolDir holds the spool segments, the acknowledgement cursor and the lock
	// file. One meter per directory. Required.
	SpoolDir string
	// SegmentBytes is the size at which a spool segment is sealed and a new one
	// started. Default 1 MiB. Acknowledged segments are deleted whole, so this is
	// also the granularity at which disk space is returned.
	SegmentBytes int64
	// MaxSpoolBytes bounds the spool on disk. Default 256 MiB. Must be at least
	// 2 × SegmentBytes.
	MaxSpoolBytes int64
	// Fsync is the spool's fsync policy. Default FsyncInterval. See FsyncPolicy for
	// what each one guarantees.
	Fsync FsyncPolicy
	// FsyncInterval is the period of FsyncInterval. Default 1s.
	FsyncInterval time.Duration
	// Full is the policy when the spool is full. Default FullBlock.
	Full FullPolicy

	// BatchMaxRecords caps records per request. Default 1000; at most
	// Limits.MaxRecords.
	BatchMaxRecords int
	// BatchMaxBytes caps the sum of payload bytes per request. Default 1 MiB.
	BatchMaxBytes int
	// Linger is how long the sender waits for a batch to fill before sending it.
	// Default 500ms. 0 sends whatever is spooled as soon as it is there.
	Linger time.Duration
	// Compression is the request Content-Encoding: "identity", "gzip" or "zstd".
	// Default "gzip".
	Compression string
	// Limits are the wire limits the collector enforces. Default wire.DefaultLimits().
	// Append refuses payloads above MaxRecordBytes.
	Limits wire.Limits

	// RequestTimeout bounds one ingest request, from dial to the end of the
	// response. Default 30s. It must stay longer than the collector's ingest
	// deadline (collector default 10s): the collector answers 503 when its own
	// deadline expires, and a meter that gave up first would resend a batch the
	// collector may still be acknowledging, making duplicates for nothing.
	RequestTimeout time.Duration
	// DialTimeout bounds connection setup. Default 5s.
	DialTimeout time.Duration
	// TLS configures https to collectors.
	TLS TLSConfig
	// Transport, when non-nil, replaces the HTTP transport built from DialTimeout
	// and TLS (tests, proxies). Default nil.
	Transport http.RoundTripper

	// BackoffBase and BackoffCap shape the full-jitter backoff between failed
	// attempts: the n-th consecutive failure sleeps uniformly in
	// [0, min(BackoffCap, BackoffBase·2^n)], and never less than the collector's
	// Retry-After. Defaults 100ms and 30s. Meters retry forever: the spool absorbs
	// the outage.
	BackoffBase, BackoffCap time.Duration
	// NewBackOff, when non-nil, replaces the full-jitter policy (the herd test uses it
	// to compare with backoff/v4's ExponentialBackOff). A returned backoff.Stop is
	// treated as BackoffCap: the meter never gives up. Default nil.
	NewBackOff func() backoff.BackOff
	// FailoverHold is how long a collector that refused connections (or timed out)
	// is skipped in favour of its ring successors before the meter tries it again.
	// Default 30s.
	FailoverHold time.Duration
	// FullHold is how long a collector that answered 503 with X-Phloem-Full
	// (it holds its MaxMeters and this meter is not one of them: bounded-load
	// placement) is skipped in favour of the next collector of the ring order.
	// Each mark lasts uniformly in [FullHold, 1.5 × FullHold), so that meters
	// refused together do not come back together. When it ends the meter tries
	// its owner again first: one extra request per FullHold while it is still
	// full. Default 1m.
	FullHold time.Duration

	// ShutdownGrace is how long Run keeps sending after its context is cancelled;
	// what is not acknowledged by then stays spooled for the next start. Default 5s.
	ShutdownGrace time.Duration
	// LogInterval is the throttle interval of repeated log messages. Default 10s.
	LogInterval time.Duration

	// OnAttempt, when non-nil, is called before every ingest request with the
	// collector's address. It runs on the sender goroutine: it must be fast and
	// safe for concurrent use (many meters may share it). For load tests.
	OnAttempt func(collector string)
}

// DefaultConfig returns the defaults documented on Config. MeterID, Token,
// Collectors and SpoolDir are left empty.
func DefaultConfig() Config {
	return Config{
		DiscoveryInterval:    30 * time.Second,
		DiscoveryMinInterval: 5 * time.Second,
		SegmentBytes:         1 << 20,
		MaxSpoolBytes:        256 << 20,
		Fsync:                FsyncInterval,
		FsyncInterval:        time.Second,
		Full:                 FullBlock,
		BatchMaxRecords:      1000,
		BatchMaxBytes:        1 << 20,
		Linger:               500 * time.Millisecond,
		Compression:          CompressionGzip,
		Limits:               wire.DefaultLimits(),
		RequestTimeout:       30 * time.Second,
		DialTimeout:          5 * time.Second,
		BackoffBase:          100 * time.Millisecond,
		BackoffCap:           30 * time.Second,
		FailoverHold:         30 * time.Second,
		FullHold:             time.Minute,
		ShutdownGrace:        5 * time.Second,
		LogInterval:          10 * time.Second,
	}
}

// withDefaults fills zero durations and sizes from DefaultConfig, so that a Config
// literal with only the required fields works.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setDur(&c.DiscoveryInterval, d.DiscoveryInterval)
	setDur(&c.DiscoveryMinInterval, d.DiscoveryMinInterval)
	setDur(&c.FsyncInterval, d.FsyncInterval)
	setDur(&c.RequestTimeout, d.RequestTimeout)
	setDur(&c.DialTimeout, d.DialTimeout)
	setDur(&c.BackoffBase, d.BackoffBase)
	setDur(&c.BackoffCap, d.BackoffCap)
	setDur(&c.FailoverHold, d.FailoverHold)
	setDur(&c.FullHold, d.FullHold)
	setDur(&c.ShutdownGrace, d.ShutdownGrace)
	setDur(&c.LogInterval, d.LogInterval)
	if c.SegmentBytes == 0 {
		c.SegmentBytes = d.SegmentBytes
	}
	if c.MaxSpoolBytes == 0 {
		c.MaxSpoolBytes = d.MaxSpoolBytes
	}
	if c.Fsync == "" {
		c.Fsync = d.Fsync
	}
	if c.Full == "" {
		c.Full = d.Full
	}
	if c.BatchMaxRecords == 0 {
		c.BatchMaxRecords = d.BatchMaxRecords
	}
	if c.BatchMaxBytes == 0 {
		c.BatchMaxBytes = d.BatchMaxBytes
	}
	if c.Compression == "" {
		c.Compression = d.Compression
	}
	if c.Limits == (wire.Limits{}) {
		c.Limits = d.Limits
	}
	return c
}

// Validate reports the first problem with c (after zero fields take defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if strings.TrimSpace(c.MeterID) == "" {
		errs = append(errs, errors.New("meter id is required"))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("token is required (from a token file or PHLOEM_TOKEN)"))
	}
	if c.Ring == nil {
		if _, err := parseCollectors(c.Collectors); err != nil {
			errs = append(errs, err)
		}
	}
	if c.SpoolDir == "" {
		errs = append(errs, errors.New("spool dir is required"))
	}
	if c.SegmentBytes < 4096 {
		errs = append(errs, fmt.Errorf("segment bytes %d is below 4096", c.SegmentBytes))
	}
	if c.MaxSpoolBytes < 2*c.SegmentBytes {
		errs = append(errs, fmt.Errorf("max spool bytes %d must be at least 2 × segment bytes (%d)", c.MaxSpoolBytes, 2*c.SegmentBytes))
	}
	switch c.Fsync {
	case FsyncAlways, FsyncInterval, FsyncNever:
	default:
		errs = append(errs, fmt.Errorf("fsync policy %q: want always, interval or never", c.Fsync))
	}
	switch c.Full {
	case FullBlock, FullDropOldest:
	default:
		errs = append(errs, fmt.Errorf("spool full policy %q: want block or drop-oldest", c.Full))
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	lim := c.Limits
	if c.BatchMaxRecords < 0 || (lim.MaxRecords > 0 && c.BatchMaxRecords > lim.MaxRecords) {
		errs = append(errs, fmt.Errorf("batch max records %d must be in [1, %d]", c.BatchMaxRecords, lim.MaxRecords))
	}
	if c.BatchMaxBytes < 0 || (lim.MaxBatchBytes > 0 && c.BatchMaxBytes > lim.MaxBatchBytes/2) {
		errs = append(errs, fmt.Errorf("batch max bytes %d must be in [1, %d] (half the collector's batch limit, leaving room for framing)", c.BatchMaxBytes, lim.MaxBatchBytes/2))
	}
	if c.Linger < 0 {
		errs = append(errs, fmt.Errorf("linger %v is negative", c.Linger))
	}
	if _, err := wire.ParseEncoding(c.Compression); err != nil {
		errs = append(errs, fmt.Errorf("compression: %w", err))
	}
	if c.BackoffCap < c.BackoffBase {
		errs = append(errs, fmt.Errorf("backoff cap %v is below base %v", c.BackoffCap, c.BackoffBase))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls: cert file and key file go together"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"discovery interval", c.DiscoveryInterval}, {"request timeout", c.RequestTimeout}, {"dial timeout", c.DialTimeout},
		{"fsync interval", c.FsyncInterval}, {"backoff base", c.BackoffBase}, {"shutdown grace", c.ShutdownGrace},
		{"failover hold", c.FailoverHold}, {"full hold", c.FullHold}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, d.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid meter config: %w", err)
	}
	return nil
}
