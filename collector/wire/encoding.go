package wire

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Content-Encoding values of an ingest body.
const (
	EncodingIdentity = "identity"
	EncodingGzip     = "gzip"
	EncodingZstd     = "zstd"
)

// Encodings returns the supported Content-Encoding values, for error
// messages and Accept-Encoding style headers. The slice is fresh on each
// call.
func Encodings() []string { return []string{EncodingIdentity, EncodingGzip, EncodingZstd} }

// ParseEncoding normalises a Content-Encoding header value: names are
// case-insensitive and trimmed, "" means identity and "x-gzip" means gzip
// (RFC 9110 §8.4.1.3). Stacked encodings ("gzip, zstd") are not supported.
// Unknown values give an error wrapping ErrUnsupportedEncoding.
func ParseEncoding(s string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", EncodingIdentity:
		return EncodingIdentity, nil
	case EncodingGzip, "x-gzip":
		return EncodingGzip, nil
	case EncodingZstd:
		return EncodingZstd, nil
	}
	return "", fmt.Errorf("%w %q (supported: identity, gzip, zstd)", ErrUnsupportedEncoding, s)
}

// Codec compresses and decompresses ingest bodies, reusing zstd and gzip
// state between calls. The meter compresses with it, the collector
// decompresses with it; both build one at start and share it among their
// goroutines: every method is safe for concurrent use. It starts no
// goroutine (zstd runs with concurrency 1, synchronously), so it needs no
// Close; dropping it frees everything. A pooled zstd decoder keeps its
// history buffer (at most twice MaxBatchBytes) until the garbage collector
// empties the pool, so idle memory is bounded by the peak number of
// concurrent decompressions.
type Codec struct {
	maxWindow uint64

	zencOnce sync.Once
	zenc     *zstd.Encoder
	zencErr  error

	zdec sync.Pool // *zstd.Decoder
	gzw  sync.Pool // *gzip.Writer
	gzr  sync.Pool // *gzip.Reader
}

// NewCodec returns a Codec whose decompressors refuse, before allocating
// for it, a zstd window larger than lim.MaxBatchBytes: a legitimate batch
// never needs one, and a hostile frame header cannot make the collector
// reserve hundreds of MiB. Zero fields of lim take their defaults.
//
// The decompressors do NOT cap the decompressed size of a stream (a zip
// bomb inflates a small body a thousandfold): read them through
// ReadLimited, or an io.LimitReader of lim.MaxBatchBytes+1, and reject a
// body that reaches the limit with 413.
func NewCodec(lim Limits) (*Codec, error) {
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	lim = lim.withDefaults()
	w := uint64(lim.MaxBatchBytes)
	if w < zstd.MinWindowSize {
		w = zstd.MinWindowSize
	}
	return &Codec{maxWindow: w}, nil
}

// Compress appends src compressed with enc (a value ParseEncoding accepts)
// to dst.
func (c *Codec) Compress(dst []byte, enc string, src []byte) ([]byte, error) {
	e, err := ParseEncoding(enc)
	if err != nil {
		return dst, err
	}
	switch e {
	case EncodingZstd:
		c.zencOnce.Do(func() {
			// EncodeAll is safe for concurrent use and runs on the
			// caller's goroutine; concurrency 1 keeps the encoder from
			// preallocating state for parallel streams it never runs.
			c.zenc, c.zencErr = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
		})
		if c.zencErr != nil {
			return dst, fmt.Errorf("cannot create zstd encoder: %w", c.zencErr)
		}
		return c.zenc.EncodeAll(src, dst), nil
	case EncodingGzip:
		buf := bytes.NewBuffer(dst)
		zw, _ := c.gzw.Get().(*gzip.Writer)
		if zw == nil {
			zw = gzip.NewWriter(buf)
		} else {
			zw.Reset(buf)
		}
		_, werr := zw.Write(src)
		cerr := zw.Close()
		zw.Reset(io.Discard) // drop the reference to dst before pooling
		c.gzw.Put(zw)
		if err := errors.Join(werr, cerr); err != nil {
			return dst, fmt.Errorf("cannot gzip body: %w", err)
		}
		return buf.Bytes(), nil
	default:
		return append(dst, src...), nil
	}
}

