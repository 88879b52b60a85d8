package jitter

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFullJitterBoundsAndSpread(t *testing.T) {
	b := NewFullJitter(10*time.Millisecond, 80*time.Millisecond, rand.New(rand.NewPCG(1, 2)))
	wantCeil := []time.Duration{10, 20, 40, 80, 80, 80}
	for _, c := range wantCeil {
		c *= time.Millisecond
		require.Equal(t, c, b.Ceiling())
		d := b.NextBackOff()
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.LessOrEqual(t, d, c)
	}
	b.Reset()
	require.Equal(t, 10*time.Millisecond, b.Ceiling())

	// Full jitter must use the whole window: over many draws at the cap, both the
	// lowest and the highest tenth of [0, cap] are hit.
	var low, high int
	for range 2000 {
		d := b.NextBackOff()
		if b.Ceiling() == 80*time.Millisecond {
			if d < 8*time.Millisecond {
				low++
			}
			if d > 72*time.Millisecond {
				high++
			}
		}
	}
	require.Greater(t, low, 100)
	require.Greater(t, high, 100)
}

func TestAtLeastHonoursRetryAfter(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	require.Equal(t, 5*time.Second, AtLeast(5*time.Second, time.Second, time.Second, rnd))
	for range 1000 {
		d := AtLeast(10*time.Millisecond, 2*time.Second, 500*time.Millisecond, rnd)
		require.GreaterOrEqual(t, d, 2*time.Second)
		require.Less(t, d, 2500*time.Millisecond)
	}
	require.Equal(t, 2*time.Second, AtLeast(0, 2*time.Second, 0, nil))
}

func TestDefaults(t *testing.T) {
	b := NewFullJitter(0, 0, nil)
	require.Equal(t, 100*time.Millisecond, b.Ceiling())
	for range 20 {
		b.NextBackOff()
	}
	require.Equal(t, 30*time.Second, b.Ceiling())
}
