package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// DecodeNDJSON validates and decodes an NDJSON body (one JSON value per
// line), calling fn for each record in order with its 0-based record index
// and its payload.
//
// Lines end with "\n" or "\r\n" (any run of CRs before the LF, or at the
// end of the body, is dropped); the last line may lack its line ending.
// Blank lines (empty, or only spaces, tabs and '\r') are skipped and do not
// count as records, which forgives the trailing newline and stray blank
// lines curl users produce; record indexes stay contiguous so that a caller
// can assign Seq = base + index. The payload is the line without its line
// ending, aliasing b (capacity clipped), otherwise unmodified.
//
// Each payload must be one valid JSON value (json.Valid): the media type
// promises it, and a client that sends something else learns it at once
// with the line number instead of a sink failing later. The check costs
// throughput (see the package benchmarks), which is acceptable because
// NDJSON is the curl and scripting path; meters send binary batches. Use
// DecodeLines to skip it.
//
// Like DecodeBatch, the whole body is validated (limits, JSON) before fn is
// first called; an error from fn stops decoding and is returned unchanged.
// Input errors are *FrameError with Line set, wrapping ErrBatchTooLarge,
// ErrTooManyRecords, ErrRecordTooLarge, ErrInvalidJSON or ErrEmptyBatch.
// DecodeNDJSON allocates nothing on valid input and never panics.
func DecodeNDJSON(b []byte, lim Limits, fn func(line int, payload []byte) error) error {
	return decodeLines(b, lim, true, fn)
}

// DecodeLines is DecodeNDJSON without the JSON check: any non-blank line is
// a record.
func DecodeLines(b []byte, lim Limits, fn func(line int, payload []byte) error) error {
	return decodeLines(b, lim, false, fn)
}

func decodeLines(b []byte, lim Limits, checkJSON bool, fn func(int, []byte) error) error {
	if err := lim.Validate(); err != nil {
		return err
	}
	lim = lim.withDefaults()
	if len(b) > lim.MaxBatchBytes {
		return limitErr(-1, 0, LimitMaxBatchBytes, ErrBatchTooLarge, "body of %d bytes", len(b), lim.MaxBatchBytes)
	}
	n, err := walkLines(b, lim, checkJSON, nil)
	if err != nil {
		return err
	}
	if n == 0 {
		return frameErr(-1, 0, "", ErrEmptyBatch, "body contains no records (only blank lines)")
	}
	_, err = walkLines(b, lim, false, fn)
	return err
}

// walkLines splits b into lines and returns the number of records. With fn
// == nil it validates (limits, and JSON if checkJSON); with fn it calls
// back.
func walkLines(b []byte, lim Limits, checkJSON bool, fn func(int, []byte) error) (int, error) {
	rec := 0
	for line, i := 1, 0; i < len(b); line++ {
		start := i
		var l []byte
		if k := bytes.IndexByte(b[i:], '\n'); k >= 0 {
			l = b[i : i+k]
			i += k + 1
		} else {
			l = b[i:]
			i = len(b)
		}
		// Strip every trailing CR, not just the one of a CRLF: a payload
		// must never end with one, or AppendNDJSON could not write it
		// back (found by FuzzDecodeNDJSON: "1\r\r\n"). JSON treats CR as
		// insignificant whitespace, so nothing of value is lost.
		for len(l) > 0 && l[len(l)-1] == '\r' {
			l = l[:len(l)-1]
		}
		if blank(l) {
			continue
		}
		if fn != nil {
			if err := fn(rec, l[:len(l):len(l)]); err != nil {
				return rec, err
			}
			rec++
			continue
		}
		if rec >= lim.MaxRecords {
			e := frameErr(rec, start, LimitMaxRecords, ErrTooManyRecords, "record count reaches %d, exceeding limit %s=%d", rec+1, LimitMaxRecords, lim.MaxRecords)
			e.Line = line
			return rec, e
		}
		if len(l) > lim.MaxRecordBytes {
			e := limitErr(rec, start, LimitMaxRecordBytes, ErrRecordTooLarge, "record payload of %d bytes", len(l), lim.MaxRecordBytes)
			e.Line = line
			return rec, e
		}
		if checkJSON && !json.Valid(l) {
			e := frameErr(rec, start, "", ErrInvalidJSON, "line is not valid JSON%s", jsonWhy(l))
			e.Line = line
			return rec, e
		}
		rec++
	}
	return rec, nil
}

// blank reports whether l holds only spaces, tabs and carriage returns. For
// a normal record it returns at the first byte.
func blank(l []byte) bool {
	for _, c := range l {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// jsonWhy says where and why l is not valid JSON. It runs only on the error
// path, so its allocations do not matter.
func jsonWhy(l []byte) string {
	var raw json.RawMessage
	err := json.Unmarshal(l, &raw)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf(": %v (at column %d)", se, se.Offset)
	}
	if err != nil {
		return ": " + err.Error()
	}
	return ""
}

// AppendNDJSON appends the payloads of recs to dst, one per line, each
// followed by "\n" (Seq and Timestamp are not carried; NDJSON has no place
// for them). It refuses, with an error naming the record, a payload that
// would not come back unchanged from DecodeLines: one that contains '\n',
// ends with '\r', or is blank. It does not check that payloads are JSON.
// On error dst is returned as it was.
func AppendNDJSON(dst []byte, recs []Record) ([]byte, error) {
	start := len(dst)
	for i, r := range recs {
		p := r.Payload
		switch {
		case blank(p):
			return dst[:start], fmt.Errorf("cannot encode record %d as NDJSON: blank payload would be skipped by the decoder", i)
		case p[len(p)-1] == '\r':
			return dst[:start], fmt.Errorf("cannot encode record %d as NDJSON: payload ends with a carriage return", i)
		case bytes.IndexByte(p, '\n') >= 0:
			return dst[:start], fmt.Errorf("cannot encode record %d as NDJSON: payload contains a newline", i)
		}
		dst = append(dst, p...)
		dst = append(dst, '\n')
	}
	return dst, nil
}
