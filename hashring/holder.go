package hashring

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrStaleVersion is returned (wrapped) by Holder.Store and Ring.Rebuild when
// the offered ring's version is not greater than the one already held. It
// means an older or duplicate membership update arrived late: log it and
// ignore it; retrying cannot succeed.
var ErrStaleVersion = errors.New("hash ring version is not newer than the current one")

// Holder holds the current ring for concurrent readers. The zero value is
// ready to use and holds no ring (Load returns nil, which behaves as an empty
// ring). Load is a single atomic load, so lookups never wait for a swap;
// readers that loaded the previous ring keep using it safely, because rings
// are immutable.
type Holder struct {
	cur atomic.Pointer[Ring]
}

// Load returns the current ring, or nil if none was stored. A nil *Ring is a
// valid empty ring: Locate returns "" and Successors returns nothing.
func (h *Holder) Load() *Ring {
	return h.cur.Load()
}

// Store makes r the current ring if its version is greater than the current
// ring's (any version is accepted when none is held). Otherwise it returns an
// error wrapping ErrStaleVersion and keeps the current ring. Concurrent
// Stores are linearisable: the highest version wins.
func (h *Holder) Store(r *Ring) error {
	if r == nil {
		return errors.New("cannot store a nil hash ring")
	}
	for {
		cur := h.cur.Load()
		if cur != nil && r.version <= cur.version {
			return fmt.Errorf("cannot replace ring version %d with version %d: %w", cur.version, r.version, ErrStaleVersion)
		}
		// A failed swap means another Store won in between: re-check its
		// version (this loop runs at most once per concurrent winner).
		if h.cur.CompareAndSwap(cur, r) {
			return nil
		}
	}
}
