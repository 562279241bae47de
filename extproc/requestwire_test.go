package extproc

import (
	"bytes"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// envoyRequestHeaders is request_headers as the pinned Envoy sends it for a
// Codex request through envoy/envoy.yaml (tiergate-load's
// TestDriverSendsWhatEnvoySends captures the same shape).
func envoyRequestHeaders() *extprocv3.ProcessingRequest {
	var hs []*corev3.HeaderValue
	for _, kv := range [][2]string{
		{":authority", "api.openai.com"}, {":path", "/v1/responses"}, {":method", "POST"}, {":scheme", "http"},
		{"user-agent", "codex_cli_rs/0.98.0"}, {"content-length", "2048"}, {"authorization", "Bearer sk-test"},
		{"content-type", "application/json"}, {"originator", "codex_cli_rs"}, {"session_id", "0199a213"},
		{"x-forwarded-for", "203.0.113.7"}, {"x-forwarded-proto", "http"}, {"x-envoy-external-address", "203.0.113.7"},
		{"x-request-id", "33c50624-2f95-4a95-89b4-6374fb6e6db3"}, {"x-custom-header", "kept"},
	} {
		hs = append(hs, &corev3.HeaderValue{Key: kv[0], RawValue: []byte(kv[1])})
	}
	return &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: hs}}},
		MetadataContext: &corev3.Metadata{},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{
			RequestBodyMode: filterv3.ProcessingMode_BUFFERED, ResponseBodyMode: filterv3.ProcessingMode_STREAMED},
	}
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeCases are wire forms with whether decodeRequest reads them itself
// (true) or leaves them to proto.Unmarshal (false).
func decodeCases(t testing.TB) []struct {
	name string
	wire []byte
	fast bool
} {
	headers := marshal(t, envoyRequestHeaders())
	body := marshal(t, &extprocv3.ProcessingRequest{
		Request:         &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(`{"model":"gpt-5.5"}`), EndOfStream: true}},
		MetadataContext: &corev3.Metadata{},
	})
	respHeaders := marshal(t, &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{
			Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")}, {Key: "content-type", RawValue: []byte("text/event-stream")}}}}},
		MetadataContext: &corev3.Metadata{},
	})
	respBody := marshal(t, &extprocv3.ProcessingRequest{
		Request:           &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte("data: {}\n\n")}},
		ObservabilityMode: true,
	})
	noBody := marshal(t, &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{EndOfStream: true}}})
	legacyValue := marshal(t, &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{
			Headers: []*corev3.HeaderValue{{Key: "x-a", Value: "in value"}}}}}})
	oddConfig := marshal(t, &extprocv3.ProcessingRequest{
		Request:        &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{}},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: 42, SendBodyWithoutWaitingForHeaderResponse: true}})
	trailers := marshal(t, &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}})
	metadata := marshal(t, &extprocv3.ProcessingRequest{
		Request:         &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{}},
		MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"a": {}}}})
	attributes := marshal(t, &extprocv3.ProcessingRequest{
		Request:    &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{}},
		Attributes: map[string]*structpb.Struct{"a": {}}})
	badKey := marshal(t, &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{
			Headers: []*corev3.HeaderValue{{Key: "ok", RawValue: []byte("v")}}}}}})
	badKey = bytes.Replace(badKey, []byte("ok"), []byte{0xff, 0xfe}, 1)
	unknown := protowire.AppendTag(bytes.Clone(body), 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 7)
	wrongType := protowire.AppendTag(bytes.Clone(body), fieldRequestObservability, protowire.BytesType)
	wrongType = protowire.AppendBytes(wrongType, []byte("x"))
	twice := protowire.AppendVarint(protowire.AppendTag(bytes.Clone(body), fieldRequestObservability, protowire.VarintType), 1)
	twice = protowire.AppendVarint(protowire.AppendTag(twice, fieldRequestObservability, protowire.VarintType), 0)
	return []struct {
		name string
		wire []byte
		fast bool
	}{
		{"Envoy's request_headers with protocol_config and an empty metadata_context", headers, true},
		{"Envoy's buffered request_body", body, true},
		{"response_headers", respHeaders, true},
		{"a response_body chunk in observability mode", respBody, true},
		{"headers with no header map", noBody, true},
		{"a header in the old string value", legacyValue, true},
		{"a protocol_config with an unknown enum value", oddConfig, true},
		{"a repeated scalar, of which the last counts", twice, true},
		{"trailers, left to protobuf-go", trailers, false},
		{"a non-empty metadata_context, left to protobuf-go", metadata, false},
		{"attributes, left to protobuf-go", attributes, false},
		{"a header name that is not UTF-8, refused by protobuf-go", badKey, false},
		{"an unknown field, kept by protobuf-go", unknown, false},
		{"a known field with another wire type, kept by protobuf-go as unknown", wrongType, false},
		{"two members of the oneof, merged by protobuf-go", append(bytes.Clone(headers), respHeaders...), false},
		{"a truncated message, refused", headers[:len(headers)-3], false},
		{"an empty message", nil, false},
	}
}

