// Package loadtest is the load-test harness behind cmd/loadtest: it replays a
// traffic spike against the real code, in one process, and proves whether
// every record made it.
//
// # What a run does
//
// A Scenario (JSON, see testdata/scenarios) names the parts to start and the
// trouble to cause. Run starts, on loopback: the embedded Kafka broker (with a
// data dir, so stop_broker can close it and start it again on the same port),
// the control topic with one tenant and one http sink, one control Watcher
// shared by every component (one watcher per process, by construction), the
// collectors (collector i on 127.0.0.(11+i), all on one port, so that a DNS
// answer can list them), the phloem consumers, and the harness's own Sink.
// It then builds the meters — each a real meter.Meter with its own id, spool
// dir and placement — and starts them along the arrival curve (all at once, a
// ramp, or a recorded per-second trace). Every meter appends records at its
// rate; each payload carries the meter id, the meter's own sequence number and
// the append time. Timed events kill, restart and add collectors, stop the
// broker, blackhole the sink or skew DNS.
//
// After the load phase the harness drains: it waits until every meter's spool
// is acknowledged and the sink has seen every produced (meter, seq). The
// Verifier then counts records lost (Append returned nil, never delivered),
// duplicated and reordered per meter. The Report (report.json, report.html
// with inline SVG charts) carries the timeline — records/s, per-collector
// share, retry attempts per 100 ms, 503/429, latency percentiles, the
// collectors' egress/ingress byte ratio — and the SLO verdicts that decide the
// command's exit code.
//
// # How measurements are taken
//
// Requests are observed by a RoundTripper wrapped around each meter's HTTP
// transport (meter.Config.Transport): attempts and answers per collector,
// status codes, the latency of 200 answers, and retries (an attempt by a
// meter whose previous attempt failed). Acknowledged and pending records come
// from meter.Stats. End-to-end latency is measured at the sink from the
// payload's append time. Ingress and egress bytes are gathered from each
// collector's own Prometheus registry.
//
// # Goroutines and shutdown
//
// Run owns everything it starts and returns only after all of it stopped:
// one arrival loop (the caller's goroutine), per started meter its Run and its
// append loop, one sampler (100 ms ticks, progress once a second), one event
// runner, plus the goroutines of the components (each collector's and
// consumer's Run, the Watcher, the broker, the sink's http.Server). Shutdown
// order: event runner and sampler; meters (their Run returns after a short
// grace); collectors (including killed ones still finishing); consumers; the
// Watcher; the sink; the broker. Cancelling Run's context aborts the run.
//
// # Limits
//
// One process plays every part, so the machine's cores are shared between the
// meters and the system under test: keep per-meter rates modest. A hashring
// table costs ~2 MiB and a few hundred ms to build, so thousands of meters
// share one ring kept by the harness (meter.Config.Ring, discovery "ring");
// "dns" discovery gives each meter its own discovery and ring and suits
// hundreds of meters.
package loadtest
