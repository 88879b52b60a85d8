package meter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"phloem/collector/wire"
	"phloem/internal/logx"
)

// Spool layout. A spool dir holds:
//
//	<first seq, 20 digits>.seg   append-only segments, named by the first sequence
//	                             number they may hold; the newest one is active
//	ack                          the acknowledged cursor: every seq <= it was acked
//	lock                         flock held while a meter uses the dir
//
// A segment is a run of entries:
//
//	magic   4  0xF7 'P' 'S' 'E'  (resynchronisation point after corruption)
//	crc     4  CRC-32C (Castagnoli) of everything after it: len, seq, ts, payload
//	len     4  payload length, uint32 LE
//	seq     8  sequence number, uint64 LE
//	ts      8  unix nanoseconds, int64 LE
//	payload len bytes
//
// Naming a segment by its first sequence number is what keeps sequence numbers
// unique across restarts even when every record was acknowledged and every full
// segment deleted: the active segment is never deleted, and its name is a floor
// for the next sequence number.
const (
	entryHeaderLen = 28
	segSuffix      = ".seg"
	ackFileName    = "ack"
	readWindow     = 64 << 10
)

var entryMagic = [4]byte{0xF7, 'P', 'S', 'E'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors returned by Append and New.
var (
	// ErrClosed is returned by Append after the meter stopped.
	ErrClosed = errors.New("meter is closed")
	// ErrSpoolLocked is returned by New when another process uses the spool dir.
	ErrSpoolLocked = errors.New("spool dir is locked by another meter")
	// ErrRecordTooLarge is returned by Append for a payload above Limits.MaxRecordBytes.
	ErrRecordTooLarge = errors.New("record too large")
)

type spoolOptions struct {
	dir            string
	segmentBytes   int64
	maxBytes       int64
	fsync          FsyncPolicy
	full           FullPolicy
	maxRecordBytes int
	logger         *slog.Logger
	throttle       *logx.Throttled
	// Callbacks into the meter's metrics; called with the spool lock held, so they
	// must not call back into the spool.
	onCorrupt func(n int)
	onDrop    func(n int)
	onBytes   func(total int64)
}

// segment is the in-memory index of one segment file.
type segment struct {
	first   uint64 // from the file name
	lastSeq uint64 // highest valid seq in it, 0 if none
	count   int    // valid entries
	size    int64  // committed bytes: readers never look past it
	// skips maps the start of a corrupt range found at recovery to the offset where
	// reading resumes, so the reader jumps it without counting it twice.
	skips map[int64]int64
	r     *segReader // open read handle while the reader is in this segment
}

func (s *segment) name() string { return fmt.Sprintf("%020d%s", s.first, segSuffix) }

// spool is the meter's write-ahead log: Append writes every record to it before
// returning, the sender reads batches from it in order, and acknowledgements
// advance a persisted cursor and delete whole segments. All state is guarded by mu
// (reads and writes of segment files included: they are page-cache copies).
type spool struct {
	o    spoolOptions
	lock *dirLock

	mu       sync.Mutex
	segs     []*segment // ascending by first; the last one is active
	w        *os.File   // append handle of the active segment
	nextSeq  uint64
	acked    uint64
	total    int64
	dirty    bool
	closed   bool
	appended chan struct{} // cap 1: wakes the sender
	freed    chan struct{} // closed and replaced whenever space is freed
	ackedCh  chan struct{} // closed and replaced whenever acked advances
	scratch  []byte

	// Reader position (guarded by mu like the rest).
	rFirst   uint64 // segment being read
	rOff     int64
	lastRead uint64 // highest seq handed to the sender
}

// openSpool opens (creating if needed) the spool in o.dir, recovers every segment,
// truncates a torn tail of the active segment, and positions the reader after the
// acknowledged cursor.
func openSpool(o spoolOptions) (_ *spool, err error) {
	if o.logger == nil {
		o.logger = logx.Discard()
	}
	if o.throttle == nil {
		o.throttle = logx.NewThrottled(o.logger, 0)
	}
	for _, f := range []*func(int){&o.onCorrupt, &o.onDrop} {
		if *f == nil {
			*f = func(int) {}
		}
	}
	if o.onBytes == nil {
		o.onBytes = func(int64) {}
	}
	if err := os.MkdirAll(o.dir, 0o750); err != nil {
		return nil, fmt.Errorf("cannot create spool dir %q: %w", o.dir, err)
	}
	lk, err := lockDir(o.dir)
	if err != nil {
		return nil, err
	}
	s := &spool{
		o: o, lock: lk,
		appended: make(chan struct{}, 1),
		freed:    make(chan struct{}),
		ackedCh:  make(chan struct{}),
	}
	defer func() {
		if err != nil {
			s.closeFiles()
			_ = lk.release()
		}
	}()
	s.acked = s.readAck()
	if err := s.recover(); err != nil {
		return nil, err
	}
	return s, nil
}

// readAck loads the acknowledged cursor. A missing or damaged file means 0: the
// spool then resends what it holds (duplicates, never loss).
func (s *spool) readAck() uint64 {
	b, err := os.ReadFile(filepath.Join(s.o.dir, ackFileName))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.o.logger.Warn("cannot read spool ack cursor; resending everything spooled", "dir", s.o.dir, "error", err)
		}
		return 0
	}
	if len(b) != 12 || crc32.Checksum(b[:8], castagnoli) != binary.LittleEndian.Uint32(b[8:]) {
		s.o.logger.Warn("spool ack cursor is damaged; resending everything spooled", "dir", s.o.dir)
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func (s *spool) recover() error {
	ents, err := os.ReadDir(s.o.dir)
	if err != nil {
		return fmt.Errorf("cannot list spool dir %q: %w", s.o.dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, segSuffix) || !e.Type().IsRegular() {
			continue
		}
		first, perr := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if perr != nil || first == 0 {
			s.o.logger.Warn("ignoring unexpected file in spool dir", "file", name)
			continue
		}
		s.segs = append(s.segs, &segment{first: first})
	}
	slices.SortFunc(s.segs, func(a, b *segment) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	maxSeq := s.acked
	for i, seg := range s.segs {
		if err := s.recoverSegment(seg, i == len(s.segs)-1); err != nil {
			return err
		}
		s.total += seg.size
		maxSeq = max(maxSeq, seg.lastSeq, seg.first-1)
	}
	if len(s.segs) > 0 {
		// Segments before the first one were deleted because they were acknowledged
		// (or dropped): the cursor is at least there, even if the ack file is lost.
		s.acked = max(s.acked, s.segs[0].first-1)
	}
	s.nextSeq = maxSeq + 1
	if len(s.segs) == 0 {
		if err := s.createSegmentLocked(); err != nil {
			return err
		}
	} else {
		last := s.segs[len(s.segs)-1]
		f, err := os.OpenFile(filepath.Join(s.o.dir, last.name()), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("cannot open spool segment %s for append: %w", last.name(), err)
		}
		s.w = f
	}
	s.rFirst, s.rOff, s.lastRead = s.segs[0].first, 0, s.acked
	s.o.onBytes(s.total)
	return nil
}

// recoverSegment indexes one segment: valid entries, corrupt ranges (counted,
// logged and remembered in skips) and, for the active segment, a torn tail
// (counted, logged and truncated away so that new appends follow valid data).
func (s *spool) recoverSegment(seg *segment, active bool) error {
	path := filepath.Join(s.o.dir, seg.name())
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot open spool segment %s: %w", seg.name(), err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("cannot stat spool segment %s: %w", seg.name(), err)
	}
	r := &segReader{f: f}
	defer r.close()
	end := st.Size()
	var off, validEnd int64
	for off < end {
		e, next, ok := r.parse(off, end, s.o.maxRecordBytes)
		if ok {
			if e.seq > seg.lastSeq {
				seg.lastSeq = e.seq
			}
			seg.count++
			off, validEnd = next, next
			continue
		}
		resume := r.resync(off+1, end, s.o.maxRecordBytes)
		if resume >= end && active {
			// Nothing valid after it: a torn tail (the process died mid-write, or the
			// last write was lost). Cut it off so appends continue from valid data.
			s.o.onCorrupt(1)
			s.o.logger.Warn("spool: torn tail detected and truncated",
				"segment", seg.name(), "offset", validEnd, "bytes", end-validEnd)
			if err := os.Truncate(path, validEnd); err != nil {
				return fmt.Errorf("cannot truncate torn tail of spool segment %s: %w", seg.name(), err)
			}
			end = validEnd
			break
		}
		s.o.onCorrupt(1)
		s.o.logger.Warn("spool: corrupt entry skipped",
			"segment", seg.name(), "offset", off, "bytes", resume-off)
		if seg.skips == nil {
			seg.skips = make(map[int64]int64)
		}
		seg.skips[off] = resume
		off = resume
	}
	seg.size = end
	return nil
}

// createSegmentLocked starts a new active segment named after nextSeq.
func (s *spool) createSegmentLocked() error {
	seg := &segment{first: s.nextSeq}
	path := filepath.Join(s.o.dir, seg.name())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("cannot create spool segment %s: %w", path, err)
	}
	if s.o.fsync == FsyncAlways {
		// The file's directory entry must be durable too, or a power loss forgets
		// the whole segment.
		if err := syncDir(s.o.dir); err != nil {
			_ = f.Close()
			return err
		}
	}
	s.w = f
	s.segs = append(s.segs, seg)
	return nil
}

