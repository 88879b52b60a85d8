package wire

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

func TestParseEncoding(t *testing.T) {
	for in, want := range map[string]string{
		"": EncodingIdentity, "identity": EncodingIdentity, " Identity ": EncodingIdentity,
		"gzip": EncodingGzip, "GZIP": EncodingGzip, "x-gzip": EncodingGzip,
		"zstd": EncodingZstd, "ZStd": EncodingZstd,
	} {
		got, err := ParseEncoding(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"br", "deflate", "gzip, zstd", "compress"} {
		_, err := ParseEncoding(in)
		require.ErrorIs(t, err, ErrUnsupportedEncoding, in)
		require.Contains(t, err.Error(), "supported: identity, gzip, zstd")
	}
	require.Equal(t, []string{"identity", "gzip", "zstd"}, Encodings())
}

func TestCompressRoundTrip(t *testing.T) {
	c, err := NewCodec(Limits{})
	require.NoError(t, err)
	batch := AppendBatch(nil, sampleRecords(500, 200))
	for _, enc := range Encodings() {
		t.Run(enc, func(t *testing.T) {
			for i := 0; i < 3; i++ { // again, to exercise the pools
				z, err := c.Compress([]byte("pre"), enc, batch)
				require.NoError(t, err)
				require.Equal(t, "pre", string(z[:3]))
				if enc != EncodingIdentity {
					require.Less(t, len(z), len(batch)/2, "meter-like batches compress well")
				}
				rc, err := c.NewDecompressReader(enc, bytes.NewReader(z[3:]))
				require.NoError(t, err)
				got, err := ReadLimited(nil, rc, DefaultMaxBatchBytes)
				require.NoError(t, err)
				require.NoError(t, rc.Close())
				require.NoError(t, rc.Close(), "Close is idempotent")
				require.Equal(t, batch, got)
			}
			// The package-level helpers give the same results.
			z, err := Compress(nil, enc, batch)
			require.NoError(t, err)
			rc, err := NewDecompressReader(enc, iotest.HalfReader(bytes.NewReader(z)))
			require.NoError(t, err)
			got, err := io.ReadAll(rc)
			require.NoError(t, err)
			require.NoError(t, rc.Close())
			require.Equal(t, batch, got)
		})
	}
}

func TestUnsupportedEncoding(t *testing.T) {
	c, err := NewCodec(Limits{})
	require.NoError(t, err)
	_, err = c.Compress(nil, "br", []byte("x"))
	require.ErrorIs(t, err, ErrUnsupportedEncoding)
	_, err = c.NewDecompressReader("br", bytes.NewReader(nil))
	require.ErrorIs(t, err, ErrUnsupportedEncoding)
	require.Contains(t, err.Error(), `"br"`)
}

func TestDecompressGarbage(t *testing.T) {
	c, err := NewCodec(Limits{})
	require.NoError(t, err)
	garbage := []byte("this is not compressed at all, not even a little")

	_, err = c.NewDecompressReader(EncodingGzip, bytes.NewReader(garbage))
	require.ErrorContains(t, err, "cannot read gzip header")

	rc, err := c.NewDecompressReader(EncodingZstd, bytes.NewReader(garbage))
	if err == nil { // zstd may only notice on the first Read
		_, err = ReadLimited(nil, rc, 1<<20)
		require.NoError(t, rc.Close())
	}
	require.Error(t, err)

	// A truncated stream is an error, not a short body.
	z, err := c.Compress(nil, EncodingGzip, bytes.Repeat([]byte("abc"), 1000))
	require.NoError(t, err)
	rc, err = c.NewDecompressReader(EncodingGzip, bytes.NewReader(z[:len(z)-6]))
	require.NoError(t, err)
	_, err = ReadLimited(nil, rc, 1<<20)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.NoError(t, rc.Close())
}

// TestDecompressionBomb shows the collector's read path: a small compressed
// body that inflates past MaxBatchBytes stops at the limit with 413's error.
func TestDecompressionBomb(t *testing.T) {
	lim := Limits{MaxRecordBytes: 1 << 10, MaxBatchBytes: 1 << 20}
	c, err := NewCodec(lim)
	require.NoError(t, err)
	zeros := make([]byte, 8<<20)
	for _, enc := range []string{EncodingGzip, EncodingZstd} {
		t.Run(enc, func(t *testing.T) {
			z, err := c.Compress(nil, enc, zeros)
			require.NoError(t, err)
			require.Less(t, len(z), 64<<10)
			// bytes.Reader takes zstd's in-memory path; MultiReader hides
			// it, as an HTTP body would, forcing the streaming path.
			for _, r := range []io.Reader{bytes.NewReader(z), io.MultiReader(bytes.NewReader(z))} {
				rc, err := c.NewDecompressReader(enc, r)
				if err == nil {
					var got []byte
					got, err = ReadLimited([]byte("keep"), rc, lim.MaxBatchBytes)
					require.Equal(t, "keep", string(got))
					require.NoError(t, rc.Close())
				}
				require.ErrorIs(t, err, ErrBatchTooLarge)
				require.Contains(t, err.Error(), "max_batch_bytes=1048576")
			}
		})
	}
}

// TestZstdWindowCap: a frame that asks for a window larger than
// MaxBatchBytes is refused instead of allocated.
func TestZstdWindowCap(t *testing.T) {
	enc, err := zstd.NewWriter(nil, zstd.WithWindowSize(8<<20), zstd.WithSingleSegment(false), zstd.WithEncoderConcurrency(1))
	require.NoError(t, err)
	rnd := rand.New(rand.NewPCG(3, 4))
	src := make([]byte, 2<<20)
	for i := range src {
		src[i] = byte(rnd.IntN(4))
	}
	z := enc.EncodeAll(src, nil)
	require.NoError(t, enc.Close())

	small, err := NewCodec(Limits{MaxRecordBytes: 1 << 10, MaxBatchBytes: 1 << 20})
	require.NoError(t, err)
	rc, err := small.NewDecompressReader(EncodingZstd, io.MultiReader(bytes.NewReader(z))) // hide bytes.Reader: force streaming
	if err == nil {
		_, err = ReadLimited(nil, rc, 4<<20)
		require.NoError(t, rc.Close())
	}
	require.ErrorIs(t, err, zstd.ErrWindowSizeExceeded)
	require.ErrorIs(t, err, ErrBatchTooLarge)

	big, err := NewCodec(Limits{})
	require.NoError(t, err)
	rc, err = big.NewDecompressReader(EncodingZstd, io.MultiReader(bytes.NewReader(z)))
	require.NoError(t, err)
	got, err := ReadLimited(nil, rc, 4<<20)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	require.Equal(t, src, got)
}

func TestReadLimited(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000)
	got, err := ReadLimited(nil, iotest.OneByteReader(bytes.NewReader(data)), len(data))
	require.NoError(t, err, "exactly at the limit")
	require.Equal(t, data, got)

	_, err = ReadLimited(nil, bytes.NewReader(data), len(data)-1)
	require.ErrorIs(t, err, ErrBatchTooLarge)

	got, err = ReadLimited(make([]byte, 0, 3), bytes.NewReader(nil), 0)
	require.NoError(t, err)
	require.Empty(t, got)

	boom := errors.New("connection reset")
	_, err = ReadLimited(nil, iotest.ErrReader(boom), 10)
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "cannot read body")
}

func TestCodecConcurrent(t *testing.T) {
	c, err := NewCodec(Limits{})
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := AppendBatch(nil, sampleRecords(50+g, 100))
			enc := Encodings()[g%3]
			for i := 0; i < 20; i++ {
				z, err := c.Compress(nil, enc, batch)
				if err != nil {
					errs <- err
					return
				}
				rc, err := c.NewDecompressReader(enc, bytes.NewReader(z))
				if err != nil {
					errs <- err
					return
				}
				got, err := ReadLimited(nil, rc, DefaultMaxBatchBytes)
				if cerr := rc.Close(); err == nil {
					err = cerr
				}
				if err == nil && !bytes.Equal(got, batch) {
					err = errors.New("round trip mismatch")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
