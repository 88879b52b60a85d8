package collector

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"phloem/collector/wire"
	"phloem/phloem/control"
)

// TestStatusCodes drives every answer of the ingest protocol through a real
// HTTP client against a real loopback server and a kfake broker.
func TestStatusCodes(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) {
		c.Limits = wire.Limits{MaxRecords: 1000, MaxRecordBytes: 4096, MaxBatchBytes: 1 << 20}
		c.MaxBodyBytes = 512 << 10
		c.BlockedMeters = []string{"bad-meter"}
	})
	tok := e.addTenant("acme", control.Limits{})
	tokSlow := e.addTenant("slowpoke", control.Limits{RecordsPerSec: 10})
	tokOff := e.addTenant("gone", control.Limits{})
	e.putTenant(control.Tenant{ID: "gone", TokenHash: control.HashToken(tokOff), Status: control.StatusDisabled})
	batch, _ := makeBatch(1, 10, 100)

	t.Run("200", func(t *testing.T) {
		a := e.do(nil, post{token: tok, meter: "m1", rid: "req-1", body: batch})
		require.Equal(t, 10, accepted(t, a))
		require.Equal(t, "req-1", a.rid, "X-Request-Id echoed")
		a = e.do(nil, post{token: tok, meter: "m1", body: batch})
		require.Equal(t, 200, a.code)
		require.Len(t, a.rid, 16, "X-Request-Id generated when missing")
	})
	t.Run("200 ndjson gzip and zstd", func(t *testing.T) {
		nd := []byte("{\"a\":1}\n{\"b\":2}\n\n{\"c\":3}\n")
		for _, enc := range []string{"", "gzip", "zstd"} {
			body, err := wire.Compress(nil, orIdentity(enc), nd)
			require.NoError(t, err)
			a := e.do(nil, post{token: tok, meter: "curl", ctype: "application/x-ndjson; charset=utf-8", enc: enc, body: body})
			require.Equal(t, 3, accepted(t, a), enc)
		}
	})
	t.Run("400", func(t *testing.T) {
		a := e.do(nil, post{token: tok, body: batch})
		require.Equal(t, 400, a.code, "missing meter id")
		require.Contains(t, a.body, "X-Meter-Id")
		a = e.do(nil, post{token: tok, meter: "bad meter id!", body: batch})
		require.Equal(t, 400, a.code)
		bad := append([]byte(nil), batch...)
		bad[20] ^= 0xff
		a = e.do(nil, post{token: tok, meter: "m1", body: bad})
		require.Equal(t, 400, a.code)
		require.Contains(t, a.body, "checksum", "says what")
		require.Contains(t, a.body, "at byte", "says where")
		a = e.do(nil, post{token: tok, meter: "m1", ctype: wire.ContentTypeNDJSON, body: []byte("{\"ok\":1}\nnot json\n")})
		require.Equal(t, 400, a.code)
		require.Contains(t, a.body, "line 2")
		a = e.do(nil, post{token: tok, meter: "m1", enc: "gzip", body: []byte("this is not gzip")})
		require.Equal(t, 400, a.code, a.body)
	})
	t.Run("401", func(t *testing.T) {
		a := e.do(nil, post{token: "phl_nope", meter: "m1", body: batch})
		require.Equal(t, 401, a.code)
		a = e.do(nil, post{meter: "m1", body: batch})
		require.Equal(t, 401, a.code)
	})
	t.Run("403", func(t *testing.T) {
		a := e.do(nil, post{token: tokOff, meter: "m1", body: batch})
		require.Equal(t, 403, a.code)
		a = e.do(nil, post{token: tok, meter: "bad-meter", body: batch})
		require.Equal(t, 403, a.code)
	})
	t.Run("413", func(t *testing.T) {
		big, _ := makeBatch(1, 2000, 10) // over MaxRecords=1000
		a := e.do(nil, post{token: tok, meter: "m1", body: big})
		require.Equal(t, 413, a.code, a.body)
		require.Contains(t, a.body, "max_records")
		huge, _ := makeBatch(1, 1, 5000) // over MaxRecordBytes
		a = e.do(nil, post{token: tok, meter: "m1", body: huge})
		require.Equal(t, 413, a.code, a.body)
		// A gzip bomb: 600 KiB raw limit is fine, 1 MiB decompressed limit is not.
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		_, _ = zw.Write(bytes.Repeat([]byte("x"), 8<<20))
		require.NoError(t, zw.Close())
		a = e.do(nil, post{token: tok, meter: "m1", enc: "gzip", body: zb.Bytes()})
		require.Equal(t, 413, a.code, a.body)
		require.Contains(t, a.body, "decompression")
		a = e.do(nil, post{token: tok, meter: "m1", body: make([]byte, 600<<10)})
		require.Equal(t, 413, a.code, a.body)
	})
	t.Run("415", func(t *testing.T) {
		a := e.do(nil, post{token: tok, meter: "m1", ctype: "text/plain", body: batch})
		require.Equal(t, 415, a.code)
		a = e.do(nil, post{token: tok, meter: "m1", enc: "br", body: batch})
		require.Equal(t, 415, a.code)
	})
	t.Run("429", func(t *testing.T) {
		a := e.do(nil, post{token: tokSlow, meter: "m1", body: batch})
		require.Equal(t, 200, a.code, "first batch spends the burst")
		big, _ := makeBatch(100, 100, 10)
		a = e.do(nil, post{token: tokSlow, meter: "m1", body: big})
		require.Equal(t, 200, a.code, "a positive balance admits any batch, into debt")
		a = e.do(nil, post{token: tokSlow, meter: "m1", body: batch})
		require.Equal(t, 429, a.code)
		ra, err := strconv.Atoi(a.retryAfter)
		require.NoError(t, err)
		require.GreaterOrEqual(t, ra, 9, "100 records of debt at 10/s")
		require.LessOrEqual(t, ra, 12)
		// Another tenant is not affected.
		require.Equal(t, 200, e.do(nil, post{token: tok, meter: "m1", body: batch}).code)
	})

	require.Equal(t, float64(1), e.counter("phloem_collector_rejected_requests_total", "reason", reasonRateLimited))
	require.GreaterOrEqual(t, e.counter("phloem_collector_rejected_requests_total", "reason", reasonTooLarge), float64(4))
	require.Equal(t, float64(0), e.counter("phloem_collector_requests_total", "code", "500"))
	lintMetrics(t, e.reg)
}

