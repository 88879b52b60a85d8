package ops

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// chromiumPath finds Debian's chromium (installed by .ci/run). Under CI=true a
// missing browser fails the test; elsewhere the test is skipped with the install
// command.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "headless Chromium not found; install it with: apt-get install -y chromium"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func chromiumArgs(t *testing.T) []string {
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(),
		"--virtual-time-budget=5000",
	}
}

func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(chromiumArgs(t), args...)...)
	cmd.Stderr = nil // Chromium is chatty on stderr (dbus, GPU); the DOM is on stdout
	out, err := cmd.Output()
	require.NoError(t, err, "chromium %v", args)
	return out
}

// TestStatusPageInBrowser loads the status page in headless Chromium while the
// collector_ratio alert fires (leaking tap subscriber) and asserts, on the DOM the
// page's JavaScript built, that the charts hold data points, the ratio chart draws
// the expected band, and the firing alert is listed. With PHLOEM_SCREENSHOT=1 it
// also writes testdata/status.png.
func TestStatusPageInBrowser(t *testing.T) {
	bin := chromiumPath(t)
	h := newTestHub(t)
	m, err := New(testConfig(), Sources{Gatherer: h.reg, Instance: "browser-test"}, nil, h.reg)
	require.NoError(t, err)
	c := newClock()
	// Some healthy history first, so the chart shows the ratio leaving the band.
	for range 30 {
		h.publish("acme", 8_000)
		h.publish("globex", 2_000)
		m.Tick(c.tick(time.Second))
	}
	_, states := leakScenario(t, m, h, c)
	require.Equal(t, StateFiring, states[len(states)-1])
	// A few more points while firing.
	for range 5 {
		h.publish("acme", 8_000)
		h.publish("globex", 2_000)
		m.Tick(c.tick(time.Second))
	}
	points := len(m.Status().Times)
	base := serveAdmin(t, m, h.reg)
	url := base + "/status/"

	dom := string(runChromium(t, bin, "--dump-dom", url))
	require.Contains(t, dom, `data-loaded="true"`, "the page's script did not render the API data:\n%s", dom)

	// The firing alert is listed, with its rule and state.
	require.Regexp(t, `<li class="alert state-firing" data-rule="collector_ratio" data-state="firing">`, dom)
	require.Regexp(t, `<li class="alert state-firing" data-rule="subscription_leak" data-state="firing">`, dom)

	// Every chart series carries its data points.
	series := regexp.MustCompile(`<polyline class="series s-(\w+)" data-series="(\w+)" data-points="(\d+)"`).FindAllStringSubmatch(dom, -1)
	found := map[string]int{}
	for _, s := range series {
		n, err := strconv.Atoi(s[3])
		require.NoError(t, err)
		found[s[2]] += n
	}
	t.Logf("history points %d; chart series data-points: %v", points, found)
	// The collector's rates exist from the second tick on; the ratio too (above the
	// idle floor). phloem's counters are absent in this process: no points.
	require.GreaterOrEqual(t, found["ingress"], points-1)
	require.GreaterOrEqual(t, found["egress"], points-1)
	require.GreaterOrEqual(t, found["ratio"], points-1)
	require.GreaterOrEqual(t, found["hub_subscribers"], points)
	require.Regexp(t, `<circle class="pt s-ratio" data-series="ratio" data-value="2"`, dom, "latest ratio point is 2 (kafka + one leaked tap)")
	require.Regexp(t, `<rect class="band state-firing" data-rule="collector_ratio" data-min="0.9" data-max="1.5"`, dom)
	// Tenants with their rates.
	require.Regexp(t, `<tr data-label="acme"><td>acme</td><td class="num">8\.0kB/s</td></tr>`, dom)

	if os.Getenv("PHLOEM_SCREENSHOT") != "" {
		shot, err := filepath.Abs(filepath.Join("testdata", "status.png"))
		require.NoError(t, err)
		runChromium(t, bin, "--screenshot="+shot, "--window-size=1280,1700", url)
		fi, err := os.Stat(shot)
		require.NoError(t, err)
		t.Logf("screenshot written to %s (%d bytes)", shot, fi.Size())
	}
}
