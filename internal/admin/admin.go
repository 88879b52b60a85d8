// Package admin is the admin listener every Phloem binary runs beside its data
// listener: /metrics (Prometheus), /healthz (the process is alive), /readyz (every
// registered readiness check passes) and, when enabled, /debug/pprof.
//
// Why a separate listener: control and admin traffic must never wait behind data
// (DESIGN.md, failure table), and an operator must be able to scrape a collector that
// is refusing ingest. Components add pages (the status page) with Handle.
//
// Server is safe for concurrent use. Run owns the HTTP server's goroutines and returns
// after they have stopped.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"phloem/internal/logx"
)

// Config configures the admin listener.
type Config struct {
	// Addr is the listen address, e.g. "127.0.0.1:9100". Used by callers that let
	// the server listen itself (ListenAndRun); default "127.0.0.1:0".
	Addr string
	// EnablePprof serves /debug/pprof/. Default false: profiles expose internals
	// and cost CPU, so operators opt in.
	EnablePprof bool
	// CheckTimeout bounds each readiness check. Default 2s.
	CheckTimeout time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:0", CheckTimeout: 2 * time.Second}
}

type readyCheck struct {
	name string
	fn   func(context.Context) error
}

// Server is an admin HTTP server.
type Server struct {
	cfg    Config
	logger *slog.Logger
	mux    *http.ServeMux

	mu     sync.Mutex
	checks []readyCheck
}

// New builds an admin server that exposes gatherer on /metrics.
func New(cfg Config, logger *slog.Logger, gatherer prometheus.Gatherer) *Server {
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 2 * time.Second
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s := &Server{cfg: cfg, logger: logx.OrDiscard(logger), mux: http.NewServeMux()}
	if gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelError),
		}))
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	if cfg.EnablePprof {
		s.mux.HandleFunc("/debug/pprof/", pprof.Index)
		s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return s
}

// AddReadyCheck registers a readiness check; /readyz answers 200 only when every
// check returns nil within the check timeout. fn runs under the request's context.
func (s *Server) AddReadyCheck(name string, fn func(context.Context) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, readyCheck{name: name, fn: fn})
}

// Handle registers an extra handler (e.g. the status page) on the admin mux.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler returns the admin mux, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.mux }

// Ready runs every readiness check and returns the failures by name.
func (s *Server) Ready(ctx context.Context) map[string]error {
	s.mu.Lock()
	checks := append([]readyCheck(nil), s.checks...)
	s.mu.Unlock()
	failed := make(map[string]error)
	for _, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CheckTimeout)
		err := c.fn(cctx)
		cancel()
		if err != nil {
			failed[c.name] = err
		}
	}
	return failed
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	failed := s.Ready(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(failed) == 0 {
		fmt.Fprintln(w, "ready")
		return
	}
	names := make([]string, 0, len(failed))
	for n := range failed {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "not ready: %s: %v\n", n, failed[n])
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprint(w, b.String())
}

// Run serves on ln until ctx is done, then shuts down within 5s. It returns nil
// after a shutdown caused by ctx, or the server's error.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// pprof profiles stream for up to their ?seconds= parameter.
		WriteTimeout: 2 * time.Minute,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	return Serve(ctx, srv, ln, 5*time.Second)
}

// ListenAndRun listens on cfg.Addr and serves until ctx is done.
func (s *Server) ListenAndRun(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("cannot listen on admin address %s: %w", s.cfg.Addr, err)
	}
	return s.Run(ctx, ln)
}

// Serve runs srv on ln until ctx is done, then calls Shutdown with the given grace
// period and Close after it. It returns after the server's goroutines have exited.
// Every Phloem HTTP listener uses it so shutdown behaves the same everywhere.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("http server on %s stopped: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	shutdownErr := srv.Shutdown(sctx)
	if shutdownErr != nil {
		// Grace period over: cut the remaining connections.
		shutdownErr = errors.Join(shutdownErr, srv.Close())
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return errors.Join(fmt.Errorf("http server on %s: %w", ln.Addr(), err), shutdownErr)
	}
	if shutdownErr != nil && !errors.Is(shutdownErr, context.DeadlineExceeded) {
		return fmt.Errorf("shutting down http server on %s: %w", ln.Addr(), shutdownErr)
	}
	return nil
}
