package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// Options configure Run.
type Options struct {
	// OutDir receives report.json, report.html and components.log. Required.
	OutDir string
	// WorkDir holds spools and the embedded broker's data. Default: a temporary
	// directory, removed after the run.
	WorkDir string
	// Progress receives the live progress lines (once per second). nil: none.
	Progress io.Writer
	// LogLevel of the components' log (OutDir/components.log). Default Warn.
	LogLevel slog.Level
	// Logger is the harness's own log. nil discards.
	Logger *slog.Logger
}

// SetupError is returned by Run when the run could not start (bad environment,
// a component that did not come up); the command maps it to exit code 2.
type SetupError struct{ Err error }

func (e *SetupError) Error() string { return "setup: " + e.Err.Error() }
func (e *SetupError) Unwrap() error { return e.Err }

// Run executes the scenario: it starts the broker, control state, collectors,
// consumers and sink, builds the meters, replays the arrival curve and the
// events, drains, verifies every (meter, seq), writes the reports and evaluates
// the SLOs (Report.Pass). Errors are setup failures (*SetupError) or a cancelled
// ctx; an SLO failure is not an error.
func Run(ctx context.Context, sc *Scenario, opt Options) (rep *Report, err error) {
	hlog := opt.Logger
	if hlog == nil {
		hlog = slog.New(slog.DiscardHandler)
	}
	if opt.OutDir == "" {
		return nil, &SetupError{errors.New("no output directory")}
	}
	if err := os.MkdirAll(opt.OutDir, 0o755); err != nil {
		return nil, &SetupError{fmt.Errorf("cannot create output dir: %w", err)}
	}
	work := opt.WorkDir
	if work == "" {
		work, err = os.MkdirTemp("", "loadtest-")
		if err != nil {
			return nil, &SetupError{fmt.Errorf("cannot create work dir: %w", err)}
		}
		defer func() {
			if rerr := os.RemoveAll(work); rerr != nil {
				hlog.Warn("cannot remove work dir", "dir", work, "error", rerr)
			}
		}()
	}
	logFile, err := os.Create(filepath.Join(opt.OutDir, "components.log"))
	if err != nil {
		return nil, &SetupError{fmt.Errorf("cannot create components log: %w", err)}
	}
	defer func() {
		if cerr := logFile.Close(); cerr != nil {
			hlog.Warn("cannot close components log", "error", cerr)
		}
	}()
	lvl := opt.LogLevel
	if lvl == 0 {
		lvl = slog.LevelWarn
	}
	clog := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: lvl}))

	var trace []TracePoint
	if sc.Meters.Arrival.Kind == ArrivalTrace {
		if trace, err = LoadTrace(sc.TracePath()); err != nil {
			return nil, &SetupError{err}
		}
	}
	rnd := rand.New(rand.NewPCG(uint64(sc.Seed), 1))
	arrivals := ArrivalTimes(sc.Meters.Arrival.Kind, sc.Meters.Count, sc.Meters.Arrival.Start.D, sc.Meters.Arrival.Over.D, trace, rnd)
	var notes []string
	late := 0
	for _, a := range arrivals {
		if a >= sc.Duration.D {
			late++
		}
	}
	if late > 0 {
		notes = append(notes, fmt.Sprintf("%d meters arrive after the load phase and never start", late))
	}
	ids := make([]string, len(arrivals))
	for i := range ids {
		ids[i] = meterID(i)
	}
	v := NewVerifier(ids)
	e2e := &Histogram{}
	c := &counters{}

	started := time.Now()
	progress := func(format string, args ...any) {
		if opt.Progress != nil {
			fmt.Fprintf(opt.Progress, format+"\n", args...)
		}
	}
	progress("loadtest %s: %d meters, %d collectors, %d phloems; setting up", sc.Name, len(arrivals), max(sc.Collectors.Count, len(sc.Collectors.External)), sc.Phloems.Count)

	cl := newCluster(sc, work, clog, hlog)
	if sc.Meters.Discovery == DiscoveryDNS {
		cl.dns = &dnsResolver{first: -1}
		if sc.Meters.DNSFirst != nil {
			cl.dns.first = *sc.Meters.DNSFirst
		}
	}
	defer cl.stop()
	if err := cl.start(ctx, v, e2e); err != nil {
		return nil, &SetupError{err}
	}
	f := newFleet(sc, cl, v, c, arrivals, clog.With("component", "meter"), hlog)
	ts := time.Now()
	if err := f.create(ctx, work); err != nil {
		f.wait()
		return nil, &SetupError{err}
	}
	progress("setup done in %.1fs (meters built in %.1fs); starting the load", time.Since(started).Seconds(), time.Since(ts).Seconds())

	// Contexts: loadCtx ends the load phase (appenders, arrivals); runCtx is the
	// meters' Run; bgCtx owns the sampler and the event runner.
	t0 := time.Now()
	loadCtx, loadCancel := context.WithDeadline(ctx, t0.Add(sc.Duration.D))
	defer loadCancel()
	runCtx, runCancel := context.WithCancel(context.Background())
	defer runCancel()
	bgCtx, bgCancel := context.WithCancel(ctx)
	defer bgCancel()

	smp := &sampler{f: f, cl: cl, c: c, e2e: e2e, progress: opt.Progress, t0: t0}
	ev := &eventRunner{cl: cl}
	bgDone := make(chan struct{}, 2)
	go func() { smp.run(bgCtx); bgDone <- struct{}{} }()
	go func() { ev.run(bgCtx, t0, expandEvents(sc), smp.note); bgDone <- struct{}{} }()

	f.arrive(loadCtx, runCtx, t0)
	<-loadCtx.Done()
	if ctx.Err() != nil {
		runCancel()
		bgCancel()
		f.wait()
		<-bgDone
		<-bgDone
		return nil, ctx.Err()
	}
	loadEnd := time.Since(t0)
	smp.note("load phase over; draining")

	// Drain: wait for the meters' spools to be acknowledged and the sink to have
	// seen every produced record.
	drainStart := time.Now()
	drained := waitFor(ctx, sc.DrainTimeout.D, func() bool {
		return f.stats().pending == 0 && v.Outstanding() == 0 && allEventsDone(ev, sc)
	}) == nil
	drainTook := time.Since(drainStart)
	// A short settle so that late duplicates (a redelivery after a rebalance)
	// are counted too.
	if drained {
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
	bgCancel()
	<-bgDone
	<-bgDone
	runCancel()
	f.wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	ticks, secs := smp.results()
	events, evFailed := ev.results()
	verdict := v.Result()
	fs := f.stats()
	rep = &Report{
		Scenario: sc.Name, Description: sc.Description, Started: started, WallSeconds: time.Since(started).Seconds(),
		Meters: len(arrivals), Collectors: cl.numSlots(), Phloems: sc.Phloems.Count,
		Verdict: verdict, Events: events, EventFailures: evFailed, Seconds: secs, Ticks: ticks, Notes: notes,
	}
	rep.Summary = summarize(secs, ticks, loadEnd.Seconds(), c.ingest.Snapshot(), e2e.Snapshot())
	rep.Summary.LoadSeconds = loadEnd.Seconds()
	rep.Summary.DrainSeconds = drainTook.Seconds()
	rep.Summary.Drained = drained
	rep.Summary.MetersDrop = fs.dropped
	rep.Summary.SinkRequests = cl.sink.requests.Load()
	rep.Summary.SinkBlackholed = cl.sink.blackholed.Load()
	rep.Summary.SinkBadLines = cl.sink.bad.Load()
	if !drained {
		rep.Notes = append(rep.Notes, fmt.Sprintf("drain timed out after %v: %d records still pending at meters, %d produced records never seen", sc.DrainTimeout.D, fs.pending, verdict.Lost))
	}
	if verdict.SeqMissing > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d deliveries carried no seq (the consumer did not find the collector's seq header): verification used the payload's sequence", verdict.SeqMissing))
	}
	if verdict.SeqMismatch > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d deliveries had a seq header different from the meter's sequence", verdict.SeqMismatch))
	}
	if evFailed > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d event steps failed (see events)", evFailed))
	}
	rep.SLOs = evaluate(sc.SLO, rep)
	rep.Pass = evFailed == 0
	for _, s := range rep.SLOs {
		if !s.Pass {
			rep.Pass = false
		}
	}
	if _, _, err := rep.write(opt.OutDir); err != nil {
		return rep, &SetupError{err}
	}
	return rep, nil
}

// allEventsDone reports whether every event step has run (a broker that is
// still down would make the drain meaningless).
func allEventsDone(ev *eventRunner, sc *Scenario) bool {
	evs, _ := ev.results()
	return len(evs) >= len(expandEvents(sc))
}