// TestDecodeRequestMatchesProto: whatever the bytes, the codec's result is
// proto.Unmarshal's (the same message, or an error where it errs), and
// Envoy's own shapes are read without protobuf-go.
func TestDecodeRequestMatchesProto(t *testing.T) {
	t.Parallel()
	for _, tc := range decodeCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var direct extprocv3.ProcessingRequest
			if got := decodeRequest(bytes.Clone(tc.wire), &direct); got != tc.fast {
				t.Errorf("decodeRequest read it itself: %v, want %v", got, tc.fast)
			}
			if !tc.fast && !proto.Equal(&direct, &extprocv3.ProcessingRequest{}) {
				t.Errorf("decodeRequest gave up but left %v behind", &direct)
			}
			checkAgainstProto(t, tc.wire)
		})
	}
}

// checkAgainstProto decodes wire through answerCodec and through
// proto.Unmarshal and fails unless they agree.
func checkAgainstProto(t *testing.T, wire []byte) {
	t.Helper()
	var want extprocv3.ProcessingRequest
	wantErr := proto.Unmarshal(wire, &want)
	var got extprocv3.ProcessingRequest
	gotErr := newAnswerCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(bytes.Clone(wire))}, &got)
	if (gotErr != nil) != (wantErr != nil) {
		t.Fatalf("error %v, protobuf-go's %v", gotErr, wantErr)
	}
	if wantErr == nil && !proto.Equal(&got, &want) {
		t.Fatalf("decoded\n %v\nprotobuf-go\n %v", &got, &want)
	}
}

// TestDecodedValuesCannotBeGrownIntoTheirNeighbours: header values and
// bodies are slices of one copy of the message, so each is capped at its
// length: an append copies instead of overwriting the next field.
func TestDecodedValuesCannotBeGrownIntoTheirNeighbours(t *testing.T) {
	t.Parallel()
	var req extprocv3.ProcessingRequest
	if !decodeRequest(marshal(t, envoyRequestHeaders()), &req) {
		t.Fatal("decodeRequest did not read Envoy's request_headers")
	}
	hs := req.GetRequestHeaders().GetHeaders().GetHeaders()
	for _, h := range hs {
		if cap(h.RawValue) != len(h.RawValue) {
			t.Fatalf("%s: raw_value has room for %d more bytes", h.Key, cap(h.RawValue)-len(h.RawValue))
		}
	}
	_ = append(hs[0].RawValue, "XXXXXXXX"...)
	if got := string(hs[1].RawValue); got != "/v1/responses" {
		t.Errorf("the next header's value became %q", got)
	}
}

// TestEnvoysHeadersDecodeInAHandfulOfAllocations holds the point of
// decodeRequest: the message (which gRPC allocates before decoding), the
// copy of its bytes, the nested messages, the header values and their
// pointers, whatever the number of headers; protobuf-go takes about fifty
// for the same message.
func TestEnvoysHeadersDecodeInAHandfulOfAllocations(t *testing.T) {
	wire := marshal(t, envoyRequestHeaders())
	codec := newAnswerCodec()
	data := mem.BufferSlice{mem.SliceBuffer(wire)}
	allocs := testing.AllocsPerRun(200, func() {
		var req extprocv3.ProcessingRequest
		if err := codec.Unmarshal(data, &req); err != nil {
			t.Fatal(err)
		}
	})
	// x-custom-header is the one name not shared: its string is the sixth.
	if allocs > 6 {
		t.Errorf("%v allocations to decode Envoy's request_headers, want at most 6", allocs)
	}
}

// FuzzDecodeRequest: for any bytes, the codec agrees with proto.Unmarshal.
func FuzzDecodeRequest(f *testing.F) {
	for _, tc := range decodeCases(f) {
		f.Add(tc.wire)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		checkAgainstProto(t, wire)
	})
}