// rollLocked seals the active segment and starts the next one.
func (s *spool) rollLocked() error {
	if s.o.fsync != FsyncNever && s.dirty {
		if err := s.w.Sync(); err != nil {
			return fmt.Errorf("cannot sync spool segment before sealing it: %w", err)
		}
		s.dirty = false
	}
	if err := s.w.Close(); err != nil {
		return fmt.Errorf("cannot close spool segment: %w", err)
	}
	s.w = nil
	return s.createSegmentLocked()
}

// maxPending bounds the bytes appendMany gathers before one write(2).
const maxPending = 256 << 10

// append writes one record and returns its sequence number. The record is in the
// kernel (and on disk under FsyncAlways) when append returns.
func (s *spool) append(ctx context.Context, ts int64, payload []byte) (uint64, error) {
	first, _, err := s.appendMany(ctx, func(int) int64 { return ts }, [][]byte{payload})
	return first, err
}

// appendMany writes records with as few write(2) calls as possible (one per
// maxPending bytes, per segment roll and per wait for room) and returns how many
// were written before an error, and the first one's sequence number (the others
// follow it). ts gives each record's timestamp. Every record counted is in the
// kernel when appendMany returns.
func (s *spool) appendMany(ctx context.Context, ts func(i int) int64, payloads [][]byte) (first uint64, done int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.scratch[:0]
	pend := 0 // records in b
	defer func() {
		if cap(b) <= 2*maxPending {
			s.scratch = b[:0] // keep the buffer unless a huge record grew it
		}
	}()
	flush := func() error {
		if pend == 0 {
			return nil
		}
		written, err := s.writeLocked(b, pend)
		if written {
			done += pend
		}
		b, pend = b[:0], 0
		return err
	}
	for i, p := range payloads {
		need := int64(entryHeaderLen + len(p))
		if need > s.o.maxBytes {
			// No amount of waiting or dropping can make room for it.
			if err := flush(); err != nil {
				return first, done, err
			}
			return first, done, fmt.Errorf("record of %d bytes does not fit in a spool of %d bytes (max spool bytes)", need, s.o.maxBytes)
		}
		for {
			if s.closed {
				return first, done, ErrClosed
			}
			if s.total+int64(len(b))+need <= s.o.maxBytes {
				break
			}
			if err := flush(); err != nil {
				return first, done, err
			}
			if s.total+need <= s.o.maxBytes {
				break
			}
			if s.o.full == FullDropOldest {
				if err := s.dropOldestLocked(); err != nil {
					return first, done, err
				}
				continue
			}
			// FullBlock: wait for an acknowledgement to free a segment. Only a
			// sealed segment is ever freed, so when the active one is all the
			// spool holds, waiting alone would never end (its records may even
			// be acknowledged already): seal it first, so that acknowledging its
			// records frees it. A record that does not fit an empty spool can
			// never be written.
			if len(s.segs) == 1 {
				if s.segs[0].size == 0 {
					return first, done, fmt.Errorf("record of %d bytes does not fit in an empty spool of %d bytes (max spool bytes)", need, s.o.maxBytes)
				}
				if err := s.rollLocked(); err != nil {
					return first, done, err
				}
				if err := s.removeAckedLocked(); err != nil {
					return first, done, err
				}
				continue
			}
			ch := s.freed
			s.mu.Unlock()
			select {
			case <-ch:
				s.mu.Lock()
			case <-ctx.Done():
				s.mu.Lock()
				return first, done, fmt.Errorf("spool full (%d bytes) and the caller gave up waiting: %w", s.total, ctx.Err())
			}
		}
		if size := s.segs[len(s.segs)-1].size + int64(len(b)); size > 0 && size+need > s.o.segmentBytes {
			if err := flush(); err != nil {
				return first, done, err
			}
			if err := s.rollLocked(); err != nil {
				return first, done, err
			}
		}
		if done == 0 && pend == 0 {
			first = s.nextSeq
		}
		start := len(b)
		b = append(b, entryMagic[:]...)
		b = binary.LittleEndian.AppendUint32(b, 0) // crc, below
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = binary.LittleEndian.AppendUint64(b, s.nextSeq+uint64(pend))
		b = binary.LittleEndian.AppendUint64(b, uint64(ts(i)))
		b = append(b, p...)
		binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+8:], castagnoli))
		pend++
		if len(b) >= maxPending {
			if err := flush(); err != nil {
				return first, done, err
			}
		}
	}
	err = flush()
	return first, done, err
}

