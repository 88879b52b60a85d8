package wire

import (
	"encoding/binary"
	"hash/crc32"
	"math"
)

// Layout constants of format version 1; doc.go describes the format byte by
// byte.
const (
	// Version is the batch format version this package writes and reads.
	Version = 1

	magic = "PHLB"

	offVersion = 4 // version byte
	offCount   = 5 // uint32 LE record count
	headerLen  = 9
	trailerLen = 4 // CRC-32C, uint32 LE

	// MinBatchLen is the size of a batch with no frames.
	MinBatchLen = headerLen + trailerLen
	// minFrameLen is the smallest frame: three one-byte varints.
	minFrameLen = 3
	// MaxFrameOverhead is the most bytes a frame adds besides its payload:
	// two 10-byte varints (sequence and timestamp deltas) and a 5-byte
	// length (payloads are below 4 GiB).
	MaxFrameOverhead = 10 + 10 + 5
)

// castagnoli is the CRC-32C table. It is computed once and never written
// again, so it is a constant in all but name (crc32 uses the SSE4.2/ARM
// CRC instructions with it, ~10+ GB/s).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C (Castagnoli) of b, the checksum a batch
// carries over everything before its trailer.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// zigzag maps a signed delta to an unsigned one so that small negative
// deltas stay short as varints.
func zigzag(d uint64) uint64   { return (d << 1) ^ uint64(int64(d)>>63) }
func unzigzag(u uint64) uint64 { return (u >> 1) ^ -(u & 1) }

// Builder encodes a batch incrementally, reusing its buffer across batches.
// A meter adds records until Len() (plus the next record's FrameLen) would
// pass its limit, then takes Bytes() and Resets. The zero value is ready to
// use. A Builder is not safe for concurrent use.
type Builder struct {
	buf     []byte
	n       int
	prevSeq uint64
	prevTS  uint64
}

// Reset empties the builder, keeping its buffer.
func (b *Builder) Reset() {
	b.buf = appendHeader(b.buf[:0])
	b.n = 0
	b.prevSeq, b.prevTS = 0, 0
}

// Add appends one record.
func (b *Builder) Add(r Record) {
	if len(b.buf) == 0 {
		b.Reset()
	}
	b.buf = appendFrame(b.buf, b.prevSeq, b.prevTS, r)
	b.prevSeq, b.prevTS = r.Seq, uint64(r.Timestamp)
	b.n++
}

// Count is the number of records added since the last Reset.
func (b *Builder) Count() int { return b.n }

// Len is the size Bytes would return now, trailer included.
func (b *Builder) Len() int {
	if len(b.buf) == 0 {
		return MinBatchLen
	}
	return len(b.buf) + trailerLen
}

// FrameLen is the number of bytes Add(r) would add to Len. It depends on the
// previous record, since sequence numbers and timestamps are delta-coded.
func (b *Builder) FrameLen(r Record) int {
	return uvarintLen(zigzag(r.Seq-b.prevSeq)) + uvarintLen(zigzag(uint64(r.Timestamp)-b.prevTS)) +
		uvarintLen(uint64(len(r.Payload))) + len(r.Payload)
}

// Bytes finishes the batch (record count and checksum) and returns it. The
// result aliases the builder's buffer: it is valid until the next Add or
// Reset. Calling Bytes twice without Add returns the same batch.
func (b *Builder) Bytes() []byte {
	if len(b.buf) == 0 {
		b.Reset()
	}
	return finish(b.buf, 0, b.n)
}

// AppendBatch appends the binary encoding of recs to dst and returns the
// extended slice. It allocates only when dst lacks capacity (see
// EncodedLen). The encoding of zero records is well formed but DecodeBatch
// rejects it with ErrEmptyBatch.
func AppendBatch(dst []byte, recs []Record) []byte {
	start := len(dst)
	dst = appendHeader(dst)
	var prevSeq, prevTS uint64
	for _, r := range recs {
		dst = appendFrame(dst, prevSeq, prevTS, r)
		prevSeq, prevTS = r.Seq, uint64(r.Timestamp)
	}
	return finish(dst, start, len(recs))
}

// EncodedLen returns len(AppendBatch(nil, recs)) without encoding.
func EncodedLen(recs []Record) int {
	n := MinBatchLen
	var prevSeq, prevTS uint64
	for _, r := range recs {
		n += uvarintLen(zigzag(r.Seq-prevSeq)) + uvarintLen(zigzag(uint64(r.Timestamp)-prevTS)) +
			uvarintLen(uint64(len(r.Payload))) + len(r.Payload)
		prevSeq, prevTS = r.Seq, uint64(r.Timestamp)
	}
	return n
}

func appendHeader(dst []byte) []byte {
	return append(append(dst, magic...), Version, 0, 0, 0, 0)
}

