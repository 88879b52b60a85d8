//go:build !unix

package embedded

// dirLock is a no-op where flock is not available: running two brokers on one
// data dir is then the operator's responsibility.
type dirLock struct{}

func lockDir(string) (*dirLock, error) { return &dirLock{}, nil }

func (*dirLock) release() error { return nil }
