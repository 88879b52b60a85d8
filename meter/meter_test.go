package meter

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestConfigValidate(t *testing.T) {
	ok := testConfig(t, "127.0.0.1:1")
	require.NoError(t, ok.Validate())
	for name, mut := range map[string]func(*Config){
		"no meter id":      func(c *Config) { c.MeterID = "" },
		"no token":         func(c *Config) { c.Token = "" },
		"no collectors":    func(c *Config) { c.Collectors = "" },
		"bad dns":          func(c *Config) { c.Collectors = "dns://nohostport" },
		"bad static":       func(c *Config) { c.Collectors = "a,b" },
		"bad srv":          func(c *Config) { c.Collectors = "srv://" },
		"no spool":         func(c *Config) { c.SpoolDir = "" },
		"spool too small":  func(c *Config) { c.MaxSpoolBytes = c.SegmentBytes },
		"fsync":            func(c *Config) { c.Fsync = "sometimes" },
		"full":             func(c *Config) { c.Full = "explode" },
		"compression":      func(c *Config) { c.Compression = "brotli" },
		"cap below base":   func(c *Config) { c.BackoffCap = time.Millisecond; c.BackoffBase = time.Second },
		"half a cert":      func(c *Config) { c.TLS.CertFile = "x.pem" },
		"batch over limit": func(c *Config) { c.BatchMaxRecords = 1 << 20 },
	} {
		c := ok
		mut(&c)
		require.Error(t, c.Validate(), name)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-3", 0},
		{"2", 2 * time.Second},
		{" 7 ", 7 * time.Second},
		{"99999999", maxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"soon", 0},
	} {
		require.Equal(t, tc.want, parseRetryAfter(tc.in, now), tc.in)
	}
}

func TestParseCollectors(t *testing.T) {
	s, err := parseCollectors(" b:2, a:1 ,b:2,https://c:3/ ")
	require.NoError(t, err)
	require.Equal(t, []string{"a:1", "b:2", "https://c:3"}, s.static)
	s, err = parseCollectors("dns://collectors.example:8080")
	require.NoError(t, err)
	require.Equal(t, specDNS, s.kind)
	require.Equal(t, "collectors.example", s.tlsName())
	s, err = parseCollectors("srv://_phloem._tcp.example")
	require.NoError(t, err)
	require.Equal(t, specSRV, s.kind)
}

// TestMeterDeliversInOrder covers the happy path: every record arrives once, in
// sequence order, with the protocol headers.
func TestMeterDeliversInOrder(t *testing.T) {
	for _, comp := range []string{CompressionGzip, CompressionZstd, CompressionNone} {
		t.Run(comp, func(t *testing.T) {
			c := newTestCollector(t)
			cfg := testConfig(t, c.addr())
			cfg.Compression = comp
			cfg.BatchMaxRecords = 37
			reg := prometheus.NewPedanticRegistry()
			m, err := New(cfg, nil, reg)
			require.NoError(t, err)
			runMeter(t, m)
			for i := 1; i <= 500; i++ {
				require.NoError(t, m.Append(context.Background(), fmt.Appendf(nil, `{"n":%d}`, i)))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, m.Flush(ctx))
			require.Equal(t, 500, c.count(cfg.MeterID))
			c.mu.Lock()
			order := c.order[cfg.MeterID]
			hdr := c.lastHdr
			nreq := len(c.reqIDs)
			c.mu.Unlock()
			for i, s := range order {
				require.Equal(t, uint64(i+1), s)
			}
			require.Equal(t, "Bearer secret-token", hdr.Get("Authorization"))
			require.Equal(t, cfg.MeterID, hdr.Get("X-Meter-Id"))
			require.Regexp(t, regexp.MustCompile(`^[0-9a-f]{32}$`), hdr.Get("X-Request-Id"))
			require.GreaterOrEqual(t, nreq, 500/37, "one fresh request id per request")
			st := m.Stats()
			require.Equal(t, uint64(500), st.Acked)
			require.Equal(t, uint64(500), st.AckedSeq)
			require.Equal(t, c.addr(), st.Collector)

			probs, err := testutil.GatherAndLint(reg)
			require.NoError(t, err)
			require.Empty(t, probs)
			require.Equal(t, 500.0, testutil.ToFloat64(m.met.acked))
			require.Equal(t, 1.0, testutil.ToFloat64(m.met.current.WithLabelValues(c.addr())))
		})
	}
}

