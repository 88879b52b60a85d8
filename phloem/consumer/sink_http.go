package consumer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"phloem/phloem/control"
)

// httpDeliverer POSTs each batch as one NDJSON body (Content-Type
// application/x-ndjson) to params["url"]. Any 2xx acknowledges the whole batch.
// Anything else (including 4xx) is retried with backoff until it succeeds or the
// sink is changed: a record is never dropped because a peer refused it; its
// partitions pause instead, and the errors are counted and logged (throttled).
//
// Params: "url" (required, http or https), "timeout" (Go duration, per request,
// dial included; default Config.HTTPTimeout), "authorization" (sent verbatim as the
// Authorization header).
type httpDeliverer struct {
	url     string
	auth    string
	timeout time.Duration
	client  *http.Client
	buf     bytes.Buffer
}

func newHTTPDeliverer(spec control.Sink, defTimeout time.Duration) (*httpDeliverer, error) {
	raw := spec.Params["url"]
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("http sink %q: params.url %q must be an absolute http(s) URL", spec.ID, raw)
	}
	timeout := defTimeout
	if s := spec.Params["timeout"]; s != "" {
		if timeout, err = time.ParseDuration(s); err != nil || timeout <= 0 {
			return nil, fmt.Errorf("http sink %q: params.timeout %q must be a positive Go duration like 5s", spec.ID, s)
		}
	}
	// Each sink has its own transport: one sink's slow peer never holds another
	// sink's connections, and closing the sink closes exactly its connections.
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &httpDeliverer{
		url:     u.String(),
		auth:    spec.Params["authorization"],
		timeout: timeout,
		client:  &http.Client{Transport: tr},
	}, nil
}

func (h *httpDeliverer) deliver(ctx context.Context, batch []*item) error {
	h.buf.Reset()
	var line []byte
	for _, it := range batch {
		line = appendLine(line[:0], it)
		h.buf.Write(line)
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(h.buf.Bytes()))
	if err != nil {
		return fmt.Errorf("cannot build request to %s: %w", h.url, err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if h.auth != "" {
		req.Header.Set("Authorization", h.auth)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot POST %d records to %s: %w", len(batch), h.url, err)
	}
	// Drain (bounded) so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if err := resp.Body.Close(); err != nil {
		return fmt.Errorf("cannot read answer of %s: %w", h.url, err)
	}
	if resp.StatusCode/100 == 2 {
		return nil
	}
	err = fmt.Errorf("POST %d records to %s: status %s", len(batch), h.url, resp.Status)
	if s := resp.Header.Get("Retry-After"); s != "" {
		if secs, perr := strconv.Atoi(s); perr == nil && secs > 0 {
			return &retryAfterError{err: err, after: time.Duration(secs) * time.Second}
		}
	}
	return err
}

func (h *httpDeliverer) close() error {
	h.client.CloseIdleConnections()
	return nil
}
