package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRoundTrip(t *testing.T) {
	small := Limits{MaxRecords: 4, MaxRecordBytes: 64, MaxBatchBytes: 4096}
	maxPayload := bytes.Repeat([]byte{'x'}, 64)
	tests := []struct {
		name string
		lim  Limits
		recs []Record
	}{
		{"one record", Limits{}, []Record{{Seq: 1, Timestamp: 2, Payload: []byte(`{"a":1}`)}}},
		{"empty payload", Limits{}, []Record{{Seq: 7, Timestamp: 0, Payload: nil}}},
		{"binary payload", Limits{}, []Record{{Seq: 1, Timestamp: 1, Payload: []byte{0, 0xff, '\n', 0x80}}}},
		{"extreme values", Limits{}, []Record{
			{Seq: math.MaxUint64, Timestamp: math.MinInt64, Payload: []byte("a")},
			{Seq: 0, Timestamp: math.MaxInt64, Payload: []byte("b")},
			{Seq: math.MaxUint64, Timestamp: -1, Payload: []byte("c")},
		}},
		{"sequence and clock going backwards", Limits{}, []Record{
			{Seq: 10, Timestamp: 1000, Payload: []byte("a")},
			{Seq: 9, Timestamp: 999, Payload: []byte("b")},
			{Seq: 11, Timestamp: 5, Payload: []byte("c")},
		}},
		{"exactly max_records and max_record_bytes", small, []Record{
			{Seq: 1, Payload: maxPayload}, {Seq: 2, Payload: maxPayload}, {Seq: 3, Payload: maxPayload}, {Seq: 4, Payload: maxPayload},
		}},
		{"500 meter-like records", Limits{}, sampleRecords(500, 200)},
		{"1 MiB record at default limits", Limits{}, []Record{{Seq: 1, Timestamp: 1, Payload: bytes.Repeat([]byte{'y'}, DefaultMaxRecordBytes)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendBatch(nil, tt.recs)
			require.Len(t, b, EncodedLen(tt.recs))

			got, err := collect(b, tt.lim)
			require.NoError(t, err)
			require.Equal(t, normalize(tt.recs), normalize(got))

			n, err := BatchLen(b, tt.lim)
			require.NoError(t, err)
			require.Equal(t, len(tt.recs), n)

			// Re-encoding is byte-identical (varints are canonical).
			require.Equal(t, b, AppendBatch(nil, got))

			// The Builder writes the same bytes, and FrameLen predicts Len.
			var bl Builder
			for _, r := range tt.recs {
				want := bl.Len() + bl.FrameLen(r)
				bl.Add(r)
				require.Equal(t, want, bl.Len())
			}
			require.Equal(t, b, bl.Bytes())
			require.Equal(t, len(tt.recs), bl.Count())
			bl.Reset()
			bl.Add(tt.recs[0])
			require.Equal(t, AppendBatch(nil, tt.recs[:1]), bl.Bytes())

			// Appending to a non-empty dst leaves the prefix alone.
			pre := []byte("prefix")
			b2 := AppendBatch(append([]byte(nil), pre...), tt.recs)
			require.Equal(t, pre, b2[:len(pre)])
			require.Equal(t, b, b2[len(pre):])
		})
	}
}

// TestGolden pins the byte layout documented in doc.go.
func TestGolden(t *testing.T) {
	b := AppendBatch(nil, []Record{
		{Seq: 1, Timestamp: 2, Payload: []byte("hi")},
		{Seq: 2, Timestamp: 1, Payload: nil},
	})
	want := "50484c42" + "01" + "02000000" + // magic, version, count=2
		"02" + "04" + "02" + "6869" + // zigzag(+1), zigzag(+2), len 2, "hi"
		"02" + "01" + "00" // zigzag(+1), zigzag(-1), len 0
	require.Equal(t, want, hex.EncodeToString(b[:len(b)-4]))
	require.Equal(t, Checksum(b[:len(b)-4]), binary.LittleEndian.Uint32(b[len(b)-4:]))
	// CRC-32C check value from RFC 3720 (iSCSI), to be sure of the polynomial.
	require.Equal(t, uint32(0xe3069283), Checksum([]byte("123456789")))
}

func TestDecodeBatchPayloadAliasesInput(t *testing.T) {
	b := AppendBatch(nil, []Record{{Seq: 1, Payload: []byte("abc")}, {Seq: 2, Payload: []byte("def")}})
	var first []byte
	require.NoError(t, DecodeBatch(b, Limits{}, func(r Record) error {
		if first == nil {
			first = r.Payload
		}
		return nil
	}))
	require.Equal(t, len(first), cap(first), "capacity must be clipped so appends cannot clobber the next frame")
	i := bytes.Index(b, []byte("abc"))
	b[i] = 'X'
	require.Equal(t, "Xbc", string(first))
}

func TestDecodeBatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	b := AppendBatch(nil, sampleRecords(500, 200))
	var sum int
	fn := func(r Record) error { sum += len(r.Payload); return nil }
	allocs := testing.AllocsPerRun(20, func() {
		if err := DecodeBatch(b, Limits{}, fn); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
	require.Positive(t, sum)
}

func TestDecodeBatchCallbackError(t *testing.T) {
	b := AppendBatch(nil, sampleRecords(10, 20))
	stop := errors.New("stop here")
	calls := 0
	err := DecodeBatch(b, Limits{}, func(Record) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	require.Same(t, stop, err, "fn's error is returned unchanged")
	require.Equal(t, 3, calls)
}

func TestDecodeBatchLimits(t *testing.T) {
	recs := sampleRecords(6, 100)
	recs[4].Payload = bytes.Repeat([]byte{'z'}, 101)
	b := AppendBatch(nil, recs)
	// Offset of frame 4: the decoder reports where the frame starts.
	frame4 := EncodedLen(recs[:4]) - trailerLen

	tests := []struct {
		name      string
		lim       Limits
		sentinel  error
		frame     int
		offset    int
		limit     string
		errString string
	}{
		{"too many records", Limits{MaxRecords: 5}, ErrTooManyRecords, -1, offCount, LimitMaxRecords,
			"batch at byte 5: record count 6 exceeds limit max_records=5"},
		{"record too large", Limits{MaxRecordBytes: 100, MaxBatchBytes: 4096}, ErrRecordTooLarge, 4, frame4, LimitMaxRecordBytes,
			"frame 4 at byte " + itoa(frame4) + ": record payload of 101 bytes exceeds limit max_record_bytes=100"},
		{"batch too large", Limits{MaxRecordBytes: 100, MaxBatchBytes: len(b) - 1}, ErrBatchTooLarge, -1, 0, LimitMaxBatchBytes,
			"batch at byte 0: batch of " + itoa(len(b)) + " bytes exceeds limit max_batch_bytes=" + itoa(len(b)-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			err := DecodeBatch(b, tt.lim, func(Record) error { called = true; return nil })
			require.ErrorIs(t, err, tt.sentinel)
			require.False(t, called, "fn must not be called for an invalid batch")
			var fe *FrameError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, tt.frame, fe.Frame)
			require.Equal(t, tt.offset, fe.Offset)
			require.Equal(t, tt.limit, fe.Limit)
			require.Equal(t, tt.errString, err.Error())
		})
	}
	// Exactly at the limits passes.
	_, err := collect(b, Limits{MaxRecords: 6, MaxRecordBytes: 101, MaxBatchBytes: len(b)})
	require.NoError(t, err)
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestDecodeBatchTruncatedEverywhere(t *testing.T) {
	b := AppendBatch(nil, sampleRecords(20, 30))
	for k := 0; k < len(b); k++ {
		// Cut as-is: the trailer no longer matches (or the header is short).
		err := DecodeBatch(b[:k], Limits{}, func(Record) error {
			t.Fatalf("fn called for a batch cut at %d", k)
			return nil
		})
		require.Error(t, err, "cut at %d", k)
		var fe *FrameError
		require.ErrorAs(t, err, &fe, "cut at %d", k)

		// Cut and re-sealed: the checksum is right, the frames are short.
		if k >= headerLen && k < len(b)-trailerLen {
			c := append(append([]byte(nil), b[:k]...), 0, 0, 0, 0)
			err := DecodeBatch(reseal(c), Limits{}, func(Record) error {
				t.Fatalf("fn called for a resealed batch cut at %d", k)
				return nil
			})
			require.ErrorIs(t, err, ErrTruncated, "resealed cut at %d", k)
		}
	}
}

func TestDecodeBatchCorruption(t *testing.T) {
	b := AppendBatch(nil, sampleRecords(5, 30))
	for i := 0; i < len(b); i++ {
		for bit := 0; bit < 8; bit++ {
			c := append([]byte(nil), b...)
			c[i] ^= 1 << bit
			err := DecodeBatch(c, Limits{}, func(Record) error {
				t.Fatalf("fn called for a corrupted batch (byte %d bit %d)", i, bit)
				return nil
			})
			switch {
			case i < 4:
				require.ErrorIs(t, err, ErrMagic)
			case i == offVersion:
				require.ErrorIs(t, err, ErrVersion)
			default:
				require.ErrorIs(t, err, ErrChecksum, "byte %d bit %d", i, bit)
			}
		}
	}
	c := append([]byte(nil), b...)
	c[10] ^= 0x55
	err := DecodeBatch(c, Limits{}, nil)
	require.ErrorIs(t, err, ErrChecksum)
	require.Contains(t, err.Error(), "batch at byte "+itoa(len(b)-4)+": checksum mismatch: batch carries crc32c ")
}

func TestDecodeBatchMalformed(t *testing.T) {
	valid := AppendBatch(nil, []Record{{Seq: 1, Timestamp: 1, Payload: []byte("ab")}})
	hdr := func(count uint32) []byte {
		h := []byte{'P', 'H', 'L', 'B', Version, 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(h[offCount:], count)
		return h
	}
	seal := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return reseal(append(b, 0, 0, 0, 0))
	}
	tests := []struct {
		name     string
		in       []byte
		sentinel error
		msg      string
	}{
		{"nil", nil, ErrTruncated, "batch at byte 0: batch truncated: 0 bytes"},
		{"json body", []byte(`{"a":1}`), ErrMagic, `batch at byte 0: not a phloem batch: starts with "{\"a\"", want "PHLB"`},
		{"gzip body", []byte{0x1f, 0x8b, 8}, ErrMagic, "not a phloem batch"},
		{"magic prefix only", []byte("PHL"), ErrTruncated, "batch truncated"},
		{"version 2", func() []byte { c := append([]byte(nil), valid...); c[offVersion] = 2; return reseal(c) }(),
			ErrVersion, "batch at byte 4: unsupported batch version 2 (this decoder reads version 1; upgrade the collector)"},
		{"version 0", func() []byte { c := append([]byte(nil), valid...); c[offVersion] = 0; return c }(), ErrVersion, "version 0"},
		{"header only, no trailer", hdr(1), ErrTruncated, "batch truncated"},
		{"zero records", AppendBatch(nil, nil), ErrEmptyBatch, "batch at byte 5: batch contains no records"},
		{"count beyond bytes", seal(hdr(3), []byte{2, 2, 0}), ErrTruncated, "header announces 3 records but only 3 bytes"},
		{"count above 32-bit limits", seal(hdr(math.MaxUint32)), ErrTooManyRecords, "record count 4294967295 exceeds limit max_records=10000"},
		{"non-canonical varint", seal(hdr(1), []byte{0x82, 0x00, 2, 0}), ErrMalformed, "frame 0 at byte 9: malformed sequence number varint at byte 10"},
		{"overlong varint", seal(hdr(1), []byte{2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0}), ErrMalformed, "malformed timestamp varint"},
		{"11-byte varint", seal(hdr(1), bytes.Repeat([]byte{0x80}, 11), []byte{1, 0, 0}), ErrMalformed, "malformed"},
		{"length past end", seal(hdr(1), []byte{2, 2, 5, 'a'}), ErrTruncated, "frame 0 at byte 9: batch truncated: record payload of 5 bytes but only 1 bytes remain"},
		{"huge length", seal(hdr(1), []byte{2, 2, 0xff, 0xff, 0xff, 0xff, 0x0f}), ErrRecordTooLarge, "record payload of 4294967295 bytes exceeds limit max_record_bytes=1048576"},
		{"varint cut by trailer", seal(hdr(1), []byte{2, 2, 0x80}), ErrTruncated, "batch truncated in the payload length of frame 0"},
		{"trailing data", seal(valid[:len(valid)-4], []byte{7, 7}), ErrTrailingData, "batch at byte 14: 2 bytes of trailing data after the last of 1 frames"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := DecodeBatch(tt.in, Limits{}, func(Record) error {
				t.Fatal("fn called for an invalid batch")
				return nil
			})
			require.ErrorIs(t, err, tt.sentinel)
			var fe *FrameError
			require.ErrorAs(t, err, &fe)
			require.Contains(t, err.Error(), tt.msg)
			_, err = BatchLen(tt.in, Limits{})
			require.ErrorIs(t, err, tt.sentinel)
		})
	}
}

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		name string
		lim  Limits
		msg  string // "" = valid
	}{
		{"defaults", DefaultLimits(), ""},
		{"zero means defaults", Limits{}, ""},
		{"small", Limits{MaxRecords: 1, MaxRecordBytes: 1, MaxBatchBytes: 1}, ""},
		{"negative records", Limits{MaxRecords: -1}, "max_records=-1 is negative"},
		{"negative record bytes", Limits{MaxRecordBytes: -1}, "max_record_bytes=-1 is negative"},
		{"negative batch bytes", Limits{MaxBatchBytes: -1}, "max_batch_bytes=-1 is negative"},
		{"record above batch", Limits{MaxRecordBytes: 2 << 20, MaxBatchBytes: 1 << 20}, "max_record_bytes=2097152 is above max_batch_bytes=1048576"},
		{"record above default batch", Limits{MaxRecordBytes: 32 << 20}, "above max_batch_bytes=16777216"},
		{"batch above ceiling", Limits{MaxBatchBytes: 2 << 30}, "above the ceiling"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.lim.Validate()
			if tt.msg == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalidLimits)
			require.Contains(t, err.Error(), tt.msg)
			b := AppendBatch(nil, []Record{{Seq: 1, Payload: []byte("{}")}})
			require.ErrorIs(t, DecodeBatch(b, tt.lim, nil), ErrInvalidLimits)
			require.ErrorIs(t, DecodeNDJSON([]byte("{}\n"), tt.lim, nil), ErrInvalidLimits)
		})
	}
	require.Equal(t, Limits{MaxRecords: 10_000, MaxRecordBytes: 1 << 20, MaxBatchBytes: 16 << 20}, DefaultLimits())
}

func TestFrameErrorString(t *testing.T) {
	require.Equal(t, "frame 2 at byte 7: invalid input", (&FrameError{Frame: 2, Offset: 7}).Error())
	require.Equal(t, "batch at byte 0: checksum mismatch", (&FrameError{Frame: -1, Err: ErrChecksum}).Error())
	require.Equal(t, "line 3 (record 1) at byte 9: x", (&FrameError{Frame: 1, Line: 3, Offset: 9, Detail: "x"}).Error())
	wrapped := fmt.Errorf("cannot decode batch from meter %q: %w", "m1", &FrameError{Frame: 4, Err: ErrRecordTooLarge, Limit: LimitMaxRecordBytes})
	var fe *FrameError
	require.ErrorAs(t, wrapped, &fe)
	require.Equal(t, 4, fe.Frame)
	require.ErrorIs(t, wrapped, ErrRecordTooLarge)
}
