// Package consumer is the phloem consumer tier: one Kafka consumer-group member over
// every tenant topic, delivering each record to the sinks that the control topic
// configures for its tenant, without ever letting a slow sink stall consumption,
// grow memory, or commit a record a sink has not acknowledged.
//
// # Data path
//
// The group subscribes with kgo.ConsumeRegex to Config.Topics.Regexp(), so a new
// tenant topic is consumed within MetadataMaxAge, without restart, with the
// cooperative-sticky balancer and auto-commit disabled. The poll loop (one
// goroutine) turns each polled record into an item and hands it to the bounded queue
// of every matching sink (the tenant's own sinks plus the "*" sinks) WITHOUT
// blocking: a record goes to all of its sinks or to none. When a queue is full the
// records that did not fit are held, in order, in their partition's pending slice,
// and so are the partition's next records; every poll re-offers them first. A
// pause (kgo PauseFetchPartitions) makes franz-go drop the partition's buffered,
// already decoded records and fetch them again, which is expensive, and on a busy
// machine a fast sink's connector is often just off CPU for a few milliseconds, so
// a partition is paused only when its held records exceed the pending budget: its
// share, Config.PendingPartitionBytes, or all partitions' PendingMaxBytes. Even
// then the poll loop first yields the processor (runtime.Gosched, re-offering after
// each yield; at most maxYields times and maxYieldTime, never a sleep or a blocking
// wait) so that a runnable connector can drain, and pauses only the partitions
// still over budget. A stuck sink's partitions fill their share and pause; the
// share keeps them from taking the whole budget from the other tenants. When the
// queue drains below its low-water mark it wakes the poll loop, which re-offers the
// pending records in order and resumes the partition once they are all placed.
// Other tenants' partitions keep flowing. The poll loop never dials, never writes
// to a peer and never waits on a sink.
//
// Each sink has a connector goroutine that owns everything that touches its peer:
// building the transport, dialling, delivering batches, health (the sink_healthy
// gauge) and retries with full-jitter backoff (internal/jitter), honouring
// Retry-After. Sink types: "http" (POST NDJSON batches), "file" (per-tenant rolling
// NDJSON files, size/age rotation, fsync policy), "stdout", "stream" (live
// subscribers on the data listener) and, for benchmarks and tests only (via
// Config.ExtraSinks), "discard". Parameters are documented on each deliverer type.
// A sink whose parameters are invalid holds its records (they are never committed)
// and reports the error until its record is fixed or deleted.
//
// # Output format
//
// Every sink writes one NDJSON line per record:
//
//	{"tenant":"acme","meter":"m-1","seq":42,"ts":1700000000000000000,"payload":{"cpu":0.5}}
//
// meter is the "meter-id" header (else the record key); seq is the "seq" header
// (null when missing); ts is the "ts" header in unix nanoseconds (else the Kafka
// timestamp); payload is the record value inline when it is valid JSON (compacted
// to one line), otherwise a JSON string of it.
//
// # Offsets
//
// Each assigned partition has a tracker of in-flight offsets. An offset is done
// when every sink it was handed to has acknowledged it; acknowledgements arrive in
// any order (several sinks, each at its own pace). The committable offset is the
// contiguous watermark: the lowest offset not yet done. The committer commits moved
// watermarks every CommitInterval, the revoke callback commits the revoked
// partitions' watermarks, and shutdown commits after letting the sinks drain for
// ShutdownTimeout. After a crash, at most the records acknowledged since the last
// commit (one interval) are delivered again; nothing acknowledged-but-uncommitted
// is lost, and nothing unacknowledged is ever committed. A record whose tenant has
// no sink is committed at once and counted in records_unrouted_total.
//
// # Rebalances
//
// kgo.BlockRebalanceOnPoll runs the assigned/revoked/lost callbacks between
// batches, so they see consistent state, and the poll loop never blocks, so they
// wait at most one batch. They do no network I/O except the revoke commit (a Kafka
// commit). Revoked or lost partitions' trackers are marked dead: their records still
// queued in sinks are skipped (records_dropped_total{reason="revoked"}), their
// pending records dropped, their pauses lifted; the new owner reads them from the
// committed offset.
//
// # Sink changes and abandoned records
//
// A Watcher subscription reconciles the sinks with the control state: new sinks
// start (queue first, then the connector); changed sinks keep their queue and get
// the new settings before their next batch; removed sinks leave the routes, then
// drain their queue for SinkDrainTimeout. What a removed sink has not delivered by
// then is abandoned (records_dropped_total{reason="abandoned"}). Abandoned records
// are never acknowledged, so the watermark cannot pass them and they are never
// committed: a restart would redeliver them. To avoid holding the watermark (and
// replaying ever more after a restart) until then, the poll loop rewinds each
// affected partition: it kills the partition's tracker, starts a new one and moves
// the fetch offset back to the watermark (kgo SetOffsets, between polls, so no
// revoke runs concurrently). The records are read again and go to the sinks that
// exist now; the other sinks may see some of them twice, which at-least-once
// allows, and the removed sink does not see them at all, which is what removing it
// means (partition_rewinds_total counts rewinds).
//
// The stream sink is a live view: it acknowledges as soon as a batch has been
// offered to the current subscribers, each of which has a bounded buffer that drops
// its oldest line (stream_dropped_total) when the subscriber reads too slowly. It
// never holds offsets or pauses a tenant for a subscriber that may never return.
// GET /v1/stream needs "Authorization: Bearer <tenant token>" (checked against the
// control state's token hashes).
//
// # Memory bound
//
// Each sink's queue is bounded by SinkQueueRecords and SinkQueueBytes, counting the
// batch being delivered; the records held for congested partitions are bounded by
// PendingMaxBytes (each partition by PendingPartitionBytes), overshot by at most
// one poll (MaxPollRecords records), since a partition is paused after the poll
// that crossed its budget and franz-go returns nothing more for it; franz-go's
// buffers are bounded by FetchMaxBytes. A queued or held item points at the
// kgo.Record franz-go returned (its headers are parsed only by sinks that format
// lines, off the poll loop), and each item counts its payload plus itemOverhead
// (about 512 bytes: the item, the record, its headers) against SinkQueueBytes and
// the pending budget. The record aliases its fetched batch, so a queued record can
// keep its whole fetched batch alive: the bound is on the order of sinks ×
// SinkQueueBytes + FetchMaxBytes + PendingMaxBytes + MaxPollRecords records. The
// pending_bytes gauge shows the held bytes.
//
// # Goroutines, concurrency, shutdown
//
// Run owns every goroutine: the poll loop, the committer, the reconciler
// (Watcher subscription), one connector per sink, one drainer per removed sink and
// the data listener's HTTP server. Lock order: commitMu, then stateMu (partition
// state); queue and hub locks are leaves. Acknowledgements are atomic counters.
// Exported methods are safe for concurrent use. Run returns after: ctx is done →
// the poll loop and committer stop → the sinks drain (ShutdownTimeout) → final
// commit → the client leaves the group (its revoke callback commits once more) →
// the connectors stop → the data listener closes.
package consumer
