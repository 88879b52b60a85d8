package ops

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile("prometheus/alerts.yml")
	require.NoError(t, err)
	var rf ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true) // a typo in a rule key is an error, as in Prometheus
	require.NoError(t, dec.Decode(&rf))
	require.NotEmpty(t, rf.Groups)
	return rf
}

// phloemMetricRE matches metric names; recording-rule names (phloem:…) have a colon
// right after "phloem" and do not match.
var phloemMetricRE = regexp.MustCompile(`\bphloem_[a-zA-Z0-9_]+`)

// quotedRE matches PromQL string literals (label values such as rule="phloem_ratio"),
// which are removed before looking for metric names.
var quotedRE = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)

func exported() map[string]bool {
	m := make(map[string]bool)
	for _, n := range ExportedMetrics() {
		m[n] = true
	}
	return m
}

// unknownMetrics returns the phloem_* metric names in exprs (outside string
// literals) that ExportedMetrics does not list, and every phloem_* name used.
func unknownMetrics(exprs []string) (unknown, used []string) {
	known := exported()
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, name := range phloemMetricRE.FindAllString(quotedRE.ReplaceAllString(e, `""`), -1) {
			if seen[name] {
				continue
			}
			seen[name] = true
			used = append(used, name)
			if !known[name] {
				unknown = append(unknown, name)
			}
		}
	}
	sort.Strings(used)
	sort.Strings(unknown)
	return unknown, used
}

func checkExprs(t *testing.T, where string, exprs []string) {
	t.Helper()
	unknown, used := unknownMetrics(exprs)
	require.Empty(t, unknown, "%s names metrics the binaries do not export (add them to ops.ExportedMetrics only if a binary really exports them)", where)
	t.Logf("%s: %d expressions, %d distinct phloem_* metrics, all exported: %v", where, len(exprs), len(used), used)
}

func TestUnknownMetricsCheck(t *testing.T) {
	unknown, used := unknownMetrics([]string{
		`sum(rate(phloem_collector_ingress_bytes_total[1m])) / sum(rate(phloem_nope_bytes_total{rule="phloem_ratio"}[1m]))`,
		`phloem:collector_egress_ingress:ratio1m > 3`,
	})
	require.Equal(t, []string{"phloem_nope_bytes_total"}, unknown)
	require.Equal(t, []string{"phloem_collector_ingress_bytes_total", "phloem_nope_bytes_total"}, used)
}

// TestRuleFilesNameExportedMetrics fails if alerts.yml or the Grafana dashboard
// names a phloem_* metric that is not in ExportedMetrics.
func TestRuleFilesNameExportedMetrics(t *testing.T) {
	rf := loadRules(t)
	var exprs []string
	records := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Expr, "group %s: rule without expr", g.Name)
			require.True(t, (r.Record == "") != (r.Alert == ""), "group %s: a rule is either a record or an alert", g.Name)
			if r.For != "" {
				_, err := time.ParseDuration(r.For)
				require.NoError(t, err, "alert %s: for", r.Alert)
			}
			if r.Record != "" {
				records[r.Record] = true
			}
			exprs = append(exprs, r.Expr)
		}
	}
	// Every recording rule referenced is defined in the file.
	for _, e := range exprs {
		for _, rec := range regexp.MustCompile(`phloem:[a-z0-9_:]+`).FindAllString(e, -1) {
			require.True(t, records[rec], "expression uses undefined recording rule %s: %s", rec, e)
		}
	}
	checkExprs(t, "ops/prometheus/alerts.yml", exprs)

	b, err := os.ReadFile("grafana/phloem.json")
	require.NoError(t, err)
	var dash any
	require.NoError(t, json.Unmarshal(b, &dash))
	var dexprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					dexprs = append(dexprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	require.Greater(t, len(dexprs), 10)
	checkExprs(t, "ops/grafana/phloem.json", dexprs)
}

// TestRuleFileMatchesBuiltInRules checks that alerts.yml has one alert per built-in
// default rule, with the same band and for-duration.
func TestRuleFileMatchesBuiltInRules(t *testing.T) {
	rf := loadRules(t)
	type alertRule struct{ expr, forDur string }
	alerts := map[string]alertRule{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" && r.Labels["rule"] != "" {
				alerts[r.Labels["rule"]] = alertRule{r.Expr, r.For}
			}
		}
	}
	cfg := DefaultConfig()
	forOf := func(s string) time.Duration {
		d, err := time.ParseDuration(s)
		require.NoError(t, err)
		return d
	}
	for _, r := range cfg.RatioRules {
		a, ok := alerts[r.Name]
		require.True(t, ok, "alerts.yml has no alert with labels.rule=%s", r.Name)
		require.Contains(t, a.expr, fmt.Sprintf("> %g", r.Max), r.Name)
		require.Contains(t, a.expr, fmt.Sprintf("< %g", r.Min), r.Name)
		require.Equal(t, r.For, forOf(a.forDur), r.Name)
		require.Equal(t, time.Minute, cfg.Window, "alerts.yml uses rate(...[1m])")
		require.Equal(t, float64(defaultMinIngressBytesSec), r.MinIngressBytesPerSec)
	}
	l, ok := alerts[cfg.SubscriptionLeak.Name]
	require.True(t, ok)
	require.Equal(t, cfg.SubscriptionLeak.For, forOf(l.forDur))
	require.Contains(t, l.expr, fmt.Sprintf("> %g", cfg.SubscriptionLeak.Slack))
	g, ok := alerts[cfg.LagGrowth.Name]
	require.True(t, ok)
	require.Contains(t, g.expr, "offset 2m")
	require.Equal(t, 2*time.Minute, cfg.LagGrowth.Window)
	require.Equal(t, cfg.LagGrowth.For, forOf(g.forDur))
	_, ok = alerts[cfg.ZombieMeters.Name]
	require.True(t, ok)
}

// TestExportedMetricsMatchMonitor checks the phloem_ops_* part of ExportedMetrics
// against what a Monitor really registers, lints the names, and checks that the
// default configuration only reads exported metrics.
func TestExportedMetricsMatchMonitor(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Webhook.URL = "http://127.0.0.1:1/hook"
	_, err := New(cfg, Sources{Gatherer: reg}, nil, reg)
	require.NoError(t, err)
	fams, err := reg.Gather()
	require.NoError(t, err)
	var got, want []string
	for _, f := range fams {
		got = append(got, f.GetName())
	}
	for _, n := range ExportedMetrics() {
		if strings.HasPrefix(n, "phloem_ops_") {
			want = append(want, n)
		}
	}
	sort.Strings(want)
	require.Equal(t, want, got)

	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)

	known := exported()
	sels := []Selector{cfg.SubscriptionLeak.Subscribers, cfg.LagGrowth.Lag}
	sels = append(sels, cfg.SubscriptionLeak.Owners...)
	for _, c := range cfg.Components {
		sels = append(append(sels, c.Ingress...), c.Egress...)
	}
	for _, b := range cfg.Breakdowns {
		sels = append(sels, b.Counter)
	}
	for _, g := range cfg.Gauges {
		sels = append(sels, g.Gauge)
	}
	for _, s := range sels {
		require.True(t, known[s.Metric], "DefaultConfig reads %q, not in ExportedMetrics", s.Metric)
	}
}