// writeLocked appends n encoded entries (b) to the active segment in one write
// and commits them to the index. written reports whether they were committed (a
// failed fsync after a good write returns written and the error).
func (s *spool) writeLocked(b []byte, n int) (written bool, err error) {
	active := s.segs[len(s.segs)-1]
	if _, err := s.w.Write(b); err != nil {
		// A short write (ENOSPC) leaves a partial entry: cut it so the segment
		// stays valid for the entries that follow.
		if terr := s.w.Truncate(active.size); terr != nil {
			err = errors.Join(err, terr)
		}
		return false, fmt.Errorf("cannot append to spool segment %s: %w", active.name(), err)
	}
	s.nextSeq += uint64(n)
	active.size += int64(len(b))
	active.count += n
	active.lastSeq = s.nextSeq - 1
	s.total += int64(len(b))
	s.o.onBytes(s.total)
	if s.o.fsync == FsyncAlways {
		if serr := s.w.Sync(); serr != nil {
			err = fmt.Errorf("cannot sync spool segment %s: %w", active.name(), serr)
		}
	} else {
		s.dirty = true
	}
	select {
	case s.appended <- struct{}{}:
	default:
	}
	return true, err
}

// dropOldestLocked deletes the oldest segment to make room (FullDropOldest).
func (s *spool) dropOldestLocked() error {
	if len(s.segs) == 1 {
		if s.segs[0].size == 0 {
			return fmt.Errorf("record does not fit in an empty spool of %d bytes", s.o.maxBytes)
		}
		if err := s.rollLocked(); err != nil {
			return err
		}
	}
	seg := s.segs[0]
	lost := 0
	if seg.lastSeq > s.acked {
		lost = int(min(uint64(seg.count), seg.lastSeq-max(s.acked, seg.first-1)))
	}
	if err := s.removeSegmentLocked(0); err != nil {
		return err
	}
	if lost > 0 {
		s.o.onDrop(lost)
		s.o.throttle.Warn("spool-drop", "spool full: dropped the oldest unacknowledged segment (policy drop-oldest)",
			"segment", seg.name(), "records", lost, "max_spool_bytes", s.o.maxBytes)
	}
	return nil
}

