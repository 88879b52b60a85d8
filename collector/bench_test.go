package collector

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/collector/wire"
	"phloem/phloem/control"
	"phloem/phloem/embedded"
)

const (
	benchRecords = 500
	benchSize    = 200
)

// benchMeters is the number of concurrent meters (HTTP clients); env
// PHLOEM_BENCH_METERS overrides it.
func benchMeters() int {
	if n, err := strconv.Atoi(os.Getenv("PHLOEM_BENCH_METERS")); err == nil && n > 0 {
		return n
	}
	return 32
}

// BenchmarkIngest measures, in one run against one embedded broker:
//
//   - collector: meters POSTing batches of 500 x 200 B records over loopback HTTP,
//     each answered 200 after Kafka acknowledged it (records/s, MB/s, p50/p99
//     request latency);
//   - bare: a bare franz-go producer (same producer settings) writing the same
//     records to the same broker (bare-records/s), and collector/bare;
//   - discard: the same meters against a collector whose Kafka republisher is
//     replaced by DiscardRepublisher (discard-records/s, the collector's ceiling).
//
// b.N is the number of batches per phase.
//
//	go test ./collector -run '^$' -bench BenchmarkIngest -benchtime 2000x
func BenchmarkIngest(b *testing.B) {
	broker, err := embedded.Start(embedded.Config{}, nil)
	require.NoError(b, err)
	defer func() { _ = broker.Close() }()

	body, recs := makeBatch(1, benchRecords, benchSize)
	meters := benchMeters()
	run := func(e *env, tok string) (recPerSec float64, p50, p99 time.Duration) {
		tr := &http.Transport{MaxIdleConnsPerHost: meters, MaxConnsPerHost: meters}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		post := func(meter string) (time.Duration, error) {
			req, _ := http.NewRequest(http.MethodPost, e.url+PathIngest, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set(HeaderXMeterID, meter)
			req.Header.Set("Content-Type", wire.ContentTypeBatch)
			s := time.Now()
			resp, err := cl.Do(req)
			if err != nil {
				return 0, err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 {
				return 0, fmt.Errorf("status %d", resp.StatusCode)
			}
			return time.Since(s), nil
		}
		for i := range meters { // warm up connections and the topic
			_, err := post(fmt.Sprintf("meter-%d", i))
			require.NoError(b, err)
		}
		var next atomic.Int64
		lat := make([][]time.Duration, meters)
		var wg sync.WaitGroup
		var failed atomic.Value
		start := time.Now()
		for m := range meters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("meter-%d", m)
				for next.Add(1) <= int64(b.N) {
					d, err := post(id)
					if err != nil {
						failed.Store(err)
						return
					}
					lat[m] = append(lat[m], d)
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		if err, _ := failed.Load().(error); err != nil {
			b.Fatal(err)
		}
		all := slices.Concat(lat...)
		slices.Sort(all)
		return float64(b.N*benchRecords) / el.Seconds(), all[len(all)/2], all[len(all)*99/100]
	}

	linger := DefaultProducerLinger
	if d, err := time.ParseDuration(os.Getenv("PHLOEM_BENCH_LINGER")); err == nil {
		linger = d
	}
	// Phase 1: the collector in front of Kafka.
	e := newEnv(b, broker.Addrs(), func(c *Config) { c.ProducerLinger = linger })
	tok := e.addTenant("bench", control.Limits{})
	b.ResetTimer()
	colRate, p50, p99 := run(e, tok)
	b.StopTimer()
	e.stop()

	// Phase 2: a bare producer, same settings, same records, same broker. The
	// records are produced by as many goroutines as there were meters, each
	// waiting for its batch's acknowledgement like a collector request does.
	cfg := testConfig(broker.Addrs())
	cfg.ProducerLinger = linger
	codec, err := compressionCodec(cfg.Compression)
	require.NoError(b, err)
	pcl, err := kgo.NewClient(append(cfg.KafkaOpts, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(cfg.ProducerLinger),
		kgo.ProducerBatchCompression(codec), kgo.MaxBufferedRecords(cfg.MaxBufferedRecords), kgo.MaxBufferedBytes(cfg.MaxBufferedBytes))...)
	require.NoError(b, err)
	var next atomic.Int64
	var wg sync.WaitGroup
	var perr atomic.Value
	start := time.Now()
	for m := range meters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []byte(fmt.Sprintf("meter-%d", m))
			krecs := make([]*kgo.Record, benchRecords)
			rid, cid := []byte("0123456789abcdef"), []byte("test-collector")
			for next.Add(1) <= int64(b.N) {
				// The same Kafka records as the collector writes: key, value
				// and the five headers.
				for i := range krecs {
					krecs[i] = &kgo.Record{Topic: "phloem.t.bench", Key: key, Value: recs[i].Payload, Headers: []kgo.RecordHeader{
						{Key: HeaderMeterID, Value: key},
						{Key: HeaderSeq, Value: strconv.AppendUint(nil, recs[i].Seq, 10)},
						{Key: HeaderRequestID, Value: rid},
						{Key: HeaderCollectorID, Value: cid},
						{Key: HeaderTimestamp, Value: strconv.AppendInt(nil, recs[i].Timestamp, 10)},
					}}
				}
				if err := pcl.ProduceSync(context.Background(), krecs...).FirstErr(); err != nil {
					perr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	bareRate := float64(b.N*benchRecords) / time.Since(start).Seconds()
	pcl.Close()
	if err, _ := perr.Load().(error); err != nil {
		b.Fatal(err)
	}

	// Phase 3: the collector with a discard republisher (no Kafka).
	e = newEnv(b, broker.Addrs(), func(c *Config) { c.Republisher = DiscardRepublisher{} })
	tok = e.addTenant("bench-discard", control.Limits{})
	discRate, _, _ := run(e, tok)
	e.stop()

	b.ReportMetric(colRate, "records/s")
	b.ReportMetric(colRate*benchSize/1e6, "MB/s")
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(bareRate, "bare-records/s")
	b.ReportMetric(colRate/bareRate, "collector/bare")
	b.ReportMetric(discRate, "discard-records/s")
	b.ReportMetric(0, "ns/op") // wall time per batch is meaningless across three phases
}
