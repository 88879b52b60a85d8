package promx

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestRegisterAllIsAllOrNothing(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
	b := prometheus.NewCounter(prometheus.CounterOpts{Name: "b_total", Help: "b"})
	require.NoError(t, RegisterAll(reg, "x metrics", b))
	a2 := prometheus.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
	b2 := prometheus.NewCounter(prometheus.CounterOpts{Name: "b_total", Help: "b"})
	err := RegisterAll(reg, "x metrics", a2, b2)
	require.ErrorContains(t, err, "cannot register x metrics (is a second instance")
	// a2 was rolled back: a fresh a registers.
	require.NoError(t, reg.Register(a))
	UnregisterAll(reg, a, b)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	require.Empty(t, mfs)
	require.NoError(t, RegisterAll(nil, "x", a))
	UnregisterAll(nil, a)
}
