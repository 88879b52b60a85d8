// Package embedded runs a single-machine Kafka broker inside a Phloem process:
// franz-go's kfake, listening on a loopback address, persisting to a data dir, and
// bounding what it keeps. Binaries start it when no --brokers are given, so that one
// command runs the whole pipeline; with --brokers nothing embedded starts. Tests use
// it as a real broker on 127.0.0.1:0.
//
// # What it keeps
//
// With Config.DataDir set, topics, records, committed group offsets and producer
// state are written to the directory as they change (kfake.DataDir) and reloaded by
// the next Start on the same directory. A produce is written to the segment file
// before it is acknowledged, so acknowledged records survive kill -9 of the process;
// Config.SyncWrites adds an fsync per batch for power loss. A clean Close (or Run's
// context being cancelled) flushes everything else. The directory is flock-ed while
// a broker runs on it, so a second broker on the same directory fails fast with
// ErrDataDirLocked instead of corrupting it; the kernel drops the lock on kill -9.
//
// Every topic the broker creates through CreateTopics gets topic-level retention.ms
// and retention.bytes (Config.RetentionMs, Config.RetentionBytes; explicit larger or
// unlimited values are lowered to them), visible with DescribeConfigs. Compact-only
// topics (the control topic) get -1/-1 instead: kfake, unlike Kafka, applies
// time/size retention to compacted topics too, which would delete live keys; they
// are bounded by compaction. The same bounds are set as the broker-wide defaults
// (log.retention.ms/bytes), which cover auto-created topics and topics that an
// older run created without topic-level settings. Topics keep the topic-level values
// they were created with: lowering Config.RetentionMs later does not rewrite them
// (alter them with kadm if needed). AlterConfigs requests are not second-guessed.
//
// kfake runs its own retention/compaction ticker only after a topic is created or
// altered, and never after a restart from a data dir; so the broker runs its own:
// ApplyRetention at start and every Config.RetentionInterval, Compact every
// Config.CompactInterval.
//
// Auto topic creation is off by default (Config.AllowAutoTopicCreation): Phloem
// creates its topics explicitly, and a typo in a consumer must not create a topic.
//
// # Goroutines, concurrency and shutdown
//
// Start returns a running Broker. It owns one maintenance goroutine (the retention
// and compaction timers) plus kfake's own goroutines (one state loop, one accept
// loop, two per client connection). All of Broker's methods are safe for
// concurrent use. Close, or Run returning after its context is done, stops the
// maintenance goroutine first (kfake's ApplyRetention would block forever on a
// closed cluster), then closes the listener and connections, flushes state to the
// data dir, releases the lock, and returns any flush error. Close is idempotent.
//
// kfake's request log goes to the injected slog logger at debug level; its warnings
// and errors keep their level. A nil logger discards.
package embedded