func orIdentity(enc string) string {
	if enc == "" {
		return "identity"
	}
	return enc
}

// TestStatus503Overload fills the single in-flight slot with a request whose
// body trickles in, then checks that further requests get 503 with a
// Retry-After that varies (spread), and that the slot frees afterwards.
func TestStatus503Overload(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.MaxInflightRequests = 1 })
	tok := e.addTenant("acme", control.Limits{})
	batch, _ := makeBatch(1, 5, 50)

	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, e.url+PathIngest, pr)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set(HeaderXMeterID, "slow")
	req.Header.Set("Content-Type", wire.ContentTypeBatch)
	slow := make(chan answer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- answer{code: -1, body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slow <- answer{code: resp.StatusCode, body: string(b)}
	}()
	_, err = pw.Write(batch[:10])
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.counter("phloem_collector_inflight_requests") == 1 }, 5*time.Second, 5*time.Millisecond)

	seen := map[string]bool{}
	for range 20 {
		a := e.do(nil, post{token: tok, meter: "m2", body: batch})
		require.Equal(t, 503, a.code, a.body)
		ra, err := strconv.Atoi(a.retryAfter)
		require.NoError(t, err)
		require.GreaterOrEqual(t, ra, 1)
		seen[a.retryAfter] = true
	}
	require.Greater(t, len(seen), 1, "Retry-After must be spread, not a constant: %v", seen)

	_, err = pw.Write(batch[10:])
	require.NoError(t, err)
	require.NoError(t, pw.Close())
	a := <-slow
	require.Equal(t, 200, a.code, a.body)
	require.Equal(t, 200, e.do(nil, post{token: tok, meter: "m2", body: batch}).code)
	require.Equal(t, float64(20), e.counter("phloem_collector_rejected_requests_total", "reason", reasonOverRequests))
}