func appendFrame(dst []byte, prevSeq, prevTS uint64, r Record) []byte {
	// Wrapping subtraction makes any pair of values round-trip exactly;
	// zigzag keeps a small backwards step (clock adjustment, replayed spool)
	// as short as a small forward one.
	dst = binary.AppendUvarint(dst, zigzag(r.Seq-prevSeq))
	dst = binary.AppendUvarint(dst, zigzag(uint64(r.Timestamp)-prevTS))
	dst = binary.AppendUvarint(dst, uint64(len(r.Payload)))
	return append(dst, r.Payload...)
}

// finish writes the record count into the header at dst[start:] and appends
// the checksum of dst[start:].
func finish(dst []byte, start, n int) []byte {
	// More than 2^32-1 records cannot be encoded, and no decoder limit
	// allows that many anyway; saturating makes the batch fail to decode
	// with a clear error instead of silently wrapping.
	c := uint32(math.MaxUint32)
	if uint64(n) < math.MaxUint32 {
		c = uint32(n)
	}
	binary.LittleEndian.PutUint32(dst[start+offCount:], c)
	return binary.LittleEndian.AppendUint32(dst, Checksum(dst[start:]))
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// DecodeBatch validates and decodes a binary batch, calling fn for each
// record in order.
//
// The whole batch is validated before fn is first called: the size limit,
// magic, version, checksum, record-count limit, then every frame's varints
// and lengths against the remaining bytes and the limits. So an error that
// is not fn's own means fn was never called, and a collector never
// half-publishes a bad batch. If fn returns an error, decoding stops and
// that error is returned unchanged.
//
// Record.Payload aliases b (no copy); DecodeBatch allocates nothing on valid
// input. Errors about the input are *FrameError wrapping ErrBatchTooLarge,
// ErrTruncated, ErrMagic, ErrVersion, ErrChecksum, ErrTooManyRecords,
// ErrEmptyBatch, ErrRecordTooLarge, ErrMalformed or ErrTrailingData; invalid
// limits give an error wrapping ErrInvalidLimits. DecodeBatch never panics,
// whatever b holds, and is safe for concurrent use on distinct or shared
// (read-only) buffers. A nil fn only validates.
func DecodeBatch(b []byte, lim Limits, fn func(Record) error) error {
	if err := lim.Validate(); err != nil {
		return err
	}
	lim = lim.withDefaults()
	n, err := checkBatch(b, lim)
	if err != nil {
		return err
	}
	if err := walkFrames(b, n, lim.MaxRecordBytes, nil); err != nil {
		return err
	}
	return walkFrames(b, n, lim.MaxRecordBytes, fn)
}

// BatchLen validates b like DecodeBatch without calling anything back and
// returns its record count, so a caller can size its buffers first.
func BatchLen(b []byte, lim Limits) (int, error) {
	if err := lim.Validate(); err != nil {
		return 0, err
	}
	lim = lim.withDefaults()
	n, err := checkBatch(b, lim)
	if err != nil {
		return 0, err
	}
	if err := walkFrames(b, n, lim.MaxRecordBytes, nil); err != nil {
		return 0, err
	}
	return n, nil
}

// checkBatch validates everything but the frames and returns the record
// count. The order matters for the operator: a body that is too large is
// rejected before it is hashed; a wrong magic or version is reported as
// such, not as a checksum mismatch (a future version may checksum
// differently).
func checkBatch(b []byte, lim Limits) (int, error) {
	if len(b) > lim.MaxBatchBytes {
		return 0, limitErr(-1, 0, LimitMaxBatchBytes, ErrBatchTooLarge, "batch of %d bytes", len(b), lim.MaxBatchBytes)
	}
	// Compare what there is of the magic first: a short body of something
	// else is "not a batch", not "truncated".
	for k := 0; k < len(magic) && k < len(b); k++ {
		if b[k] != magic[k] {
			return 0, frameErr(-1, 0, "", ErrMagic, "not a phloem batch: starts with %q, want %q (wrong Content-Type, or still compressed?)",
				b[:min(len(b), len(magic))], magic)
		}
	}
	if len(b) <= offVersion {
		return 0, frameErr(-1, len(b), "", ErrTruncated, "batch truncated: %d bytes, shorter than the %d-byte header and trailer", len(b), MinBatchLen)
	}
	if b[offVersion] != Version {
		return 0, frameErr(-1, offVersion, "", ErrVersion, "unsupported batch version %d (this decoder reads version %d; upgrade the collector)",
			b[offVersion], Version)
	}
	if len(b) < MinBatchLen {
		return 0, frameErr(-1, len(b), "", ErrTruncated, "batch truncated: %d bytes, shorter than the %d-byte header and trailer", len(b), MinBatchLen)
	}
	end := len(b) - trailerLen
	want := binary.LittleEndian.Uint32(b[end:])
	if got := Checksum(b[:end]); got != want {
		return 0, frameErr(-1, end, "", ErrChecksum, "checksum mismatch: batch carries crc32c %08x, content hashes to %08x (damaged in transit?)", want, got)
	}
	count := binary.LittleEndian.Uint32(b[offCount:])
	if count == 0 {
		return 0, frameErr(-1, offCount, "", ErrEmptyBatch, "batch contains no records")
	}
	if uint64(count) > uint64(lim.MaxRecords) {
		return 0, frameErr(-1, offCount, LimitMaxRecords, ErrTooManyRecords, "record count %d exceeds limit %s=%d", count, LimitMaxRecords, lim.MaxRecords)
	}
	// Each frame takes at least minFrameLen bytes; rejecting an impossible
	// count here means callers may size buffers by the count.
	if room := uint64(end-headerLen) / minFrameLen; uint64(count) > room {
		return 0, frameErr(-1, offCount, "", ErrTruncated, "batch truncated: header announces %d records but only %d bytes of frames follow", count, end-headerLen)
	}
	return int(count), nil
}

// walkFrames walks the n frames of a batch that passed checkBatch. With
// fn == nil it only validates; with fn it also decodes and calls back.
// Every index is checked against the end of the frame area, so it cannot
// panic even on input checkBatch did not see.
func walkFrames(b []byte, n, maxRecord int, fn func(Record) error) error {
	end := len(b) - trailerLen
	if end < headerLen {
		return frameErr(-1, 0, "", ErrTruncated, "batch truncated")
	}
	p := b[:end]
	i := headerLen
	var seq, ts uint64
	for f := 0; f < n; f++ {
		start := i
		var ds, dt, l uint64
		var ok bool
		// Single-byte varints are inlined: in real batches sequence deltas
		// are almost always 1, so this is the common path.
		if i < len(p) && p[i] < 0x80 {
			ds = uint64(p[i])
			i++
		} else if ds, i, ok = uvarint(p, i); !ok {
			return varintErr(p, f, start, i, "sequence number")
		}
		if i < len(p) && p[i] < 0x80 {
			dt = uint64(p[i])
			i++
		} else if dt, i, ok = uvarint(p, i); !ok {
			return varintErr(p, f, start, i, "timestamp")
		}
		if i < len(p) && p[i] < 0x80 {
			l = uint64(p[i])
			i++
		} else if l, i, ok = uvarint(p, i); !ok {
			return varintErr(p, f, start, i, "payload length")
		}
		if l > uint64(maxRecord) {
			return frameErr(f, start, LimitMaxRecordBytes, ErrRecordTooLarge, "record payload of %d bytes exceeds limit %s=%d", l, LimitMaxRecordBytes, maxRecord)
		}
		if l > uint64(len(p)-i) {
			return frameErr(f, start, "", ErrTruncated, "batch truncated: record payload of %d bytes but only %d bytes remain before the checksum", l, len(p)-i)
		}
		seq += unzigzag(ds)
		ts += unzigzag(dt)
		if fn != nil {
			j := i + int(l)
			if err := fn(Record{Seq: seq, Timestamp: int64(ts), Payload: p[i:j:j]}); err != nil {
				return err
			}
		}
		i += int(l)
	}
	if i != len(p) {
		return frameErr(-1, i, "", ErrTrailingData, "%d bytes of trailing data after the last of %d frames", len(p)-i, n)
	}
	return nil
}

// uvarint decodes the varint at p[i]. ok is false when it runs past the end,
// is longer than 10 bytes, overflows 64 bits, or is not in its shortest
// form. Rejecting non-shortest forms makes the encoding of a batch unique,
// so decode then encode gives back the same bytes.
func uvarint(p []byte, i int) (v uint64, next int, ok bool) {
	var shift uint
	for k := 0; k < binary.MaxVarintLen64; k++ {
		if i+k >= len(p) {
			return 0, i + k, false
		}
		c := p[i+k]
		if c < 0x80 {
			if k == binary.MaxVarintLen64-1 && c > 1 {
				return 0, i + k, false // overflows 64 bits
			}
			if k > 0 && c == 0 {
				return 0, i + k, false // not the shortest form
			}
			return v | uint64(c)<<shift, i + k + 1, true
		}
		v |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, i + binary.MaxVarintLen64, false
}

// varintErr explains why uvarint failed at frame f.
func varintErr(p []byte, f, start, at int, field string) error {
	if at >= len(p) {
		return frameErr(f, start, "", ErrTruncated, "batch truncated in the %s of frame %d (byte %d is the checksum trailer)", field, f, at)
	}
	return frameErr(f, start, "", ErrMalformed, "malformed %s varint at byte %d (overlong, overflowing or not in shortest form)", field, at)
}
