//go:build unix

package meter

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

const lockFileName = "lock"

// dirLock is an exclusive flock on the spool dir. The kernel drops it when the
// process dies, so a kill -9 never leaves a stale lock behind.
type dirLock struct{ f *os.File }

func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("cannot open spool lock file %q: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %q (stop the other meter, or give each meter its own spool dir)", ErrSpoolLocked, dir)
		}
		return nil, fmt.Errorf("cannot lock spool dir %q: %w", dir, err)
	}
	return &dirLock{f: f}, nil
}

// release unlocks by closing the file (closing drops the flock).
func (l *dirLock) release() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("cannot release spool lock file: %w", err)
	}
	return nil
}
