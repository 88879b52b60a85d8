package collector

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"phloem/phloem/control"
)

// TestTenantIsolation: A's token can neither write to nor tap B, whatever it
// sends; a disabled tenant gets 403 within 1s of the control record; a rotated
// token's old value gets 401.
func TestTenantIsolation(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.TapHeartbeat = 200 * time.Millisecond })
	tokA := e.addTenant("tenant-a", control.Limits{})
	tokB := e.addTenant("tenant-b", control.Limits{})
	batch, _ := makeBatch(1, 10, 10)

	// B taps its own stream; A taps with every hint of B it can think of.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tapB, closeB := e.openTap(ctx, tokB, "")
	defer closeB()
	tapA, closeA := e.openTap(ctx, tokA, "?tenant=tenant-b&topic=phloem.t.tenant-b")
	defer closeA()
	require.Eventually(t, func() bool { return e.counter("phloem_collector_hub_subscribers") == 2 }, 5*time.Second, 5*time.Millisecond)

	// A writes with B's name everywhere but its token.
	for _, h := range []map[string]string{
		{"X-Tenant": "tenant-b"},
		{"X-Tenant-Id": "tenant-b", "X-Topic": "phloem.t.tenant-b"},
		{"Host": "tenant-b.example"},
	} {
		a := e.do(nil, post{token: tokA, meter: "tenant-b", body: batch, headers: h})
		require.Equal(t, 200, a.code)
	}
	a := e.do(nil, post{token: tokA + " " + tokB, meter: "m", body: batch})
	require.Equal(t, 401, a.code, "two tokens are not a token")

	gotA := consumeAll(t, e.brokers, "phloem.t.tenant-a", 30, 10*time.Second)
	require.Len(t, gotA, 30, "A's writes land on A's topic")
	gotB := consumeAll(t, e.brokers, "phloem.t.tenant-b", 1, 2*time.Second)
	require.Empty(t, gotB, "nothing of A reaches B's topic")

	// B's tap saw nothing; A's tap saw A's records only. Then B writes: A's
	// tap still sees only A.
	require.Equal(t, 200, e.do(nil, post{token: tokB, meter: "b-meter", body: batch}).code)
	readTap := func(sc *bufio.Scanner, n int) []tapLine {
		var out []tapLine
		for len(out) < n && sc.Scan() {
			var l tapLine
			require.NoError(t, json.Unmarshal(sc.Bytes(), &l))
			if l.Heartbeat == 0 {
				out = append(out, l)
			}
		}
		return out
	}
	for _, l := range readTap(tapB, 10) {
		require.Equal(t, "b-meter", l.MeterID, "B's tap holds only B's records")
	}
	require.Equal(t, 200, e.do(nil, post{token: tokA, meter: "a-last", body: batch}).code)
	for _, l := range readTap(tapA, 40) {
		require.NotEqual(t, "b-meter", l.MeterID, "A's tap never holds B's records")
	}

	// Disable B: 403 within 1s of the control record.
	start := time.Now()
	ctl, cancelCtl := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelCtl()
	require.NoError(t, e.writer.PutTenant(ctl, control.Tenant{ID: "tenant-b", TokenHash: control.HashToken(tokB), Status: control.StatusDisabled, Partitions: 1, Version: 2}))
	var took time.Duration
	for {
		a := e.do(nil, post{token: tokB, meter: "b-meter", body: batch})
		if a.code == 403 {
			took = time.Since(start)
			break
		}
		require.Equal(t, 200, a.code)
		require.Less(t, time.Since(start), time.Second, "disabled tenant still accepted after 1s")
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("disabled tenant refused with 403 %s after the control record was written", took)

	// Rotate A's token: the old one gets 401, the new one 200.
	newTok, err := control.NewToken()
	require.NoError(t, err)
	e.putTenant(control.Tenant{ID: "tenant-a", TokenHash: control.HashToken(newTok)})
	require.Equal(t, 401, e.do(nil, post{token: tokA, meter: "m", body: batch}).code)
	require.Equal(t, 200, e.do(nil, post{token: newTok, meter: "m", body: batch}).code)
	// The tap opened with the old token is not a way around it: new taps with it fail.
	req, err := http.NewRequest(http.MethodGet, e.url+PathTap, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tokA)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, 401, resp.StatusCode)
	// And the tap that was open with the old token ends (checked at its next
	// record or heartbeat).
	require.Equal(t, 200, e.do(nil, post{token: newTok, meter: "m", body: batch}).code)
	for tapA.Scan() {
	}
	require.Eventually(t, func() bool { return e.counter("phloem_collector_hub_subscribers") == 0 }, 5*time.Second, 5*time.Millisecond,
		"taps of a rotated token and of a disabled tenant end")
}
