package wire

import (
	"errors"
	"fmt"
)

// Media types of the two request bodies POST /v1/ingest accepts.
const (
	ContentTypeBatch  = "application/vnd.phloem.batch"
	ContentTypeNDJSON = "application/x-ndjson"
)

// Bounded-load placement headers of the ingest protocol (collector and meter
// both take them from here).
const (
	// HeaderFull is set on the 503 of a collector that holds its maximum of
	// active meters and refuses a new one (value FullMeters). It is placement,
	// not overload: the meter moves at once to the next collector of its ring
	// order instead of backing off.
	HeaderFull = "X-Phloem-Full"
	FullMeters = "meters"
	// HeaderPlacement tells a collector why the meter comes to it.
	// PlacementFallback: every live collector answered HeaderFull, so the
	// request is admitted whatever the bound. PlacementFailover: a collector
	// before this one in the meter's ring order is down; it is admitted up to a
	// higher bound, so that a lost collector's meters spread over their ring
	// successors as with plain consistent hashing.
	HeaderPlacement   = "X-Phloem-Placement"
	PlacementFallback = "fallback"
	PlacementFailover = "failover"
)

// Record is one telemetry record.
//
// When a Record comes out of DecodeBatch, Payload aliases the decoded input
// buffer (no copy): it is valid only as long as that buffer is, and a caller
// that keeps the record past the callback, or reuses the buffer, must copy it.
// Its capacity is clipped to its length, so appending to it never overwrites
// the next record.
type Record struct {
	Seq       uint64 // per-meter sequence number
	Timestamp int64  // unix nanoseconds, set by the meter; 0 means "collector assigns now"
	Payload   []byte
}

// Default limits. A meter and a collector built from the same version agree on
// them; a collector may lower them per deployment.
const (
	DefaultMaxRecords     = 10_000
	DefaultMaxRecordBytes = 1 << 20  // 1 MiB
	DefaultMaxBatchBytes  = 16 << 20 // 16 MiB

	// MaxBatchBytesCeiling caps Limits.MaxBatchBytes: a batch is held in
	// memory whole, and the record count is a 32-bit field.
	MaxBatchBytesCeiling = 1 << 30 // 1 GiB
)

// Names of the limits as they appear in FrameError.Limit and error strings.
// They match the collector's configuration keys so that an operator reading
// an error knows which setting to look at.
const (
	LimitMaxRecords     = "max_records"
	LimitMaxRecordBytes = "max_record_bytes"
	LimitMaxBatchBytes  = "max_batch_bytes"
)

// Limits bound what a decoder accepts. The zero value of a field means its
// default, so Limits{} behaves like DefaultLimits(). Negative values are
// invalid.
type Limits struct {
	// MaxRecords is the most records one batch may hold. Default 10_000.
	MaxRecords int
	// MaxRecordBytes is the largest payload of one record, in bytes (for
	// NDJSON: of one line, without its line ending). Default 1 MiB.
	MaxRecordBytes int
	// MaxBatchBytes is the largest encoded, uncompressed body, in bytes: the
	// whole binary batch including header and checksum, or the whole NDJSON
	// body. Default 16 MiB. The collector must also cap the decompressed
	// body with it before decoding (see ReadLimited): the decoders only see
	// bytes that were already read into memory.
	MaxBatchBytes int
}

// DefaultLimits returns the limits used when none are configured.
func DefaultLimits() Limits {
	return Limits{
		MaxRecords:     DefaultMaxRecords,
		MaxRecordBytes: DefaultMaxRecordBytes,
		MaxBatchBytes:  DefaultMaxBatchBytes,
	}
}

