package loadtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"strings"
)

// series is one line of a chart.
type series struct {
	name  string
	color string
	x, y  []float64
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// svgChart renders a line chart as inline SVG (no script, no external resource).
// Vertical dashed lines mark the events.
func svgChart(title, unit string, ss []series, events []EventLog, xmax float64) template.HTML {
	const w, h, ml, mr, mt, mb = 900.0, 260.0, 60.0, 150.0, 28.0, 30.0
	ymax := 0.0
	for _, s := range ss {
		for _, v := range s.y {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				ymax = math.Max(ymax, v)
			}
		}
	}
	if ymax == 0 {
		ymax = 1
	}
	ymax = niceCeil(ymax)
	if xmax <= 0 {
		xmax = 1
	}
	px := func(x float64) float64 { return ml + x/xmax*(w-ml-mr) }
	py := func(y float64) float64 { return mt + (1-y/ymax)*(h-mt-mb) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %g %g" width="%g" height="%g" data-title="%s">`, w, h, w, h, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<text x="%g" y="18" class="title">%s</text>`, ml, template.HTMLEscapeString(title+" ("+unit+")"))
	// Axes and grid.
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" class="grid"/><text x="%g" y="%.1f" class="tick" text-anchor="end">%s</text>`,
			ml, w-mr, py(y), py(y), ml-4, py(y)+4, fmtNum(y))
	}
	step := niceCeil(xmax / 10)
	for x := 0.0; x <= xmax+1e-9; x += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" class="tick" text-anchor="middle">%gs</text>`, px(x), h-mb+16, x)
	}
	fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%g" y2="%g" class="axis"/>`, ml, w-mr, h-mb, h-mb)
	for _, e := range events {
		if e.T > xmax {
			continue
		}
		label := e.Action
		if strings.Contains(e.Action, "collector") || e.Action == primDNSFirst {
			label += fmt.Sprintf(" c%d", e.Collector)
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%g" y2="%g" class="event"><title>%s at %.1fs</title></line>`,
			px(e.T), px(e.T), mt, h-mb, template.HTMLEscapeString(label), e.T)
	}
	for i, s := range ss {
		color := s.color
		if color == "" {
			color = palette[i%len(palette)]
		}
		var pts strings.Builder
		for j := range s.x {
			if j < len(s.y) && !math.IsNaN(s.y[j]) {
				fmt.Fprintf(&pts, "%.1f,%.1f ", px(s.x[j]), py(s.y[j]))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s" data-series="%s"/>`, color, pts.String(), template.HTMLEscapeString(s.name))
		fmt.Fprintf(&b, `<rect x="%g" y="%g" width="10" height="10" fill="%s"/><text x="%g" y="%g" class="legend">%s</text>`,
			w-mr+10, mt+float64(i)*16, color, w-mr+24, mt+float64(i)*16+9, template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // built from escaped parts above
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func col(secs []Second, f func(Second) float64) (x, y []float64) {
	for _, s := range secs {
		x = append(x, s.T)
		y = append(y, f(s))
	}
	return x, y
}

func mk(name string, secs []Second, f func(Second) float64) series {
	x, y := col(secs, f)
	return series{name: name, x: x, y: y}
}

type chartView struct {
	SVG template.HTML
}

// renderHTML renders the self-contained report page: summary tables and inline
// SVG charts, plus the full report as JSON in a script element.
func renderHTML(r *Report) ([]byte, error) {
	secs := r.Seconds
	xmax := 0.0
	if len(secs) > 0 {
		xmax = secs[len(secs)-1].T
	}
	var charts []template.HTML
	charts = append(charts, svgChart("Records per second", "records/s", []series{
		mk("appended", secs, func(s Second) float64 { return float64(s.Appended) }),
		mk("acked by collectors", secs, func(s Second) float64 { return float64(s.Acked) }),
		mk("delivered to sink", secs, func(s Second) float64 { return float64(s.SinkRecords) }),
	}, r.Events, xmax))
	ncoll := 0
	for _, s := range secs {
		ncoll = max(ncoll, len(s.Share))
	}
	var share []series
	for i := 0; i < ncoll; i++ {
		share = append(share, mk(fmt.Sprintf("c%d", i), secs, func(s Second) float64 {
			if i < len(s.Share) {
				return s.Share[i]
			}
			return 0
		}))
	}
	charts = append(charts, svgChart("Per-collector share of accepted requests", "fraction", share, r.Events, xmax))
	var tx, tr, ta []float64
	for _, t := range r.Ticks {
		tx = append(tx, t.T)
		tr = append(tr, float64(t.Retries))
		ta = append(ta, float64(t.Attempts))
	}
	charts = append(charts, svgChart("Reconnect (retry) attempts per 100 ms", "attempts/100ms", []series{
		{name: "retries", x: tx, y: tr}, {name: "all attempts", x: tx, y: ta, color: "#bbbbbb"},
	}, r.Events, xmax))
	charts = append(charts, svgChart("Refusals and errors per second", "requests/s", []series{
		mk("503", secs, func(s Second) float64 { return float64(s.S503) }),
		mk("429", secs, func(s Second) float64 { return float64(s.S429) }),
		mk("connection errors", secs, func(s Second) float64 { return float64(s.ConnErrors) }),
		mk("other status", secs, func(s Second) float64 { return float64(s.OtherStatus) }),
	}, r.Events, xmax))
	charts = append(charts, svgChart("Ingest latency (meter → collector 200)", "ms", []series{
		mk("p50", secs, func(s Second) float64 { return s.IngestP50 }),
		mk("p90", secs, func(s Second) float64 { return s.IngestP90 }),
		mk("p99", secs, func(s Second) float64 { return s.IngestP99 }),
	}, r.Events, xmax))
	charts = append(charts, svgChart("End-to-end latency (Append → sink)", "ms", []series{
		mk("p50", secs, func(s Second) float64 { return s.E2EP50 }),
		mk("p90", secs, func(s Second) float64 { return s.E2EP90 }),
		mk("p99", secs, func(s Second) float64 { return s.E2EP99 }),
	}, r.Events, xmax))
	charts = append(charts, svgChart("Collector hub egress/ingress byte ratio", "ratio", []series{
		mk("egress/ingress", secs, func(s Second) float64 {
			if s.IngressBytes == 0 {
				return math.NaN()
			}
			return s.Ratio
		}),
	}, r.Events, xmax))
	charts = append(charts, svgChart("Meters and collectors", "count", []series{
		mk("meters started", secs, func(s Second) float64 { return float64(s.MetersStarted) }),
		mk("meters connected", secs, func(s Second) float64 { return float64(s.MetersConnected) }),
		mk("pending at meters", secs, func(s Second) float64 { return float64(s.Pending) }),
		mk("outstanding at sink", secs, func(s Second) float64 { return float64(s.Outstanding) }),
	}, r.Events, xmax))
	charts = append(charts, svgChart("Collectors up", "count", []series{
		mk("collectors up", secs, func(s Second) float64 { return float64(s.CollectorsUp) }),
	}, r.Events, xmax))

	data, err := json.Marshal(r) // escapes <, >, & so it is safe inside <script>
	if err != nil {
		return nil, fmt.Errorf("cannot encode report data: %w", err)
	}
	sum, err := json.MarshalIndent(struct {
		Verdict Verdict `json:"verdict"`
		Summary Summary `json:"summary"`
	}{r.Verdict, r.Summary}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot encode summary: %w", err)
	}
	var buf bytes.Buffer
	err = reportTmpl.Execute(&buf, map[string]any{
		"R": r, "Charts": charts, "Data": template.JS(data), //nolint:gosec // json.Marshal HTML-escapes
		"SummaryJSON": string(sum),
	})
	if err != nil {
		return nil, fmt.Errorf("cannot render HTML report: %w", err)
	}
	return buf.Bytes(), nil
}

var reportTmpl = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>loadtest {{.R.Scenario}}: {{if .R.Pass}}PASS{{else}}FAIL{{end}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:20px;color:#222}
h1 .pass{color:#2ca02c}h1 .fail{color:#d62728}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}
tr.fail td{background:#fde0e0}tr.pass td{background:#e6f5e6}
svg.chart{display:block;margin:12px 0;border:1px solid #eee}
svg .title{font-size:14px;font-weight:600}svg .tick,svg .legend{font-size:11px;fill:#444}
svg .grid{stroke:#eee}svg .axis{stroke:#888}svg .event{stroke:#999;stroke-dasharray:4 3}
pre{background:#f7f7f7;padding:8px;font-size:12px;max-height:400px;overflow:auto}
</style></head><body>
<h1>{{.R.Scenario}} — {{if .R.Pass}}<span class="pass">PASS</span>{{else}}<span class="fail">FAIL</span>{{end}}</h1>
<p>{{.R.Description}}</p>
<p>{{.R.Meters}} meters, {{.R.Collectors}} collectors, {{.R.Phloems}} phloem consumers; started {{.R.Started.Format "2006-01-02 15:04:05 MST"}}, {{printf "%.1f" .R.WallSeconds}} s wall clock.</p>
<h2>SLOs</h2>
<table><tr><th>objective</th><th>limit</th><th>value</th><th>result</th></tr>
{{range .R.SLOs}}<tr class="{{if .Pass}}pass{{else}}fail{{end}}"><td>{{.Name}}</td><td>{{if .Min}}&ge;{{else}}&le;{{end}} {{.Limit}}</td><td>{{printf "%.3f" .Value}}</td><td>{{if .Pass}}pass{{else}}FAIL{{end}}</td></tr>
{{end}}</table>
<h2>Verification</h2>
<table>
<tr><th>produced</th><td>{{.R.Verdict.Produced}}</td></tr>
<tr><th>delivered (unique)</th><td>{{.R.Verdict.Delivered}}</td></tr>
<tr><th>lost</th><td>{{.R.Verdict.Lost}}</td></tr>
<tr><th>duplicates</th><td>{{.R.Verdict.Duplicates}} ({{.R.Verdict.MetersWithDups}} meters)</td></tr>
<tr><th>reordered</th><td>{{.R.Verdict.Reordered}}</td></tr>
<tr><th>seq header missing / mismatched</th><td>{{.R.Verdict.SeqMissing}} / {{.R.Verdict.SeqMismatch}}</td></tr>
</table>
{{if .R.Verdict.LostExamples}}<p>Lost examples: {{range .R.Verdict.LostExamples}}{{.}} {{end}}</p>{{end}}
{{if .R.Notes}}<h2>Notes</h2><ul>{{range .R.Notes}}<li>{{.}}</li>{{end}}</ul>{{end}}
<h2>Charts</h2>
{{range .Charts}}{{.}}
{{end}}
<h2>Events</h2>
<table><tr><th>t (s)</th><th>action</th><th>collector</th><th>took (ms)</th><th>error</th></tr>
{{range .R.Events}}<tr><td>{{printf "%.1f" .T}}</td><td>{{.Action}}</td><td>{{.Collector}}</td><td>{{printf "%.1f" .TookMs}}</td><td>{{.Error}}</td></tr>
{{end}}</table>
<h2>Summary</h2>
<pre>{{.SummaryJSON}}</pre>
<script type="application/json" id="report-data">{{.Data}}</script>
</body></html>
`))
