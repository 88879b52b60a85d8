package wire

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

type line struct {
	idx     int
	payload string
}

func decodeAll(t *testing.T, body string, lim Limits, strict bool) ([]line, error) {
	t.Helper()
	var out []line
	fn := func(i int, p []byte) error {
		require.Equal(t, len(p), cap(p), "payload capacity must be clipped")
		out = append(out, line{i, string(p)})
		return nil
	}
	var err error
	if strict {
		err = DecodeNDJSON([]byte(body), lim, fn)
	} else {
		err = DecodeLines([]byte(body), lim, fn)
	}
	if err != nil {
		require.Empty(t, out, "fn must not be called for an invalid body")
	}
	return out, err
}

func TestDecodeNDJSON(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []line
	}{
		{"one line", "{\"a\":1}\n", []line{{0, `{"a":1}`}}},
		{"no final newline", "1\n2", []line{{0, "1"}, {1, "2"}}},
		{"crlf", "{}\r\n[]\r\n", []line{{0, "{}"}, {1, "[]"}}},
		{"crlf, no final newline", "{}\r\n\"x\"", []line{{0, "{}"}, {1, `"x"`}}},
		{"blank lines skipped, indexes contiguous", "\n\n1\n\r\n  \t\n2\n\n", []line{{0, "1"}, {1, "2"}}},
		{"payload kept as is", "  {\"a\" : [1, 2]}  \n", []line{{0, `  {"a" : [1, 2]}  `}}},
		{"stray carriage returns dropped", "1\r\r\n2 \r", []line{{0, "1"}, {1, "2 "}}},
		{"scalars", "true\nnull\n-1.5e3\n\"s\"\n", []line{{0, "true"}, {1, "null"}, {2, "-1.5e3"}, {3, `"s"`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAll(t, tt.body, Limits{}, true)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestDecodeNDJSONErrors(t *testing.T) {
	lim := Limits{MaxRecords: 3, MaxRecordBytes: 10, MaxBatchBytes: 100}
	tests := []struct {
		name     string
		body     string
		sentinel error
		limit    string
		frame    int
		line     int
		msg      string
	}{
		{"empty body", "", ErrEmptyBatch, "", -1, 0, "batch at byte 0: body contains no records (only blank lines)"},
		{"only blank lines", "\n\r\n \n", ErrEmptyBatch, "", -1, 0, "no records"},
		{"invalid json", "{}\n\n{\"a\":x}\n", ErrInvalidJSON, "", 1, 3,
			"line 3 (record 1) at byte 4: line is not valid JSON: invalid character 'x' looking for beginning of value (at column 6)"},
		{"two values on a line", "1 2\n", ErrInvalidJSON, "", 0, 1, "line 1 (record 0) at byte 0: line is not valid JSON"},
		{"pretty printed json", "{\n\"a\":1}\n", ErrInvalidJSON, "", 0, 1, "line 1 (record 0) at byte 0: line is not valid JSON: unexpected end of JSON input"},
		{"too many records", "1\n2\n\n3\n4\n5\n", ErrTooManyRecords, LimitMaxRecords, 3, 5,
			"line 5 (record 3) at byte 7: record count reaches 4, exceeding limit max_records=3"},
		{"record too large", "1\n\"123456789\"\n", ErrRecordTooLarge, LimitMaxRecordBytes, 1, 2,
			"line 2 (record 1) at byte 2: record payload of 11 bytes exceeds limit max_record_bytes=10"},
		{"cr not counted in record size", "1\n\"12345678\"\r\n[\"1234567890\"]", ErrRecordTooLarge, LimitMaxRecordBytes, 2, 3, "record payload of 14 bytes"},
		{"body too large", strings.Repeat("1\n", 51), ErrBatchTooLarge, LimitMaxBatchBytes, -1, 0,
			"batch at byte 0: body of 102 bytes exceeds limit max_batch_bytes=100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeAll(t, tt.body, lim, true)
			require.ErrorIs(t, err, tt.sentinel)
			var fe *FrameError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, tt.limit, fe.Limit)
			require.Equal(t, tt.frame, fe.Frame)
			require.Equal(t, tt.line, fe.Line)
			require.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestDecodeLinesSkipsJSONCheck(t *testing.T) {
	got, err := decodeAll(t, "not json\r\n\nplain text", Limits{}, false)
	require.NoError(t, err)
	require.Equal(t, []line{{0, "not json"}, {1, "plain text"}}, got)
	_, err = decodeAll(t, "not json\n", Limits{}, true)
	require.ErrorIs(t, err, ErrInvalidJSON)
}

func TestDecodeNDJSONCallbackError(t *testing.T) {
	stop := errors.New("stop")
	calls := 0
	err := DecodeNDJSON([]byte("1\n2\n3\n"), Limits{}, func(int, []byte) error {
		calls++
		return stop
	})
	require.Same(t, stop, err)
	require.Equal(t, 1, calls)
}

func TestDecodeNDJSONAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	body, err := AppendNDJSON(nil, sampleRecords(500, 200))
	require.NoError(t, err)
	n := 0
	fn := func(int, []byte) error { n++; return nil }
	allocs := testing.AllocsPerRun(10, func() {
		if err := DecodeNDJSON(body, Limits{}, fn); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
	require.Positive(t, n)
}

func TestAppendNDJSON(t *testing.T) {
	recs := sampleRecords(50, 120)
	body, err := AppendNDJSON([]byte("x"), recs)
	require.NoError(t, err)
	require.Equal(t, byte('x'), body[0])
	var got [][]byte
	require.NoError(t, DecodeNDJSON(body[1:], Limits{}, func(i int, p []byte) error {
		require.Equal(t, len(got), i)
		got = append(got, p)
		return nil
	}))
	require.Len(t, got, len(recs))
	for i := range recs {
		require.Equal(t, recs[i].Payload, got[i])
	}

	for name, p := range map[string]string{
		"blank":    " \t",
		"empty":    "",
		"newline":  "{\n}",
		"trailing": "{}\r",
	} {
		t.Run(name, func(t *testing.T) {
			out, err := AppendNDJSON([]byte("keep"), []Record{{Payload: []byte("1")}, {Payload: []byte(p)}})
			require.Error(t, err)
			require.Contains(t, err.Error(), "record 1")
			require.Equal(t, "keep", string(out))
		})
	}
}
