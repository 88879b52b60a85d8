package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/phloem/control"
	"phloem/phloem/kafkaconf"
)

// errNoBrokers is returned when neither --brokers nor PHLOEM_BROKERS names a broker:
// phloemctl never starts the embedded broker, whose state would vanish on exit.
var errNoBrokers = errors.New("no brokers: set --brokers or PHLOEM_BROKERS")

// app is one command's run: its options, its output and the Kafka client it opened.
type app struct {
	g      globals
	stdout io.Writer
	stderr io.Writer

	opts []kgo.Opt
	cl   *kgo.Client
	adm  *kadm.Client
}

// connect checks that Kafka answers (naming the address when it does not) and opens
// the client used for admin requests and control writes.
func (a *app) connect(ctx context.Context) error {
	if a.cl != nil {
		return nil
	}
	if len(a.g.kafka.Brokers) == 0 {
		return usageError{errNoBrokers}
	}
	opts, err := a.g.kafka.Opts()
	if err != nil {
		return usageError{err}
	}
	probeTimeout := kafkaconf.DefaultProbeTimeout
	if dl, ok := ctx.Deadline(); ok {
		probeTimeout = time.Until(dl).Round(100 * time.Millisecond)
	}
	if err := kafkaconf.Probe(ctx, opts, probeTimeout); err != nil {
		return fmt.Errorf("%w\nCheck --brokers (or PHLOEM_BROKERS), TLS/SASL settings, and that the brokers are running", err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("cannot create Kafka client: %w", err)
	}
	a.opts, a.cl, a.adm = opts, cl, kadm.NewClient(cl)
	return nil
}

func (a *app) close() {
	if a.cl != nil {
		a.cl.Close()
	}
}

// state reads the whole control topic with a Watcher and returns the snapshot once
// the Watcher caught up, so that decisions (version numbers, existence, GC) rest on
// complete state.
func (a *app) state(ctx context.Context) (*control.State, error) {
	if err := a.connect(ctx); err != nil {
		return nil, err
	}
	w, err := control.NewWatcher(control.WatcherConfig{Topic: a.g.controlTopic, KafkaOpts: a.opts}, nil, nil)
	if err != nil {
		return nil, err
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	var runErr error
	returned := false
	select {
	case <-w.Ready():
	case runErr = <-done:
		returned = true
	case <-ctx.Done():
	}
	stop()
	if !returned {
		runErr = <-done
	}
	select {
	case <-w.Ready():
		return w.State(), nil
	default:
	}
	if runErr != nil {
		return nil, fmt.Errorf("cannot read control topic %q: %w", a.g.controlTopic, runErr)
	}
	return nil, fmt.Errorf("cannot read control topic %q within --timeout %s: %w; check the brokers' health or raise --timeout", a.g.controlTopic, a.g.timeout, ctx.Err())
}

// writer ensures the control topic exists and returns a Writer on it.
func (a *app) writer(ctx context.Context) (*control.Writer, error) {
	if err := a.connect(ctx); err != nil {
		return nil, err
	}
	if err := control.EnsureTopic(ctx, a.adm, a.g.controlTopic); err != nil {
		return nil, err
	}
	return control.NewWriter(a.cl, a.g.controlTopic), nil
}

func (a *app) json() bool { return a.g.output == "json" }

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("cannot write output: %w", err)
	}
	return nil
}

// table writes rows under a header with aligned columns.
func (a *app) table(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("cannot write output: %w", err)
	}
	return nil
}

func (a *app) printf(format string, args ...any) {
	fmt.Fprintf(a.stdout, format, args...)
}
