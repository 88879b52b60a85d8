// Package kafkaconf is the Kafka client configuration shared by every Phloem
// binary: seed brokers, client id, TLS, SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
// and timeouts, bound to command-line flags with PHLOEM_* environment fallbacks,
// validated with errors that name the flag to fix, and turned into franz-go
// options. Components take the resulting []kgo.Opt (a KafkaOpts field) and build
// their own clients from it; this package builds no long-lived client.
//
// Flags and environment: RegisterFlags binds --brokers (PHLOEM_BROKERS, a comma
// list), --kafka-client-id, --kafka-tls, --kafka-tls-ca-file, --kafka-tls-cert-file,
// --kafka-tls-key-file, --kafka-tls-server-name, --kafka-tls-insecure-skip-verify,
// --kafka-sasl-mechanism, --kafka-sasl-user, --kafka-dial-timeout and
// --kafka-request-timeout, each with a PHLOEM_KAFKA_* variable as its default
// (see the Env* constants and --help). The SASL password is read from
// PHLOEM_KAFKA_PASSWORD only, never from a flag, and is redacted when a Config
// is printed or logged with slog. An empty broker list means "run the embedded
// broker" (package phloem/embedded); the caller then adds its addresses.
//
// Probe answers "can we talk to Kafka?" within a deadline, at startup and in
// tools such as phloemctl: it asks every seed broker at once with the configured
// TLS and SASL, succeeds when one answers, and otherwise returns a *ProbeError
// naming each address and its failure. A refused port fails immediately, an
// address that never answers fails at the deadline.
//
// Concurrency: Config is a plain value; its methods do not mutate it except
// RegisterFlags, which must run before the flag set is parsed, in one goroutine.
// Probe is safe for concurrent use; it starts one goroutine per seed broker and
// one waiter, and all of them have exited when it returns (its client is closed
// before it returns). Nothing here needs shutting down.
package kafkaconf