// TestMeterHonoursRetryAfter: a collector answering 503 + Retry-After: 1 is not
// asked again before a second has passed, and the records arrive afterwards.
func TestMeterHonoursRetryAfter(t *testing.T) {
	c := newTestCollector(t)
	var mu sync.Mutex
	var times []time.Time
	var refused atomic.Int32
	c.decide = func(*http.Request) (int, string) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		if refused.Add(1) <= 2 {
			return http.StatusServiceUnavailable, "1"
		}
		return 0, ""
	}
	cfg := testConfig(t, c.addr())
	m, err := New(cfg, nil, nil)
	require.NoError(t, err)
	runMeter(t, m)
	require.NoError(t, m.Append(context.Background(), []byte(`{}`)))
	require.Eventually(t, func() bool { return c.count(cfg.MeterID) == 1 }, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, times, 3)
	for i := 1; i < len(times); i++ {
		gap := times[i].Sub(times[i-1])
		require.GreaterOrEqual(t, gap, time.Second, "attempt %d came %v after the previous one", i, gap)
		require.Less(t, gap, 2100*time.Millisecond, "Retry-After plus at most its own spread")
	}
	require.Equal(t, uint64(2), m.Stats().Retries)
}

// TestMeterFailoverToSuccessor: when the meter's collector refuses connections,
// the meter sends to its ring successor, and it returns to its owner after
// FailoverHold once the owner is back.
func TestMeterFailoverToSuccessor(t *testing.T) {
	a, b := newTestCollector(t), newTestCollector(t)
	cfg := testConfig(t, a.addr()+","+b.addr())
	m, err := New(cfg, nil, nil)
	require.NoError(t, err)
	owner := Placement(m.holder.Load(), cfg.MeterID, nil)
	own, succ := a, b
	if owner[0] != a.addr() {
		own, succ = b, a
	}
	// Take the owner down but keep its port: a listener that refuses.
	ownAddr := own.addr()
	own.srv.Close()
	runMeter(t, m)
	require.NoError(t, m.Append(context.Background(), []byte(`{"a":1}`)))
	require.Eventually(t, func() bool { return succ.count(cfg.MeterID) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, succ.addr(), m.Stats().Collector)

	// Bring a collector back on the owner's address.
	ln, err := net.Listen("tcp", ownAddr)
	require.NoError(t, err)
	back := newTestCollector(t)
	back.srv.Close()
	srv := &http.Server{Handler: http.HandlerFunc(back.serve)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	time.Sleep(cfg.FailoverHold) // let the hold expire (a timer under test, not sync)
	require.NoError(t, m.Append(context.Background(), []byte(`{"a":2}`)))
	require.Eventually(t, func() bool { return back.count(cfg.MeterID) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, ownAddr, m.Stats().Collector)
}

// fakeResolver serves dns:// and srv:// answers the test changes over time.
type fakeResolver struct {
	mu   sync.Mutex
	ips  []string
	srvs []*net.SRV
	err  error
	n    atomic.Int32
}

func (f *fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	f.n.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	var out []net.IPAddr
	for _, s := range f.ips {
		out = append(out, net.IPAddr{IP: net.ParseIP(s)})
	}
	return out, nil
}

func (f *fakeResolver) LookupSRV(_ context.Context, _, _, name string) (string, []*net.SRV, error) {
	f.n.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return name, f.srvs, f.err
}

func (f *fakeResolver) set(ips ...string) {
	f.mu.Lock()
	f.ips = ips
	f.mu.Unlock()
}

// TestDiscoveryDNSReResolves: dns:// is resolved at start and on its interval; a
// new set installs a ring with a higher version; a failed lookup keeps the set.
func TestDiscoveryDNSReResolves(t *testing.T) {
	c := newTestCollector(t)
	_, port, _ := net.SplitHostPort(c.addr())
	res := &fakeResolver{}
	res.set("127.0.0.1")
	cfg := testConfig(t, "dns://collectors.test:"+port)
	cfg.Resolver = res
	cfg.DiscoveryInterval = 20 * time.Millisecond
	m, err := New(cfg, nil, nil)
	require.NoError(t, err)
	runMeter(t, m)
	require.NoError(t, m.Append(context.Background(), []byte(`{}`)))
	require.Eventually(t, func() bool { return c.count(cfg.MeterID) == 1 }, 10*time.Second, 5*time.Millisecond)
	v1 := m.Stats().RingVersion
	require.Equal(t, uint64(1), v1)

	res.set("127.0.0.1", "127.0.0.2")
	require.Eventually(t, func() bool { return m.Stats().RingVersion == 2 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 2, m.holder.Load().Len())

	res.mu.Lock()
	res.err = fmt.Errorf("SERVFAIL")
	res.mu.Unlock()
	n := res.n.Load()
	require.Eventually(t, func() bool { return res.n.Load() > n+2 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, uint64(2), m.Stats().RingVersion, "a failed lookup keeps the current ring")
}

func TestDiscoverySRV(t *testing.T) {
	spec, err := parseCollectors("srv://_phloem._tcp.example")
	require.NoError(t, err)
	res := &fakeResolver{srvs: []*net.SRV{{Target: "c2.example.", Port: 9000}, {Target: "c1.example.", Port: 9000}}}
	got, err := spec.resolve(context.Background(), res)
	require.NoError(t, err)
	require.Equal(t, []string{"c1.example:9000", "c2.example:9000"}, got)
}

// TestSpoolCorruptionAcceptance is the acceptance scenario: a spool with a torn
// last entry and a corrupted middle entry. The meter starts, reports what it
// skipped (log + metric) and delivers the rest.
func TestSpoolCorruptionAcceptance(t *testing.T) {
	c := newTestCollector(t)
	cfg := testConfig(t, c.addr())
	m, err := New(cfg, nil, nil) // never run: only fill the spool
	require.NoError(t, err)
	for i := 1; i <= 100; i++ {
		require.NoError(t, m.Append(context.Background(), fmt.Appendf(nil, `{"n":%03d}`, i)))
	}
	require.NoError(t, m.Close())

	segs := segFiles(t, cfg.SpoolDir)
	require.Len(t, segs, 1)
	// Each entry is 28 + 9 bytes. Flip a payload byte of record 50 (checksum
	// mismatch), and append half an entry (a write torn by kill -9 or power loss).
	const entryLen = entryHeaderLen + len(`{"n":001}`)
	corruptAt(t, segs[0], int64(49*entryLen+30))
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write(append(entryMagic[:], 1, 2, 3, 4, 10, 0, 0, 0, 101))
	require.NoError(t, err)
	require.NoError(t, f.Close())

	var logs logBuffer
	m, err = New(cfg, logs.logger(), nil)
	require.NoError(t, err)
	require.Equal(t, uint64(2), m.Stats().CorruptEntries)
	require.Contains(t, logs.String(), "torn tail detected and truncated")
	require.Contains(t, logs.String(), "corrupt entry skipped")
	require.Contains(t, logs.String(), "corrupt_entries=2")
	runMeter(t, m)
	require.Eventually(t, func() bool { return c.count(cfg.MeterID) == 99 }, 10*time.Second, 5*time.Millisecond)
	got := c.payloads(cfg.MeterID)
	for i := uint64(1); i <= 100; i++ {
		if i == 50 {
			_, ok := got[i]
			require.False(t, ok, "the corrupt record cannot be delivered")
			continue
		}
		require.Equal(t, fmt.Sprintf(`{"n":%03d}`, i), string(got[i]))
	}
	// New records continue after the last valid one: 101 was torn, never sent.
	require.NoError(t, m.Append(context.Background(), []byte(`{"n":101}`)))
	require.Eventually(t, func() bool { return c.count(cfg.MeterID) == 100 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, `{"n":101}`, string(c.payloads(cfg.MeterID)[101]))
	t.Logf("skipped %d corrupt entries; log:\n%s", m.Stats().CorruptEntries, strings.TrimSpace(logs.String()))
}

// TestMeterShutdownLeavesRestSpooled: with the collector refusing, Run returns
// within ShutdownGrace and the records are delivered by the next meter on the
// same spool dir.
func TestMeterShutdownLeavesRestSpooled(t *testing.T) {
	c := newTestCollector(t)
	var down atomic.Bool
	down.Store(true)
	c.decide = func(*http.Request) (int, string) {
		if down.Load() {
			return http.StatusServiceUnavailable, ""
		}
		return 0, ""
	}
	cfg := testConfig(t, c.addr())
	cfg.ShutdownGrace = 100 * time.Millisecond
	m, err := New(cfg, nil, nil)
	require.NoError(t, err)
	stop := runMeter(t, m)
	for i := range 10 {
		require.NoError(t, m.Append(context.Background(), fmt.Appendf(nil, `{"i":%d}`, i)))
	}
	require.Eventually(t, func() bool { return c.attempts.Load() > 2 }, 5*time.Second, 5*time.Millisecond)
	start := time.Now()
	stop()
	require.Less(t, time.Since(start), 2*time.Second)
	require.ErrorIs(t, m.Append(context.Background(), []byte(`{}`)), ErrClosed)

	down.Store(false)
	m2, err := New(cfg, nil, nil)
	require.NoError(t, err)
	runMeter(t, m2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, m2.Flush(ctx))
	require.Equal(t, 10, c.count(cfg.MeterID))
}

// TestMeterSplitsOn413 checks a collector with lower limits than the meter's.
func TestMeterSplitsOn413(t *testing.T) {
	c := newTestCollector(t)
	c.decide = func(r *http.Request) (int, string) {
		if r.ContentLength > 300 {
			return http.StatusRequestEntityTooLarge, ""
		}
		return 0, ""
	}
	cfg := testConfig(t, c.addr())
	cfg.Compression = CompressionNone
	cfg.Linger = 50 * time.Millisecond
	m, err := New(cfg, nil, nil)
	require.NoError(t, err)
	for i := range 40 {
		require.NoError(t, m.Append(context.Background(), fmt.Appendf(nil, `{"i":%02d}`, i)))
	}
	require.NoError(t, m.Append(context.Background(), []byte(strings.Repeat("x", 400))))
	runMeter(t, m)
	require.Eventually(t, func() bool { return m.Stats().AckedSeq == 41 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, 40, c.count(cfg.MeterID))
	require.Equal(t, uint64(1), m.Stats().Dropped)
	require.Equal(t, 1.0, testutil.ToFloat64(m.met.dropped.WithLabelValues(DropTooLarge)))
}

// TestMeterTooLargeDropLogThrottled: a collector that refuses every record as too
// large makes the meter drop them one by one without backoff; the drop log must
// be throttled (one line, not one per record), while the counter counts all.
func TestMeterTooLargeDropLogThrottled(t *testing.T) {
	c := newTestCollector(t)
	c.decide = func(*http.Request) (int, string) { return http.StatusRequestEntityTooLarge, "" }
	cfg := testConfig(t, c.addr())
	cfg.LogInterval = time.Hour
	var logs logBuffer
	m, err := New(cfg, logs.logger(), nil)
	require.NoError(t, err)
	for i := range 20 {
		require.NoError(t, m.Append(context.Background(), fmt.Appendf(nil, `{"i":%02d}`, i)))
	}
	runMeter(t, m)
	require.Eventually(t, func() bool { return m.Stats().AckedSeq == 20 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, uint64(20), m.Stats().Dropped)
	require.Equal(t, 1, strings.Count(logs.String(), "too large; dropped it"), logs.String())
}
