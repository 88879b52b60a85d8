// Package jitter provides the retry pacing shared by meters (reconnecting to collectors)
// and phloem's sink connectors (redialling downstream endpoints).
//
// Why full jitter: backoff/v4's default ExponentialBackOff randomises each interval by
// ±50%, so a fleet that failed together still comes back in a band around the same
// instants. Full jitter sleeps uniformly in [0, min(cap, base·2^n)] (AWS Architecture
// Blog, "Exponential Backoff And Jitter"), which spreads a herd over the whole window.
// A server's Retry-After is a floor: AtLeast never returns less, and adds its own spread
// so that clients told the same Retry-After do not all return at that instant.
//
// A FullJitter is not safe for concurrent use: use one per retry loop, as with every
// backoff.BackOff.
package jitter

import (
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// FullJitter implements backoff.BackOff with full jitter. It never returns
// backoff.Stop: callers that must give up wrap it (backoff.WithMaxRetries,
// backoff.WithContext). Meters retry forever; their spool absorbs outages.
type FullJitter struct {
	base, cap time.Duration
	attempt   int
	rnd       *rand.Rand
}

var _ backoff.BackOff = (*FullJitter)(nil)

// NewFullJitter returns a full-jitter backoff. base <= 0 means 100ms; cap < base means
// cap = 30s (or base if larger). rnd nil seeds a private generator, so two instances
// never share a sequence.
func NewFullJitter(base, cap time.Duration, rnd *rand.Rand) *FullJitter {
	if base <= 0 {
		base = 100 * time.Millisecond
	}
	if cap < base {
		cap = max(30*time.Second, base)
	}
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &FullJitter{base: base, cap: cap, rnd: rnd}
}

// Ceiling returns the upper bound of the next sleep, min(cap, base·2^attempt).
func (b *FullJitter) Ceiling() time.Duration {
	c := b.base
	for i := 0; i < b.attempt && c < b.cap; i++ {
		c *= 2
	}
	return min(c, b.cap)
}

// NextBackOff returns a duration uniform in [0, Ceiling()] and advances the attempt.
func (b *FullJitter) NextBackOff() time.Duration {
	c := b.Ceiling()
	if c < b.cap {
		b.attempt++
	}
	return time.Duration(b.rnd.Int64N(int64(c) + 1))
}

// Reset starts again from base; call it after a success.
func (b *FullJitter) Reset() { b.attempt = 0 }

// AtLeast returns d, raised to retryAfter when the server asked for more, plus a
// uniform jitter in [0, spread) on top of a raised value so that every client told
// the same Retry-After does not return at the same instant. rnd nil uses the
// runtime's generator.
func AtLeast(d, retryAfter, spread time.Duration, rnd *rand.Rand) time.Duration {
	if retryAfter <= 0 || d >= retryAfter {
		return d
	}
	if spread <= 0 {
		return retryAfter
	}
	var j int64
	if rnd != nil {
		j = rnd.Int64N(int64(spread))
	} else {
		j = rand.Int64N(int64(spread))
	}
	return retryAfter + time.Duration(j)
}