// TestStatus503Kafka makes the broker fail every produce request: the answer is
// 503 with Retry-After, never 200, and the next batch after recovery is 200.
func TestStatus503Kafka(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.IngestTimeout = time.Second })
	tok := e.addTenant("acme", control.Limits{})
	batch, _ := makeBatch(1, 5, 50)
	require.Equal(t, 200, e.do(nil, post{token: tok, meter: "m1", body: batch}).code, "topic created, producer warmed")
	ingressOK := e.counter("phloem_collector_ingress_records_total", "tenant", "acme")
	require.Equal(t, float64(5), ingressOK)

	var failing atomic.Bool
	failing.Store(true)
	e.cluster.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		if !failing.Load() {
			e.cluster.DropControl()
			return nil, nil, false
		}
		e.cluster.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	for range 3 {
		a := e.do(nil, post{token: tok, meter: "m1", body: batch})
		require.Equal(t, 503, a.code, a.body)
		require.NotEmpty(t, a.retryAfter)
	}
	// Ingress counts accepted records only: refused batches leave it (and the
	// egress/ingress ratio the ops monitor watches) untouched.
	require.Equal(t, ingressOK, e.counter("phloem_collector_ingress_records_total", "tenant", "acme"))
	require.Equal(t, e.counter("phloem_collector_egress_bytes_total", "destination", "kafka"), e.counter("phloem_collector_ingress_bytes_total"))
	failing.Store(false)
	start := time.Now()
	require.Eventually(t, func() bool {
		return e.do(nil, post{token: tok, meter: "m1", body: batch}).code == 200
	}, 10*time.Second, 100*time.Millisecond)
	t.Logf("first 200 %s after the broker stopped failing", time.Since(start).Round(time.Millisecond))
	require.GreaterOrEqual(t, e.counter("phloem_collector_rejected_requests_total", "reason", reasonDeadline)+
		e.counter("phloem_collector_rejected_requests_total", "reason", reasonKafkaUnavailable), float64(3))
}

// TestSlowHeadersCutOff: a client sending its headers at 1 byte/s is cut off by
// ReadHeaderTimeout.
func TestSlowHeadersCutOff(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.ReadHeaderTimeout = 500 * time.Millisecond })
	conn, err := net.Dial("tcp", e.addr)
	require.NoError(t, err)
	defer conn.Close()
	start := time.Now()
	msg := "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 100)
	var writeErr error
	for i := 0; i < len(msg); i++ {
		if _, writeErr = conn.Write([]byte{msg[i]}); writeErr != nil {
			break
		}
		// Detect the close early rather than after 100 s of writing.
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		var b [1]byte
		if _, err := conn.Read(b[:]); err != nil && !isTimeout(err) {
			writeErr = err
			break
		}
	}
	elapsed := time.Since(start)
	require.Error(t, writeErr, "server must close the connection")
	require.Less(t, elapsed, 5*time.Second, "cut off after ReadHeaderTimeout, not after the whole header")
	t.Logf("slow-header client cut off after %s (ReadHeaderTimeout 500ms)", elapsed.Round(time.Millisecond))
}

