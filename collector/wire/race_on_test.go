//go:build race

package wire

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// json.Valid's pooled scanner allocates; allocation tests skip under -race.
const raceEnabled = true
