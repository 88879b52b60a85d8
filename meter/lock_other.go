//go:build !unix

package meter

// dirLock is a no-op where flock is not available: running two meters on one
// spool dir is then the operator's responsibility.
type dirLock struct{}

func lockDir(string) (*dirLock, error) { return &dirLock{}, nil }

func (*dirLock) release() error { return nil }
