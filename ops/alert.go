package ops

import (
	"fmt"
	"strconv"
	"time"
)

// AlertState is the lifecycle state of one rule's alert.
//
//	inactive ──cond──▶ pending ──cond held For──▶ firing ──!cond──▶ resolved ──KeepResolved──▶ inactive
//	             pending ──!cond──▶ inactive          resolved ──cond──▶ pending
//
// A rule whose condition is undefined (idle component, absent metrics) is treated as
// "condition false": it never becomes pending, and a firing alert resolves, which is
// also what Prometheus does when an alert expression stops returning a series.
type AlertState int

// The alert states, in lifecycle order.
const (
	StateInactive AlertState = iota
	StatePending
	StateFiring
	StateResolved
)

var stateNames = [...]string{"inactive", "pending", "firing", "resolved"}

// String returns the lower-case state name.
func (s AlertState) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return "AlertState(" + strconv.Itoa(int(s)) + ")"
	}
	return stateNames[s]
}

// MarshalText implements encoding.TextMarshaler (JSON encodes the name).
func (s AlertState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *AlertState) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if n == string(b) {
			*s = AlertState(i)
			return nil
		}
	}
	return fmt.Errorf("unknown alert state %q", b)
}

// alert is one rule's state machine. Not safe for concurrent use: the Monitor steps
// it under its lock.
type alert struct {
	rule    string
	kind    string // "ratio", "zombie", "leak", "lag"
	forDur  time.Duration
	state   AlertState
	active  time.Time // condition first true in the current episode (pending since)
	fired   time.Time
	resolve time.Time
	value   float64
	summary string
}

// step advances the machine with the condition evaluated at now and returns the
// state it entered, and whether it changed.
func (a *alert) step(now time.Time, cond bool, keepResolved time.Duration) (AlertState, bool) {
	prev := a.state
	switch a.state {
	case StateInactive, StateResolved:
		if cond {
			a.state, a.active = StatePending, now
			a.fired, a.resolve = time.Time{}, time.Time{}
			if a.forDur <= 0 {
				a.state, a.fired = StateFiring, now
			}
		} else if a.state == StateResolved && now.Sub(a.resolve) >= keepResolved {
			a.state = StateInactive
		}
	case StatePending:
		switch {
		case !cond:
			a.state, a.active = StateInactive, time.Time{}
		case now.Sub(a.active) >= a.forDur:
			a.state, a.fired = StateFiring, now
		}
	case StateFiring:
		if !cond {
			a.state, a.resolve = StateResolved, now
		}
	}
	return a.state, a.state != prev
}
