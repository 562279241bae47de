package extproc

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestMetadataWireForm: the hand-written dynamic metadata must decode as
// exactly the Struct structpb would have built, so Envoy reads it as the
// ordinary field.
func TestMetadataWireForm(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		build func(*metadataFields)
		want  map[string]any
	}{
		{
			name: "strings, including empty and non-ASCII ones",
			build: func(m *metadataFields) {
				m.str("action", "filter")
				m.str("rule", "")
				m.str("model", "gpt-5.5-ünïcode-"+string(make([]byte, 100)))
			},
			want: map[string]any{"action": "filter", "rule": "", "model": "gpt-5.5-ünïcode-" + string(make([]byte, 100))},
		},
		{
			name:  "numbers",
			build: func(m *metadataFields) { m.num("input_tokens", 8438); m.num("output_tokens", 0) },
			want:  map[string]any{"input_tokens": 8438.0, "output_tokens": 0.0},
		},
		{
			name: "a usage answer with its cost, as many fields as one carries",
			build: func(m *metadataFields) {
				m.str("status", "completed")
				m.str("service_tier_reported", "priority")
				for _, k := range []string{"input_tokens", "cached_input_tokens", "cache_write_input_tokens", "output_tokens", "reasoning_tokens"} {
					m.num(k, 1)
				}
				m.num("cost", 0.0058925)
				m.str("currency", "USD")
				m.str("price_tier", "priority")
			},
			want: map[string]any{"status": "completed", "service_tier_reported": "priority", "input_tokens": 1.0, "cached_input_tokens": 1.0,
				"cache_write_input_tokens": 1.0, "output_tokens": 1.0, "reasoning_tokens": 1.0, "cost": 0.0058925, "currency": "USD", "price_tier": "priority"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var m metadataFields
			tc.build(&m)
			if n, size := len(m.appendTo(nil)), m.size(); n != size {
				t.Errorf("size() = %d, but appendTo writes %d bytes", size, n)
			}
			resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
			m.attach(resp)
			got := roundTrip(t, resp)
			inner, err := structpb.NewStruct(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			want := &structpb.Struct{Fields: map[string]*structpb.Value{"tiergate": structpb.NewStructValue(inner)}}
			if !proto.Equal(got.GetDynamicMetadata(), want) {
				t.Fatalf("decoded metadata %v, want %v", got.GetDynamicMetadata(), want)
			}
			if got.GetRequestBody() == nil {
				t.Fatal("the answer itself was lost")
			}
		})
	}
}

// BenchmarkBodyAnswerEncode is a body answer's metadata written and the
// answer encoded, when the decision is not in the cache.
func BenchmarkBodyAnswerEncode(b *testing.B) {
	a := &bodyAnswer{}
	buf := make([]byte, 0, 4096)
	for b.Loop() {
		resp := a.message()
		var m metadataFields
		for _, k := range []string{"endpoint", "action", "service_tier_requested", "service_tier_sent", "rule", "group", "model"} {
			m.str(k, "some-value")
		}
		m.attach(resp)
		_ = a.appendWire(buf[:0])
		a.reset()
	}
}
