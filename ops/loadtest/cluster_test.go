package loadtest

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEventOnMissingCollectorFails: an event naming a collector that an
// add_collector has not created yet (validation accepts indices up to
// count+adds) fails that event; it must not panic the harness.
func TestEventOnMissingCollectorFails(t *testing.T) {
	discard := slog.New(slog.DiscardHandler)
	cl := newCluster(&Scenario{}, t.TempDir(), discard, discard)
	r := &eventRunner{cl: cl}
	for _, action := range []string{primKill, primStart} {
		require.NotPanics(t, func() {
			require.ErrorContains(t, r.exec(primEvent{action: action, collector: 3}), "does not exist")
		}, action)
	}
}
