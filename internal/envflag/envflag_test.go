package envflag

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFallbacks(t *testing.T) {
	t.Setenv("PHLOEM_LISTEN", ":1")
	t.Setenv("PHLOEM_GRACE", "3s")
	t.Setenv("PHLOEM_BAD_DURATION", "soon")
	t.Setenv("PHLOEM_N", "12")
	t.Setenv("PHLOEM_ON", "true")
	require.Equal(t, ":1", String("LISTEN", ":2"))
	require.Equal(t, ":2", String("UNSET_FOR_TEST", ":2"))
	var e Errors
	require.Equal(t, 3*time.Second, e.Duration("GRACE", time.Second))
	require.Equal(t, time.Second, e.Duration("BAD_DURATION", time.Second))
	require.Equal(t, int64(12), e.Int("N", 1))
	require.True(t, e.Bool("ON", false))
	require.Equal(t, int64(7), e.Int("UNSET_FOR_TEST", 7))
	require.ErrorContains(t, e.Err(), `PHLOEM_BAD_DURATION="soon"`)
	require.NoError(t, Errors(nil).Err())
}
