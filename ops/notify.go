package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"phloem/internal/logx"
)

// Notification is the JSON body POSTed to the webhook when an alert fires or
// resolves (pending transitions are logged only, like Alertmanager which only hears
// about firing alerts).
type Notification struct {
	Rule    string     `json:"rule"`
	Kind    string     `json:"kind"` // "ratio", "zombie", "leak", "lag"
	State   AlertState `json:"state"`
	Value   optFloat   `json:"value"` // the rule's value at the transition; null if undefined
	Summary string     `json:"summary"`
	// ActiveSince is when the condition first held in this episode.
	ActiveSince time.Time `json:"active_since"`
	// At is the time of the transition.
	At time.Time `json:"at"`
	// Source identifies the process (Config-independent: the monitor's host name or
	// whatever the caller set in Sources.Instance).
	Source string `json:"source,omitempty"`
}

// webhook posts notifications from a bounded queue on one goroutine, owned by
// Monitor.Run. enqueue never blocks: when the queue is full the notification is
// dropped and counted, because evaluation (and the status page) must not stall
// behind a slow or dead receiver.
type webhook struct {
	cfg     WebhookConfig
	client  *http.Client
	queue   chan Notification
	metrics *metrics
	log     *logx.Throttled
}

func newWebhook(cfg WebhookConfig, m *metrics, log *logx.Throttled) *webhook {
	return &webhook{
		cfg: cfg,
		// The per-request context carries the deadline; the client timeout is a
		// second guard in case a body read outlives it.
		client:  &http.Client{Timeout: cfg.Timeout},
		queue:   make(chan Notification, cfg.QueueSize),
		metrics: m,
		log:     log,
	}
}

func (w *webhook) enqueue(n Notification) {
	select {
	case w.queue <- n:
	default:
		w.metrics.webhookDropped.Inc()
		w.log.Warn("webhook-queue-full", "ops: webhook queue full, notification dropped",
			"rule", n.Rule, "state", n.State, "queue_size", w.cfg.QueueSize)
	}
}

// run sends until ctx is done. Notifications still queued at shutdown are counted as
// dropped: the process is going away and a resolve sent by its successor supersedes
// them.
func (w *webhook) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case <-w.queue:
					w.metrics.webhookDropped.Inc()
				default:
					return
				}
			}
		case n := <-w.queue:
			if err := w.send(ctx, n); err != nil {
				w.metrics.webhookErrors.Inc()
				w.log.Warn("webhook-send", "ops: webhook notification failed", "rule", n.Rule, "state", n.State, "err", err)
				continue
			}
			w.metrics.webhookSent.Inc()
		}
	}
}

func (w *webhook) send(ctx context.Context, n Notification) error {
	body, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("cannot encode notification for rule %q: %w", n.Rule, err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("cannot build webhook request to %s: %w", w.cfg.URL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot POST notification to %s: %w", w.cfg.URL, err)
	}
	// Drain a bounded amount so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if err := resp.Body.Close(); err != nil {
		return fmt.Errorf("cannot close webhook response from %s: %w", w.cfg.URL, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook %s answered %s", w.cfg.URL, resp.Status)
	}
	return nil
}
