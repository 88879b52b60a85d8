package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"
)

// kfakeLogger bridges kfake's printf logger to slog. kfake logs every request at
// its info level, so that maps to slog debug; its warnings and errors keep their
// level. While capturing (during Close), error messages are also kept so that
// Close can return them: kfake's Close reports a failed flush only by logging.
type kfakeLogger struct {
	l *slog.Logger

	mu        sync.Mutex
	capturing bool
	errs      []error
}

func (k *kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	var sl slog.Level
	switch level {
	case kfake.LogLevelError:
		sl = slog.LevelError
	case kfake.LogLevelWarn:
		sl = slog.LevelWarn
	case kfake.LogLevelInfo, kfake.LogLevelDebug:
		sl = slog.LevelDebug
	default:
		return
	}
	if level == kfake.LogLevelError {
		k.mu.Lock()
		if k.capturing && len(k.errs) < 16 {
			k.errs = append(k.errs, fmt.Errorf(format, args...))
		}
		k.mu.Unlock()
	}
	if !k.l.Enabled(context.Background(), sl) {
		return // skip formatting: kfake logs on every request
	}
	k.l.Log(context.Background(), sl, fmt.Sprintf(format, args...), "source", "kfake")
}

// capture turns error capturing on or off; turning it off returns what was
// captured.
func (k *kfakeLogger) capture(on bool) []error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.capturing = on
	if on {
		k.errs = nil
		return nil
	}
	errs := k.errs
	k.errs = nil
	if len(errs) > 0 {
		return []error{errors.Join(errs...)}
	}
	return nil
}
