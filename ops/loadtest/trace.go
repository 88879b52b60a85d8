package loadtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// TracePoint is one line of an arrival trace: Arrivals meters arrive during
// second Second (counted from the start of the trace).
type TracePoint struct {
	Second   int
	Arrivals int
}

// LoadTrace reads a trace CSV file (see ParseTrace).
func LoadTrace(path string) ([]TracePoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read trace: %w", err)
	}
	tr, err := ParseTrace(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	return tr, nil
}

// ParseTrace parses a recorded per-second arrival trace: CSV with the columns
// second,arrivals; an optional header line "second,arrivals"; blank lines and
// lines starting with '#' are ignored. Seconds must be non-negative and strictly
// increasing (missing seconds have no arrivals); arrivals non-negative; the total
// must be at least 1. Errors give the line number.
func ParseTrace(r io.Reader) ([]TracePoint, error) {
	sc := bufio.NewScanner(r)
	var out []TracePoint
	line, total := 0, 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		cols := strings.Split(s, ",")
		if len(cols) != 2 {
			return nil, fmt.Errorf("line %d: want 2 columns (second,arrivals), got %d", line, len(cols))
		}
		a, b := strings.TrimSpace(cols[0]), strings.TrimSpace(cols[1])
		if len(out) == 0 && strings.EqualFold(a, "second") && strings.EqualFold(b, "arrivals") {
			continue
		}
		sec, err := strconv.Atoi(a)
		if err != nil || sec < 0 {
			return nil, fmt.Errorf("line %d: column second: %q is not a non-negative integer", line, a)
		}
		n, err := strconv.Atoi(b)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("line %d: column arrivals: %q is not a non-negative integer", line, b)
		}
		if len(out) > 0 && sec <= out[len(out)-1].Second {
			return nil, fmt.Errorf("line %d: column second: %d does not increase (previous %d)", line, sec, out[len(out)-1].Second)
		}
		out = append(out, TracePoint{Second: sec, Arrivals: n})
		total += n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read trace: %w", err)
	}
	if total == 0 {
		return nil, fmt.Errorf("trace has no arrivals")
	}
	return out, nil
}
