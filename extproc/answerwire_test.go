package extproc

import (
	"bytes"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestBodyAnswerWireForm: the body answer's own wire form is byte for byte
// what proto.Marshal writes for the same message, for every shape
// requestBody builds, and answerCodec sends exactly that, whether the
// answer is small or large enough for gRPC's buffer pool.
func TestBodyAnswerWireForm(t *testing.T) {
	t.Parallel()
	big := []byte(`{"model":"gpt-5.5","input":"` + strings.Repeat("é", 40000) + `"}`)
	for _, tc := range []struct {
		name  string
		build func(a *bodyAnswer)
	}{
		{"pass: nothing but the metadata", func(a *bodyAnswer) {}},
		{"nothing at all", nil},
		{"body replaced", func(a *bodyAnswer) { a.replaceBody([]byte(`{"model":"gpt-5.5"}`)) }},
		{"body replaced by an empty one", func(a *bodyAnswer) { a.replaceBody([]byte{}) }},
		{"large body replaced", func(a *bodyAnswer) { a.replaceBody(big) }},
		{"anthropic-beta rewritten", func(a *bodyAnswer) {
			a.setHeader("anthropic-beta", []byte("context-1m-2025-08-07"))
			a.replaceBody([]byte(`{"model":"claude-opus-4-6"}`))
		}},
		{"every header change at once", func(a *bodyAnswer) {
			a.removeHeader("anthropic-beta")
			a.removeHeader("content-encoding")
			a.setHeader("accept-encoding", []byte("identity"))
			a.replaceBody([]byte(`{"model":"gpt-5.5","stream":true,"stream_options":{"include_usage":true}}`))
		}},
		{"a header with an empty value", func(a *bodyAnswer) { a.setHeader("x-empty", nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := &bodyAnswer{}
			if tc.build != nil {
				tc.build(a)
			}
			resp := a.message()
			if tc.build != nil {
				var m metadataFields
				m.str("action", "filter")
				m.str("model", "gpt-5.5")
				m.num("n", 3)
				m.attach(resp)
			}
			want, err := proto.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			got := a.appendWire(nil)
			if !bytes.Equal(got, want) {
				t.Fatalf("wire form differs from proto.Marshal:\n got %x\nwant %x", got[:min(len(got), 200)], want[:min(len(want), 200)])
			}
			if a.wireSize() != len(want) {
				t.Errorf("wireSize %d, wrote %d", a.wireSize(), len(want))
			}
			sent, err := newAnswerCodec().Marshal(a)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sent.Materialize(), want) {
				t.Error("answerCodec sent other bytes than the wire form")
			}
			sent.Free()
			// Any other message goes through gRPC's proto codec unchanged.
			plain, err := newAnswerCodec().Marshal(resp)
			if err != nil || !bytes.Equal(plain.Materialize(), want) {
				t.Errorf("a plain ProcessingResponse was not marshalled as proto: %v", err)
			}
			var back extprocv3.ProcessingResponse
			if err := proto.Unmarshal(got, &back); err != nil ||
				!bytes.Equal(back.GetRequestBody().GetResponse().GetBodyMutation().GetBody(), a.newBody.Body) {
				t.Errorf("the wire form does not decode to the answer's body: %v", err)
			}
		})
	}
}

// TestCannedAnswersAreWhatProtoWrites: every shared answer, alone and as a
// withMetadata copy carrying metadata, goes out byte for byte as
// proto.Marshal writes it, and so does a copy with any other field set
// (which cannedForm must leave to protobuf-go).
func TestCannedAnswersAreWhatProtoWrites(t *testing.T) {
	t.Parallel()
	var meta metadataFields
	meta.str("status", "completed")
	meta.num("input_tokens", 1200)
	for _, base := range []struct {
		name string
		resp *extprocv3.ProcessingResponse
	}{
		{"request headers of a policed request", policedHeadersAnswer},
		{"a request body passed as it is", plainBodyAnswer},
		{"response headers", plainResponseHeadersAnswer},
		{"a response chunk", plainResponseBodyAnswer},
	} {
		for _, tc := range []struct {
			name   string
			canned bool
			set    func(r *extprocv3.ProcessingResponse) // nil: the shared answer itself
		}{
			{"shared", true, nil},
			{"with metadata", true, func(r *extprocv3.ProcessingResponse) { meta.attach(r) }},
			{"with a mode override", false, func(r *extprocv3.ProcessingResponse) { r.ModeOverride = unpolicedMode }},
			{"with a message timeout", false, func(r *extprocv3.ProcessingResponse) {
				r.OverrideMessageTimeout = durationpb.New(20 * time.Second)
			}},
			{"with structured metadata", false, func(r *extprocv3.ProcessingResponse) {
				r.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewStringValue("v")}}
			}},
			{"with typed metadata", false, func(r *extprocv3.ProcessingResponse) {
				r.TypedDynamicMetadata = map[string]*anypb.Any{"ns": {TypeUrl: "type.googleapis.com/x"}}
			}},
			{"with a drain request", false, func(r *extprocv3.ProcessingResponse) {
				//lint:ignore SA1019 a deprecated field is still on the wire
				r.RequestDrain = true
			}},
			{"with a drain of requests", false, func(r *extprocv3.ProcessingResponse) { r.RequestDrainRequests = true }},
			{"with a drain of responses", false, func(r *extprocv3.ProcessingResponse) { r.RequestDrainResponses = true }},
			{"with a window update", false, func(r *extprocv3.ProcessingResponse) {
				r.ServerWindowUpdate = &extprocv3.ProcessingResponse_ServerWindowUpdate{}
			}},
		} {
			t.Run(base.name+", "+tc.name, func(t *testing.T) {
				t.Parallel()
				resp := base.resp
				if tc.set != nil {
					resp = withMetadata(base.resp)
					tc.set(resp)
				}
				if _, canned := cannedForm(resp); canned != tc.canned {
					t.Fatalf("cannedForm says canned %v, want %v", canned, tc.canned)
				}
				want, err := proto.Marshal(resp)
				if err != nil {
					t.Fatal(err)
				}
				sent, err := newAnswerCodec().Marshal(resp)
				if err != nil {
					t.Fatal(err)
				}
				if got := sent.Materialize(); !bytes.Equal(got, want) {
					t.Fatalf("answerCodec wrote\n %x\nproto.Marshal\n %x", got, want)
				}
			})
		}
	}
}

// TestCannedFormCoversEveryField: cannedForm checks every field of
// ProcessingResponse outside its oneof. A field added by a newer
// go-control-plane fails this until cannedForm checks it too.
func TestCannedFormCoversEveryField(t *testing.T) {
	t.Parallel()
	checked := map[protoreflect.Name]bool{
		"dynamic_metadata": true, "typed_dynamic_metadata": true, "mode_override": true,
		"override_message_timeout": true, "request_drain": true, "request_drain_requests": true,
		"request_drain_responses": true, "server_window_update": true,
	}
	fields := (&extprocv3.ProcessingResponse{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if f.ContainingOneof() != nil {
			continue
		}
		if !checked[f.Name()] {
			t.Errorf("ProcessingResponse.%s is not checked by cannedForm", f.Name())
		}
		delete(checked, f.Name())
	}
	for name := range checked {
		t.Errorf("cannedForm checks %s, which ProcessingResponse no longer has", name)
	}
}
