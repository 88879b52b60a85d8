package wire

import (
	"bytes"
	"testing"
)

// Benchmarks use the shape of the acceptance target: batches of 500 records
// of 200-byte JSON payloads, meter-like sequence numbers and timestamps.
//
//	go test ./collector/wire -run XXX -bench . -benchmem -count 3

const benchRecords, benchPayload = 500, 200

func BenchmarkDecodeBatch(b *testing.B) {
	batch := AppendBatch(nil, sampleRecords(benchRecords, benchPayload))
	var sink int
	fn := func(r Record) error { sink += len(r.Payload); return nil }
	b.SetBytes(int64(len(batch)))
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeBatch(batch, Limits{}, fn); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRecords), "ns/record")
	if sink == 0 {
		b.Fatal("nothing decoded")
	}
}

func BenchmarkAppendBatch(b *testing.B) {
	recs := sampleRecords(benchRecords, benchPayload)
	buf := AppendBatch(nil, recs)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendBatch(buf[:0], recs)
	}
}

func BenchmarkBuilder(b *testing.B) {
	recs := sampleRecords(benchRecords, benchPayload)
	var bl Builder
	b.SetBytes(int64(EncodedLen(recs)))
	b.ReportAllocs()
	for b.Loop() {
		bl.Reset()
		for _, r := range recs {
			bl.Add(r)
		}
		_ = bl.Bytes()
	}
}

func benchNDJSON(b *testing.B, decode func([]byte, Limits, func(int, []byte) error) error) {
	body, err := AppendNDJSON(nil, sampleRecords(benchRecords, benchPayload))
	if err != nil {
		b.Fatal(err)
	}
	var sink int
	fn := func(_ int, p []byte) error { sink += len(p); return nil }
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := decode(body, Limits{}, fn); err != nil {
			b.Fatal(err)
		}
	}
	if sink == 0 {
		b.Fatal("nothing decoded")
	}
}

// BenchmarkDecodeNDJSON includes the json.Valid check of every line.
func BenchmarkDecodeNDJSON(b *testing.B) { benchNDJSON(b, DecodeNDJSON) }

// BenchmarkDecodeLines is the NDJSON split alone.
func BenchmarkDecodeLines(b *testing.B) { benchNDJSON(b, DecodeLines) }

func BenchmarkCompress(b *testing.B) {
	batch := AppendBatch(nil, sampleRecords(benchRecords, benchPayload))
	c, err := NewCodec(Limits{})
	if err != nil {
		b.Fatal(err)
	}
	for _, enc := range []string{EncodingGzip, EncodingZstd} {
		b.Run(enc, func(b *testing.B) {
			var dst []byte
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			for b.Loop() {
				if dst, err = c.Compress(dst[:0], enc, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(batch))/float64(len(dst)), "ratio")
		})
	}
}

// BenchmarkDecompress is the collector's read path: decompress into a
// reused buffer through ReadLimited, then decode.
func BenchmarkDecompress(b *testing.B) {
	batch := AppendBatch(nil, sampleRecords(benchRecords, benchPayload))
	c, err := NewCodec(Limits{})
	if err != nil {
		b.Fatal(err)
	}
	for _, enc := range []string{EncodingGzip, EncodingZstd} {
		b.Run(enc, func(b *testing.B) {
			z, err := c.Compress(nil, enc, batch)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 0, len(batch)+1)
			var r bytes.Reader
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(z)
				rc, err := c.NewDecompressReader(enc, &r)
				if err != nil {
					b.Fatal(err)
				}
				if buf, err = ReadLimited(buf[:0], rc, DefaultMaxBatchBytes); err != nil {
					b.Fatal(err)
				}
				if err := rc.Close(); err != nil {
					b.Fatal(err)
				}
				if err := DecodeBatch(buf, Limits{}, func(Record) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
