package meter

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func testSpoolOpts(dir string) spoolOptions {
	return spoolOptions{dir: dir, segmentBytes: 4096, maxBytes: 1 << 20, fsync: FsyncNever, full: FullBlock, maxRecordBytes: 1 << 20}
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	require.NoError(t, err)
	sort.Strings(m)
	return m
}

func TestSpoolAppendReadAckReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(testSpoolOpts(dir))
	require.NoError(t, err)
	ctx := context.Background()
	for i := 1; i <= 500; i++ {
		seq, err := s.append(ctx, int64(i), fmt.Appendf(nil, "record-%04d-%s", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
		require.NoError(t, err)
		require.Equal(t, uint64(i), seq)
	}
	require.Greater(t, len(segFiles(t, dir)), 5, "segments roll at SegmentBytes")

	var b batch
	var got []uint64
	for len(got) < 500 {
		b.reset()
		s.read(&b, 64, 1<<20)
		require.NotEmpty(t, b.recs)
		for _, r := range b.recs {
			got = append(got, r.Seq)
			require.Equal(t, fmt.Sprintf("record-%04d-%s", r.Seq, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), string(r.Payload))
			require.Equal(t, int64(r.Seq), r.Timestamp)
		}
		if got[len(got)-1] == 300 || len(got) > 300 && got[len(got)-65] < 300 {
			require.NoError(t, s.ack(300))
		}
	}
	for i, seq := range got {
		require.Equal(t, uint64(i+1), seq)
	}
	require.NoError(t, s.ack(300))
	before := len(segFiles(t, dir))
	require.NoError(t, s.close())

	// Reopen: the reader resumes after the cursor, the sequence continues.
	s, err = openSpool(testSpoolOpts(dir))
	require.NoError(t, err)
	b.reset()
	s.read(&b, 1000, 1<<20)
	require.Len(t, b.recs, 200)
	require.Equal(t, uint64(301), b.recs[0].Seq)
	seq, err := s.append(ctx, 0, []byte("after"))
	require.NoError(t, err)
	require.Equal(t, uint64(501), seq)

	// Acknowledge everything: only the active segment is left, and its name keeps
	// the sequence going after another reopen.
	require.NoError(t, s.ack(501))
	require.Less(t, len(segFiles(t, dir)), before)
	require.Len(t, segFiles(t, dir), 1)
	require.NoError(t, s.close())
	s, err = openSpool(testSpoolOpts(dir))
	require.NoError(t, err)
	defer func() { require.NoError(t, s.close()) }()
	seq, err = s.append(ctx, 0, []byte("next"))
	require.NoError(t, err)
	require.Equal(t, uint64(502), seq)
}

func TestSpoolLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(testSpoolOpts(dir))
	require.NoError(t, err)
	_, err = openSpool(testSpoolOpts(dir))
	require.ErrorIs(t, err, ErrSpoolLocked)
	require.NoError(t, s.close())
	s, err = openSpool(testSpoolOpts(dir))
	require.NoError(t, err)
	require.NoError(t, s.close())
}

func TestSpoolFullDropOldest(t *testing.T) {
	o := testSpoolOpts(t.TempDir())
	o.maxBytes = 3 * 4096
	o.full = FullDropOldest
	dropped := 0
	o.onDrop = func(n int) { dropped += n }
	s, err := openSpool(o)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.close()) }()
	payload := make([]byte, 100) // 128 bytes per entry, 32 per segment
	for range 1000 {
		_, err := s.append(context.Background(), 0, payload)
		require.NoError(t, err)
	}
	_, _, total, _ := s.state()
	require.LessOrEqual(t, total, o.maxBytes)
	require.Greater(t, dropped, 900)
	// What is left is the newest records, in order, and the count adds up.
	var b batch
	s.read(&b, 10000, 1<<20)
	require.Equal(t, 1000-dropped, len(b.recs))
	require.Equal(t, uint64(1000), b.lastSeq())
}

func TestSpoolFullBlock(t *testing.T) {
	o := testSpoolOpts(t.TempDir())
	o.maxBytes = 2 * 4096
	s, err := openSpool(o)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.close()) }()
	payload := make([]byte, 100)
	n := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := s.append(ctx, 0, payload)
		cancel()
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			break
		}
		n++
	}
	require.Equal(t, 64, n, "two full segments of 32 entries of 128 bytes")
	// An acknowledgement frees the first segment and unblocks a waiting append.
	done := make(chan error, 1)
	go func() {
		_, err := s.append(context.Background(), 0, payload)
		done <- err
	}()
	var b batch
	s.read(&b, 32, 1<<20)
	require.NoError(t, s.ack(b.lastSeq()))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("append stayed blocked after space was freed")
	}
}

// When the active segment is all the spool holds, nothing can free it but a roll:
// an append that does not fit must seal it rather than wait for an
// acknowledgement that has already happened (this used to block forever).
func TestSpoolFullBlockOnlyActiveSegment(t *testing.T) {
	o := testSpoolOpts(t.TempDir())
	o.maxBytes = 2 * 4096
	s, err := openSpool(o)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.close()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seq, err := s.append(ctx, 0, make([]byte, 3000))
	require.NoError(t, err)
	require.NoError(t, s.ack(seq))
	_, err = s.append(ctx, 0, make([]byte, 6000)) // 3028 + 6028 bytes > 8192
	require.NoError(t, err, "the acknowledged active segment must make room")
	_, _, total, _ := s.state()
	require.Equal(t, int64(6028), total)

	// A record larger than the whole spool fails at once instead of waiting.
	_, err = s.append(ctx, 0, make([]byte, 9000))
	require.Error(t, err)
	require.NotErrorIs(t, err, context.DeadlineExceeded)
}

