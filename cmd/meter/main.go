// Command meter is the Phloem agent: it reads telemetry records from its inputs
// (stdin lines, a tailed file, host metrics from /proc), spools them on disk and
// delivers them to the collectors. Run "meter --help" for the flags.
//
// main is wiring only: flags.go turns flags into a meter.Config, inputs.go holds
// the input readers, and the meter package does the rest.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"phloem/internal/admin"
	"phloem/meter"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stdin, restore := pollableStdin()
	code := run(ctx, os.Args[1:], stdin, os.Stderr)
	restore()
	stop()
	os.Exit(code)
}

// run is the whole program; tests call it in-process or re-exec it. It returns
// the exit code: 0 after a clean shutdown, 1 on a runtime error, 2 on bad flags.
func run(ctx context.Context, args []string, stdin io.Reader, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "meter:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: opts.logLevel}))
	if err := serve(ctx, opts, stdin, logger); err != nil {
		logger.Error("meter failed", "error", err)
		return 1
	}
	return 0
}

// serve builds the meter, its inputs and the admin listener and runs them in one
// group: the first error cancels the rest. Shutdown order: inputs stop (signal or
// end of input), then the meter (flushing within its grace), then the admin
// listener, so /metrics answers until the meter has stopped.
func serve(ctx context.Context, o options, stdin io.Reader, logger *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := meter.New(o.cfg, logger, reg)
	if err != nil {
		return err
	}
	in, err := newInputSet(m, logger, reg)
	if err != nil {
		return errors.Join(err, m.Close())
	}
	logger.Info("meter starting", "meter_id", o.cfg.MeterID, "collectors", o.cfg.Collectors, "spool_dir", o.cfg.SpoolDir,
		"stdin", o.stdin, "tail", o.tail, "host_metrics", o.hostMetrics)

	var ln net.Listener
	if o.adminListen != "" {
		if ln, err = net.Listen("tcp", o.adminListen); err != nil {
			return errors.Join(fmt.Errorf("cannot listen on admin address %s: %w", o.adminListen, err), m.Close())
		}
		logger.Info("admin listener", "addr", ln.Addr().String())
	}

	// meterCtx ends the meter: on a signal, on an input error, or once finite
	// inputs (stdin) are exhausted and flushed.
	meterCtx, stopMeter := context.WithCancel(context.Background())
	defer stopMeter()
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	defer stopAdmin()

	g, gctx := errgroup.WithContext(ctx)
	inputs, ictx := errgroup.WithContext(gctx)
	if o.stdin {
		inputs.Go(func() error { return in.stdin(ictx, stdin) })
	}
	if o.tail != "" {
		inputs.Go(func() error {
			return in.tail(ictx, tailConfig{path: o.tail, poll: o.tailPoll, fromStart: o.tailFromStart})
		})
	}
	if o.hostMetrics {
		inputs.Go(func() error { return in.hostMetrics(ictx, o.procRoot, o.interval) })
	}
	g.Go(func() error {
		err := inputs.Wait()
		if err == nil && gctx.Err() == nil {
			// Every input ended on its own (stdin EOF): deliver what is spooled,
			// within the flush timeout, then stop.
			fctx, cancel := context.WithTimeout(gctx, o.flushTimeout)
			if ferr := m.Flush(fctx); ferr != nil {
				logger.Warn("input finished but not everything was acknowledged; the rest stays spooled", "error", ferr)
			}
			cancel()
		}
		stopMeter()
		return err
	})
	g.Go(func() error {
		select {
		case <-gctx.Done():
		case <-meterCtx.Done():
		}
		stopMeter()
		return nil
	})
	g.Go(func() error {
		defer stopAdmin()
		return m.Run(meterCtx)
	})
	if ln != nil {
		srv := admin.New(admin.Config{}, logger, reg)
		srv.AddReadyCheck("collector", func(context.Context) error {
			if m.Stats().RingVersion == 0 {
				return errors.New("no collector discovered yet")
			}
			return nil
		})
		g.Go(func() error { return srv.Run(adminCtx, ln) })
	}
	err = g.Wait()
	st := m.Stats()
	logger.Info("meter stopped", "spooled", st.Spooled, "acked", st.Acked, "pending", st.NextSeq-1-st.AckedSeq,
		"dropped", st.Dropped, "corrupt_entries", st.CorruptEntries)
	return err
}
