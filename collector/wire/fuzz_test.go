package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The fuzz targets run their seed corpus (testdata/fuzz/<FuzzName>/) in
// every plain `go test`; to fuzz, e.g.
//
//	go test ./collector/wire -run XXX -fuzz FuzzDecodeBatch -fuzztime 2m -parallel 1
//
// To regenerate the seed corpus after a format change:
//
//	WIRE_WRITE_CORPUS=1 go test ./collector/wire -run TestWriteFuzzCorpus

// fuzzLimits are small so that the fuzzer reaches every limit.
var fuzzLimits = Limits{MaxRecords: 16, MaxRecordBytes: 64, MaxBatchBytes: 1024}

func FuzzDecodeBatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzBatch(t, data)
		// Almost every mutation breaks the checksum; re-sealing lets the
		// fuzzer explore the frame parser behind it.
		if len(data) >= MinBatchLen {
			fuzzBatch(t, reseal(bytes.Clone(data)))
		}
	})
}

func fuzzBatch(t *testing.T, data []byte) {
	orig := bytes.Clone(data)
	var recs []Record
	err := DecodeBatch(data, fuzzLimits, func(r Record) error {
		if len(r.Payload) > fuzzLimits.MaxRecordBytes {
			t.Fatalf("payload of %d bytes passed the limit", len(r.Payload))
		}
		if len(r.Payload) != cap(r.Payload) {
			t.Fatalf("payload capacity not clipped")
		}
		r.Payload = bytes.Clone(r.Payload)
		recs = append(recs, r)
		return nil
	})
	if !bytes.Equal(orig, data) {
		t.Fatal("DecodeBatch modified its input")
	}
	n, lerr := BatchLen(data, fuzzLimits)
	if err != nil {
		var fe *FrameError
		if !errors.As(err, &fe) {
			t.Fatalf("error is not a *FrameError: %v", err)
		}
		if fe.Err == nil || fe.Error() == "" {
			t.Fatalf("FrameError without sentinel or text: %#v", fe)
		}
		if len(recs) != 0 {
			t.Fatalf("fn called %d times before error %v", len(recs), err)
		}
		if lerr == nil || lerr.Error() != err.Error() {
			t.Fatalf("BatchLen disagrees: %v vs %v", lerr, err)
		}
		return
	}
	if lerr != nil || n != len(recs) {
		t.Fatalf("BatchLen = %d, %v; DecodeBatch gave %d records", n, lerr, len(recs))
	}
	if len(recs) == 0 || len(recs) > fuzzLimits.MaxRecords || len(data) > fuzzLimits.MaxBatchBytes {
		t.Fatalf("accepted %d records in %d bytes, outside the limits", len(recs), len(data))
	}
	// Round trip: the encoding is canonical, so re-encoding gives the
	// same bytes, and those decode to the same records.
	re := AppendBatch(nil, recs)
	if !bytes.Equal(re, data) {
		t.Fatalf("re-encoding differs:\n in %x\nout %x", data, re)
	}
	if EncodedLen(recs) != len(data) {
		t.Fatalf("EncodedLen = %d, want %d", EncodedLen(recs), len(data))
	}
}

func FuzzDecodeNDJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var strict [][]byte
		err := DecodeNDJSON(data, fuzzLimits, func(i int, p []byte) error {
			if i != len(strict) {
				t.Fatalf("record index %d, want %d", i, len(strict))
			}
			strict = append(strict, bytes.Clone(p))
			return nil
		})
		var lines [][]byte
		lerr := DecodeLines(data, fuzzLimits, func(_ int, p []byte) error {
			lines = append(lines, bytes.Clone(p))
			return nil
		})
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("error is not a *FrameError: %v", err)
			}
			if len(strict) != 0 {
				t.Fatalf("fn called before error %v", err)
			}
			// Without the JSON check, only a JSON error may go away.
			if lerr == nil && !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("DecodeLines accepted what DecodeNDJSON refused with %v", err)
			}
			return
		}
		if lerr != nil {
			t.Fatalf("DecodeLines refused what DecodeNDJSON accepted: %v", lerr)
		}
		if len(strict) == 0 || len(strict) > fuzzLimits.MaxRecords || len(strict) != len(lines) {
			t.Fatalf("%d records (%d lines) outside the limits", len(strict), len(lines))
		}
		recs := make([]Record, len(strict))
		for i, p := range strict {
			if !bytes.Equal(p, lines[i]) {
				t.Fatalf("record %d differs between DecodeNDJSON and DecodeLines", i)
			}
			if len(p) > fuzzLimits.MaxRecordBytes || !json.Valid(p) || bytes.IndexByte(p, '\n') >= 0 {
				t.Fatalf("record %d %q should not have been accepted", i, p)
			}
			recs[i] = Record{Payload: p}
		}
		// Round trip through AppendNDJSON.
		body, err := AppendNDJSON(nil, recs)
		if err != nil {
			t.Fatalf("AppendNDJSON refused decoded records: %v", err)
		}
		i := 0
		err = DecodeNDJSON(body, Limits{}, func(_ int, p []byte) error {
			if !bytes.Equal(p, strict[i]) {
				t.Fatalf("record %d changed on round trip: %q -> %q", i, strict[i], p)
			}
			i++
			return nil
		})
		if err != nil || i != len(strict) {
			t.Fatalf("round trip: %d records, %v", i, err)
		}
	})
}

func FuzzDecompress(f *testing.F) {
	const limit = 64 << 10
	c, err := NewCodec(Limits{MaxRecordBytes: 1 << 10, MaxBatchBytes: limit})
	require.NoError(f, err)
	encs := Encodings()
	f.Fuzz(func(t *testing.T, sel uint8, data []byte) {
		enc := encs[int(sel)%len(encs)]
		rc, err := c.NewDecompressReader(enc, bytes.NewReader(data))
		if err != nil {
			return
		}
		out, err := ReadLimited(nil, rc, limit)
		if cerr := rc.Close(); cerr != nil {
			t.Fatalf("Close: %v", cerr)
		}
		if err != nil {
			if len(out) > 0 {
				t.Fatalf("ReadLimited returned %d bytes with error %v", len(out), err)
			}
			return
		}
		// Whatever came out must survive our own round trip.
		z, err := c.Compress(nil, enc, out)
		if err != nil {
			t.Fatalf("Compress: %v", err)
		}
		rc, err = c.NewDecompressReader(enc, bytes.NewReader(z))
		if err != nil {
			t.Fatalf("decompressing our own output: %v", err)
		}
		back, err := ReadLimited(nil, rc, limit)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil || !bytes.Equal(back, out) {
			t.Fatalf("round trip: %v (%d vs %d bytes)", err, len(back), len(out))
		}
		// And the decompressed body goes on to the batch decoder.
		_ = DecodeBatch(out, Limits{}, func(Record) error { return nil })
	})
}

// TestWriteFuzzCorpus (re)writes the seed corpus. It is a no-op unless
// WIRE_WRITE_CORPUS is set; otherwise it checks the corpus is present.
func TestWriteFuzzCorpus(t *testing.T) {
	seeds := map[string][][]any{
		"FuzzDecodeBatch":  batchSeeds(t),
		"FuzzDecodeNDJSON": ndjsonSeeds(),
		"FuzzDecompress":   decompressSeeds(t),
	}
	for name, list := range seeds {
		dir := filepath.Join("testdata", "fuzz", name)
		if os.Getenv("WIRE_WRITE_CORPUS") == "" {
			entries, err := os.ReadDir(dir)
			require.NoError(t, err, "seed corpus missing; run with WIRE_WRITE_CORPUS=1")
			require.GreaterOrEqual(t, len(entries), len(list), "seed corpus of %s incomplete", name)
			continue
		}
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for i, vals := range list {
			var sb strings.Builder
			sb.WriteString("go test fuzz v1\n")
			for _, v := range vals {
				switch v := v.(type) {
				case []byte:
					fmt.Fprintf(&sb, "[]byte(%s)\n", strconv.Quote(string(v)))
				case uint8:
					fmt.Fprintf(&sb, "uint8(%d)\n", v)
				default:
					t.Fatalf("unsupported seed type %T", v)
				}
			}
			p := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
			require.NoError(t, os.WriteFile(p, []byte(sb.String()), 0o644))
		}
	}
}

func one(v ...any) []any { return v }

