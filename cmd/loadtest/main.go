// Command loadtest runs a load-test scenario against the real Phloem components
// in one process and writes a JSON and an HTML report.
//
//	loadtest --scenario testdata/scenarios/spike.json [--out DIR]
//
// Exit codes: 0 every SLO held, 1 an SLO failed, 2 usage or setup error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"phloem/ops/loadtest"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "", "scenario file (JSON), e.g. testdata/scenarios/spike.json (required)")
	out := fs.String("out", "", "directory for report.json, report.html and components.log (default loadtest-out/<scenario>-<time>)")
	work := fs.String("work", "", "directory for spools and broker data (default: a temporary directory, removed afterwards)")
	logLevel := fs.String("log-level", "warn", "components' log level in components.log: debug, info, warn, error")
	quiet := fs.Bool("quiet", false, "no live progress on stderr")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: loadtest --scenario FILE [--out DIR]\n\nRuns a load-test scenario against in-process collectors, phloem consumers and an\nembedded broker, verifies every (meter, seq) at the sink and writes a report.\nExit codes: 0 pass, 1 SLO failed, 2 usage or setup error.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *scenario == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "loadtest: --scenario FILE is required (and takes no positional arguments)")
		fs.Usage()
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "loadtest: --log-level: %v\n", err)
		return 2
	}
	sc, err := loadtest.LoadScenario(*scenario)
	if err != nil {
		fmt.Fprintf(stderr, "loadtest: %v\n", err)
		return 2
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join("loadtest-out", sc.Name+"-"+time.Now().Format("20060102-150405"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opt := loadtest.Options{OutDir: dir, WorkDir: *work, LogLevel: lvl,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if !*quiet {
		opt.Progress = stderr
	}
	rep, err := loadtest.Run(ctx, sc, opt)
	if err != nil {
		fmt.Fprintf(stderr, "loadtest: %v\n", err)
		return 2
	}
	printSummary(stderr, rep, dir)
	if !rep.Pass {
		return 1
	}
	return 0
}

func printSummary(w io.Writer, r *loadtest.Report, dir string) {
	s, v := r.Summary, r.Verdict
	fmt.Fprintf(w, "\n== %s: %s (%.1fs wall) ==\n", r.Scenario, map[bool]string{true: "PASS", false: "FAIL"}[r.Pass], r.WallSeconds)
	fmt.Fprintf(w, "records: produced %d, delivered %d, lost %d, duplicates %d, reordered %d (drained %v in %.1fs)\n",
		v.Produced, v.Delivered, v.Lost, v.Duplicates, v.Reordered, s.Drained, s.DrainSeconds)
	fmt.Fprintf(w, "rate: %.0f records/s mean, %d peak; requests %d (503 %d, 429 %d, conn errors %d, retries %d)\n",
		s.RecordsPerSecMean, s.RecordsPerSecPeak, s.Requests, s.S503, s.S429, s.ConnErrors, s.Retries)
	fmt.Fprintf(w, "reconnects: peak %d per 100ms at %.1fs, mean %.2f over %.1fs, peak/mean %.2f; burst (peak/mean of the 2.1s around) %.2f at %.1fs\n",
		s.ReconnectPeakPer100ms, s.ReconnectPeakAt, s.ReconnectMeanPer100ms, s.ReconnectWindowSeconds, s.ReconnectPeakToMean, s.ReconnectBurst, s.ReconnectBurstAt)
	shares := make([]string, len(s.ShareTotal))
	for i, x := range s.ShareTotal {
		shares[i] = fmt.Sprintf("c%d %.1f%%", i, 100*x)
	}
	fmt.Fprintf(w, "collector share: worst second peak/mean %.2f at %.0fs; whole run [%s] peak/mean %.2f\n",
		s.SharePeakToMean, s.SharePeakAt, strings.Join(shares, ", "), s.ShareTotalPeakToMean)
	fmt.Fprintf(w, "latency: ingest p50 %.1f p90 %.1f p99 %.1f max %.0f ms; end-to-end p50 %.0f p90 %.0f p99 %.0f max %.0f ms\n",
		s.IngestP50, s.IngestP90, s.IngestP99, s.IngestMax, s.E2EP50, s.E2EP90, s.E2EP99, s.E2EMax)
	fmt.Fprintf(w, "egress/ingress: %.3f (max per second %.3f); sink requests %d, blackholed %d\n",
		s.EgressIngressRatio, s.RatioMax, s.SinkRequests, s.SinkBlackholed)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, o := range r.SLOs {
		op := "<="
		if o.Min {
			op = ">="
		}
		res := "ok"
		if !o.Pass {
			res = "FAILED"
		}
		fmt.Fprintf(w, "SLO %-24s %10.3f %s %-10g %s\n", o.Name, o.Value, op, o.Limit, res)
	}
	fmt.Fprintf(w, "report: %s/report.html (and report.json)\n", dir)
}
