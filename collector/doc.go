// Package collector is Phloem's ingest server: meters POST batches to it, it
// authenticates them per tenant, admits or refuses them, republishes them onto
// the tenant's Kafka topic, answers 200 only after Kafka acknowledged every
// record, and fans the stored records out to live taps.
//
// # Ingest protocol (POST /v1/ingest, DESIGN.md "Ingest protocol")
//
// Request headers: Authorization: Bearer <tenant token>; X-Meter-Id (required,
// ValidMeterID); X-Request-Id (optional: generated when missing or unsafe,
// echoed in the answer, logged and carried into every Kafka record header);
// Content-Type application/vnd.phloem.batch or application/x-ndjson (X-Seq-Base
// numbers NDJSON records, default 0); Content-Encoding identity, gzip or zstd.
//
// Answers, each with a JSON body ({"accepted":N}, or {"error","reason","request_id"}):
//
//	200 every record acknowledged by Kafka (acks=all, idempotent producer)
//	400 malformed: bad X-Meter-Id or X-Seq-Base, undecodable body; the message
//	    says what and where (frame/line and byte offset, from wire.FrameError)
//	401 missing or unknown token
//	403 tenant disabled, or meter in Config.BlockedMeters
//	413 Content-Length above MaxBodyBytes (refused before reading a byte),
//	    raw body above it, decompressed body above max_batch_bytes, a batch or
//	    record over its limit
//	415 Content-Type or Content-Encoding not supported
//	429 tenant over its records/s or bytes/s (Retry-After: time to repay the
//	    tenant's token-bucket debt, plus jitter)
//	503 over capacity (in-flight requests or bytes), not ready (control state
//	    still loading), shutting down, Kafka unavailable, or the server deadline
//	    passed; always with Retry-After, spread at random over a window that
//	    grows with the load, so a refused herd does not return as one
//	503 + X-Phloem-Full: meters — placement, not overload (reason meters_full):
//	    see "Bounded loads" below
//
// A client error never becomes a 500: every failure is classified above.
// Refusals are counted in phloem_collector_rejected_requests_total{reason}.
//
// Tenancy is decided by the token alone: the token's tenant gives the topic
// (Tenant.Topic, else Config.Topics.Name(id)) and the hub. No header or query
// parameter can select another tenant.
//
// # Bounded loads (Config.MaxMeters)
//
// With MaxMeters > 0 the collector enforces consistent hashing with bounded
// loads (Mirrokni, Thorup, Zadimoghaddam 2016). A meter is "active" on it when
// one of its requests was admitted or answered within MeterActiveWindow (2m);
// phloem_collector_meters_active exports the count. A request from an active
// meter is admitted after one map lookup under the activity table's lock. A
// request from any other meter, while MaxMeters are active, is refused: 503,
// reason meters_full, header X-Phloem-Full: meters (with a Retry-After for
// meters that predate the header); the meter goes on at once to the next
// collector of its ring order. An admitted meter enters the activity table
// immediately, so concurrent newcomers cannot overshoot the bound.
// X-Phloem-Placement: fallback (every live collector refused the meter) is
// always admitted; X-Phloem-Placement: failover (a collector before this one in
// the meter's ring order is down) is admitted up to FailoverMeterFactor ×
// MaxMeters, so that a lost collector's meters land on their own ring
// successors rather than all on the survivors with the most room. Operators
// set MaxMeters to about ceil(1.1 × meters / collectors); the busiest
// collector then holds at most 1.10 × the mean (TestBoundedLoadPlacement:
// 1,000 real meters over 10 collectors). Default 0: no bound.
//
// # Deadlines
//
// The server's deadline for one ingest request, IngestTimeout (default 10s),
// covers reading the body, producing and waiting for Kafka; it is shorter than
// the meter's default client timeout (MeterClientTimeout, 30s), so a meter always
// hears 200 or 503 before it gives up on its own. The http.Server has
// ReadHeaderTimeout (5s, a slow-header client is cut off), ReadTimeout (30s),
// IdleTimeout (2m) and header/body size limits; there is no global WriteTimeout,
// because taps are long-lived streams: every ingest answer and every tap write
// sets its own write deadline (http.ResponseController).
//
// # Delivery and contexts
//
// Request work runs under the request's context bounded by IngestTimeout. Kafka
// records do NOT carry the request's context: franz-go cancels a whole partition
// batch by its first record's context, so one meter hanging up would fail other
// meters' records. Records carry a context of the collector's own with the
// request's deadline (see kafkaRepublisher). A meter that disconnects mid-flight
// may thus still have its batch stored; it retries, and the duplicate is
// identifiable by (meter id, seq), as the at-least-once delivery contract allows.
// One such duplicate is avoided outright: when a request was answered 503 while
// its records were still inside the producer (broker lost after the send), the
// meter's retry of the same batch (tenant, meter, seq range, body hash) joins
// those records instead of producing again (see limbo, RetryDedupTTL).
// Kafka record: key = meter id (per-meter order), value = payload, timestamp =
// receive time, headers phloem-meter-id, phloem-seq, phloem-request-id,
// phloem-collector-id, phloem-timestamp (the meter's, unix ns).
//
// # Hubs and taps (GET /v1/tap)
//
// Each tenant has an in-process hub, created by its first subscriber and removed
// with its last. The Kafka republisher is the hub's synchronous subscriber (the
// 200 waits on it); live taps are asynchronous subscribers with a bounded ring
// (TapBuffer records) that publishing never waits on: a slow tap loses its
// oldest records, is told {"dropped":N}, and the drop is counted
// (tap_dropped_records_total) and logged (throttled). Taps see records after
// Kafka stored them. A subscription is the tap handler's lifetime: it ends when
// the client goes, a write misses its deadline, or the collector stops.
//
// # Metrics read by ops (the subscription-leak and zombie-meter detectors)
//
// The hub gauges are exported from one reading of the hubs' counts at scrape
// time (hubGauges), so they are always mutually consistent:
//
//	phloem_collector_hub_subscribers  hub subscriptions open: one per live tap
//	phloem_collector_tap_receivers    tap handlers streaming to a connected client
//	phloem_collector_republishers     hub subscriptions held by Kafka republishers: 0
//	phloem_collector_hubs             tenant hubs that exist
//
// The Kafka republisher is not a hub subscription: the ingest path calls it
// synchronously and waits for its acknowledgement before publishing to the hub.
// So republishers is always 0; it is exported because the ops leak rule sums it
// and stays inactive while any of its gauges is absent. In a healthy collector
// hub_subscribers == tap_receivers + republishers whenever no tap is opening or
// closing, and hub_subscribers < that sum while one is (a tap handler counts as
// a receiver before it subscribes and until after it unsubscribed): an excess,
// hub_subscribers > tap_receivers + republishers, is always a subscription with
// no receiver, i.e. a leak. Such a subscription does not inflate egress: tap
// egress (egress_bytes_total{destination="tap"}) is counted when bytes are
// written to a client, and a leaked ring drops its oldest records instead
// (tap_dropped_records_total). The egress/ingress ratio therefore measures real
// fan-out (Kafka + every live tap); the leak shows on the subscriber gauges.
//
// Collector implements ops.MeterActivity (Meters): a table of the meters whose
// batches reached Kafka, bounded by MaxMetersTracked (least recently seen
// evicted, phloem_collector_meters_evicted_total), with each meter's tenant, the
// time Kafka last acknowledged one of its batches, and whether the keep-alive
// connection of its latest batch is still open (http.Server ConnContext and
// ConnState; when Handler is served by another server, "latest batch within
// IdleTimeout"). It is fed from the Republisher's completion callback, one map
// update under one mutex per batch.
//
// # Goroutines and shutdown
//
// The collector starts no goroutine of its own besides the http.Server's (one per
// connection, owned by Run) and franz-go's (owned by its client). Run returns
// after: ctx done → taps end and new requests get 503 → the server stops
// accepting and waits ShutdownGrace for in-flight requests → Run waits for every
// handler (each bounded by its deadline) → the producer is flushed (FlushTimeout)
// and closed → metrics are unregistered.
//
// # Concurrency
//
// All exported methods are safe for concurrent use. Hub lock order: hubs.mu,
// then subscriber.mu; publishing takes only read locks and never waits on a tap.
// The meter activity table's mutex is a leaf (nothing is called under it).
// Per-tenant metric labels are capped at MaxTenantLabels (then tenant="other").
package collector
