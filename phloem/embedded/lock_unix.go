//go:build unix

package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockFileName lives in the data dir root; kfake ignores files it does not know.
const lockFileName = "phloem-embedded.lock"

// dirLock is an exclusive flock on the data dir. The kernel drops it when the
// process dies, so a kill -9 never leaves a stale lock behind.
type dirLock struct{ f *os.File }

func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("cannot open embedded broker lock file %q: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %q (stop the other phloem process, or give each one its own data dir)", ErrDataDirLocked, dir)
		}
		return nil, fmt.Errorf("cannot lock embedded broker data dir %q: %w", dir, err)
	}
	return &dirLock{f: f}, nil
}

// release unlocks by closing the file (closing drops the flock).
func (l *dirLock) release() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("cannot release embedded broker lock file: %w", err)
	}
	return nil
}