// removeSegmentLocked deletes segs[i] (never the active one) and moves the reader
// off it.
func (s *spool) removeSegmentLocked(i int) error {
	seg := s.segs[i]
	seg.r.close()
	seg.r = nil
	if err := os.Remove(filepath.Join(s.o.dir, seg.name())); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot delete spool segment %s: %w", seg.name(), err)
	}
	s.segs = slices.Delete(s.segs, i, i+1)
	s.total -= seg.size
	s.o.onBytes(s.total)
	if s.rFirst == seg.first {
		s.rFirst, s.rOff = s.segs[min(i, len(s.segs)-1)].first, 0
	}
	close(s.freed)
	s.freed = make(chan struct{})
	return nil
}

// entry is one decoded spool entry; payload aliases the segReader's window.
type entry struct {
	seq     uint64
	ts      int64
	payload []byte
}

// batch is what the sender reads: records whose payloads live in one arena.
// Payload slices are set by finish, because appending to the arena may move it.
type batch struct {
	recs  []wire.Record
	offs  []int
	arena []byte
}

func (b *batch) reset() {
	b.recs, b.offs, b.arena = b.recs[:0], b.offs[:0], b.arena[:0]
}

func (b *batch) finish() {
	for i := range b.recs {
		end := len(b.arena)
		if i+1 < len(b.offs) {
			end = b.offs[i+1]
		}
		b.recs[i].Payload = b.arena[b.offs[i]:end:end]
	}
}

func (b *batch) lastSeq() uint64 { return b.recs[len(b.recs)-1].Seq }

