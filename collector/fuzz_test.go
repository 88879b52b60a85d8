package collector

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"phloem/collector/wire"
	"phloem/phloem/control"
)

var (
	fuzzOnce   sync.Once
	fuzzEnv    *env
	fuzzTokens []string
)

// FuzzIngestHandler feeds random bodies, headers and encodings to the ingest
// handler in front of a real collector on a kfake broker. The handler must never
// panic and never answer a 5xx other than the documented 503 (with Retry-After
// and a documented reason).
//
//	go test ./collector -run '^$' -fuzz FuzzIngestHandler -fuzztime 2m -parallel 1
func FuzzIngestHandler(f *testing.F) {
	batch, _ := makeBatch(1, 3, 16)
	for _, enc := range []uint8{0, 1, 2} {
		f.Add(batch, uint8(0), enc, true, uint8(0), "meter-1", "")
	}
	f.Add([]byte("{\"a\":1}\n{\"b\":[1,2]}\n"), uint8(1), uint8(0), false, uint8(0), "m", "17")
	f.Add([]byte("{\"a\":1}\nnope\n"), uint8(1), uint8(1), true, uint8(0), "m", "x")
	f.Add(batch[:len(batch)-3], uint8(0), uint8(0), false, uint8(1), "m", "")
	f.Add(batch, uint8(2), uint8(3), false, uint8(2), "", "")
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0}, uint8(0), uint8(1), false, uint8(3), "m/1:x", "")

	// One deployment for the whole fuzz process: the broker, watcher and
	// collector are the expensive part, the handler is what is fuzzed.
	fuzzOnce.Do(func() {
		fuzzEnv = newEnvNoCleanup(f, func(c *Config) {
			c.Limits = wire.Limits{MaxRecords: 100, MaxRecordBytes: 4096, MaxBatchBytes: 64 << 10}
			c.MaxBodyBytes = 32 << 10
			c.IngestTimeout = 2 * time.Second
		})
		fuzzTokens = []string{
			fuzzEnv.addTenant("fuzz-ok", control.Limits{}),
			fuzzEnv.addTenant("fuzz-slow", control.Limits{RecordsPerSec: 5, BytesPerSec: 100}),
			fuzzEnv.addTenant("fuzz-off", control.Limits{}),
			"phl_unknown",
		}
		fuzzEnv.putTenant(control.Tenant{ID: "fuzz-off", TokenHash: control.HashToken(fuzzTokens[2]), Status: control.StatusDisabled})
	})
	h := fuzzEnv.c.Handler()
	ctypes := []string{wire.ContentTypeBatch, wire.ContentTypeNDJSON, "text/plain", "", "application/x-ndjson; charset=utf-8", "application/vnd.phloem.batch;;"}
	encs := []string{"", "gzip", "zstd", "br", "identity", "GZIP", "gzip, zstd"}
	allowed := map[int]bool{200: true, 400: true, 401: true, 403: true, 413: true, 415: true, 429: true, 503: true}
	reasons503 := map[string]bool{reasonOverRequests: true, reasonOverBytes: true, reasonNotReady: true, reasonShuttingDown: true,
		reasonKafkaUnavailable: true, reasonDeadline: true}

	f.Fuzz(func(t *testing.T, body []byte, ct, enc uint8, compress bool, tok uint8, meter, seqBase string) {
		e := encs[int(enc)%len(encs)]
		if compress {
			if c, err := wire.Compress(nil, orIdentity(e), body); err == nil {
				body = c
			}
		}
		req := httptest.NewRequest(http.MethodPost, PathIngest, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fuzzTokens[int(tok)%len(fuzzTokens)])
		req.Header.Set("Content-Type", ctypes[int(ct)%len(ctypes)])
		if e != "" {
			req.Header.Set("Content-Encoding", e)
		}
		if meter != "" {
			req.Header.Set(HeaderXMeterID, meter)
		}
		if seqBase != "" {
			req.Header.Set(HeaderXSeqBase, seqBase)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.True(t, allowed[rec.Code], "status %d: %s", rec.Code, rec.Body.String())
		var eb errorBody
		if rec.Code != 200 {
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &eb), rec.Body.String())
			require.NotEmpty(t, eb.Error)
		}
		if rec.Code == 503 || rec.Code == 429 {
			ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
			require.NoError(t, err)
			require.GreaterOrEqual(t, ra, 1)
		}
		if rec.Code == 503 {
			require.True(t, reasons503[eb.Reason], "undocumented 503 reason %q", eb.Reason)
		}
	})
}

// newEnvNoCleanup is newEnv for a deployment shared by a whole fuzz run (the
// process exits at the end of it).
func newEnvNoCleanup(tb testing.TB, mutate func(*Config)) *env {
	return newEnv(noCleanup{tb}, nil, mutate)
}

type noCleanup struct{ testing.TB }

func (noCleanup) Cleanup(func()) {}
