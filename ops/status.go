package ops

import (
	"bytes"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

// Status is the monitor's state as served by the status page's JSON endpoint
// (<mount>/api). Histories are columns aligned with Times, oldest first; a null
// entry means "no value" (idle component, absent metric, fewer than two samples).
type Status struct {
	Instance        string            `json:"instance,omitempty"`
	Now             time.Time         `json:"now"`
	IntervalSeconds float64           `json:"interval_seconds"`
	WindowSeconds   float64           `json:"window_seconds"`
	Times           []int64           `json:"times"` // unix milliseconds
	Components      []ComponentStatus `json:"components"`
	Alerts          []AlertStatus     `json:"alerts"`
	Breakdowns      []BreakdownStatus `json:"breakdowns"`
	Gauges          []GaugeStatus     `json:"gauges"`
	Zombies         []MeterSeen       `json:"zombies"`
}

// ComponentStatus is one component's current rates and their history.
type ComponentStatus struct {
	Name                  string     `json:"name"`
	Title                 string     `json:"title"`
	IngressBytesPerSecond optFloat   `json:"ingress_bytes_per_second"`
	EgressBytesPerSecond  optFloat   `json:"egress_bytes_per_second"`
	Ratio                 optFloat   `json:"ratio"`
	Bands                 []Band     `json:"bands"`
	Ingress               []optFloat `json:"ingress"`
	Egress                []optFloat `json:"egress"`
	Ratios                []optFloat `json:"ratios"`
}

// Band is a ratio rule's expected band, drawn on the component's ratio chart.
type Band struct {
	Rule  string     `json:"rule"`
	Min   float64    `json:"min"`
	Max   float64    `json:"max"`
	State AlertState `json:"state"`
}

// AlertStatus is one rule's alert.
type AlertStatus struct {
	Rule        string     `json:"rule"`
	Kind        string     `json:"kind"`
	State       AlertState `json:"state"`
	Value       optFloat   `json:"value"`
	Summary     string     `json:"summary"`
	ForSeconds  float64    `json:"for_seconds"`
	ActiveSince *time.Time `json:"active_since,omitempty"`
	FiredAt     *time.Time `json:"fired_at,omitempty"`
	ResolvedAt  *time.Time `json:"resolved_at,omitempty"`
}

// BreakdownStatus is a breakdown table, rows sorted by rate, highest first.
type BreakdownStatus struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	By    string `json:"by"`
	Rows  []Row  `json:"rows"`
}

