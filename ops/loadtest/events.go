package loadtest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Primitive actions the timed events expand into.
const (
	primKill        = "kill_collector"
	primStart       = "start_collector"
	primAdd         = "add_collector"
	primBrokerDown  = "broker_down"
	primBrokerUp    = "broker_up"
	primBlackholeOn = "sink_blackhole_on"
	primBlackholeOf = "sink_blackhole_off"
	primDNSFirst    = "dns_first"
)

type primEvent struct {
	at        time.Duration
	action    string
	collector int
}

// expandEvents turns the scenario's events into primitive steps sorted by time
// (stable: steps at the same time keep the file's order).
func expandEvents(sc *Scenario) []primEvent {
	var out []primEvent
	coll := func(e Event) int {
		if e.Collector == nil {
			return -1
		}
		return *e.Collector
	}
	for _, e := range sc.Events {
		switch e.Action {
		case ActKillCollector:
			out = append(out, primEvent{e.At.D, primKill, coll(e)})
			if e.For.D > 0 {
				out = append(out, primEvent{e.At.D + e.For.D, primStart, coll(e)})
			}
		case ActRestartCollector:
			out = append(out, primEvent{e.At.D, primStart, coll(e)})
		case ActAddCollector:
			out = append(out, primEvent{e.At.D, primAdd, -1})
		case ActRollingRestart:
			for i := 0; i < sc.Collectors.Count; i++ {
				at := e.At.D + time.Duration(i)*e.Every.D
				out = append(out, primEvent{at, primKill, i}, primEvent{at + e.Down.D, primStart, i})
			}
		case ActStopBroker:
			out = append(out, primEvent{e.At.D, primBrokerDown, -1}, primEvent{e.At.D + e.For.D, primBrokerUp, -1})
		case ActBlackholeSink:
			out = append(out, primEvent{e.At.D, primBlackholeOn, -1}, primEvent{e.At.D + e.For.D, primBlackholeOf, -1})
		case ActDNSFirst:
			out = append(out, primEvent{e.At.D, primDNSFirst, coll(e)})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// EventLog is one executed step, for the report.
type EventLog struct {
	T         float64 `json:"t"` // seconds after the start
	Action    string  `json:"action"`
	Collector int     `json:"collector,omitempty"`
	TookMs    float64 `json:"took_ms"`
	Error     string  `json:"error,omitempty"`
}

type eventRunner struct {
	cl  *cluster
	mu  sync.Mutex
	log []EventLog
	// failed counts steps that returned an error: a scenario whose faults were not
	// injected has not tested anything, so the run fails.
	failed int
}

func (r *eventRunner) run(ctx context.Context, t0 time.Time, evs []primEvent, note func(string)) {
	for _, e := range evs {
		if d := time.Until(t0.Add(e.at)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		start := time.Now()
		err := r.exec(e)
		l := EventLog{T: start.Sub(t0).Seconds(), Action: e.action, Collector: e.collector, TookMs: float64(time.Since(start).Microseconds()) / 1000}
		msg := fmt.Sprintf("event %s", e.action)
		if e.collector >= 0 {
			msg += fmt.Sprintf(" c%d", e.collector)
		}
		if err != nil {
			l.Error = err.Error()
			msg += " FAILED: " + err.Error()
		}
		r.mu.Lock()
		r.log = append(r.log, l)
		if err != nil {
			r.failed++
		}
		r.mu.Unlock()
		note(msg)
	}
}

func (r *eventRunner) exec(e primEvent) error {
	cl := r.cl
	switch e.action {
	case primKill:
		return cl.killCollector(e.collector)
	case primStart:
		return cl.startCollector(e.collector)
	case primAdd:
		return cl.addSlot()
	case primBrokerDown:
		return cl.stopBroker()
	case primBrokerUp:
		return cl.startBroker()
	case primBlackholeOn:
		cl.sink.SetBlackhole(true)
		return nil
	case primBlackholeOf:
		cl.sink.SetBlackhole(false)
		return nil
	case primDNSFirst:
		cl.dns.setFirst(e.collector)
		return nil
	}
	return fmt.Errorf("unknown step %q", e.action)
}

func (r *eventRunner) results() ([]EventLog, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]EventLog(nil), r.log...), r.failed
}