// read appends to b the records after the last one read, in order, until b holds
// maxRecords records or maxBytes payload bytes (at least one record if any is
// available). It reports whether b is full (a limit stopped it, not the end of
// the spool). Entries at or below the acknowledged cursor are skipped; corrupt
// ones found now (not at recovery) are counted, logged and skipped.
func (s *spool) read(b *batch, maxRecords, maxBytes int) (full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer b.finish()
	for !s.closed {
		if len(b.recs) >= maxRecords {
			return true
		}
		i := s.segIndexLocked(s.rFirst)
		if i < 0 {
			return false
		}
		seg := s.segs[i]
		if s.rOff >= seg.size {
			if i == len(s.segs)-1 {
				return false // caught up with the writer
			}
			seg.r.close()
			seg.r = nil
			s.rFirst, s.rOff = s.segs[i+1].first, 0
			continue
		}
		if resume, ok := seg.skips[s.rOff]; ok {
			s.rOff = resume
			continue
		}
		if seg.r == nil {
			f, err := os.Open(filepath.Join(s.o.dir, seg.name()))
			if err != nil {
				// The segment vanished or is unreadable: count what it held as
				// lost and move on rather than wedge the meter forever.
				s.o.onCorrupt(1)
				s.o.throttle.Error("spool-open", "spool: cannot open segment for reading; skipping it", "segment", seg.name(), "error", err)
				s.rOff = seg.size
				continue
			}
			seg.r = &segReader{f: f}
		}
		e, next, ok := seg.r.parse(s.rOff, seg.size, s.o.maxRecordBytes)
		if !ok {
			resume := seg.r.resync(s.rOff+1, seg.size, s.o.maxRecordBytes)
			s.o.onCorrupt(1)
			s.o.throttle.Warn("spool-corrupt", "spool: corrupt entry skipped", "segment", seg.name(), "offset", s.rOff, "bytes", resume-s.rOff)
			s.rOff = resume
			continue
		}
		if e.seq <= s.lastRead {
			s.rOff = next
			continue
		}
		if len(b.recs) > 0 && len(b.arena)+len(e.payload) > maxBytes {
			return true
		}
		b.offs = append(b.offs, len(b.arena))
		b.arena = append(b.arena, e.payload...)
		b.recs = append(b.recs, wire.Record{Seq: e.seq, Timestamp: e.ts})
		s.lastRead, s.rOff = e.seq, next
	}
	return false
}

func (s *spool) segIndexLocked(first uint64) int {
	i, found := slices.BinarySearchFunc(s.segs, first, func(seg *segment, f uint64) int {
		switch {
		case seg.first < f:
			return -1
		case seg.first > f:
			return 1
		}
		return 0
	})
	if !found {
		// The reader's segment was deleted under it: continue at the next one.
		if i >= len(s.segs) {
			return -1
		}
		s.rFirst, s.rOff = s.segs[i].first, 0
	}
	return i
}

// ack records that every sequence number up to seq was acknowledged, persists the
// cursor and deletes the segments it fully covers.
func (s *spool) ack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.acked {
		return nil
	}
	s.acked = seq
	close(s.ackedCh)
	s.ackedCh = make(chan struct{})
	if err := s.writeAckLocked(); err != nil {
		return err
	}
	return s.removeAckedLocked()
}

// removeAckedLocked deletes the sealed segments the acknowledged cursor covers.
func (s *spool) removeAckedLocked() error {
	for len(s.segs) > 1 && s.segs[0].lastSeq <= s.acked && s.segs[1].first-1 <= s.acked {
		if err := s.removeSegmentLocked(0); err != nil {
			return err
		}
	}
	return nil
}

func (s *spool) writeAckLocked() error {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:], s.acked)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], castagnoli))
	tmp := filepath.Join(s.o.dir, ackFileName+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("cannot write spool ack cursor: %w", err)
	}
	_, werr := f.Write(b[:])
	var serr error
	if s.o.fsync == FsyncAlways {
		serr = f.Sync()
	}
	if err := errors.Join(werr, serr, f.Close()); err != nil {
		return fmt.Errorf("cannot write spool ack cursor: %w", err)
	}
	// rename is atomic: a crash leaves the old cursor or the new one, never half.
	if err := os.Rename(tmp, filepath.Join(s.o.dir, ackFileName)); err != nil {
		return fmt.Errorf("cannot replace spool ack cursor: %w", err)
	}
	if s.o.fsync == FsyncAlways {
		return syncDir(s.o.dir) // the rename itself must survive a power loss
	}
	return nil
}

