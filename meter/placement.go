package meter

import (
	"phloem/hashring"
)

// maxCandidates bounds the failover list: successors beyond the 16th are never
// reached in practice, and Successors costs O(collectors) per call.
const maxCandidates = 16

// Placement returns the collectors meterID sends to, in failover order: the
// ring owner of the meter id first, then its ring successors (the collectors
// that would own it if the ones before were removed). It depends only on the
// meter id and the collector set, so it is stable across restarts, and a change
// of the set moves a meter only if its own owner changed. dst is reused.
func Placement(r *hashring.Ring, meterID string, dst []string) []string {
	n := min(r.Len(), maxCandidates)
	if cap(dst) < n {
		dst = make([]string, n)
	}
	return r.Successors([]byte(meterID), dst[:n])
}
