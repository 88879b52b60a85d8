package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBenchResources is the resource benchmark (not a default test: set
// PHLOEM_METER_BENCH=1). It builds cmd/meter, runs it under /usr/bin/time -v with
// default settings, feeds it 1,000 lines/s of 200 bytes on stdin for
// PHLOEM_METER_BENCH_SECONDS (default 30) against a loopback collector, samples
// the meter's VmRSS every second, then closes stdin (the meter flushes and
// exits) and reports peak RSS, steady-state RSS and CPU share of one core.
//
//	PHLOEM_METER_BENCH=1 go test ./cmd/meter -run BenchResources -v -timeout 10m
func TestBenchResources(t *testing.T) {
	if os.Getenv("PHLOEM_METER_BENCH") == "" {
		t.Skip("set PHLOEM_METER_BENCH=1 to run the resource benchmark")
	}
	secs := 30
	if v, err := strconv.Atoi(os.Getenv("PHLOEM_METER_BENCH_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	const rate, size = 1000, 200
	bin := filepath.Join(t.TempDir(), "meter")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))

	c := newLoopCollector(t)
	argv := []string{"-v", bin, "--stdin", "--collectors", c.addr(), "--spool-dir", t.TempDir(), "--meter-id", "bench"}
	if w := os.Getenv("PHLOEM_METER_BENCH_WRAP"); w != "" { // e.g. "strace -c -f -o /tmp/strace.txt"
		argv = append(append([]string{"-v"}, strings.Fields(w)...), argv[1:]...)
	}
	cmd := exec.Command("/usr/bin/time", argv...)
	cmd.Env = append(os.Environ(), "PHLOEM_TOKEN=test-token")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())

	// The meter is /usr/bin/time's child.
	var meterPid int
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		meterPid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return meterPid > 0
	}, 10*time.Second, 5*time.Millisecond)

	w := bufio.NewWriter(stdin)
	pad := strings.Repeat("x", size)
	tick := time.NewTicker(10 * time.Millisecond)
	start := time.Now()
	var rssSamples []int
	n := 0
	for n < secs*rate {
		<-tick.C
		due := int(time.Since(start).Seconds()*rate) + 1
		for ; n < due && n < secs*rate; n++ {
			line := fmt.Sprintf(`{"n":%d,"pad":"%s"}`, n, pad)
			_, err := w.WriteString(line[:size-1] + "\n")
			require.NoError(t, err)
		}
		require.NoError(t, w.Flush())
		if el := time.Since(start); int(el/time.Second) > len(rssSamples) {
			rssSamples = append(rssSamples, vmRSS(meterPid))
		}
	}
	tick.Stop()
	require.NoError(t, stdin.Close())
	require.NoError(t, cmd.Wait(), stderr.String())
	got, _ := c.state()
	require.Equal(t, secs*rate, got, "every record delivered")

	tv := stderr.String()
	maxRSS := timeField(t, tv, `Maximum resident set size \(kbytes\): (\d+)`)
	user := timeField(t, tv, `User time \(seconds\): ([\d.]+)`)
	sys := timeField(t, tv, `System time \(seconds\): ([\d.]+)`)
	wall := time.Since(start).Seconds()
	steady := 0
	for i, r := range rssSamples {
		if i >= 5 { // after start-up
			steady = max(steady, r)
		}
	}
	cpu := 100 * (user + sys) / wall
	t.Logf("%d records of %d B at %d/s over %ds: /usr/bin/time -v max RSS %.1f MiB (includes start-up); VmRSS sampled every second after the first 5 s: max %.1f MiB (samples %v kB); CPU user %.2fs + sys %.2fs over %.1fs = %.2f%% of one core",
		secs*rate, size, rate, secs, maxRSS/1024, float64(steady)/1024, rssSamples, user, sys, wall, cpu)
	require.LessOrEqual(t, float64(steady)/1024, 30.0, "steady-state RSS")
	require.LessOrEqual(t, cpu, 5.0, "CPU share of one core")
}

func vmRSS(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func timeField(t *testing.T, s, re string) float64 {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	require.NotNil(t, m, "no %s in /usr/bin/time output:\n%s", re, s)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}