// corruptAt flips one byte of a spool segment.
func corruptAt(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	var b [1]byte
	_, err = f.ReadAt(b[:], off)
	require.NoError(t, err)
	b[0] ^= 0xFF
	_, err = f.WriteAt(b[:], off)
	require.NoError(t, err)
}

func TestSpoolResyncAfterCorruptHeader(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(testSpoolOpts(dir))
	require.NoError(t, err)
	for i := range 20 {
		_, err := s.append(context.Background(), 0, fmt.Appendf(nil, "r%02d", i+1))
		require.NoError(t, err)
	}
	require.NoError(t, s.close())
	// Entries are 31 bytes: break the length field of entry 5 and the magic of 12.
	seg := segFiles(t, dir)[0]
	corruptAt(t, seg, 4*31+9)
	corruptAt(t, seg, 11*31)
	corrupt := 0
	o := testSpoolOpts(dir)
	o.onCorrupt = func(n int) { corrupt += n }
	s, err = openSpool(o)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.close()) }()
	require.Equal(t, 2, corrupt)
	var b batch
	s.read(&b, 100, 1<<20)
	require.Len(t, b.recs, 18)
	for _, r := range b.recs {
		require.NotContains(t, []uint64{5, 12}, r.Seq)
		require.Equal(t, fmt.Sprintf("r%02d", r.Seq), string(r.Payload))
	}
	require.Equal(t, 2, corrupt, "corruption found at recovery is not counted again when read")
}

func TestSpoolAppendManyAcrossSegments(t *testing.T) {
	o := testSpoolOpts(t.TempDir())
	o.maxBytes = 6 * 4096
	o.full = FullDropOldest
	dropped := 0
	o.onDrop = func(n int) { dropped += n }
	s, err := openSpool(o)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.close()) }()
	var ps [][]byte
	for i := range 100 {
		ps = append(ps, fmt.Appendf(nil, "%03d-%s", i+1, make([]byte, 96))) // 100 bytes: 128 per entry
	}
	first, n, err := s.appendMany(context.Background(), func(i int) int64 { return int64(i) }, ps)
	require.NoError(t, err)
	require.Equal(t, uint64(1), first)
	require.Equal(t, 100, n)
	require.Len(t, segFiles(t, o.dir), 4, "32 entries of 128 bytes per 4 KiB segment")
	// Another 100 overflow the 6-segment bound: the oldest segments are dropped.
	first, n, err = s.appendMany(context.Background(), func(i int) int64 { return int64(i) }, ps)
	require.NoError(t, err)
	require.Equal(t, uint64(101), first)
	require.Equal(t, 100, n)
	_, _, total, _ := s.state()
	require.LessOrEqual(t, total, o.maxBytes)
	require.Equal(t, 32, dropped, "192 entries fill the bound; the 193rd drops the oldest segment")
	var b batch
	s.read(&b, 1000, 1<<20)
	require.Len(t, b.recs, 200-32)
	for i, r := range b.recs {
		require.Equal(t, uint64(33+i), r.Seq)
		require.Equal(t, fmt.Sprintf("%03d", (r.Seq-1)%100+1), string(r.Payload[:3]))
	}
}

// FuzzSpoolRecover feeds arbitrary bytes as a segment: opening the spool must
// not fail or panic, and every record read back must be one that was written
// intact (valid checksum), in increasing sequence order.
func FuzzSpoolRecover(f *testing.F) {
	seed := func(n int, damage func([]byte) []byte) []byte {
		dir := f.TempDir()
		s, err := openSpool(testSpoolOpts(dir))
		if err != nil {
			f.Fatal(err)
		}
		for i := range n {
			if _, err := s.append(context.Background(), int64(i), fmt.Appendf(nil, "payload-%d", i)); err != nil {
				f.Fatal(err)
			}
		}
		if err := s.close(); err != nil {
			f.Fatal(err)
		}
		m, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
		b, err := os.ReadFile(m[0])
		if err != nil {
			f.Fatal(err)
		}
		return damage(b)
	}
	f.Add(seed(5, func(b []byte) []byte { return b }))
	f.Add(seed(5, func(b []byte) []byte { return b[:len(b)-3] }))
	f.Add(seed(5, func(b []byte) []byte { b[40] ^= 1; return b }))
	f.Add(seed(5, func(b []byte) []byte { return append(b[:30], b[60:]...) }))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d%s", 1, segSuffix)), data, 0o640))
		s, err := openSpool(testSpoolOpts(dir))
		require.NoError(t, err)
		defer func() { require.NoError(t, s.close()) }()
		var b batch
		s.read(&b, 1<<20, 1<<30)
		var prev uint64
		for _, r := range b.recs {
			require.Greater(t, r.Seq, prev)
			prev = r.Seq
		}
		// Appending after recovery continues above everything read.
		seq, err := s.append(context.Background(), 0, []byte("next"))
		require.NoError(t, err)
		require.Greater(t, seq, prev)
	})
}
