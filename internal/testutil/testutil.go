// Package testutil holds small helpers shared by tests in several packages. It is
// imported only from _test.go files.
package testutil

import (
	"bytes"
	"sync"
)

// SyncBuffer is an io.Writer safe for concurrent writers (loggers, a process's
// stderr) and a reading test. The zero value is ready.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
