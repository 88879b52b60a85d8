// Package procrun is the process scaffolding shared by the long-running binaries
// (cmd/collector, cmd/phloem): the infrastructure goroutines that outlive the
// data-path component, and the Kafka side every binary starts the same way (the
// embedded broker when no --brokers is given, and the process's one control
// Watcher).
//
// Why infrastructure outlives the component: the collector's final producer flush
// and the consumer's final commit need a broker, so the component stops first and
// the broker, the watcher and the admin listener after it. Any infrastructure
// failure cancels the component's context, so the process stops instead of limping.
package procrun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"phloem/internal/admin"
	"phloem/ops"
	"phloem/phloem/control"
	"phloem/phloem/embedded"
	"phloem/phloem/kafkaconf"
)

// Infra owns a process's infrastructure goroutines. Build it with NewInfra; Stop
// it exactly where the component has returned (Stop is idempotent, so a deferred
// Stop also covers early returns).
type Infra struct {
	ctx       context.Context
	cancel    context.CancelFunc
	cancelApp context.CancelFunc
	g         errgroup.Group

	once sync.Once
	err  error
}

// NewInfra returns the infrastructure group and the component's context, derived
// from ctx and cancelled too when any infrastructure goroutine fails.
func NewInfra(ctx context.Context) (*Infra, context.Context) {
	appCtx, cancelApp := context.WithCancel(ctx)
	// Infrastructure is not stopped by ctx: it stops when Stop is called, after
	// the component.
	infraCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &Infra{ctx: infraCtx, cancel: cancel, cancelApp: cancelApp}, appCtx
}

// Go runs fn until Stop. An error from it, or a return before Stop, is named
// and stops the component: a process must not go on without its broker, watcher
// or admin listener.
func (i *Infra) Go(name string, fn func(context.Context) error) {
	i.g.Go(func() error {
		err := fn(i.ctx)
		if err == nil && i.ctx.Err() == nil {
			err = errors.New("stopped before the process was told to stop")
		}
		if err != nil {
			i.cancelApp()
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
}

// Stop cancels the infrastructure, waits for every goroutine and returns their
// errors. Later calls return the same result.
func (i *Infra) Stop() error {
	i.once.Do(func() {
		i.cancel()
		i.err = i.g.Wait()
		i.cancelApp()
	})
	return i.err
}

// Kafka describes how a binary reaches Kafka.
type Kafka struct {
	Config       kafkaconf.Config
	EmbeddedAddr string // embedded broker's loopback address when Config.Brokers is empty
	DataDir      string // embedded broker's data directory ("" keeps data in memory)
	ControlTopic string
}

// StartKafka returns the client options for k, starting the embedded broker on i
// when k has no brokers, and starts the process's one control Watcher on i. With
// external brokers it probes them and only warns when they do not answer yet:
// readiness stays false until they do, and clients reconnect by themselves.
func StartKafka(ctx context.Context, i *Infra, k Kafka, logger *slog.Logger, reg prometheus.Registerer) ([]kgo.Opt, *control.Watcher, error) {
	opts, err := k.Config.Opts()
	if err != nil {
		return nil, nil, err
	}
	if len(k.Config.Brokers) == 0 {
		bcfg := embedded.DefaultConfig()
		bcfg.Addr, bcfg.DataDir = k.EmbeddedAddr, k.DataDir
		broker, err := embedded.Start(bcfg, logger)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot start the embedded broker (no --brokers given): %w", err)
		}
		i.Go("embedded broker", broker.Run)
		opts = append(opts, kgo.SeedBrokers(broker.Addrs()...))
	} else if err := kafkaconf.Probe(ctx, opts, 0); err != nil {
		logger.Warn("Kafka brokers do not answer yet; /readyz stays 503 until they do", "err", err)
	}

	// Exactly one control Watcher per process, shared by every component.
	wcfg := control.DefaultWatcherConfig()
	wcfg.Topic, wcfg.KafkaOpts = k.ControlTopic, opts
	watcher, err := control.NewWatcher(wcfg, logger, reg)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot build the control watcher: %w", err)
	}
	i.Go("control watcher", watcher.Run)
	return opts, watcher, nil
}

// StartOps runs the ops monitor on the process's registry and mounts its status
// page at /status/ on the admin server, so that every admin listener shows the
// ratio view operators run the system by. meters feeds the zombie-meter detector
// (nil: off). It must be called before the admin server serves.
func StartOps(i *Infra, adm *admin.Server, reg *prometheus.Registry, meters ops.MeterActivity, instance string, logger *slog.Logger) error {
	src := ops.Sources{Gatherer: reg, Instance: instance}
	if meters != nil {
		src.Meters = meters
	}
	mon, err := ops.New(ops.DefaultConfig(), src, logger, reg)
	if err != nil {
		return fmt.Errorf("cannot build the ops monitor: %w", err)
	}
	adm.Handle("/status/", ops.StatusHandler(mon))
	i.Go("ops monitor", mon.Run)
	return nil
}

// Process is the skeleton shared by cmd/collector and cmd/phloem: the metric
// registry (with Go and process collectors), the infrastructure group, the Kafka
// client options and the process's one control Watcher.
type Process struct {
	Reg     *prometheus.Registry
	Infra   *Infra
	AppCtx  context.Context // the component's context: Run the component under it
	Opts    []kgo.Opt
	Watcher *control.Watcher
}

// Start builds a Process: Kafka (embedded or external) and the Watcher start on
// its infrastructure group. The caller defers p.Infra.Stop() even on error
// (Start returns a non-nil Process whenever the group exists).
func Start(ctx context.Context, k Kafka, logger *slog.Logger) (*Process, error) {
	p := &Process{Reg: prometheus.NewRegistry()}
	p.Reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p.Infra, p.AppCtx = NewInfra(ctx)
	var err error
	p.Opts, p.Watcher, err = StartKafka(ctx, p.Infra, k, logger, p.Reg)
	return p, err
}

// Listeners are the admin and data listeners of a binary, with what its admin
// server adds beyond /metrics, /healthz and /readyz.
type Listeners struct {
	Admin, Data string // listen addresses
	Pprof       bool
	Ready       func(*admin.Server) // registers the component's readiness checks
	Meters      ops.MeterActivity   // feeds the zombie-meter detector; nil: off
	Instance    string              // names the process on the status page
}

// Listen builds the admin server (readiness checks, ops monitor and status page),
// opens both listeners (both or neither), serves the admin listener on the
// infrastructure group and returns the data listener for the component's Run.
func (p *Process) Listen(l Listeners, logger *slog.Logger) (net.Listener, error) {
	acfg := admin.DefaultConfig()
	acfg.Addr, acfg.EnablePprof = l.Admin, l.Pprof
	adm := admin.New(acfg, logger.With("component", "admin"), p.Reg)
	if l.Ready != nil {
		l.Ready(adm)
	}
	if err := StartOps(p.Infra, adm, p.Reg, l.Meters, l.Instance, logger); err != nil {
		return nil, err
	}
	adminLn, err := net.Listen("tcp", l.Admin)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on --admin-listen %s: %w", l.Admin, err)
	}
	dataLn, err := net.Listen("tcp", l.Data)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("cannot listen on --listen %s: %w", l.Data, err), adminLn.Close())
	}
	logger.Info("listening", "data", dataLn.Addr().String(), "admin", adminLn.Addr().String())
	p.Infra.Go("admin listener", func(ctx context.Context) error { return adm.Run(ctx, adminLn) })
	return dataLn, nil
}
