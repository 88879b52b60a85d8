package loadtest

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Distribution kinds.
const (
	DistFixed       = "fixed"
	DistUniform     = "uniform"
	DistExponential = "exponential"
)

func (d Dist) validate(field string, lo, hi float64) error {
	in := func(name string, v float64) error {
		if math.IsNaN(v) || v < lo || v > hi {
			return fmt.Errorf("field %s.%s: must be in [%g, %g], got %g", field, name, lo, hi, v)
		}
		return nil
	}
	switch d.Dist {
	case DistFixed:
		return in("value", d.Value)
	case DistUniform:
		if err := in("min", d.Min); err != nil {
			return err
		}
		if err := in("max", d.Max); err != nil {
			return err
		}
		if d.Max < d.Min {
			return fmt.Errorf("field %s.max: %g is below min %g", field, d.Max, d.Min)
		}
		return nil
	case DistExponential:
		if err := in("mean", d.Mean); err != nil {
			return err
		}
		if d.Max != 0 {
			if err := in("max", d.Max); err != nil {
				return err
			}
			if d.Max < d.Mean {
				return fmt.Errorf("field %s.max: %g is below mean %g", field, d.Max, d.Mean)
			}
		}
		return nil
	default:
		return fmt.Errorf("field %s.dist: %q is not one of fixed, uniform, exponential", field, d.Dist)
	}
}

// Sample draws one value. The caller clamps it to its own floor.
func (d Dist) Sample(r *rand.Rand) float64 {
	switch d.Dist {
	case DistUniform:
		return d.Min + r.Float64()*(d.Max-d.Min)
	case DistExponential:
		v := r.ExpFloat64() * d.Mean
		if d.Max > 0 && v > d.Max {
			v = d.Max
		}
		return v
	default:
		return d.Value
	}
}

// Mean returns the distribution's mean (uncapped for exponential).
func (d Dist) MeanValue() float64 {
	switch d.Dist {
	case DistUniform:
		return (d.Min + d.Max) / 2
	case DistExponential:
		return d.Mean
	default:
		return d.Value
	}
}
