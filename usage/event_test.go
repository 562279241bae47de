package usage

import (
	"testing"
)

func TestParseEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		frame string
		want  Event
	}{
		{
			name:  "a responses websocket completion carries usage, tier, model, status and lane",
			frame: `{"type":"response.completed","sequence_number":9,"stream_id":"agent_1","response":{"id":"resp_1","status":"completed","model":"gpt-5.5","service_tier":"priority","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":32,"cache_write_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":4},"total_tokens":48}}}`,
			want: Event{
				Type: "response.completed", ResponseID: "resp_1", StreamID: "agent_1", Terminal: true,
				Usage: withWrites(known(37, 32, 11, 4, "resp_1", "gpt-5.5", "priority", StatusCompleted), 0),
			},
		},
		{
			name:  "a responses websocket incomplete with null usage is terminal with nothing counted",
			frame: `{"type":"response.incomplete","response":{"id":"resp_2","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":null}}`,
			want: Event{
				Type: "response.incomplete", ResponseID: "resp_2", Terminal: true,
				Usage: known(-1, -1, -1, -1, "resp_2", "", "", StatusIncomplete),
			},
		},
		{
			name:  "a failed response without a status member takes it from the type",
			frame: `{"type":"response.failed","response":{"id":"resp_3","error":{"code":"server_error"},"usage":null}}`,
			want: Event{
				Type: "response.failed", ResponseID: "resp_3", Terminal: true,
				Usage: known(-1, -1, -1, -1, "resp_3", "", "", StatusFailed),
			},
		},
		{
			name:  "a realtime response.done reads the realtime usage shape",
			frame: `{"type":"response.done","event_id":"event_9","response":{"object":"realtime.response","id":"resp_1","status":"completed","conversation_id":"conv_1","output":[],"usage":{"total_tokens":253,"input_tokens":132,"output_tokens":121,"input_token_details":{"text_tokens":119,"audio_tokens":13,"image_tokens":0,"cached_tokens":64,"cached_tokens_details":{"text_tokens":64,"audio_tokens":0,"image_tokens":0}},"output_token_details":{"text_tokens":30,"audio_tokens":91}}}}`,
			want: Event{
				Type: "response.done", ResponseID: "resp_1", Terminal: true,
				Usage: withAudio(known(132, 64, 121, -1, "resp_1", "", "", StatusCompleted), 13+91),
			},
		},
		{
			name:  "a realtime text turn reports zero audio tokens",
			frame: `{"type":"response.done","response":{"id":"resp_6","status":"completed","usage":{"input_tokens":40,"output_tokens":9,"input_token_details":{"text_tokens":40,"audio_tokens":0,"cached_tokens":0},"output_token_details":{"text_tokens":9,"audio_tokens":0}}}}`,
			want: Event{
				Type: "response.done", ResponseID: "resp_6", Terminal: true,
				Usage: withAudio(known(40, 0, 9, -1, "resp_6", "", "", StatusCompleted), 0),
			},
		},
		{
			name:  "a cancelled realtime response keeps its status",
			frame: `{"type":"response.done","response":{"id":"resp_5","status":"cancelled","status_details":{"reason":"turn_detected"},"usage":{"input_tokens":10,"output_tokens":2}}}`,
			want: Event{
				Type: "response.done", ResponseID: "resp_5", Terminal: true,
				Usage: known(10, -1, 2, -1, "resp_5", "", "", "cancelled"),
			},
		},
		{
			name:  "a realtime session.created names the session model",
			frame: `{"type":"session.created","event_id":"event_1","session":{"type":"realtime","object":"realtime.session","id":"sess_1","model":"gpt-realtime-2025-08-28","output_modalities":["audio"]}}`,
			want:  Event{Type: "session.created", SessionModel: "gpt-realtime-2025-08-28", Usage: Unknown()},
		},
		{
			name:  "a session.updated without a model names none",
			frame: `{"type":"session.updated","session":{"type":"realtime"}}`,
			want:  Event{Type: "session.updated", Usage: Unknown()},
		},
		{
			name:  "response.created gives the id a turn is keyed by",
			frame: `{"type":"response.created","event_id":"event_3","response":{"object":"realtime.response","id":"resp_1","status":"in_progress","output":[],"usage":null}}`,
			want:  Event{Type: "response.created", ResponseID: "resp_1", Usage: Unknown()},
		},
		{
			name:  "a text delta is a delta keyed by its top-level response_id",
			frame: `{"type":"response.output_text.delta","event_id":"event_4","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"Hi"}`,
			want:  Event{Type: "response.output_text.delta", ResponseID: "resp_1", IsDelta: true, Usage: Unknown()},
		},
		{
			name:  "a beta audio delta is a delta",
			frame: `{"type":"response.audio.delta","response_id":"resp_1","delta":"AAAA"}`,
			want:  Event{Type: "response.audio.delta", ResponseID: "resp_1", IsDelta: true, Usage: Unknown()},
		},
		{
			name:  "an input transcription delta is not output",
			frame: `{"type":"conversation.item.input_audio_transcription.delta","item_id":"item_1","delta":"he"}`,
			want:  Event{Type: "conversation.item.input_audio_transcription.delta", Usage: Unknown()},
		},
		{
			name:  "a responses websocket error keeps its lane",
			frame: `{"type":"error","status":400,"stream_id":"agent_1","sequence_number":3,"error":{"type":"invalid_request_error","code":"websocket_stream_limit_reached","message":"...","param":"stream_id"}}`,
			want:  Event{Type: "error", StreamID: "agent_1", Usage: Unknown()},
		},
		{
			name:  "a realtime error is an error",
			frame: `{"type":"error","event_id":"event_10","error":{"type":"invalid_request_error","code":"invalid_event","message":"...","param":null,"event_id":"evt_c2"}}`,
			want:  Event{Type: "error", Usage: Unknown()},
		},
		{
			name:  "a frame that is not JSON has no type",
			frame: "\x00\x01binary",
			want:  Event{Usage: Unknown()},
		},
		{
			name:  "a type that is not a string is no type",
			frame: `{"type":7,"response":{"id":"r"}}`,
			want:  Event{Usage: Unknown()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := ParseEvent([]byte(tt.frame)); got != tt.want {
				t.Errorf("ParseEvent =\n  %+v\nwant\n  %+v", got, tt.want)
			}
		})
	}
}

