package wire_test

import (
	"bytes"
	"errors"
	"fmt"

	"phloem/collector/wire"
)

// The meter side: build a batch, compress it.
func ExampleBuilder() {
	lim := wire.DefaultLimits()
	codec, err := wire.NewCodec(lim)
	if err != nil {
		panic(err)
	}
	var b wire.Builder
	for seq := uint64(1); seq <= 3; seq++ {
		r := wire.Record{Seq: seq, Timestamp: 1_763_900_000_000_000_000 + int64(seq), Payload: []byte(`{"cpu":0.5}`)}
		if b.Count() == lim.MaxRecords || b.Len()+b.FrameLen(r) > lim.MaxBatchBytes {
			break // send this batch, Reset, then add r
		}
		b.Add(r)
	}
	body, err := codec.Compress(nil, wire.EncodingZstd, b.Bytes())
	if err != nil {
		panic(err)
	}
	fmt.Println(b.Count(), "records,", b.Len(), "bytes, compressed:", len(body) > 0)
	// Output: 3 records, 63 bytes, compressed: true
}

// The collector side: decompress with a size cap, decode, and map errors to
// status codes.
func ExampleDecodeBatch() {
	lim := wire.DefaultLimits()
	codec, err := wire.NewCodec(lim)
	if err != nil {
		panic(err)
	}
	batch := wire.AppendBatch(nil, []wire.Record{{Seq: 1, Timestamp: 5, Payload: []byte(`{"a":1}`)}})
	compressed, err := codec.Compress(nil, "zstd", batch)
	if err != nil {
		panic(err)
	}

	rc, err := codec.NewDecompressReader("zstd", bytes.NewReader(compressed)) // r.Body, r.Header.Get("Content-Encoding")
	if err != nil {
		panic(err) // 415 if errors.Is(err, wire.ErrUnsupportedEncoding), else 400
	}
	body, err := wire.ReadLimited(nil, rc, lim.MaxBatchBytes)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		panic(err) // 413 if errors.Is(err, wire.ErrBatchTooLarge), else 400
	}
	err = wire.DecodeBatch(body, lim, func(r wire.Record) error {
		fmt.Printf("seq=%d ts=%d payload=%s\n", r.Seq, r.Timestamp, r.Payload)
		return nil
	})
	fmt.Println("err:", err)

	// A damaged body: the error says where and what.
	body[len(body)-1] ^= 0xff
	err = wire.DecodeBatch(body, lim, nil)
	var fe *wire.FrameError
	fmt.Println(errors.As(err, &fe), fe.Frame, errors.Is(err, wire.ErrChecksum))
	// Output:
	// seq=1 ts=5 payload={"a":1}
	// err: <nil>
	// true -1 true
}