// TestHugeBodyRefusedUnread: Content-Length 1 GiB, a few MB streamed, then the
// client stops: 413 at once, and the server read (almost) nothing of it.
func TestHugeBodyRefusedUnread(t *testing.T) {
	e := newEnv(t, nil, nil)
	tok := e.addTenant("acme", control.Limits{})
	conn, err := net.Dial("tcp", e.addr)
	require.NoError(t, err)
	defer conn.Close()
	hdr := fmt.Sprintf("POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Meter-Id: m1\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
		tok, wire.ContentTypeBatch, 1<<30)
	_, err = conn.Write([]byte(hdr))
	require.NoError(t, err)
	var sent int64
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		chunk := make([]byte, 64<<10)
		for sent < 4<<20 {
			_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			n, err := conn.Write(chunk)
			sent += int64(n)
			if err != nil {
				return
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, 413, resp.StatusCode, string(body))
	<-wdone
	read := e.counter("phloem_collector_ingress_body_bytes_total")
	require.Equal(t, float64(0), read, "not one byte of the body was read by the handler")
	require.Equal(t, float64(0), e.counter("phloem_collector_inflight_bytes"))
	t.Logf("1 GiB body: 413 %s; client managed to send %d bytes; handler read %v bytes", strings.TrimSpace(string(body)), sent, read)

	// Chunked (no Content-Length): refused once past the raw body limit, having
	// read at most that much.
	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 1<<20)
		for i := 0; i < 64; i++ {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		_ = pw.Close()
	}()
	req, err := http.NewRequest(http.MethodPost, e.url+PathIngest, pr)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set(HeaderXMeterID, "m1")
	req.Header.Set("Content-Type", wire.ContentTypeBatch)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, 413, resp.StatusCode)
	_ = pr.CloseWithError(io.ErrClosedPipe)
	require.LessOrEqual(t, e.counter("phloem_collector_ingress_body_bytes_total"), float64(17<<20))
}

// TestKafkaRecordsAndHeaders: a batch acknowledged with 200 is on the tenant's
// topic, in order, with every header.
func TestKafkaRecordsAndHeaders(t *testing.T) {
	e := newEnv(t, nil, nil)
	tok := e.addTenant("acme", control.Limits{})
	batch, recs := makeBatch(100, 50, 64)
	a := e.do(nil, post{token: tok, meter: "meter-7", rid: "rid-42", body: batch,
		headers: map[string]string{"X-Tenant": "other", "X-Topic": "phloem.t.other"}})
	require.Equal(t, 50, accepted(t, a))

	got := consumeAll(t, e.brokers, "phloem.t.acme", 50, 10*time.Second)
	require.Len(t, got, 50)
	for i, r := range got {
		require.Equal(t, "meter-7", string(r.Key))
		require.Equal(t, recs[i].Payload, r.Value)
		require.Equal(t, "meter-7", header(r, HeaderMeterID))
		require.Equal(t, strconv.FormatUint(recs[i].Seq, 10), header(r, HeaderSeq))
		require.Equal(t, "rid-42", header(r, HeaderRequestID))
		require.Equal(t, "test-collector", header(r, HeaderCollectorID))
		require.Equal(t, strconv.FormatInt(recs[i].Timestamp, 10), header(r, HeaderTimestamp))
	}
	require.Equal(t, float64(50), e.counter("phloem_collector_ingress_records_total", "tenant", "acme"))
	require.Equal(t, e.counter("phloem_collector_ingress_bytes_total"), e.counter("phloem_collector_egress_bytes_total", "destination", "kafka"))
}