func TestParseEventDoesNotKeepTheFrame(t *testing.T) {
	t.Parallel()
	frame := []byte(`{"type":"response.custom_thing","stream_id":"lane","response":{"id":"resp_x"}}`)
	e := ParseEvent(frame)
	for i := range frame {
		frame[i] = '#'
	}
	if e.Type != "response.custom_thing" || e.StreamID != "lane" || e.ResponseID != "resp_x" {
		t.Fatalf("strings changed with the frame: %+v", e)
	}
}

func BenchmarkParseEventDelta(b *testing.B) {
	frame := []byte(`{"type":"response.output_text.delta","sequence_number":41,"stream_id":"agent_1","item_id":"msg_68af0c1f","output_index":0,"content_index":0,"delta":" fox","logprobs":[],"obfuscation":"k3Jd8s"}`)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if !ParseEvent(frame).IsDelta {
			b.Fatal("not a delta")
		}
	}
}

// TestEventTypeClasses: which event types end a turn and which are output
// deltas, as ParseEvent and the WebSocket bridge both read them.
func TestEventTypeClasses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		typ             string
		terminal, delta bool
	}{
		{"response.completed", true, false}, {"response.failed", true, false},
		{"response.incomplete", true, false}, {"response.done", true, false},
		{"response.created", false, false}, {"error", false, false},
		{"response.output_text.delta", false, true}, {"response.function_call_arguments.delta", false, true},
		{"response.delta", false, false}, {"conversation.item.input_audio_transcription.delta", false, false},
		{"rate_limits.updated", false, false},
	} {
		if IsTerminal(tc.typ) != tc.terminal || IsOutputDelta(tc.typ) != tc.delta {
			t.Errorf("%s: terminal %v delta %v, want %v %v", tc.typ, IsTerminal(tc.typ), IsOutputDelta(tc.typ), tc.terminal, tc.delta)
		}
		e := ParseEvent([]byte(`{"type":"` + tc.typ + `","response":{"id":"resp_1"}}`))
		if e.Terminal != tc.terminal || e.IsDelta != tc.delta {
			t.Errorf("%s: ParseEvent says terminal %v delta %v", tc.typ, e.Terminal, e.IsDelta)
		}
	}
}
