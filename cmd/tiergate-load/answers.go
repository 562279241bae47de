package main

import (
	"bytes"
	"fmt"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	protobuf "google.golang.org/protobuf/proto"
)

// The load tool must check every answer, but its own CPU shares the machine
// with the server it measures: whatever an answer costs it to read comes
// off the server's throughput. protobuf-go decodes the dynamic metadata
// tiergate attaches (a google.protobuf.Struct, a map) by reflection, about
// 10 µs per answer on this machine, several times what Envoy's C++ decoder
// spends; decoding every answer made the load tool itself the largest
// difference between tiergate's figures and the null server's. So an answer
// is read as bytes, and decoded and checked in full only when its bytes
// differ from the last answer that passed the full check. Identical bytes
// are the identical message, so every answer is still checked; a server
// whose answers vary is simply decoded more often. --decode-all decodes
// every answer, for comparison.

// rawAnswer receives an answer's wire form (through rawCodec) instead of a
// decoded message. Its storage is reused from one answer to the next.
type rawAnswer struct{ b []byte }

// rawCodec is gRPC's proto codec, except that it hands a *rawAnswer the
// message's bytes undecoded.
type rawCodec struct{ proto encoding.CodecV2 }

func newRawCodec() rawCodec { return rawCodec{proto: encoding.GetCodecV2(proto.Name)} }

func (c rawCodec) Name() string { return proto.Name }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*rawAnswer)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	r.b = r.b[:0]
	for _, buf := range data {
		r.b = append(r.b, buf.ReadOnlyData()...)
	}
	return nil
}

// answerChecker checks one kind of answer (request_headers or request_body)
// on one worker, remembering the bytes of the last answer that passed.
type answerChecker struct {
	check func(*extprocv3.ProcessingResponse) error
	// decodeAll turns the memory off: every answer is decoded and checked.
	decodeAll bool
	good      []byte
}

// verify checks raw, decoding it only when it differs from the last
// answer that passed.
func (c *answerChecker) verify(raw []byte) error {
	if c.good != nil && bytes.Equal(raw, c.good) {
		return nil
	}
	var m extprocv3.ProcessingResponse
	if err := protobuf.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("answer does not decode: %w", err)
	}
	if err := c.check(&m); err != nil {
		return err
	}
	if !c.decodeAll {
		c.good = append(c.good[:0], raw...)
	}
	return nil
}
