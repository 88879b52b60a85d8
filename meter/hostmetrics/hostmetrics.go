// Package hostmetrics samples a Linux host's counters from /proc (CPU times from
// /proc/stat, memory from /proc/meminfo, per-interface bytes, packets, errors and
// drops from /proc/net/dev) into one JSON record. cmd/meter's --host-metrics input
// and cmd/pipeline's demo meters send these records.
//
// A Sampler keeps the previous CPU sample to report the busy ratio between two
// records; it is not safe for concurrent use (one per sampling loop). It starts no
// goroutines.
package hostmetrics

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Sampler reads host metrics from a /proc tree.
type Sampler struct {
	procRoot, host string
	prev           *cpuTimes
}

// NewSampler returns a sampler reading under procRoot ("/proc" on a real host)
// and naming the host in its records.
func NewSampler(procRoot, host string) *Sampler {
	return &Sampler{procRoot: procRoot, host: host}
}

// Sample returns one JSON record of the host's counters at now. The first record
// has no cpu.busy_ratio; later ones report the busy share since the previous
// successful sample.
func (s *Sampler) Sample(now time.Time) ([]byte, error) {
	rec, cpu, err := sample(s.procRoot, s.host, s.prev, now)
	if err != nil {
		return nil, err
	}
	s.prev = cpu
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("cannot encode host metrics: %w", err)
	}
	return b, nil
}

// userHZ is the kernel's clock tick for /proc/stat (USER_HZ): 100 on every Linux
// architecture Go supports (sysconf(_SC_CLK_TCK) would need cgo).
const userHZ = 100

type cpuTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal float64 // seconds
}

func (c cpuTimes) total() float64 {
	return c.User + c.Nice + c.System + c.Idle + c.IOWait + c.IRQ + c.SoftIRQ + c.Steal
}

type hostRecord struct {
	Type   string    `json:"type"`
	Host   string    `json:"host"`
	Time   time.Time `json:"time"`
	CPU    cpuRecord `json:"cpu"`
	Memory memRecord `json:"memory"`
	Net    []netIf   `json:"net"`
}

type cpuRecord struct {
	cpuTimes
	// BusyRatio is the share of non-idle time since the previous record, over all
	// CPUs; absent in the first record.
	BusyRatio *float64 `json:"busy_ratio,omitempty"`
}

type memRecord struct {
	TotalBytes     uint64 `json:"total_bytes"`
	AvailableBytes uint64 `json:"available_bytes"`
	FreeBytes      uint64 `json:"free_bytes"`
	BuffersBytes   uint64 `json:"buffers_bytes"`
	CachedBytes    uint64 `json:"cached_bytes"`
	SwapTotalBytes uint64 `json:"swap_total_bytes"`
	SwapFreeBytes  uint64 `json:"swap_free_bytes"`
}

type netIf struct {
	Interface string `json:"interface"`
	RxBytes   uint64 `json:"rx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	RxErrors  uint64 `json:"rx_errors"`
	RxDropped uint64 `json:"rx_dropped"`
	TxBytes   uint64 `json:"tx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxErrors  uint64 `json:"tx_errors"`
	TxDropped uint64 `json:"tx_dropped"`
}

// sample reads the three /proc files under procRoot.
func sample(procRoot, host string, prev *cpuTimes, now time.Time) (hostRecord, *cpuTimes, error) {
	rec := hostRecord{Type: "host", Host: host, Time: now.UTC()}
	stat, err := os.ReadFile(filepath.Join(procRoot, "stat"))
	if err != nil {
		return rec, nil, fmt.Errorf("cannot read %s/stat: %w", procRoot, err)
	}
	cpu, err := parseProcStat(stat)
	if err != nil {
		return rec, nil, err
	}
	rec.CPU.cpuTimes = cpu
	if prev != nil {
		if dt := cpu.total() - prev.total(); dt > 0 {
			busy := 1 - (cpu.Idle+cpu.IOWait-prev.Idle-prev.IOWait)/dt
			rec.CPU.BusyRatio = &busy
		}
	}
	mem, err := os.ReadFile(filepath.Join(procRoot, "meminfo"))
	if err != nil {
		return rec, nil, fmt.Errorf("cannot read %s/meminfo: %w", procRoot, err)
	}
	if rec.Memory, err = parseMeminfo(mem); err != nil {
		return rec, nil, err
	}
	dev, err := os.ReadFile(filepath.Join(procRoot, "net", "dev"))
	if err != nil {
		return rec, nil, fmt.Errorf("cannot read %s/net/dev: %w", procRoot, err)
	}
	if rec.Net, err = parseNetDev(dev); err != nil {
		return rec, nil, err
	}
	return rec, &cpu, nil
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat.
func parseProcStat(b []byte) (cpuTimes, error) {
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != "cpu" {
			continue
		}
		var v [8]float64
		for i := 0; i < 8 && i+1 < len(f); i++ {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("/proc/stat cpu field %d %q: %w", i+1, f[i+1], err)
			}
			v[i] = float64(n) / userHZ
		}
		return cpuTimes{User: v[0], Nice: v[1], System: v[2], Idle: v[3], IOWait: v[4], IRQ: v[5], SoftIRQ: v[6], Steal: v[7]}, nil
	}
	return cpuTimes{}, errors.New("/proc/stat has no cpu line")
}

// parseMeminfo reads the fields of /proc/meminfo the record carries (kB -> bytes).
func parseMeminfo(b []byte) (memRecord, error) {
	var m memRecord
	fields := map[string]*uint64{
		"MemTotal": &m.TotalBytes, "MemAvailable": &m.AvailableBytes, "MemFree": &m.FreeBytes,
		"Buffers": &m.BuffersBytes, "Cached": &m.CachedBytes, "SwapTotal": &m.SwapTotalBytes, "SwapFree": &m.SwapFreeBytes,
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		dst := fields[name]
		if !ok || dst == nil {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("/proc/meminfo %s %q: %w", name, f[0], err)
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		*dst = n
	}
	if m.TotalBytes == 0 {
		return m, errors.New("/proc/meminfo has no MemTotal")
	}
	return m, nil
}

// parseNetDev reads /proc/net/dev: two header lines, then
// "iface: rx bytes packets errs drop fifo frame compressed multicast tx bytes packets errs drop ...".
func parseNetDev(b []byte) ([]netIf, error) {
	var out []netIf
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.Contains(name, "|") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			return nil, fmt.Errorf("/proc/net/dev line for %q has %d fields, want 16", strings.TrimSpace(name), len(f))
		}
		var v [16]uint64
		for i := range 16 {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/net/dev %q field %d: %w", strings.TrimSpace(name), i, err)
			}
			v[i] = n
		}
		out = append(out, netIf{Interface: strings.TrimSpace(name),
			RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDropped: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDropped: v[11]})
	}
	return out, nil
}