func batchSeeds(t *testing.T) [][]any {
	valid := AppendBatch(nil, []Record{
		{Seq: 1, Timestamp: 1_763_900_000_000_000_000, Payload: []byte(`{"cpu":0.5}`)},
		{Seq: 2, Timestamp: 1_763_900_000_000_001_000, Payload: []byte(`{"cpu":0.6}`)},
		{Seq: 3, Timestamp: 1_763_900_000_000_001_500, Payload: nil},
	})
	maxRec := AppendBatch(nil, []Record{{Seq: 9, Timestamp: 9, Payload: bytes.Repeat([]byte{'m'}, fuzzLimits.MaxRecordBytes)}})
	over := AppendBatch(nil, []Record{{Seq: 9, Timestamp: 9, Payload: bytes.Repeat([]byte{'m'}, fuzzLimits.MaxRecordBytes+1)}})
	extreme := AppendBatch(nil, []Record{
		{Seq: math.MaxUint64, Timestamp: math.MinInt64, Payload: []byte{0}},
		{Seq: 0, Timestamp: math.MaxInt64, Payload: []byte{0xff, '\n'}},
	})
	many := AppendBatch(nil, sampleRecords(fuzzLimits.MaxRecords, 40))
	tooMany := AppendBatch(nil, sampleRecords(fuzzLimits.MaxRecords+1, 1))
	v2 := bytes.Clone(valid)
	v2[offVersion] = 2
	flipped := bytes.Clone(valid)
	flipped[12] ^= 1
	trailing := reseal(append(append(bytes.Clone(valid[:len(valid)-4]), 2, 2, 0), 0, 0, 0, 0))
	noncanon := []byte{'P', 'H', 'L', 'B', 1, 1, 0, 0, 0, 0x82, 0x00, 2, 0, 0, 0, 0, 0}
	require.Len(t, noncanon, headerLen+4+trailerLen)
	binary.LittleEndian.PutUint32(noncanon[len(noncanon)-4:], Checksum(noncanon[:len(noncanon)-4]))
	return [][]any{
		one(valid), one(maxRec), one(over), one(extreme), one(many), one(tooMany),
		one(AppendBatch(nil, nil)), one(v2), one(flipped), one(valid[:len(valid)/2]),
		one(trailing), one(noncanon), one([]byte(`{"not":"a batch"}`)), one([]byte{}),
	}
}

func ndjsonSeeds() [][]any {
	return [][]any{
		one([]byte("{\"cpu\":0.5}\n{\"cpu\":0.6}\n")),
		one([]byte("{\"a\":1}\r\n[1,2]\r\n\"s\"")),
		one([]byte("\n\n  \n1\n\r\n2\n")),
		one([]byte("{\"a\":x}\n")),
		one([]byte("{\n\"pretty\": true\n}\n")),
		one([]byte("\"" + strings.Repeat("l", fuzzLimits.MaxRecordBytes) + "\"\n")),
		one([]byte(strings.Repeat("1\n", fuzzLimits.MaxRecords+1))),
		one([]byte("")),
		one([]byte("not json at all\n")),
		one([]byte("{\"u\":\"\\u00e9\\ud83d\\ude00\",\"n\":-1.5e-3,\"z\":null}\n")),
	}
}

func decompressSeeds(t *testing.T) [][]any {
	c, err := NewCodec(Limits{})
	require.NoError(t, err)
	batch := AppendBatch(nil, sampleRecords(20, 60))
	var out [][]any
	for i, enc := range Encodings() {
		z, err := c.Compress(nil, enc, batch)
		require.NoError(t, err)
		out = append(out, one(uint8(i), z), one(uint8(i), z[:len(z)/2]))
	}
	zeros, err := c.Compress(nil, EncodingZstd, make([]byte, 256<<10))
	require.NoError(t, err)
	gzeros, err := c.Compress(nil, EncodingGzip, make([]byte, 256<<10))
	require.NoError(t, err)
	return append(out,
		one(uint8(2), zeros),  // inflates past the fuzz limit
		one(uint8(1), gzeros), // likewise
		one(uint8(1), []byte("not gzip")),
		one(uint8(2), []byte{0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff}), // zstd magic, bad header
	)
}
