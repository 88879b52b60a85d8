package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"phloem/meter"
)

var errHelp = errors.New("help requested")

// options is everything the flags configure.
type options struct {
	cfg           meter.Config
	stdin         bool
	tail          string
	tailPoll      time.Duration
	tailFromStart bool
	hostMetrics   bool
	interval      time.Duration
	procRoot      string
	adminListen   string
	flushTimeout  time.Duration
	logLevel      slog.Level
}

const usageHead = `meter: the Phloem agent. It reads records from its inputs, keeps them in an
on-disk spool until a collector acknowledges them, and sends them to the
collector its meter id hashes to (failing over to ring successors, backing off
with full jitter and honouring Retry-After).

Usage: meter --collectors LIST --spool-dir DIR [--stdin] [--tail PATH] [--host-metrics] [flags]

The tenant token comes from --token-file or the PHLOEM_TOKEN environment
variable, never from the command line (argv is visible to every user in ps).

Flags:
`

// parseFlags parses args into options. Environment: PHLOEM_TOKEN,
// PHLOEM_COLLECTORS (default of --collectors).
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	def := meter.DefaultConfig()
	cfg := def
	fs := flag.NewFlagSet("meter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		fs.PrintDefaults()
	}
	host, _ := os.Hostname()

	fs.StringVar(&cfg.Collectors, "collectors", os.Getenv("PHLOEM_COLLECTORS"),
		"collectors: comma-separated host:port list, dns://name:port (A/AAAA, re-resolved) or srv://_service._proto.name (env PHLOEM_COLLECTORS)")
	fs.StringVar(&cfg.MeterID, "meter-id", host, "meter id: stable identity, places this meter on the collector ring (default: the host name)")
	tokenFile := fs.String("token-file", "", "file holding the tenant token (else env PHLOEM_TOKEN)")
	var argvToken string
	fs.StringVar(&argvToken, "token", "", "refused: a token in argv is visible in ps; use --token-file or PHLOEM_TOKEN")
	fs.StringVar(&cfg.SpoolDir, "spool-dir", "", "spool directory (one meter per directory; required)")

	fs.BoolVar(&o.stdin, "stdin", false, "input: read records from stdin, one per line; at end of input flush and exit")
	fs.StringVar(&o.tail, "tail", "", "input: follow this file (one record per line), across rotation and truncation")
	fs.DurationVar(&o.tailPoll, "tail-poll", 250*time.Millisecond, "how often --tail checks the file for new lines, rotation and truncation")
	fs.BoolVar(&o.tailFromStart, "tail-from-start", false, "--tail reads the file from its beginning instead of its end at start")
	fs.BoolVar(&o.hostMetrics, "host-metrics", false, "input: one JSON record per --interval with CPU, memory and network counters from /proc")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "period of --host-metrics records")
	fs.StringVar(&o.procRoot, "proc-root", "/proc", "where --host-metrics reads /proc from (for containers that mount the host's /proc elsewhere)")
	fs.StringVar(&o.adminListen, "admin-listen", "", "optional admin listener (e.g. 127.0.0.1:9101) serving /metrics, /healthz, /readyz")
	fs.DurationVar(&o.flushTimeout, "flush-timeout", 30*time.Second, "after stdin ends: how long to wait for acknowledgements before stopping (then up to --shutdown-grace more; the rest stays spooled)")

	fs.Int64Var(&cfg.SegmentBytes, "spool-segment-bytes", def.SegmentBytes, "spool segment size; acknowledged segments are deleted whole")
	fs.Int64Var(&cfg.MaxSpoolBytes, "spool-max-bytes", def.MaxSpoolBytes, "spool size bound on disk")
	fsync := fs.String("spool-fsync", string(def.Fsync), "spool fsync policy: always (no loss on power failure), interval, never (kill -9 loses nothing under any policy)")
	fs.DurationVar(&cfg.FsyncInterval, "spool-fsync-interval", def.FsyncInterval, "period of --spool-fsync=interval")
	full := fs.String("spool-full", string(def.Full), "when the spool is full: block (inputs wait) or drop-oldest (oldest unacknowledged segment dropped, counted)")

	fs.IntVar(&cfg.BatchMaxRecords, "batch-max-records", def.BatchMaxRecords, "records per request at most")
	fs.IntVar(&cfg.BatchMaxBytes, "batch-max-bytes", def.BatchMaxBytes, "payload bytes per request at most")
	fs.DurationVar(&cfg.Linger, "linger", def.Linger, "how long a batch waits to fill before it is sent")
	fs.StringVar(&cfg.Compression, "compression", def.Compression, "request compression: gzip, zstd or identity")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", def.RequestTimeout, "per-request timeout; keep it above the collector's ingest deadline (10s by default)")
	fs.DurationVar(&cfg.DialTimeout, "dial-timeout", def.DialTimeout, "connection setup timeout")
	fs.DurationVar(&cfg.BackoffBase, "backoff-base", def.BackoffBase, "full-jitter backoff: first ceiling")
	fs.DurationVar(&cfg.BackoffCap, "backoff-cap", def.BackoffCap, "full-jitter backoff: largest ceiling (Retry-After may ask for more)")
	fs.DurationVar(&cfg.FailoverHold, "failover-hold", def.FailoverHold, "how long a collector that refused connections is skipped for its ring successors")
	fs.DurationVar(&cfg.DiscoveryInterval, "discovery-interval", def.DiscoveryInterval, "re-resolution period of dns:// and srv:// collectors")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", def.ShutdownGrace, "on SIGTERM/SIGINT: how long to keep sending before exiting (the rest stays spooled)")

	fs.BoolVar(&cfg.TLS.Enabled, "tls", false, "use https to collectors")
	fs.StringVar(&cfg.TLS.CAFile, "tls-ca-file", "", "PEM CA bundle to trust instead of the system roots")
	fs.StringVar(&cfg.TLS.CertFile, "tls-cert-file", "", "PEM client certificate (with --tls-key-file)")
	fs.StringVar(&cfg.TLS.KeyFile, "tls-key-file", "", "PEM client key")
	fs.StringVar(&cfg.TLS.ServerName, "tls-server-name", "", "name to verify in collector certificates (default: the collector host, or the dns:// name)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, errHelp
		}
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if argvToken != "" {
		return o, errors.New("refusing --token: a token on the command line is visible to every user in ps; use --token-file or PHLOEM_TOKEN")
	}
	token, err := readToken(*tokenFile)
	if err != nil {
		return o, err
	}
	cfg.Token = token
	cfg.Fsync = meter.FsyncPolicy(*fsync)
	cfg.Full = meter.FullPolicy(*full)
	if err := o.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return o, fmt.Errorf("--log-level: %w", err)
	}
	if !o.stdin && o.tail == "" && !o.hostMetrics {
		return o, errors.New("no input: choose at least one of --stdin, --tail PATH, --host-metrics")
	}
	if o.hostMetrics && o.interval <= 0 {
		return o, errors.New("--interval must be positive")
	}
	if o.tail != "" && o.tailPoll <= 0 {
		return o, errors.New("--tail-poll must be positive")
	}
	if err := cfg.Validate(); err != nil {
		return o, err
	}
	o.cfg = cfg
	return o, nil
}

// readToken reads the token from path, or from PHLOEM_TOKEN when path is empty.
func readToken(path string) (string, error) {
	if path == "" {
		t := strings.TrimSpace(os.Getenv("PHLOEM_TOKEN"))
		if t == "" {
			return "", errors.New("no token: give --token-file or set PHLOEM_TOKEN")
		}
		return t, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %q is empty", path)
	}
	return t, nil
}