// GaugeStatus is a gauge's latest value and, for charted gauges, its history.
type GaugeStatus struct {
	Name    string     `json:"name"`
	Title   string     `json:"title"`
	Value   optFloat   `json:"value"`
	Chart   bool       `json:"chart"`
	History []optFloat `json:"history,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func orName(title, name string) string {
	if title != "" {
		return title
	}
	return name
}

// Status returns a copy of the monitor's current state and history.
func (m *Monitor) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{
		Instance:        m.src.Instance,
		Now:             m.last,
		IntervalSeconds: m.cfg.Interval.Seconds(),
		WindowSeconds:   m.cfg.Window.Seconds(),
		Times:           make([]int64, 0, m.hist.n),
		Alerts:          m.alertsLocked(),
		Zombies:         append([]MeterSeen{}, m.zombies...),
	}
	states := make(map[string]AlertState, len(m.alerts))
	for _, a := range m.alerts {
		states[a.rule] = a.state
	}
	for _, cs := range m.comps {
		c := ComponentStatus{Name: cs.cfg.Name, Title: orName(cs.cfg.Title, cs.cfg.Name),
			IngressBytesPerSecond: optFloat(cs.inRate), EgressBytesPerSecond: optFloat(cs.outRate), Ratio: optFloat(cs.ratio),
			Bands:   []Band{},
			Ingress: make([]optFloat, 0, m.hist.n), Egress: make([]optFloat, 0, m.hist.n), Ratios: make([]optFloat, 0, m.hist.n)}
		for _, r := range m.ratios {
			if r.comp == cs {
				c.Bands = append(c.Bands, Band{Rule: r.rule.Name, Min: r.rule.Min, Max: r.rule.Max, State: states[r.rule.Name]})
			}
		}
		st.Components = append(st.Components, c)
	}
	for i, g := range m.cfg.Gauges {
		gs := GaugeStatus{Name: g.Name, Title: orName(g.Title, g.Name), Value: optFloat(m.gauges[i]), Chart: g.Chart}
		if g.Chart {
			gs.History = make([]optFloat, 0, m.hist.n)
		}
		st.Gauges = append(st.Gauges, gs)
	}
	m.hist.each(func(p *histPoint) {
		st.Times = append(st.Times, p.t.UnixMilli())
		for i := range st.Components {
			c := &st.Components[i]
			c.Ingress = append(c.Ingress, optFloat(p.comp[i].in))
			c.Egress = append(c.Egress, optFloat(p.comp[i].out))
			c.Ratios = append(c.Ratios, optFloat(p.comp[i].ratio))
		}
		for i := range st.Gauges {
			if st.Gauges[i].Chart {
				st.Gauges[i].History = append(st.Gauges[i].History, optFloat(p.gauges[i]))
			}
		}
	})
	for _, b := range m.breakdowns {
		st.Breakdowns = append(st.Breakdowns, BreakdownStatus{Name: b.cfg.Name, Title: orName(b.cfg.Title, b.cfg.Name),
			By: b.cfg.By, Rows: b.rowsByRate()})
	}
	return st
}

// Alerts returns every rule's alert, ratio rules first, then the detectors.
func (m *Monitor) Alerts() []AlertStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alertsLocked()
}

func (m *Monitor) alertsLocked() []AlertStatus {
	out := make([]AlertStatus, 0, len(m.alerts))
	for _, a := range m.alerts {
		out = append(out, AlertStatus{Rule: a.rule, Kind: a.kind, State: a.state, Value: optFloat(a.value),
			Summary: a.summary, ForSeconds: a.forDur.Seconds(),
			ActiveSince: timePtr(a.active), FiredAt: timePtr(a.fired), ResolvedAt: timePtr(a.resolve)})
	}
	return out
}

//go:embed web
var webFS embed.FS

// StatusHandler serves the status page for m: an HTML page with live charts
// (hand-written JavaScript drawing SVG, no external resources) that polls the JSON
// endpoint "api" relative to the page every 1.5 s.
//
// It is prefix-agnostic: mount it on a subtree, e.g.
//
//	adminServer.Handle("/status/", ops.StatusHandler(m))
//
// and it serves <prefix>/ (the page), <prefix>/api (Status as JSON),
// <prefix>/app.js and <prefix>/style.css; anything else is 404. Mount it on a
// pattern ending in "/" (the mux then redirects "/status" to "/status/"): the page
// loads its assets by relative URL. The handler only reads the monitor's
// state under its lock; every request runs on the request's goroutine.
func StatusHandler(m *Monitor) http.Handler {
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		// The embedded tree is part of the binary; a failure here is a build bug.
		panic("ops: embedded web assets missing: " + err.Error())
	}
	read := func(name string) []byte {
		b, err := fs.ReadFile(sub, name)
		if err != nil {
			panic("ops: embedded web asset " + name + " missing: " + err.Error())
		}
		return b
	}
	assets := map[string]struct {
		body []byte
		ct   string
	}{
		"app.js":    {read("app.js"), "text/javascript; charset=utf-8"},
		"style.css": {read("style.css"), "text/css; charset=utf-8"},
		"":          {read("index.html"), "text/html; charset=utf-8"},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := r.URL.Path
		last := p[strings.LastIndexByte(p, '/')+1:]
		w.Header().Set("Cache-Control", "no-store")
		// The page draws only what it fetched from the same origin.
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		switch {
		case last == "api":
			var buf bytes.Buffer
			if err := json.NewEncoder(&buf).Encode(m.Status()); err != nil {
				http.Error(w, "cannot encode status: "+err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(buf.Bytes()) // a failed write means the client left; nothing to do
		default:
			a, ok := assets[last]
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", a.ct)
			_, _ = w.Write(a.body)
		}
	})
}
