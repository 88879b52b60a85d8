package consumer

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"phloem/phloem/topics"
)

// Kafka record header keys of tenant topics (the shared record format lives in
// phloem/topics, so that the collector and the consumer cannot drift apart).
const (
	HeaderMeterID     = topics.HeaderMeterID
	HeaderSeq         = topics.HeaderSeq
	HeaderRequestID   = topics.HeaderRequestID
	HeaderCollectorID = topics.HeaderCollectorID
	HeaderTimestamp   = topics.HeaderTimestamp
)

// itemOverhead approximates the bytes an item keeps alive beyond its payload (the
// item, the kgo.Record it points to, the record's header slice and key strings,
// the queue slot), so the byte bound stays honest for tiny records.
const itemOverhead = 512

// item is one consumed record on its way to the sinks. It is immutable once built
// and shared by every sink queue it is pushed to; ent/tr tie it to the partition
// tracker that waits for its acknowledgements.
//
// The poll loop is the consumer's one serial stage, so an item is only what the
// poll loop needs to route, bound and track the record: the record itself is kept
// as franz-go returned it (nothing modifies it), and the fields the sinks write
// (meter, seq, ts) are parsed from its headers by the connector that formats the
// line (recordFields), in parallel with the poll loop, and not at all by sinks
// that do not format (discard).
type item struct {
	tenant string
	rec    *kgo.Record
	size   int64

	ent *entry
	tr  *tracker
}

// fill points it at r, without allocating or reading the record's headers.
func (it *item) fill(tenant string, r *kgo.Record) {
	*it = item{tenant: tenant, rec: r, size: int64(len(r.Value)) + itemOverhead}
}

// newItem is fill on a new item.
func newItem(tenant string, r *kgo.Record) *item {
	it := new(item)
	it.fill(tenant, r)
	return it
}

// fields is what a line says about a record besides its tenant and payload.
// meter aliases the record's buffers (no copy).
type fields struct {
	meter  []byte
	seq    uint64
	hasSeq bool
	ts     int64
}

// recordFields extracts the line fields from r without allocating.
func recordFields(r *kgo.Record) fields {
	var f fields
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderMeterID:
			f.meter = h.Value
		case HeaderSeq:
			if v, ok := parseUint(h.Value); ok {
				f.seq, f.hasSeq = v, true
			}
		case HeaderTimestamp:
			if v, ok := parseUint(h.Value); ok && v <= 1<<63-1 {
				f.ts = int64(v)
			}
		}
	}
	if len(f.meter) == 0 {
		// The key is the meter id too; headers win because they are explicit.
		f.meter = r.Key
	}
	if f.ts == 0 {
		f.ts = r.Timestamp.UnixNano()
	}
	return f
}

// parseUint parses a decimal uint64 from b without allocating.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// appendLine appends the NDJSON line of it (with the trailing newline):
//
//	{"tenant":"acme","meter":"m-1","seq":42,"ts":1700000000000000000,"payload":{...}}
//
// "seq" is null when the record had no parsable seq header; "ts" is the meter's
// timestamp in unix nanoseconds (the Kafka record timestamp when the header is
// missing). "payload" is the raw payload when it is valid JSON (compacted onto one
// line if it spans several), otherwise a JSON string of the payload bytes (invalid
// UTF-8 replaced by U+FFFD).
func appendLine(dst []byte, it *item) []byte {
	f := recordFields(it.rec)
	dst = append(dst, `{"tenant":`...)
	dst = appendJSONString(dst, it.tenant)
	dst = append(dst, `,"meter":`...)
	dst = appendJSONString(dst, string(f.meter)) // no allocation: the conversion does not escape
	dst = append(dst, `,"seq":`...)
	if f.hasSeq {
		dst = strconv.AppendUint(dst, f.seq, 10)
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, f.ts, 10)
	dst = append(dst, `,"payload":`...)
	dst = appendPayload(dst, it.rec.Value)
	dst = append(dst, "}\n"...)
	return dst
}

func appendPayload(dst, p []byte) []byte {
	if len(p) > 0 && json.Valid(p) {
		if bytes.IndexByte(p, '\n') < 0 && bytes.IndexByte(p, '\r') < 0 {
			return append(dst, p...)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, p); err == nil {
			return append(dst, b.Bytes()...)
		}
	}
	return appendJSONString(dst, string(p))
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. It escapes what JSON requires plus
// U+2028/U+2029, and replaces invalid UTF-8 with U+FFFD, so every line parses.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\u202`...)
			dst = append(dst, hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