// TestTLS: ingest over TLS with a generated certificate, through a plain
// net/http client that trusts the test CA (as the meter does); then the
// certificate is replaced on disk and Reload serves the new one.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca1 := writeTestCert(t, dir, "1")
	e := newEnv(t, nil, func(c *Config) {
		c.TLSCertFile = dir + "/cert1.pem"
		c.TLSKeyFile = dir + "/key1.pem"
	})
	tok := e.addTenant("acme", control.Limits{})
	batch, _ := makeBatch(1, 10, 10)
	cl := tlsClient(ca1)
	a := e.do(cl, post{token: tok, meter: "m1", body: batch})
	require.Equal(t, 10, accepted(t, a))
	resp, err := cl.Get(e.url + "/")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, "HTTP/2.0", resp.Proto, "HTTP/2 over TLS")

	// Plain HTTP to the TLS port fails.
	_, err = http.Post("http://"+e.addr+PathIngest, wire.ContentTypeBatch, bytes.NewReader(batch))
	if err == nil {
		t.Log("plain HTTP got an answer (Go's TLS server answers 400 to plain HTTP)")
	}

	// Rotate: new CA and cert at the same paths, then Reload.
	ca2 := writeTestCert(t, dir, "2")
	require.NoError(t, copyFile(dir+"/cert2.pem", dir+"/cert1.pem"))
	require.NoError(t, copyFile(dir+"/key2.pem", dir+"/key1.pem"))
	require.NoError(t, e.c.Reload())
	cl2 := tlsClient(ca2)
	a = e.do(cl2, post{token: tok, meter: "m1", body: batch})
	require.Equal(t, 200, a.code)
	_, err = tlsClient(ca1).Post(e.url+PathIngest, wire.ContentTypeBatch, bytes.NewReader(batch))
	require.Error(t, err, "old CA no longer verifies the reloaded certificate")
	require.Equal(t, float64(1), e.counter("phloem_collector_tls_reloads_total", "result", "ok"))
}

// TestShutdownRefusesAndFlushes: after cancel, Run returns; requests after that
// get connection errors or 503, never a 200 that Kafka did not store.
func TestShutdownDrains(t *testing.T) {
	e := newEnv(t, nil, nil)
	tok := e.addTenant("acme", control.Limits{})
	batch, _ := makeBatch(1, 100, 100)
	require.Equal(t, 200, e.do(nil, post{token: tok, meter: "m1", body: batch}).code)

	// Requests racing with shutdown: each is 200 (and then stored) or refused.
	type res struct{ code int }
	results := make(chan res, 50)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 50 {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+PathIngest, bytes.NewReader(batch))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set(HeaderXMeterID, fmt.Sprintf("race-%d", i))
			req.Header.Set("Content-Type", wire.ContentTypeBatch)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				results <- res{code: -1}
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			results <- res{code: resp.StatusCode}
		}()
	}
	time.Sleep(5 * time.Millisecond) // let some requests start; the outcome is checked either way
	start := time.Now()
	e.stop()
	t.Logf("shutdown took %s", time.Since(start).Round(time.Millisecond))
	oks := 1
	for range 50 {
		r := <-results
		require.Contains(t, []int{-1, 200, 503}, r.code)
		if r.code == 200 {
			oks++
		}
	}
	got := consumeAll(t, e.brokers, "phloem.t.acme", oks*100, 10*time.Second)
	require.GreaterOrEqual(t, len(got), oks*100, "every 200 is stored")
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Republisher = DiscardRepublisher{}
	require.NoError(t, ok.Validate())
	for name, mut := range map[string]func(*Config){
		"no brokers":      func(c *Config) { c.Republisher = nil },
		"deadline":        func(c *Config) { c.IngestTimeout = MeterClientTimeout },
		"zero inflight":   func(c *Config) { c.MaxInflightRequests = 0 },
		"bytes < batch":   func(c *Config) { c.MaxInflightBytes = 1 << 20 },
		"tls half":        func(c *Config) { c.TLSCertFile = "x" },
		"compression":     func(c *Config) { c.Compression = "brotli" },
		"blocked meter":   func(c *Config) { c.BlockedMeters = []string{"bad id"} },
		"limits":          func(c *Config) { c.Limits.MaxRecords = -1 },
		"no collector id": func(c *Config) { c.CollectorID = "" },
	} {
		c := ok
		mut(&c)
		require.Error(t, c.Validate(), name)
	}
}

func TestMetricsLint(t *testing.T) {
	e := newEnv(t, nil, nil)
	lintMetrics(t, e.reg)
}
