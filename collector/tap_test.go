package collector

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"phloem/phloem/control"
)

// openTap opens GET /v1/tap with a real client and returns a line reader.
func (e *env) openTap(ctx context.Context, token, query string) (*bufio.Scanner, func()) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+PathTap+query, nil)
	require.NoError(e.t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Tenant", "someone-else")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	require.Equal(e.t, 200, resp.StatusCode)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	return sc, func() { _ = resp.Body.Close() }
}

type tapLine struct {
	MeterID   string          `json:"meter_id"`
	Seq       uint64          `json:"seq"`
	RequestID string          `json:"request_id"`
	Payload   json.RawMessage `json:"payload"`
	PayloadB  []byte          `json:"payload_b64"`
	Dropped   uint64          `json:"dropped"`
	Heartbeat int64           `json:"heartbeat"`
}

func TestTapStreamsStoredRecords(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.TapHeartbeat = 200 * time.Millisecond })
	tok := e.addTenant("acme", control.Limits{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sc, closeTap := e.openTap(ctx, tok, "")
	defer closeTap()
	require.Eventually(t, func() bool { return e.counter("phloem_collector_hub_subscribers") == 1 }, 5*time.Second, 5*time.Millisecond)

	batch, recs := makeBatch(1, 5, 20)
	require.Equal(t, 200, e.do(nil, post{token: tok, meter: "m1", rid: "r1", body: batch}).code)
	a := e.do(nil, post{token: tok, meter: "m2", ctype: "application/x-ndjson", body: []byte(`{"x":1}` + "\n")})
	require.Equal(t, 200, a.code)
	var got []tapLine
	for len(got) < 6 && sc.Scan() {
		var l tapLine
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), sc.Text())
		if l.Heartbeat != 0 {
			continue
		}
		got = append(got, l)
	}
	require.Len(t, got, 6)
	for i := range 5 {
		require.Equal(t, "m1", got[i].MeterID)
		require.Equal(t, recs[i].Seq, got[i].Seq)
		require.Equal(t, "r1", got[i].RequestID)
		require.Equal(t, recs[i].Payload, got[i].PayloadB, "non-JSON payloads travel base64")
	}
	require.JSONEq(t, `{"x":1}`, string(got[5].Payload))
	// Idle: heartbeats arrive.
	require.True(t, sc.Scan())
	require.Contains(t, sc.Text(), "heartbeat")
	closeTap()
	require.Eventually(t, func() bool { return e.counter("phloem_collector_hub_subscribers") == 0 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, float64(0), e.counter("phloem_collector_hubs"))
}

// TestRingDropsOldest: the subscriber ring keeps the newest records and reports
// how many it dropped.
func TestRingDropsOldest(t *testing.T) {
	m := newMetrics(10)
	h := newHubs(4, 10, m)
	s, err := h.subscribe("t")
	require.NoError(t, err)
	items := make([]tapItem, 10)
	for i := range items {
		items[i] = tapItem{line: []byte(fmt.Sprint(i))}
	}
	h.publish("t", items[:3])
	h.publish("t", items[3:])
	got, dropped := s.take(nil)
	require.Equal(t, uint64(6), dropped)
	require.Len(t, got, 4)
	for i, it := range got {
		require.Equal(t, fmt.Sprint(6+i), string(it.line), "oldest dropped first")
	}
	got, dropped = s.take(got[:0])
	require.Empty(t, got)
	require.Zero(t, dropped)
	h.unsubscribe(s)
	h.unsubscribe(s) // idempotent
	require.Zero(t, h.count())
	require.False(t, h.has("t"), "hub removed with its last subscriber")
	h.publish("t", items) // no hub: nothing happens
	for range 3 {
		_, err = h.subscribe("t")
		require.NoError(t, err)
	}
	h2 := newHubs(4, 3, m)
	for range 3 {
		_, err = h2.subscribe("x")
		require.NoError(t, err)
	}
	_, err = h2.subscribe("y")
	require.ErrorIs(t, err, ErrTooManyTaps)
}

// TestSlowTapIsToldAndNeverSlowsIngest: a tap that stops reading loses its
// oldest records (counted), then learns how many with a {"dropped":N} line,
// while ingest keeps answering 200.
func TestSlowTapIsToldAndNeverSlowsIngest(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.TapBuffer = 8; c.TapWriteTimeout = 20 * time.Second })
	tok := e.addTenant("acme", control.Limits{})
	conn, err := net.Dial("tcp", e.addr)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.(*net.TCPConn).SetReadBuffer(4096))
	_, err = fmt.Fprintf(conn, "GET /v1/tap HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.counter("phloem_collector_hub_subscribers") == 1 }, 5*time.Second, 5*time.Millisecond)

	batch, _ := makeBatch(1, 500, 2000)
	var worst time.Duration
	for i := 0; e.counter("phloem_collector_tap_dropped_records_total") == 0; i++ {
		require.Less(t, i, 100, "tap never dropped")
		s := time.Now()
		require.Equal(t, 200, e.do(nil, post{token: tok, meter: "m1", body: batch}).code)
		worst = max(worst, time.Since(s))
	}
	dropped := e.counter("phloem_collector_tap_dropped_records_total")
	t.Logf("stalled tap: %v records dropped; slowest ingest meanwhile %s", dropped, worst)

	// Now read: a {"dropped":N} line must come.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(conn, 1<<20)
	found := false
	for !found {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		found = strings.HasPrefix(line, `{"dropped":`)
	}
	require.True(t, found)
}

