package extproc

import (
	"bytes"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
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
