// Package ops is the operator's view of a Phloem process: a ratio monitor with alert
// rules, detectors for zombie meters, leaked hub subscriptions and growing consumer
// lag, the status web page with live charts, and the Prometheus rule file and
// Grafana dashboard that say the same things outside the process.
//
// # Why ratios
//
// Operators run this system by its traffic ratios: a collector that receives N bytes
// per second from meters should send a known multiple of that to Kafka and live taps;
// a phloem consumer should deliver to its sinks a known multiple of what it reads
// from Kafka. When a leaked pub/sub subscription pushed one system's egress/ingress
// ratio from 4.4× to 16×, the ratio graph was what caught it (DESIGN.md).
//
// # How it works
//
// The Monitor is decoupled from the components' internals: it reads the process's
// Prometheus registry (Sources.Gatherer) by metric name and label matchers
// (Selector), summing over labels. Every Config.Interval (default 1s) it gathers,
// turns each component's byte counters into per-series increases (counter resets
// handled as PromQL's rate() does), and computes ingress and egress rates over a
// sliding Config.Window (default 1m): the increase over the window divided by the
// time it spans. The windowed rate was chosen over the EWMA of STYLE.md rule 17
// (prometheus storage/remote/ewma.go) because it is exactly what
// rate(x[1m]) computes, so the built-in rules and ops/prometheus/alerts.yml agree
// sample for sample, and its response to a step is easy to state: a step in the
// ratio is fully visible after one Window.
//
// The ratio is egress rate / ingress rate. It is undefined (NaN in
// phloem_ops_ratio, null in the status JSON, no alert) while the ingress rate is
// below the rule's MinIngressBytesPerSec or the component's counters are absent from
// this process: an idle component has no meaningful ratio, and the floor is the guard
// against dividing by (almost) zero. A component absent from a process (phloem's
// counters on a collector-only binary) simply never alerts there, so every binary can
// run the same default configuration.
//
// Every rule and detector drives the same state machine (AlertState): inactive →
// pending (condition true) → firing (true for the rule's For) → resolved (false
// again; kept Config.KeepResolved for the page) → inactive. Transitions are logged
// (slog: pending and resolved at Info, firing at Warn); firing and resolved are also
// POSTed as JSON (Notification) to the optional webhook.
//
// Detectors:
//   - zombie meters: meters the collector reports connected whose last record is
//     older than ZombieRule.After. The collector provides them through the
//     MeterActivity interface (Sources.Meters); without it the detector is inactive.
//   - subscription leak: hub subscribers exceeding the subscriptions with a live owner
//     (tap receivers + Kafka republishers) by more than Slack for For.
//   - consumer lag growing: the summed lag never decreased between samples over
//     LagRule.Window and grew by at least MinGrowth.
//
// Exported metrics (on the injected Registerer): phloem_ops_ratio{rule},
// phloem_ops_detector_value{rule}, phloem_ops_alert_firing{rule},
// phloem_ops_alert_pending{rule}, phloem_ops_ingress_bytes_per_second{component},
// phloem_ops_egress_bytes_per_second{component}, phloem_ops_webhook_errors_total,
// phloem_ops_webhook_dropped_total, phloem_ops_webhook_sent_total,
// phloem_ops_gather_errors_total, phloem_ops_samples_total. ExportedMetrics lists
// them with the component metrics the rule files use.
//
// The status page (StatusHandler) is mounted on every admin listener
// (admin.Server.Handle("/status/", ops.StatusHandler(m))). Its assets are embedded
// (web/); hand-written JavaScript polls <mount>/api every 1.5 s and draws SVG
// charts of ingress, egress and ratio with the expected band, the alerts, tenants
// with their rates, the collector's load and the consumer lag. It makes no request
// outside its own origin.
//
// # Goroutines and concurrency
//
// Monitor.Run owns every goroutine the package starts: the sampling loop (on the
// goroutine that called Run, one Tick per Interval) and, when Webhook.URL is set, one webhook sender
// draining a bounded queue (Webhook.QueueSize; when full, notifications are dropped
// and counted, so evaluation never blocks on a slow receiver; each POST has
// Webhook.Timeout). Tick may also be called directly (tests drive it with a
// synthetic clock); calls are serialised, and a Tick whose time is not after the
// previous one is ignored. All exported methods are safe for concurrent use. The
// monitor's lock is never held while calling the Gatherer, the MeterActivity, the
// logger or the webhook, so a slow registry collector delays only the next sample.
// StatusHandler runs on the HTTP server's request goroutines and only copies state
// under the lock.
//
// Memory is bounded by the configuration: the history ring (HistoryPoints), the
// rate windows (Window/Interval points per component), the breakdown rows
// (MaxRows each), the zombie list (100) and the webhook queue.
//
// # Shutdown
//
// Cancel the context given to Run. Run stops sampling, waits for the webhook sender
// to exit (notifications still queued are counted as dropped; an in-flight POST is
// cancelled through its context), unregisters the phloem_ops_* metrics and returns
// nil. Run may be called once; a second call returns ErrAlreadyRunning.
package ops
