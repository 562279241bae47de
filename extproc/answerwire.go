package extproc

import (
	"fmt"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The request_body answer goes out for every policed request, and
// protobuf-go spends more on it (a sizing pass and a marshalling pass, both
// through its table-driven reflection) than tiergate spends rewriting the
// body. Its shape is fixed and small, so bodyAnswer writes its own wire
// form: exactly the bytes proto.Marshal writes for the same message
// (TestBodyAnswerWireForm), in one sizing and one writing pass.

// Field numbers of the messages a body answer is made of
// (envoy.service.ext_proc.v3 and envoy.config.core.v3).
const (
	fieldResponseRequestBody   = 3 // ProcessingResponse.request_body
	fieldBodyResponseResponse  = 1 // BodyResponse.response
	fieldCommonHeaderMutation  = 2 // CommonResponse.header_mutation
	fieldCommonBodyMutation    = 3 // CommonResponse.body_mutation
	fieldMutationSetHeaders    = 1 // HeaderMutation.set_headers
	fieldMutationRemoveHeaders = 2 // HeaderMutation.remove_headers
	fieldOptionHeader          = 1 // HeaderValueOption.header
	fieldOptionAppendAction    = 3 // HeaderValueOption.append_action
	fieldHeaderKey             = 1 // HeaderValue.key
	fieldHeaderRawValue        = 3 // HeaderValue.raw_value
	fieldBodyMutationBody      = 1 // BodyMutation.body
)

// sizeField is the size of a length-delimited field holding n bytes.
func sizeField(num protowire.Number, n int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

// appendFieldHeader appends a length-delimited field's tag and length.
func appendFieldHeader(b []byte, num protowire.Number, n int) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(n))
}

// Sizes of the nested messages, each without its own tag and length. Empty
// proto3 scalars are left out, as proto.Marshal leaves them out.
func (a *bodyAnswer) headerValueSize(i int) int {
	n := 0
	if k := a.values[i].Key; k != "" {
		n += sizeField(fieldHeaderKey, len(k))
	}
	if v := a.values[i].RawValue; len(v) > 0 {
		n += sizeField(fieldHeaderRawValue, len(v))
	}
	return n
}

func (a *bodyAnswer) optionSize(i int) int {
	n := sizeField(fieldOptionHeader, a.headerValueSize(i))
	if act := a.options[i].AppendAction; act != 0 {
		n += protowire.SizeTag(fieldOptionAppendAction) + protowire.SizeVarint(uint64(act))
	}
	return n
}

func (a *bodyAnswer) mutationSize() int {
	n := 0
	for i := range a.mutation.SetHeaders {
		n += sizeField(fieldMutationSetHeaders, a.optionSize(i))
	}
	for _, h := range a.mutation.RemoveHeaders {
		n += sizeField(fieldMutationRemoveHeaders, len(h))
	}
	return n
}

func (a *bodyAnswer) commonSize() int {
	n := 0
	if a.common.HeaderMutation != nil {
		n += sizeField(fieldCommonHeaderMutation, a.mutationSize())
	}
	if a.common.BodyMutation != nil {
		n += sizeField(fieldCommonBodyMutation, sizeField(fieldBodyMutationBody, len(a.newBody.Body)))
	}
	return n
}

// wireSize is the size of the whole ProcessingResponse.
func (a *bodyAnswer) wireSize() int {
	return sizeField(fieldResponseRequestBody, sizeField(fieldBodyResponseResponse, a.commonSize())) +
		len(a.resp.ProtoReflect().GetUnknown())
}

// appendWire appends the ProcessingResponse's wire form to b. It covers
// what requestBody builds: status CONTINUE (0, so absent), header
// mutations, a replaced body, and the dynamic metadata carried as an
// unknown field; message() must have linked the parts.
func (a *bodyAnswer) appendWire(b []byte) []byte {
	common := a.commonSize()
	b = appendFieldHeader(b, fieldResponseRequestBody, sizeField(fieldBodyResponseResponse, common))
	b = appendFieldHeader(b, fieldBodyResponseResponse, common)
	if a.common.HeaderMutation != nil {
		b = appendFieldHeader(b, fieldCommonHeaderMutation, a.mutationSize())
		for i := range a.mutation.SetHeaders {
			b = appendFieldHeader(b, fieldMutationSetHeaders, a.optionSize(i))
			b = appendFieldHeader(b, fieldOptionHeader, a.headerValueSize(i))
			if k := a.values[i].Key; k != "" {
				b = appendFieldHeader(b, fieldHeaderKey, len(k))
				b = append(b, k...)
			}
			if v := a.values[i].RawValue; len(v) > 0 {
				b = appendFieldHeader(b, fieldHeaderRawValue, len(v))
				b = append(b, v...)
			}
			if act := a.options[i].AppendAction; act != 0 {
				b = protowire.AppendTag(b, fieldOptionAppendAction, protowire.VarintType)
				b = protowire.AppendVarint(b, uint64(act))
			}
		}
		for _, h := range a.mutation.RemoveHeaders {
			b = appendFieldHeader(b, fieldMutationRemoveHeaders, len(h))
			b = append(b, h...)
		}
	}
	if a.common.BodyMutation != nil {
		body := a.newBody.Body
		b = appendFieldHeader(b, fieldCommonBodyMutation, sizeField(fieldBodyMutationBody, len(body)))
		b = appendFieldHeader(b, fieldBodyMutationBody, len(body))
		b = append(b, body...)
	}
	return append(b, a.resp.ProtoReflect().GetUnknown()...)
}

