// Package promx holds the Prometheus plumbing every component shares: registering
// a component's collectors all or nothing, so that a failed constructor leaves the
// registry as it found it, and unregistering them when the component stops.
package promx

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterAll registers cs on reg, or none of them: on the first failure it
// unregisters those it registered and returns an error naming what (e.g. "meter
// metrics") and, for a duplicate, the likely cause: a second instance of the
// component on the same registry. A nil reg registers nothing.
func RegisterAll(reg prometheus.Registerer, what string, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			UnregisterAll(reg, cs[:i]...)
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("cannot register %s (is a second instance using the same registry?): %w", what, err)
			}
			return fmt.Errorf("cannot register %s: %w", what, err)
		}
	}
	return nil
}

// UnregisterAll unregisters cs from reg (nil: nothing).
func UnregisterAll(reg prometheus.Registerer, cs ...prometheus.Collector) {
	if reg == nil {
		return
	}
	for _, c := range cs {
		reg.Unregister(c)
	}
}
