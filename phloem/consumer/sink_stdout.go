package consumer

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// lockedWriter serialises whole batches from several stdout sinks onto one writer,
// so lines of different sinks never interleave mid-line.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// stdoutDeliverer writes each batch's NDJSON lines to the process's stdout (or
// Config.Stdout). A write error is retried like any delivery error.
type stdoutDeliverer struct {
	out *lockedWriter
	buf []byte
}

func newStdoutDeliverer(out *lockedWriter) *stdoutDeliverer { return &stdoutDeliverer{out: out} }

func (s *stdoutDeliverer) deliver(_ context.Context, batch []*item) error {
	s.buf = s.buf[:0]
	for _, it := range batch {
		s.buf = appendLine(s.buf, it)
	}
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	if _, err := s.out.w.Write(s.buf); err != nil {
		return fmt.Errorf("cannot write %d records to stdout: %w", len(batch), err)
	}
	return nil
}

func (s *stdoutDeliverer) close() error { return nil }