// withDefaults replaces zero fields by their defaults.
func (l Limits) withDefaults() Limits {
	if l.MaxRecords == 0 {
		l.MaxRecords = DefaultMaxRecords
	}
	if l.MaxRecordBytes == 0 {
		l.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if l.MaxBatchBytes == 0 {
		l.MaxBatchBytes = DefaultMaxBatchBytes
	}
	return l
}

// Validate reports whether the limits are usable: no negative field,
// MaxBatchBytes at most MaxBatchBytesCeiling, and MaxRecordBytes not above
// MaxBatchBytes (after zero fields take their defaults). Errors wrap
// ErrInvalidLimits.
func (l Limits) Validate() error {
	if l.MaxRecords < 0 {
		return fmt.Errorf("%w: %s=%d is negative", ErrInvalidLimits, LimitMaxRecords, l.MaxRecords)
	}
	if l.MaxRecordBytes < 0 {
		return fmt.Errorf("%w: %s=%d is negative", ErrInvalidLimits, LimitMaxRecordBytes, l.MaxRecordBytes)
	}
	if l.MaxBatchBytes < 0 {
		return fmt.Errorf("%w: %s=%d is negative", ErrInvalidLimits, LimitMaxBatchBytes, l.MaxBatchBytes)
	}
	e := l.withDefaults()
	if e.MaxBatchBytes > MaxBatchBytesCeiling {
		return fmt.Errorf("%w: %s=%d is above the ceiling of %d bytes", ErrInvalidLimits, LimitMaxBatchBytes, e.MaxBatchBytes, MaxBatchBytesCeiling)
	}
	if e.MaxRecordBytes > e.MaxBatchBytes {
		return fmt.Errorf("%w: %s=%d is above %s=%d, so the record limit could never be reached",
			ErrInvalidLimits, LimitMaxRecordBytes, e.MaxRecordBytes, LimitMaxBatchBytes, e.MaxBatchBytes)
	}
	return nil
}

// Sentinel errors. Decode errors are *FrameError values whose Err is one of
// these, so callers branch with errors.Is and read the position with
// errors.As.
var (
	// ErrTooManyRecords: the batch holds more than Limits.MaxRecords records
	// (collector answers 413).
	ErrTooManyRecords = errors.New("too many records")
	// ErrRecordTooLarge: one payload is larger than Limits.MaxRecordBytes
	// (collector answers 413).
	ErrRecordTooLarge = errors.New("record too large")
	// ErrBatchTooLarge: the body is larger than Limits.MaxBatchBytes
	// (collector answers 413). Also returned by ReadLimited.
	ErrBatchTooLarge = errors.New("batch too large")
	// ErrChecksum: the CRC-32C trailer does not match the batch; it was
	// damaged in transit or by a buggy encoder (collector answers 400).
	ErrChecksum = errors.New("checksum mismatch")
	// ErrVersion: the batch uses a format version this decoder does not
	// read (collector answers 400; the meter is newer than the collector).
	ErrVersion = errors.New("unsupported batch version")
	// ErrTruncated: the batch ends in the middle of a header or frame, or a
	// length points past the end.
	ErrTruncated = errors.New("batch truncated")
	// ErrMagic: the body does not start with the batch magic; it is not a
	// binary batch (wrong Content-Type, or still compressed).
	ErrMagic = errors.New("not a phloem batch (bad magic)")
	// ErrTrailingData: bytes follow the last frame announced by the header.
	ErrTrailingData = errors.New("trailing data after last frame")
	// ErrMalformed: a varint is overlong, overflows 64 bits or is not in
	// its shortest form.
	ErrMalformed = errors.New("malformed frame")
	// ErrEmptyBatch: the body holds no record. Meters never send empty
	// batches, so one is a client bug worth a 400 rather than a silent 200.
	ErrEmptyBatch = errors.New("batch contains no records")
	// ErrInvalidJSON: an NDJSON line is not one valid JSON value.
	ErrInvalidJSON = errors.New("line is not valid JSON")
	// ErrInvalidLimits: Limits.Validate failed; returned by the decoders
	// before they look at the input.
	ErrInvalidLimits = errors.New("invalid wire limits")
	// ErrUnsupportedEncoding: a Content-Encoding other than identity, gzip
	// or zstd (collector answers 415).
	ErrUnsupportedEncoding = errors.New("unsupported content encoding")
)

// FrameError says what is wrong with a body and where. Every error the
// decoders return about their input is a *FrameError; Error() is meant for a
// human operator, e.g.
//
//	frame 17 at byte 3410: record payload of 2000000 bytes exceeds limit max_record_bytes=1048576
//	line 4 (record 3) at byte 57: line is not valid JSON: invalid character 'x' looking for beginning of value (at column 2)
//	batch at byte 4: unsupported batch version 2 (this decoder reads version 1)
type FrameError struct {
	// Frame is the 0-based index of the record at fault, or -1 when the
	// fault is in the batch as a whole (header, checksum, total size).
	Frame int
	// Offset is the byte offset in the body where the faulty frame, line or
	// field starts.
	Offset int
	// Line is the 1-based line number for NDJSON bodies (blank lines count),
	// and 0 for binary batches.
	Line int
	// Limit names the limit that was exceeded (LimitMaxRecords,
	// LimitMaxRecordBytes, LimitMaxBatchBytes), or "" when no limit is
	// involved.
	Limit string
	// Err is the sentinel describing the kind of fault (ErrChecksum, ...).
	Err error
	// Detail is the human-readable specifics (sizes, values found).
	Detail string
}

// Error implements error.
func (e *FrameError) Error() string {
	var where string
	switch {
	case e.Line > 0:
		where = fmt.Sprintf("line %d (record %d) at byte %d", e.Line, e.Frame, e.Offset)
	case e.Frame < 0:
		where = fmt.Sprintf("batch at byte %d", e.Offset)
	default:
		where = fmt.Sprintf("frame %d at byte %d", e.Frame, e.Offset)
	}
	switch {
	case e.Detail != "":
		return where + ": " + e.Detail
	case e.Err != nil:
		return where + ": " + e.Err.Error()
	default:
		return where + ": invalid input"
	}
}

// Unwrap returns the sentinel.
func (e *FrameError) Unwrap() error { return e.Err }

// frameErr builds a *FrameError. It is only called on the error path, so
// the allocation and the formatting cost nothing on valid input.
func frameErr(frame, offset int, limit string, err error, format string, args ...any) *FrameError {
	return &FrameError{Frame: frame, Offset: offset, Limit: limit, Err: err, Detail: fmt.Sprintf(format, args...)}
}

// limitErr formats the detail of a limit violation in one consistent way.
func limitErr(frame, offset int, limit string, err error, what string, got, max int) *FrameError {
	return frameErr(frame, offset, limit, err, "%s exceeds limit %s=%d", fmt.Sprintf(what, got), limit, max)
}