// NewDecompressReader returns a reader of r decoded per enc (a value
// ParseEncoding accepts); an unknown enc gives ErrUnsupportedEncoding. For
// gzip the header is read at once, so a body that is not gzip fails here.
// Close returns the decoder to the Codec's pool; it does not close r. The
// reader must not be used after Close. See NewCodec about capping the
// decompressed size.
func (c *Codec) NewDecompressReader(enc string, r io.Reader) (io.ReadCloser, error) {
	e, err := ParseEncoding(enc)
	if err != nil {
		return nil, err
	}
	switch e {
	case EncodingZstd:
		d, _ := c.zdec.Get().(*zstd.Decoder)
		if d == nil {
			d, err = zstd.NewReader(nil,
				zstd.WithDecoderConcurrency(1), // synchronous: no goroutine to own
				zstd.WithDecoderLowmem(true),
				zstd.WithDecoderMaxWindow(c.maxWindow),
				// Streaming: caps the window; in-memory shortcut
				// (bytes.Reader input): caps the output. Twice the
				// window so the shortcut still lets the caller's own
				// limit, not zstd, detect an oversized body.
				zstd.WithDecoderMaxMemory(2*c.maxWindow))
			if err != nil {
				return nil, fmt.Errorf("cannot create zstd decoder: %w", err)
			}
		}
		if err := d.Reset(r); err != nil {
			_ = d.Reset(nil) // drop r; cannot fail on an open decoder
			c.zdec.Put(d)
			return nil, fmt.Errorf("cannot start zstd decoding: %w", c.zstdErr(err))
		}
		return &zstdReader{c: c, d: d}, nil
	case EncodingGzip:
		zr, _ := c.gzr.Get().(*gzip.Reader)
		if zr == nil {
			zr, err = gzip.NewReader(r)
		} else {
			err = zr.Reset(r)
		}
		if err != nil {
			if zr != nil {
				c.gzr.Put(zr)
			}
			return nil, fmt.Errorf("cannot read gzip header: %w", err)
		}
		return &gzipReader{c: c, r: zr}, nil
	default:
		return io.NopCloser(r), nil
	}
}

type zstdReader struct {
	c *Codec
	d *zstd.Decoder
}

func (z *zstdReader) Read(p []byte) (int, error) {
	if z.d == nil {
		return 0, errors.New("read from closed zstd reader")
	}
	n, err := z.d.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("zstd: %w", z.c.zstdErr(err))
	}
	return n, err
}

// zstdErr makes the decoder's refusals of oversized frames also match
// ErrBatchTooLarge, so the collector answers them with 413 like any other
// body over the limit, while errors.Is still sees the zstd error.
func (c *Codec) zstdErr(err error) error {
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return fmt.Errorf("%w: frame needs more memory than %s=%d allows: %w", ErrBatchTooLarge, LimitMaxBatchBytes, c.maxWindow, err)
	}
	return err
}

func (z *zstdReader) Close() error {
	if z.d == nil {
		return nil
	}
	// Reset(nil) drops the reference to the request body so the pool does
	// not keep it alive.
	_ = z.d.Reset(nil) // only fails on a closed decoder, which ours never is
	z.c.zdec.Put(z.d)
	z.d = nil
	return nil
}

type gzipReader struct {
	c *Codec
	r *gzip.Reader
}

func (g *gzipReader) Read(p []byte) (int, error) {
	if g.r == nil {
		return 0, errors.New("read from closed gzip reader")
	}
	n, err := g.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("gzip: %w", err)
	}
	return n, err
}

func (g *gzipReader) Close() error {
	if g.r == nil {
		return nil
	}
	// gzip.Reader.Close does not close the underlying reader and only
	// returns a past decompression error, which Read already reported.
	_ = g.r.Close()
	g.c.gzr.Put(g.r)
	g.r = nil
	return nil
}

// Compress is Codec.Compress on a fresh Codec with default limits: handy in
// tests and one-off tools, wasteful in a loop (zstd state is built per
// call). Meters should hold a Codec.
func Compress(dst []byte, enc string, src []byte) ([]byte, error) {
	c, err := NewCodec(Limits{})
	if err != nil {
		return dst, err
	}
	return c.Compress(dst, enc, src)
}

// NewDecompressReader is Codec.NewDecompressReader on a fresh Codec with
// default limits; servers should hold a Codec.
func NewDecompressReader(enc string, r io.Reader) (io.ReadCloser, error) {
	c, err := NewCodec(Limits{})
	if err != nil {
		return nil, err
	}
	return c.NewDecompressReader(enc, r)
}

// ReadLimited appends everything r yields to dst and returns it, failing
// with a *FrameError wrapping ErrBatchTooLarge as soon as more than limit
// bytes arrive (it reads at most limit+1). This is how the collector reads a
// (decompressed) body: it bounds memory whatever the client sends,
// including a compression bomb. Read errors are returned wrapped. On any
// error dst comes back as it was (its spare capacity may have been written).
func ReadLimited(dst []byte, r io.Reader, limit int) ([]byte, error) {
	if limit < 0 {
		limit = 0
	}
	start := len(dst)
	lr := io.LimitedReader{R: r, N: int64(limit) + 1}
	for {
		if len(dst) == cap(dst) {
			// Grow geometrically, but never past what the limit can use.
			want := min(max(2*cap(dst), 4096), start+limit+1)
			if want <= cap(dst) {
				want = cap(dst) + 1
			}
			dst = append(dst[:cap(dst)], make([]byte, want-cap(dst))...)[:len(dst)]
		}
		n, err := lr.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst)-start > limit {
			return dst[:start], limitErr(-1, limit, LimitMaxBatchBytes, ErrBatchTooLarge, "body of more than %d bytes (after decompression)", limit, limit)
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst[:start], fmt.Errorf("cannot read body: %w", err)
		}
	}
}
