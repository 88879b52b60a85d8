package hostmetrics

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const procStat = `cpu  4705 150 1120 16250 520 0 35 7 0 0
cpu0 2350 75 560 8125 260 0 17 3 0 0
intr 1234
`

const procMeminfo = `MemTotal:        8000000 kB
MemFree:         1000000 kB
MemAvailable:    5000000 kB
Buffers:          200000 kB
Cached:          3000000 kB
SwapTotal:             0 kB
SwapFree:              0 kB
`

const procNetDev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 123456789 98765 1 2 0 0 0 0 987654321 56789 3 4 0 0 0 0
`

func writeProc(t *testing.T, stat string) string {
	t.Helper()
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "net"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "stat"), []byte(stat), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "meminfo"), []byte(procMeminfo), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "net", "dev"), []byte(procNetDev), 0o644))
	return root
}

func TestSampleHost(t *testing.T) {
	root := writeProc(t, procStat)
	rec, cpu, err := sample(root, "h1", nil, time.Unix(100, 0))
	require.NoError(t, err)
	require.InDelta(t, 47.05, cpu.User, 1e-9)
	require.InDelta(t, 162.5, cpu.Idle, 1e-9)
	require.Nil(t, rec.CPU.BusyRatio)
	require.Equal(t, uint64(8000000*1024), rec.Memory.TotalBytes)
	require.Equal(t, uint64(5000000*1024), rec.Memory.AvailableBytes)
	require.Len(t, rec.Net, 2)
	eth := rec.Net[1]
	require.Equal(t, netIf{Interface: "eth0", RxBytes: 123456789, RxPackets: 98765, RxErrors: 1, RxDropped: 2,
		TxBytes: 987654321, TxPackets: 56789, TxErrors: 3, TxDropped: 4}, eth)

	// 100 more ticks of which 25 idle: busy 75%.
	root2 := writeProc(t, "cpu  4780 150 1120 16275 520 0 35 7 0 0\n")
	rec2, _, err := sample(root2, "h1", cpu, time.Unix(110, 0))
	require.NoError(t, err)
	require.NotNil(t, rec2.CPU.BusyRatio)
	require.InDelta(t, 0.75, *rec2.CPU.BusyRatio, 1e-9)
	b, err := json.Marshal(rec2)
	require.NoError(t, err)
	for _, k := range []string{`"type":"host"`, `"busy_ratio":0.75`, `"rx_bytes":123456789`, `"available_bytes":`, `"interface":"eth0"`} {
		require.Contains(t, string(b), k)
	}
	_, err = parseProcStat([]byte("intr 1\n"))
	require.Error(t, err)
}

func TestSamplerReportsBusyRatioFromSecondRecord(t *testing.T) {
	s := NewSampler(writeProc(t, procStat), "h1")
	b, err := s.Sample(time.Unix(100, 0))
	require.NoError(t, err)
	require.NotContains(t, string(b), "busy_ratio")
	s.procRoot = writeProc(t, "cpu  4780 150 1120 16275 520 0 35 7 0 0\n")
	b, err = s.Sample(time.Unix(110, 0))
	require.NoError(t, err)
	require.Contains(t, string(b), `"busy_ratio":0.75`)
	_, err = NewSampler(t.TempDir(), "h1").Sample(time.Now())
	require.ErrorContains(t, err, "cannot read")
}
