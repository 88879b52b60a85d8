// Package wire is the ingest protocol shared by meters and collectors: the
// body of POST /v1/ingest, in its binary form (ContentTypeBatch) and its
// NDJSON form (ContentTypeNDJSON), the limits a collector enforces on it, and
// the Content-Encoding helpers (identity, gzip, zstd).
//
// # Binary batch format, version 1
//
// A batch is a header, N frames and a checksum trailer. Fixed-width integers
// are little-endian. A "varint" is an unsigned LEB128 varint as written by
// encoding/binary.AppendUvarint (7 bits per byte, low group first, high bit
// set on every byte but the last), and must be in its shortest form: at most
// 10 bytes, no trailing 0x00 continuation, no overflow past 64 bits. Because
// of that rule each list of records has exactly one encoding, and decoding
// then re-encoding a batch gives back the same bytes.
//
//	offset   size  field
//	0        4     magic "PHLB" (0x50 0x48 0x4C 0x42)
//	4        1     version, 0x01
//	5        4     N, the record count, uint32
//	9        ...   N frames, back to back, no padding
//	len-4    4     CRC-32C (Castagnoli polynomial) of bytes [0, len-4), uint32
//
// Frame i (0-based), with seq[-1] = 0 and ts[-1] = 0:
//
//	varint  zigzag(seq[i] - seq[i-1])    sequence number delta
//	varint  zigzag(ts[i] - ts[i-1])      timestamp delta (unix nanoseconds)
//	varint  L                            payload length in bytes
//	L bytes payload                      opaque; L may be 0
//
// The deltas use wrapping 64-bit arithmetic on the unsigned bit patterns, so
// every uint64 sequence and int64 timestamp round-trips exactly; zigzag
// (d<<1 ^ d>>63) keeps small backward steps as short as small forward ones.
// In a typical batch the sequence delta is 1 byte, the timestamp delta 2-4
// bytes and the length 1-2 bytes, so a 200-byte record costs about 5 bytes
// of framing. The first frame carries absolute values (about 14 bytes).
//
// A batch with N = 0 is well formed, but DecodeBatch rejects it with
// ErrEmptyBatch: meters never send one, so it is a client bug.
//
// Why this shape: the checksum in a trailer lets an encoder stream; the count
// in a fixed-width header lets Builder patch it in at the end, and lets the
// decoder reject an impossible count (fewer than 3 bytes per frame) before
// walking anything. A new version changes the version byte; a decoder
// rejects versions it does not know with ErrVersion before it looks at the
// checksum, because a future version may checksum differently.
//
// # Decoding
//
// DecodeBatch checks, in this order: the body size against MaxBatchBytes
// (before hashing it), the magic (ErrMagic), the version (ErrVersion), the
// minimum length (ErrTruncated), the checksum (ErrChecksum), N against 0
// (ErrEmptyBatch), MaxRecords (ErrTooManyRecords) and the bytes left; then it
// walks every frame, checking each varint (ErrTruncated, ErrMalformed), each
// length against MaxRecordBytes (ErrRecordTooLarge) and the bytes left
// (ErrTruncated), and finally that no bytes follow frame N-1
// (ErrTrailingData). Only then does it walk the frames a second time calling
// back, so a collector never publishes half of a bad batch. Payloads alias
// the input; a valid batch is decoded with no allocation at all. Any input,
// however hostile, yields an error, never a panic (fuzzed, see
// testdata/fuzz).
//
// Every input error is a *FrameError naming the record index (Frame, -1 for
// the batch as a whole), the byte offset, the limit when one was exceeded,
// and a sentinel for errors.Is. Its Error() is for a human, e.g.
//
//	frame 17 at byte 3410: record payload of 2000000 bytes exceeds limit max_record_bytes=1048576
//
// # NDJSON
//
// One JSON value per line, for curl and scripts; see DecodeNDJSON for the
// exact rules (\n or \r\n, optional final newline, blank lines skipped, each
// line must be valid JSON, record indexes contiguous). NDJSON carries no
// sequence numbers or timestamps: the collector assigns Seq from the record
// index and the arrival time as Timestamp. The same Limits apply, with
// MaxBatchBytes bounding the whole body and MaxRecordBytes each line.
//
// # Content-Encoding and the size cap
//
// Codec compresses (meter) and decompresses (collector) with pooled state.
// The decompressors refuse oversized zstd windows, but do not cap the output:
// the collector must read the decompressed body through ReadLimited (or an
// io.LimitReader of MaxBatchBytes+1) so that a small compressed body cannot
// inflate into gigabytes, and answer 413 when the limit is reached. The
// decoders then check MaxBatchBytes again on what they are given.
//
// # Concurrency and ownership
//
// The package has no mutable global state and starts no goroutines. All
// functions, and all Codec methods, are safe for concurrent use; a Builder is
// owned by one goroutine. Callbacks run on the caller's goroutine,
// synchronously, before DecodeBatch or DecodeNDJSON returns. Nothing needs
// shutting down.
package wire
