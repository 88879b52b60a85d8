package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"phloem/internal/logx"
	"phloem/meter"
	"phloem/meter/hostmetrics"
)

// maxLine bounds one input line (the collector's default record limit). Longer
// lines are dropped, counted in the log.
const maxLine = 1 << 20

// inputSet runs the inputs. Each input method runs on a goroutine owned by serve's
// input group and returns nil when ctx is done or its input ended.
type inputSet struct {
	// appendBatch is Meter.AppendBatch: inputs hand over every line they have at
	// hand in one call, so a busy input costs one write(2), not one per line.
	appendBatch func(ctx context.Context, payloads [][]byte) (int, error)
	logger      *slog.Logger
	throttle    *logx.Throttled
	// dropped counts input records dropped by policy before they reach the
	// spool (DESIGN.md: every drop is counted and logged). Nil: not counted.
	dropped *prometheus.CounterVec
}

func newInputSet(m *meter.Meter, logger *slog.Logger, reg prometheus.Registerer) (inputSet, error) {
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "phloem", Subsystem: "meter", Name: "input_dropped_records_total",
		Help: "Input records dropped before the spool: too_large (above the record limit), line_too_long (longer than the line limit)."}, []string{"reason"})
	if reg != nil {
		if err := reg.Register(dropped); err != nil {
			return inputSet{}, fmt.Errorf("cannot register input metrics: %w", err)
		}
	}
	return inputSet{appendBatch: m.AppendBatch, logger: logger, throttle: logx.NewThrottled(logger, 10*time.Second), dropped: dropped}, nil
}

// drop counts and logs (throttled per reason) one dropped input record.
func (in inputSet) drop(reason, msg string, args ...any) {
	if in.dropped != nil {
		in.dropped.WithLabelValues(reason).Inc()
	}
	in.throttle.Warn(reason, msg, args...)
}

// emit appends one record.
func (in inputSet) emit(ctx context.Context, line []byte) error {
	if len(line) == 0 {
		return nil
	}
	return in.emitAll(ctx, [][]byte{line})
}

// emitAll appends records in order; a meter closed under it (shutdown) ends the
// input quietly, a record above the record limit is dropped and logged.
func (in inputSet) emitAll(ctx context.Context, lines [][]byte) error {
	for len(lines) > 0 {
		n, err := in.appendBatch(ctx, lines)
		lines = lines[n:]
		switch {
		case err == nil:
		case errors.Is(err, meter.ErrClosed) || ctx.Err() != nil:
			return errStop
		case errors.Is(err, meter.ErrRecordTooLarge) && len(lines) > 0:
			in.drop("too_large", "input record too large; dropped", "bytes", len(lines[0]))
			lines = lines[1:]
		default:
			return fmt.Errorf("cannot spool input records: %w", err)
		}
	}
	return nil
}

// errStop ends an input quietly.
var errStop = errors.New("input stopped")

func quiet(err error) error {
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// stdin reads lines from r until EOF or ctx is done.
//
// A read from stdin cannot be interrupted, so the reading goroutine hands lines
// over a channel and stdin returns as soon as ctx is done; the reader then stays
// blocked in read(2) until the process exits, which it is about to do. That
// goroutine is the one exception to "every goroutine is waited for".
func (in inputSet) stdin(ctx context.Context, r io.Reader) error {
	// The reader hands over groups of lines: everything already buffered when a
	// line completes, up to stdinGroup lines, so that a fast writer costs one
	// channel hand-off and one spool write per group rather than per line.
	const stdinGroup = 512
	groups := make(chan [][]byte, 4)
	errc := make(chan error, 1)
	go func() {
		defer close(groups)
		var group [][]byte
		send := func() bool {
			select {
			case groups <- group:
				group = nil
				return true
			case <-ctx.Done():
				return false
			}
		}
		err := splitLinesBuffered(r, func(l []byte, more bool) bool {
			group = append(group, bytes.Clone(l))
			if more && len(group) < stdinGroup {
				return true
			}
			return send()
		}, func() { in.drop("line_too_long", "input line longer than the record limit; dropped", "limit", maxLine) })
		if len(group) > 0 {
			send()
		}
		errc <- err
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case g, ok := <-groups:
			if !ok {
				if err := <-errc; err != nil {
					return fmt.Errorf("cannot read stdin: %w", err)
				}
				in.logger.Info("stdin ended")
				return nil
			}
			if err := in.emitAll(ctx, g); err != nil {
				return quiet(err)
			}
		}
	}
}

// splitLines calls fn for each line of r (without its line ending, CR included),
// dropping lines longer than maxLine. fn returning false stops it.
func splitLines(r io.Reader, fn func([]byte) bool, onLong func()) error {
	return splitLinesBuffered(r, func(l []byte, _ bool) bool { return fn(l) }, onLong)
}

// splitLinesBuffered is splitLines whose callback also learns whether more
// input is already buffered (more == false: the next line needs a read(2)).
func splitLinesBuffered(r io.Reader, fn func(line []byte, more bool) bool, onLong func()) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if !tooLong && len(long)+len(chunk) <= maxLine {
				long = append(long, chunk...)
			} else {
				tooLong, long = true, long[:0]
			}
			continue
		}
		line := chunk
		if len(long) > 0 || tooLong {
			if !tooLong && len(long)+len(chunk) <= maxLine+1 {
				line = append(long, chunk...)
			} else {
				tooLong = true
			}
		}
		if tooLong {
			if onLong != nil {
				onLong()
			}
		} else {
			line = bytes.TrimRight(line, "\r\n")
			if len(line) > 0 && !fn(line, br.Buffered() > 0) {
				return nil
			}
		}
		long, tooLong = long[:0], false
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// tailConfig configures the file follower.
type tailConfig struct {
	path      string
	poll      time.Duration
	fromStart bool
}

