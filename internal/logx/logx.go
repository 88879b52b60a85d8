// Package logx holds the logging plumbing shared by every Phloem component: a logger
// that discards (used wherever a nil *slog.Logger is injected) and a per-key throttle
// for messages logged inside loops.
//
// Why a throttle: a tight recovery loop that logs every failure once took a log
// pipeline down (DESIGN.md, failure table). Throttled logs the first message for a key,
// then at most one per interval, and says how many similar messages it suppressed in
// between, so the operator still sees the volume.
//
// Throttled is safe for concurrent use. It starts no goroutines.
package logx

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Discard returns a logger that drops every record.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// OrDiscard returns l, or a discarding logger when l is nil, so that components can
// accept a nil logger as "no logging".
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return Discard()
	}
	return l
}

// maxKeys bounds the throttle's memory: keys are usually error classes or peer
// addresses, but a caller that puts unbounded values in keys must not leak.
const maxKeys = 4096

type throttleEntry struct {
	last       time.Time
	suppressed int
}

// Throttled logs at most one message per key per interval and reports how many it
// suppressed. The zero value is not usable; call NewThrottled.
type Throttled struct {
	logger   *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	entries map[string]*throttleEntry
}

// NewThrottled returns a throttle over logger (nil discards). interval <= 0 means 10s.
func NewThrottled(logger *slog.Logger, interval time.Duration) *Throttled {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	return &Throttled{
		logger:   OrDiscard(logger),
		interval: interval,
		now:      time.Now,
		entries:  make(map[string]*throttleEntry),
	}
}

// Error logs at error level, throttled by key.
func (t *Throttled) Error(key, msg string, args ...any) { t.log(slog.LevelError, key, msg, args) }

// Warn logs at warn level, throttled by key.
func (t *Throttled) Warn(key, msg string, args ...any) { t.log(slog.LevelWarn, key, msg, args) }

// Info logs at info level, throttled by key.
func (t *Throttled) Info(key, msg string, args ...any) { t.log(slog.LevelInfo, key, msg, args) }

// Allow reports whether a message for key would be logged now, and how many were
// suppressed since the last one; it records the message as logged when it returns true.
func (t *Throttled) Allow(key string) (ok bool, suppressed int) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	e, found := t.entries[key]
	if !found {
		if len(t.entries) >= maxKeys {
			t.evictLocked(now)
		}
		t.entries[key] = &throttleEntry{last: now}
		return true, 0
	}
	if now.Sub(e.last) < t.interval {
		e.suppressed++
		return false, 0
	}
	suppressed = e.suppressed
	e.last, e.suppressed = now, 0
	return true, suppressed
}

// evictLocked drops entries idle for more than one interval; if every entry is
// recent it drops all of them, trading a few repeated lines for bounded memory.
func (t *Throttled) evictLocked(now time.Time) {
	for k, e := range t.entries {
		if now.Sub(e.last) >= t.interval {
			delete(t.entries, k)
		}
	}
	if len(t.entries) >= maxKeys {
		clear(t.entries)
	}
}

func (t *Throttled) log(level slog.Level, key, msg string, args []any) {
	ok, suppressed := t.Allow(key)
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, slog.Int("suppressed_similar", suppressed))
	}
	t.logger.Log(context.Background(), level, msg, args...)
}

// New returns the process logger the binaries build from their --log-level (debug,
// info, warn, error) and --log-format (text, json) flags, writing to w.
func New(level, format string, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}