// sync flushes the active segment if it was written since the last sync
// (FsyncInterval). The fsync runs outside the lock so appends do not wait for it.
func (s *spool) sync() error {
	s.mu.Lock()
	if !s.dirty || s.closed {
		s.mu.Unlock()
		return nil
	}
	f := s.w
	s.dirty = false
	s.mu.Unlock()
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		// ErrClosed: a roll sealed (and synced) the file in between.
		return fmt.Errorf("cannot sync spool segment: %w", err)
	}
	return nil
}

// state returns counters for Stats and Flush.
func (s *spool) state() (nextSeq, acked uint64, total int64, ackedCh <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextSeq, s.acked, s.total, s.ackedCh
}

// close syncs and closes every file and releases the dir lock. Idempotent.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.w != nil && s.o.fsync != FsyncNever && s.dirty {
		if err := s.w.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("cannot sync spool segment: %w", err))
		}
	}
	s.closeFiles()
	close(s.freed) // wake blocked appenders: they see closed
	s.freed = make(chan struct{})
	if err := s.lock.release(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *spool) closeFiles() {
	if s.w != nil {
		_ = s.w.Close() // synced above when the policy asks for it
		s.w = nil
	}
	for _, seg := range s.segs {
		seg.r.close()
		seg.r = nil
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot open spool dir for sync: %w", err)
	}
	serr := d.Sync()
	if err := errors.Join(serr, d.Close()); err != nil {
		return fmt.Errorf("cannot sync spool dir %q: %w", dir, err)
	}
	return nil
}

// segReader reads a segment through a cached window, so that parsing entries
// costs about one pread per 64 KiB rather than two per entry.
type segReader struct {
	f      *os.File
	winOff int64
	win    []byte
}

func (r *segReader) close() {
	if r != nil && r.f != nil {
		_ = r.f.Close() // read-only handle: nothing to lose
		r.f = nil
	}
}

// at returns the n bytes at off (fewer at EOF), reading a new window if needed.
// The result is valid until the next call.
func (r *segReader) at(off int64, n int) []byte {
	if off >= r.winOff && off+int64(n) <= r.winOff+int64(len(r.win)) {
		return r.win[off-r.winOff : off-r.winOff+int64(n)]
	}
	size := max(n, readWindow)
	if cap(r.win) < size {
		r.win = make([]byte, size)
	}
	r.win = r.win[:size]
	m, err := r.f.ReadAt(r.win, off)
	if err != nil && !errors.Is(err, io.EOF) {
		m = 0 // unreadable: treated like corrupt data by the callers
	}
	r.win, r.winOff = r.win[:m], off
	return r.win[:min(n, m)]
}

// parse decodes the entry at off, which must end at or before end. ok is false
// for anything invalid: wrong magic, absurd length, past end, checksum mismatch.
func (r *segReader) parse(off, end int64, maxRecord int) (e entry, next int64, ok bool) {
	if end-off < entryHeaderLen {
		return e, 0, false
	}
	h := r.at(off, entryHeaderLen)
	if len(h) < entryHeaderLen || !bytes.Equal(h[:4], entryMagic[:]) {
		return e, 0, false
	}
	n := int64(binary.LittleEndian.Uint32(h[8:]))
	if n > int64(maxRecord) || off+entryHeaderLen+n > end {
		return e, 0, false
	}
	full := r.at(off, int(entryHeaderLen+n))
	if int64(len(full)) < entryHeaderLen+n {
		return e, 0, false
	}
	if crc32.Checksum(full[8:], castagnoli) != binary.LittleEndian.Uint32(full[4:]) {
		return e, 0, false
	}
	e.seq = binary.LittleEndian.Uint64(full[12:])
	e.ts = int64(binary.LittleEndian.Uint64(full[20:]))
	e.payload = full[entryHeaderLen:]
	return e, off + entryHeaderLen + n, true
}

// resync returns the offset of the first valid entry at or after from, or end.
func (r *segReader) resync(from, end int64, maxRecord int) int64 {
	off := from
	for end-off >= entryHeaderLen {
		w := r.at(off, int(min(int64(readWindow), end-off)))
		if len(w) < 4 {
			break
		}
		i := bytes.Index(w, entryMagic[:])
		if i < 0 {
			off += int64(len(w) - 3) // the magic may straddle windows
			continue
		}
		cand := off + int64(i)
		if _, _, ok := r.parse(cand, end, maxRecord); ok {
			return cand
		}
		off = cand + 1
	}
	return end
}