// TestTapCycles: 10,000 tap connect/disconnect cycles of three kinds (client
// that cancels, client that vanishes before reading, client that reads the
// headers and hangs up) while ingest runs; afterwards no subscriber, hub or
// goroutine is left, and the egress/ingress byte ratio is back to its value
// before the cycles.
// serverGoroutines counts goroutines serving HTTP connections or running
// collector code, the ones a leaked tap would keep. (The total also moves with
// franz-go's connection pool, which opens and reaps broker connections on its
// own schedule.)
func serverGoroutines() (ours, total int) {
	b := make([]byte, 8<<20)
	b = b[:runtime.Stack(b, true)]
	for _, g := range strings.Split(string(b), "\n\n") {
		total++
		if strings.Contains(g, "net/http.(*conn).serve") || strings.Contains(g, "collector.(*Collector).serve") ||
			strings.Contains(g, "collector.(*subscriber)") || strings.Contains(g, "net/http.(*persistConn)") {
			ours++
		}
	}
	return ours, total
}

func TestTapCycles(t *testing.T) {
	cycles := 10_000
	if testing.Short() {
		cycles = 1000
	}
	e := newEnv(t, nil, nil)
	tok := e.addTenant("acme", control.Limits{})
	batch, _ := makeBatch(1, 50, 100)
	ratio := func() float64 {
		in0 := e.counter("phloem_collector_ingress_bytes_total")
		out0 := e.counter("phloem_collector_egress_bytes_total")
		for range 20 {
			require.Equal(t, 200, e.do(nil, post{token: tok, meter: "ratio", body: batch}).code)
		}
		return (e.counter("phloem_collector_egress_bytes_total") - out0) / (e.counter("phloem_collector_ingress_bytes_total") - in0)
	}
	r0 := ratio()
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(50 * time.Millisecond) // let the closed connections' server goroutines exit
	base, baseTotal := serverGoroutines()

	stopIngest := make(chan struct{})
	var ingestWG sync.WaitGroup
	ingestWG.Add(1)
	go func() {
		defer ingestWG.Done()
		for {
			select {
			case <-stopIngest:
				return
			default:
			}
			e.do(nil, post{token: tok, meter: "bg", body: batch})
		}
	}()

	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failures atomic.Int64
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	cl := &http.Client{Transport: tr}
	reqLine := fmt.Sprintf("GET /v1/tap HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(cycles) {
					return
				}
				var err error
				switch i % 3 {
				case 0: // a client that cancels after the stream opened
					ctx, cancel := context.WithCancel(context.Background())
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+PathTap, nil)
					req.Header.Set("Authorization", "Bearer "+tok)
					var resp *http.Response
					if resp, err = cl.Do(req); err == nil {
						cancel()
						_ = resp.Body.Close()
					}
					cancel()
				case 1: // vanishes without reading a byte
					var c net.Conn
					if c, err = net.Dial("tcp", e.addr); err == nil {
						_, err = io.WriteString(c, reqLine)
						_ = c.Close()
					}
				case 2: // reads the response headers, then hangs up
					var c net.Conn
					if c, err = net.Dial("tcp", e.addr); err == nil {
						if _, err = io.WriteString(c, reqLine); err == nil {
							_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
							var resp *http.Response
							if resp, err = http.ReadResponse(bufio.NewReader(c), nil); err == nil && resp.StatusCode != 200 {
								err = fmt.Errorf("status %d", resp.StatusCode)
							}
						}
						_ = c.Close()
					}
				}
				if err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopIngest)
	ingestWG.Wait()
	require.Zero(t, failures.Load())
	tapBytes := e.counter("phloem_collector_egress_bytes_total", "destination", "tap")

	require.Eventually(t, func() bool { return e.counter("phloem_collector_hub_subscribers") == 0 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, float64(0), e.counter("phloem_collector_hubs"))
	tr.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	var g, gTotal int
	deadline := time.Now().Add(10 * time.Second)
	for g, gTotal = serverGoroutines(); g > base && time.Now().Before(deadline); g, gTotal = serverGoroutines() {
		time.Sleep(20 * time.Millisecond)
	}
	require.LessOrEqual(t, g, base, "HTTP/collector goroutines back to baseline")
	r1 := ratio()
	require.InDelta(t, r0, r1, 1e-9)
	t.Logf("%d tap cycles in %s (%.0f/s); tap egress during cycles %.0f bytes; subscribers 0, hubs 0; http+collector goroutines %d (baseline %d), all goroutines %d (baseline %d); egress/ingress ratio before %.3f after %.3f",
		cycles, elapsed.Round(time.Millisecond), float64(cycles)/elapsed.Seconds(), tapBytes, g, base, gTotal, baseTotal, r0, r1)
}
