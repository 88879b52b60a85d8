// Package meter is the Phloem agent library: it accepts telemetry records on a
// customer host, keeps them on disk until a collector acknowledged them, and sends
// them to the collector that consistent hashing assigns to the meter, politely.
//
// # Data path
//
// Append writes every record to an on-disk spool before it returns (write-ahead):
// append-only segment files of entries, each with a magic marker and a CRC-32C, a
// per-meter sequence number and a timestamp. The sender goroutine reads batches
// from the spool in order (BatchMaxRecords / BatchMaxBytes / Linger), encodes them
// with collector/wire, compresses them (gzip or zstd) and POSTs them to
// /v1/ingest. When the collector answers 200 the spool's acknowledged cursor
// advances (persisted in the spool dir) and segments it fully covers are deleted.
// The bounded memory buffer is the one batch in flight (at most BatchMaxBytes of
// payload plus its encoding); everything else waits on disk (in the page cache
// while it is recent), bounded by MaxSpoolBytes with a block or drop-oldest policy.
// Sequence numbers survive restarts: the next one is derived from the spool (the
// active segment is named after the first sequence number it holds, and never
// deleted), so after kill -9 the unacknowledged records are sent again in order,
// with their original numbers, and no number is reused for different data (see
// FsyncPolicy for what an OS crash changes). Corrupt entries (checksum mismatch,
// torn tail) are skipped by resynchronising on the next magic marker, counted in
// phloem_meter_spool_corrupt_entries_total and logged; the rest is delivered.
//
// # Choosing a collector
//
// Collectors come from a static list, dns://name:port (re-resolved every
// DiscoveryInterval and when every collector fails) or srv://. They form a
// hashring; the meter's place is its meter id, so it is stable across restarts and
// a membership change moves a meter only when its own owner changed. A collector
// that refuses connections is skipped for FailoverHold in favour of the ring
// successors, in order. Overload answers (503/429 with Retry-After) are retried on
// the same collector: moving load to a neighbour is how one overloaded collector
// takes the next one down.
//
// # Bounded loads (X-Phloem-Full)
//
// Pure hashing of 1,000 meters over 10 collectors leaves the busiest ~1.16 ×
// the mean by sampling alone. Collectors with MaxMeters set (collector.Config)
// bound it: consistent hashing with bounded loads (Mirrokni, Thorup,
// Zadimoghaddam 2016), each meter on the first collector of its own ring order
// that has room. A full collector answers a meter that is not already active on
// it with 503 and X-Phloem-Full: meters. That is placement, not overload: the
// meter marks the collector full for FullHold (jittered up to +50%) and tries
// the next collector of its ring order at once, without backoff. The first
// collector that accepts keeps the meter (sticky): the meter re-evaluates only
// on a failure or when a mark expires, and then tries its owner first again (one
// extra request per FullHold while the owner stays full). When every live
// collector is marked full the meter sends to the first live one with
// X-Phloem-Placement: fallback, which a collector always admits: no meter is
// left without a collector. When a collector before the target in the ring
// order is held down (connection failure), the request carries
// X-Phloem-Placement: failover, admitted up to 2 × MaxMeters, so that a lost
// collector's meters land on their own ring successors (spread as by plain
// consistent hashing) rather than on whichever survivor had room. A refusal of
// a fallback request (a collector out of protocol) is backed off like any 503.
//
// # Retries
//
// Every failed attempt sleeps a full-jitter exponential backoff (uniform in
// [0, min(BackoffCap, BackoffBase·2^n)], internal/jitter, a backoff/v4 BackOff)
// and never less than the collector's Retry-After (seconds or HTTP-date), plus a
// spread as long again so that meters told the same Retry-After do not come back
// together. Meters never give up: the spool absorbs outages. Repeated failures are
// logged through a per-key throttle that reports how many messages it suppressed.
// The HTTP client's timeout (RequestTimeout, 30s) is longer than the collector's
// ingest deadline (10s by default), so the collector answers 503 before the meter
// gives up on a request.
//
// # Goroutines, concurrency and shutdown
//
// New starts no goroutine. Run starts and owns: the sender (one per meter, holding
// at most one batch), the discovery loop (dns:// and srv:// only) and the fsync
// ticker (FsyncInterval only). When Run's context is cancelled the sender keeps
// sending what is spooled for up to ShutdownGrace, or until the spool is drained;
// then the remaining goroutines are cancelled and waited for, the spool is synced
// and closed, metrics are unregistered and Run returns. Records not acknowledged
// by then stay in the spool for the next start.
//
// Append, Flush and Stats are safe for concurrent use, before and during Run;
// Append returns ErrClosed after Run returned. The OnAttempt hook runs on the
// sender goroutine and must be fast and concurrency-safe.
package meter
