// Package control is Phloem's control channel: the tenant registry and the sink
// configuration, carried on one compacted Kafka topic (DefaultTopic, "phloem.control")
// that is separate from every data topic, so that no control operation waits behind
// data (DESIGN.md, "Topics and the control channel").
//
// # Records
//
// The topic has one partition and cleanup.policy=compact (EnsureTopic). Keys are
// "tenant/<id>" and "sink/<id>"; values are the JSON encoding of Tenant and Sink. A
// null value (tombstone) removes the key. Every value carries a Version: a Watcher
// applies a put only when its version is greater than the version it holds for that
// key, so applying the same event twice, or an older one, is a no-op (counted in
// phloem_control_events_ignored_total{reason="stale"}). A tombstone forgets the key
// and its version, so a tenant removed and added again starts over at version 1.
// Writers (phloemctl) read the current state through a Watcher and write
// version = current + 1.
//
// Tokens never enter the topic: Tenant.TokenHash is HashToken(token), the hex SHA-256.
// NewToken makes the token that is shown once to the operator and then forgotten.
//
// # One Watcher per process, by construction
//
// A watch re-registered on every event once made watches grow exponentially (DESIGN.md,
// failure table). Here main builds exactly one Watcher and hands the *Watcher to every
// component that needs control state; components never call NewWatcher. Run refuses a
// second call (ErrAlreadyRunning), so one Watcher never runs two loops, and NewWatcher
// registers its metrics on the injected registerer, so a second Watcher on the same
// registry fails at construction.
//
// # Goroutines and concurrency
//
// Watcher.Run runs the replay-and-follow loop in the caller's goroutine and owns the
// Watcher's private kgo client (built from WatcherConfig.KafkaOpts; no consumer group).
// Run returns after the client is closed, every subscription channel is closed and the
// metrics are unregistered; it starts no goroutine that outlives it. Subscribe starts
// no goroutine either: context.AfterFunc removes the subscription when its context ends.
//
// State is an immutable snapshot; the Watcher swaps it atomically after each fetch
// (maps are copied on write, once per fetch rather than once per record, so replaying
// 10,000 records does not copy 10,000 maps). All exported methods of Watcher, State and
// Writer are safe for concurrent use.
//
// # Readiness
//
// At start Run records the control topic's high-water mark (kadm ListEndOffsets) and
// closes Ready() once it has applied every record below it; an empty or missing topic
// is ready at once. Components must not act on "tenant unknown" before Ready: during
// replay, state is partial.
//
// # Shutdown
//
// Cancel the context given to Run. Run then closes the client and the subscription
// channels and returns nil. Writer owns nothing: the caller closes its kgo client.
package control