// ProtoReflect makes a bodyAnswer a proto.Message: the ProcessingResponse
// it holds. Any codec can send it; answerCodec sends it faster.
func (a *bodyAnswer) ProtoReflect() protoreflect.Message { return a.resp.ProtoReflect() }

// The other answers that go out for every policed request (to its headers,
// to the response's headers and chunks) are shared messages that never
// change, or such a message plus the usage metadata (withMetadata). Their
// wire forms are written once, by proto.Marshal, and sent from there.

// cannedWire maps the oneof of each shared answer to the answer's wire form.
var cannedWire = func() map[any][]byte {
	m := map[any][]byte{}
	for _, a := range []*extprocv3.ProcessingResponse{
		policedHeadersAnswer, plainBodyAnswer, plainResponseHeadersAnswer, plainResponseBodyAnswer,
	} {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
		if err != nil {
			panic(fmt.Sprintf("extproc: encoding a shared answer: %v", err))
		}
		m[a.Response] = b
	}
	return m
}()

// cannedForm returns the wire form of resp's known fields when they are
// exactly a shared answer's: resp is one, or a withMetadata copy of one
// (whose metadata is an unknown field, appended by the caller).
// TestCannedFormCoversEveryField keeps the list of fields checked here
// complete.
func cannedForm(resp *extprocv3.ProcessingResponse) ([]byte, bool) {
	// request_drain is deprecated, but it is still on the wire: an answer
	// that sets it is not a canned one.
	//lint:ignore SA1019 checked so that a set field is never dropped
	drain := resp.RequestDrain
	if drain || resp.DynamicMetadata != nil || resp.TypedDynamicMetadata != nil || resp.ModeOverride != nil ||
		resp.OverrideMessageTimeout != nil || resp.RequestDrainRequests ||
		resp.RequestDrainResponses || resp.ServerWindowUpdate != nil {
		return nil, false
	}
	b, ok := cannedWire[resp.Response]
	return b, ok
}

// answerCodec is gRPC's proto codec, except that a *bodyAnswer is written
// by its own appendWire, into a buffer from gRPC's pool as gRPC's codec
// does for messages of its size, a shared answer is sent from its canned
// wire form, and Envoy's messages are read by decodeRequest
// (requestwire.go).
type answerCodec struct{ proto encoding.CodecV2 }

func newAnswerCodec() answerCodec {
	return answerCodec{proto: encoding.GetCodecV2(grpcproto.Name)}
}

func (c answerCodec) Name() string { return grpcproto.Name }

func (c answerCodec) Marshal(v any) (mem.BufferSlice, error) {
	a, ok := v.(*bodyAnswer)
	if !ok {
		if resp, ok := v.(*extprocv3.ProcessingResponse); ok {
			if known, ok := cannedForm(resp); ok {
				return cannedAnswer(known, resp.ProtoReflect().GetUnknown()), nil
			}
		}
		return c.proto.Marshal(v)
	}
	size := a.wireSize()
	if mem.IsBelowBufferPoolingThreshold(size) {
		b := a.appendWire(make([]byte, 0, size))
		if len(b) != size {
			return nil, sizeError(len(b), size)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	*buf = a.appendWire((*buf)[:0])
	if len(*buf) != size {
		pool.Put(buf)
		return nil, sizeError(len(*buf), size)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// cannedAnswer is a shared answer's wire form followed by the answer's
// unknown fields (its metadata), as proto.Marshal writes them: known fields
// first. The canned bytes themselves are sent as they are; gRPC only reads
// them.
func cannedAnswer(known, unknown []byte) mem.BufferSlice {
	if len(unknown) == 0 {
		return mem.BufferSlice{mem.SliceBuffer(known)}
	}
	b := make([]byte, 0, len(known)+len(unknown))
	return mem.BufferSlice{mem.SliceBuffer(append(append(b, known...), unknown...))}
}

// sizeError reports a body answer whose sizing and writing disagree, which
// would be a bug here: the answer is refused rather than sent malformed.
func sizeError(wrote, sized int) error {
	return fmt.Errorf("extproc: body answer wrote %d bytes, sized %d", wrote, sized)
}

// Unmarshal reads a ProcessingRequest with decodeRequest when it can (the
// shapes Envoy sends), and everything else as gRPC's codec does.
func (c answerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if req, ok := v.(*extprocv3.ProcessingRequest); ok && decodeRequest(data.Materialize(), req) {
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

// answerCodecOption installs answerCodec on a gRPC server. (ForceServerCodecV2
// is marked experimental, with a promise of support throughout gRPC-Go 1.x.)
func answerCodecOption() grpc.ServerOption { return grpc.ForceServerCodecV2(newAnswerCodec()) }