// tail follows a file like tail -F, by polling: it reads new lines as they are
// appended; when the path names a new file (rotation: rename and create, detected
// by comparing the open file with a fresh stat) it finishes the old file and
// starts the new one at its beginning; when the file shrinks below the read
// offset (truncation, copytruncate) it starts again at the beginning. A missing
// file is waited for. A partial last line is held until its newline arrives (or
// until the file is rotated away).
//
// The first file is read from its end unless fromStart, like tail -f: a meter
// restart does not resend the whole file (lines written while the meter was
// down are therefore not read).
func (in inputSet) tail(ctx context.Context, c tailConfig) error {
	t := &tailer{tailConfig: c, in: in}
	defer t.close()
	first := true
	tick := time.NewTicker(c.poll)
	defer tick.Stop()
	for {
		if err := t.step(ctx, &first); err != nil {
			return quiet(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

type tailer struct {
	tailConfig
	in      inputSet
	f       *os.File
	off     int64
	partial []byte
	skip    bool // dropping the rest of an over-long line, up to its newline
	buf     []byte
}

func (t *tailer) close() {
	if t.f != nil {
		_ = t.f.Close() // read-only
		t.f = nil
	}
}

// step reads what is new, then handles rotation and truncation.
func (t *tailer) step(ctx context.Context, first *bool) error {
	if t.f == nil {
		f, err := os.Open(t.path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // wait for it
			}
			t.in.throttle.Warn("tail-open", "cannot open tailed file", "path", t.path, "error", err)
			return nil
		}
		t.f, t.off, t.partial, t.skip = f, 0, t.partial[:0], false
		if *first && !t.fromStart {
			if t.off, err = f.Seek(0, io.SeekEnd); err != nil {
				return fmt.Errorf("cannot seek tailed file %s: %w", t.path, err)
			}
		}
		*first = false
		t.in.logger.Info("tailing file", "path", t.path, "offset", t.off)
	}
	if err := t.drain(ctx); err != nil {
		return err
	}
	cur, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("cannot stat tailed file %s: %w", t.path, err)
	}
	now, err := os.Stat(t.path)
	switch {
	case err != nil && errors.Is(err, os.ErrNotExist):
		return nil // rotated away and not recreated yet: keep the old one
	case err != nil:
		t.in.throttle.Warn("tail-stat", "cannot stat tailed path", "path", t.path, "error", err)
		return nil
	case !os.SameFile(cur, now):
		// Rotated: the old file was read to its end just above (a writer still
		// appending to it after the rename loses those lines: tail -F does too).
		if len(t.partial) > 0 {
			if err := t.in.emit(ctx, t.partial); err != nil {
				return err
			}
		}
		t.in.logger.Info("tailed file rotated", "path", t.path)
		t.close()
		return t.step(ctx, first)
	case cur.Size() < t.off:
		t.in.logger.Info("tailed file truncated; reading from its beginning", "path", t.path, "size", cur.Size(), "offset", t.off)
		if _, err := t.f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("cannot rewind truncated file %s: %w", t.path, err)
		}
		t.off, t.partial, t.skip = 0, t.partial[:0], false
		return t.drain(ctx)
	}
	return nil
}

// drain reads from the open file to its current end, emitting complete lines.
func (t *tailer) drain(ctx context.Context) error {
	if t.buf == nil {
		t.buf = make([]byte, 64<<10)
	}
	for {
		n, err := t.f.Read(t.buf)
		t.off += int64(n)
		data := t.buf[:n]
		var lines [][]byte // complete lines of this read, appended together
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				switch {
				case t.skip:
				case len(t.partial)+len(data) > maxLine:
					t.in.drop("line_too_long", "tailed line longer than the record limit; dropped", "path", t.path)
					// Skip the rest of the line up to its newline: its tail is
					// not a record, and the line is counted once.
					t.partial, t.skip = t.partial[:0], true
				default:
					t.partial = append(t.partial, data...)
				}
				break
			}
			line := data[:i]
			data = data[i+1:]
			if t.skip {
				t.skip = false // the over-long line ends here
				continue
			}
			if len(t.partial)+len(bytes.TrimRight(line, "\r")) > maxLine {
				t.in.drop("line_too_long", "tailed line longer than the record limit; dropped", "path", t.path)
				t.partial = t.partial[:0]
				continue
			}
			if len(t.partial) > 0 {
				line = append(t.partial, line...)
				t.partial = nil // line owns that array now
			}
			if line = bytes.TrimRight(line, "\r"); len(line) > 0 {
				lines = append(lines, line)
			}
		}
		if err := t.in.emitAll(ctx, lines); err != nil {
			return err
		}
		if err == io.EOF || n == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cannot read tailed file %s: %w", t.path, err)
		}
	}
}

// hostMetrics appends one JSON record per interval with the host's counters.
func (in inputSet) hostMetrics(ctx context.Context, procRoot string, interval time.Duration) error {
	host, _ := os.Hostname()
	sampler := hostmetrics.NewSampler(procRoot, host)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		b, err := sampler.Sample(time.Now())
		if err != nil {
			in.throttle.Warn("host-metrics", "cannot read host metrics", "error", err)
		} else {
			if err := in.emit(ctx, b); err != nil {
				return quiet(err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
