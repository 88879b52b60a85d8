// Package envflag gives command-line flags their PHLOEM_* environment fallbacks:
// a flag's default is taken from PHLOEM_<NAME> when that variable is set, so that
// operators can configure a binary from its unit file or container environment and
// still override one setting on the command line. Values that do not parse are
// collected and reported together after flag parsing, naming the variable, rather
// than silently falling back to the default.
package envflag

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Prefix is prepended to every variable name.
const Prefix = "PHLOEM_"

// String returns the value of PHLOEM_<name>, or def when it is not set.
func String(name, def string) string {
	if v, ok := os.LookupEnv(Prefix + name); ok {
		return v
	}
	return def
}

// Errors collects environment values that do not parse. The zero value is ready.
type Errors []error

func lookup[T any](e *Errors, name string, def T, parse func(string) (T, error)) T {
	s, ok := os.LookupEnv(Prefix + name)
	if !ok {
		return def
	}
	v, err := parse(s)
	if err != nil {
		*e = append(*e, fmt.Errorf("%s%s=%q: %w", Prefix, name, s, err))
		return def
	}
	return v
}

// Duration returns PHLOEM_<name> parsed as a Go duration, or def.
func (e *Errors) Duration(name string, def time.Duration) time.Duration {
	return lookup(e, name, def, time.ParseDuration)
}

// Int returns PHLOEM_<name> parsed as a decimal integer, or def.
func (e *Errors) Int(name string, def int64) int64 {
	return lookup(e, name, def, func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) })
}

// Bool returns PHLOEM_<name> parsed by strconv.ParseBool, or def.
func (e *Errors) Bool(name string, def bool) bool {
	return lookup(e, name, def, strconv.ParseBool)
}

// Err returns the collected errors joined, or nil.
func (e Errors) Err() error { return errors.Join(e...) }
