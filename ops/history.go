package ops

import (
	"time"
)

// history is a fixed-capacity ring of per-tick points behind the status page's
// charts. Its memory is allocated once in newHistory: points are overwritten in
// place, so a long-running monitor's history never grows.
type history struct {
	pts   []histPoint
	start int // index of the oldest point
	n     int // points held
}

type histPoint struct {
	t      time.Time
	comp   []compPoint // per Config.Components entry
	gauges []float64   // per Config.Gauges entry
}

type compPoint struct{ in, out, ratio float64 }

func newHistory(capacity, comps, gauges int) history {
	h := history{pts: make([]histPoint, capacity)}
	for i := range h.pts {
		h.pts[i].comp = make([]compPoint, comps)
		h.pts[i].gauges = make([]float64, gauges)
	}
	return h
}

// next returns the point to fill for time t, evicting the oldest when full.
func (h *history) next(t time.Time) *histPoint {
	var i int
	if h.n < len(h.pts) {
		i = (h.start + h.n) % len(h.pts)
		h.n++
	} else {
		i = h.start
		h.start = (h.start + 1) % len(h.pts)
	}
	p := &h.pts[i]
	p.t = t
	return p
}

// each visits the points oldest first.
func (h *history) each(fn func(p *histPoint)) {
	for k := 0; k < h.n; k++ {
		fn(&h.pts[(h.start+k)%len(h.pts)])
	}
}
