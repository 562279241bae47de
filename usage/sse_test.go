package usage

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// sseFixtures are whole streams, each with what reading it must give.
var sseFixtures = []struct {
	name  string
	api   API
	file  string
	want  Usage
	first bool
}{
	{
		name: "chat stream takes usage from the usage-only chunk",
		api:  ChatCompletions, file: "chat_stream.sse",
		want:  known(9, 0, 12, 0, "chatcmpl-1", "gpt-4o-mini", "default", StatusCompleted),
		first: true,
	},
	{
		name: "chat stream with tool calls and a comment, cut at max tokens",
		api:  ChatCompletions, file: "chat_stream_tools.sse",
		want:  known(120, 64, 30, 16, "chatcmpl-2", "gpt-5.5", "priority", StatusIncomplete),
		first: true,
	},
	{
		name: "responses stream takes usage, tier and status from response.completed",
		api:  Responses, file: "responses_stream.sse",
		want:  withWrites(known(37, 0, 11, 0, "resp_1", "gpt-4o-2024-08-06", "default", StatusCompleted), 0),
		first: true,
	},
	{
		name: "responses incomplete with null usage leaves the counts unknown",
		api:  Responses, file: "responses_incomplete_null.sse",
		want:  known(-1, -1, -1, -1, "resp_2", "gpt-5.5", "", StatusIncomplete),
		first: true,
	},
	{
		name: "responses failed still counts the usage it reports",
		api:  Responses, file: "responses_failed.sse",
		want: known(20, -1, 0, -1, "resp_3", "gpt-5.5", "priority", StatusFailed),
	},
	{
		name: "responses error event fails the stream but keeps its id and model",
		api:  Responses, file: "responses_error.sse",
		want: known(-1, -1, -1, -1, "resp_4", "gpt-5.5", "", StatusFailed),
	},
	{
		name: "anthropic stream adds the delta's output to message_start's input and cache",
		api:  Messages, file: "messages_stream.sse",
		want:  withWrites(known(1049, 1024, 15, -1, "msg_01", "claude-opus-4-6", "priority", StatusCompleted), 0),
		first: true,
	},
	{
		name: "anthropic deltas overwrite cumulatively and null members keep earlier values",
		api:  Messages, file: "messages_stream_cumulative.sse",
		want:  withWrites(known(12+200+300, 300, 96, 50, "msg_02", "claude-sonnet-4-6", "default", StatusIncomplete), 200),
		first: true,
	},
	{
		name: "anthropic error event fails the stream",
		api:  Messages, file: "messages_error.sse",
		want: known(5, -1, 1, -1, "msg_03", "claude-opus-4-6", "", StatusFailed),
	},
}

// TestSSEFixtures reads every fixture in every framing, whole, cut at every
// possible byte and one byte at a time: the result never depends on where the
// network cut the stream.
func TestSSEFixtures(t *testing.T) {
	t.Parallel()
	for _, fx := range sseFixtures {
		for _, fr := range framings {
			t.Run(fx.name+", "+fr.name, func(t *testing.T) {
				t.Parallel()
				stream := fr.frame(fixture(t, fx.file))
				want := sseResult{Usage: fx.want, First: fx.first}
				if got := readSSE(fx.api, 0, stream); got != want {
					t.Fatalf("whole stream:\n got %+v\nwant %+v", got, want)
				}
				for i := 0; i <= len(stream); i++ {
					if got := readSSE(fx.api, 0, stream[:i], stream[i:]); got != want {
						t.Fatalf("cut at byte %d (%q | %q):\n got %+v\nwant %+v",
							i, tail(stream[:i]), head(stream[i:]), got, want)
					}
				}
				if got := readSSE(fx.api, 0, bytewise(stream)...); got != want {
					t.Fatalf("one byte at a time:\n got %+v\nwant %+v", got, want)
				}
			})
		}
	}
}

func head(b []byte) []byte { return b[:min(len(b), 20)] }
func tail(b []byte) []byte { return b[max(0, len(b)-20):] }

func TestSSEFraming(t *testing.T) {
	t.Parallel()
	completed := func(in int) string {
		return fmt.Sprintf(`{"type":"response.completed","response":{"id":"r","status":"completed","usage":{"input_tokens":%d,"output_tokens":1}}}`, in)
	}
	tests := []struct {
		name   string
		api    API
		stream string
		want   Usage
		first  bool
	}{
		{
			name:   "data split over several lines is joined with newlines",
			api:    Responses,
			stream: "event: response.completed\ndata: {\"type\":\"response.completed\",\ndata: \"response\":{\"id\":\"r\",\"usage\":\ndata:{\"input_tokens\":4,\"output_tokens\":2}}}\n\n",
			want:   known(4, -1, 2, -1, "r", "", "", StatusCompleted),
		},
		{
			name:   "only one space after the colon is removed",
			api:    Responses,
			stream: "event:  response.completed\ndata: " + completed(3) + "\n\n",
			want:   Unknown(),
		},
		{
			name:   "comment lines and unknown fields are ignored",
			api:    Responses,
			stream: ": keep-alive\nid: 7\nretry: 1000\nevent: response.completed\n: mid-record comment\ndata: " + completed(3) + "\n\n",
			want:   known(3, -1, 1, -1, "r", "", "", StatusCompleted),
		},
		{
			name:   "the event line may follow the data",
			api:    Responses,
			stream: "data: " + completed(5) + "\nevent: response.completed\n\n",
			want:   known(5, -1, 1, -1, "r", "", "", StatusCompleted),
		},
		{
			name:   "records without an event line are read by their data type",
			api:    Responses,
			stream: "data: {\"type\":\"response.output_text.delta\",\"delta\":\"x\"}\n\ndata: " + completed(6) + "\n\n",
			want:   known(6, -1, 1, -1, "r", "", "", StatusCompleted),
			first:  true,
		},
		{
			name:   "a record only ends at a blank line",
			api:    Responses,
			stream: "event: response.completed\ndata: " + completed(5) + "\nevent: response.output_text.delta\n\n",
			want:   Unknown(),
			first:  true,
		},
		{
			name:   "a named irrelevant event is not read even if its data has usage",
			api:    Responses,
			stream: "event: response.output_item.done\ndata: " + completed(5) + "\n\n",
			want:   Unknown(),
		},
		{
			name:   "an empty event name falls back to the data type",
			api:    Responses,
			stream: "event:\ndata: " + completed(2) + "\n\n",
			want:   known(2, -1, 1, -1, "r", "", "", StatusCompleted),
		},
		{
			name:   "a data line without a colon is an empty data line",
			api:    Responses,
			stream: "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1}}\ndata\ndata: }\n\n",
			want:   known(1, -1, -1, -1, "", "", "", StatusCompleted),
		},
		{
			name:   "DONE is skipped",
			api:    ChatCompletions,
			stream: "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
			want:   known(1, -1, 2, -1, "c", "", "", ""),
		},
		{
			name:   "the last chat usage wins",
			api:    ChatCompletions,
			stream: "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: {\"usage\":{\"prompt_tokens\":3}}\n\ndata: {\"usage\":null}\n\n",
			want:   known(3, -1, -1, -1, "", "", "", ""),
		},
		{
			name:   "a chat chunk with an error member fails the stream",
			api:    ChatCompletions,
			stream: "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n",
			want:   known(-1, -1, -1, -1, "c", "", "", StatusFailed),
			first:  true,
		},
		{
			name:   "a chat role-only first chunk is not output",
			api:    ChatCompletions,
			stream: "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[]}}]}\n\n",
			want:   Unknown(),
		},
		{
			name:   "a chat refusal is output",
			api:    ChatCompletions,
			stream: "data: {\"choices\":[{\"delta\":{\"refusal\":\"no\"}}]}\n\n",
			want:   Unknown(),
			first:  true,
		},
		{
			name:   "a last record without its blank line is read when whole",
			api:    ChatCompletions,
			stream: "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
			want:   known(1, -1, 2, -1, "", "", "", ""),
		},
		{
			name:   "a last record cut in the middle is not read",
			api:    ChatCompletions,
			stream: "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}",
			want:   Unknown(),
		},
		{
			name:   "a reasoning delta is first output",
			api:    Responses,
			stream: "event: response.reasoning_summary_text.delta\ndata: {}\n\n",
			want:   Unknown(),
			first:  true,
		},
		{
			name:   "an anthropic ping and block start are not output",
			api:    Messages,
			stream: "event: ping\ndata: {\"type\":\"ping\"}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\"}\n\n",
			want:   Unknown(),
		},
		{
			name:   "an anthropic stream read by data type alone",
			api:    Messages,
			stream: "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":2,\"output_tokens\":1}}}\n\ndata: {\"type\":\"content_block_delta\"}\n\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
			want:   known(2, -1, 9, -1, "m", "", "", StatusCompleted),
			first:  true,
		},
		{
			name:   "an untyped responses record with an error member fails the stream",
			api:    Responses,
			stream: "data: {\"error\":{\"message\":\"boom\"}}\n\n",
			want:   known(-1, -1, -1, -1, "", "", "", StatusFailed),
		},
		{
			name:   "a failure is not undone by a later terminal event",
			api:    Responses,
			stream: "event: error\ndata: {\"type\":\"error\"}\n\nevent: response.completed\ndata: " + completed(1) + "\n\n",
			want:   known(1, -1, 1, -1, "r", "", "", StatusFailed),
		},
		{
			name:   "a byte order mark is not a field name we know",
			api:    ChatCompletions,
			stream: "\ufeffdata: {\"usage\":{\"prompt_tokens\":1}}\n\n",
			want:   Unknown(),
		},
		{
			name:   "the zero API reads nothing",
			stream: "data: {\"usage\":{\"prompt_tokens\":1}}\n\n",
			want:   Unknown(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stream := []byte(tt.stream)
			want := sseResult{Usage: tt.want, First: tt.first}
			if got := readSSE(tt.api, 0, stream); got != want {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
			if got := readSSE(tt.api, 0, bytewise(stream)...); got != want {
				t.Fatalf("one byte at a time:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestSSECarriageReturnAcrossChunks pins the case the split tests cover in
// passing: a \r that ends one chunk and a \n that starts the next are one line
// ending, not a line ending and a blank line (which would end the record
// before its data). The data has no "type" here, so the record is only read
// if it keeps its event name.
func TestSSECarriageReturnAcrossChunks(t *testing.T) {
	t.Parallel()
	s := NewSSE(Responses, 0)
	s.Write([]byte("event: response.completed\r"))
	s.Write([]byte("\ndata: {\"response\":{\"usage\":{\"input_tokens\":8}}}\r"))
	s.Write([]byte("\n\r"))
	s.Write([]byte("\n"))
	if got := s.Usage().InputTokens; got != 8 {
		t.Fatalf("InputTokens = %d, want 8", got)
	}
}

func TestSSEBounds(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 100_000)
	tests := []struct {
		name       string
		api        API
		max        int
		stream     string
		want       Usage
		overflowed bool
		maxCap     int // bound on the buffered data's capacity
	}{
		{
			name:   "a terminal event longer than the bound is read pruned",
			api:    Responses,
			max:    1024,
			stream: "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":\"" + big + "\",\"usage\":{\"input_tokens\":1}}}\n\n",
			want:   known(1, -1, -1, -1, "", "", "", StatusCompleted),
			maxCap: 1024,
		},
		{
			name:       "a terminal event whose read members do not fit the pruned copy is skipped and reported",
			api:        Responses,
			max:        1024,
			stream:     "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"" + strings.Repeat("i", prunedMax) + "\",\"usage\":{\"input_tokens\":1}}}\n\n",
			want:       Unknown(),
			overflowed: true,
			maxCap:     1024,
		},
		{
			name:       "a long record that is not JSON is skipped and reported",
			api:        Responses,
			max:        1024,
			stream:     "event: response.completed\ndata: {\"response\":{\"output\":\"" + big + "\",\"usage\":{\"input_tokens\":1}}\n\n",
			want:       Unknown(),
			overflowed: true,
			maxCap:     1024,
		},
		{
			name:   "a long last record cut short is neither read nor an overflow, as a short one",
			api:    Responses,
			max:    1024,
			stream: "event: response.completed\ndata: {\"response\":{\"usage\":{\"input_tokens\":1},\"output\":\"" + big,
			want:   Unknown(),
			maxCap: 1024,
		},
		{
			name:   "a long delta is neither buffered nor an overflow",
			api:    Responses,
			max:    1024,
			stream: "event: response.output_text.delta\ndata: {\"delta\":\"" + big + "\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1}}}\n\n",
			want:   known(1, -1, -1, -1, "", "", "", StatusCompleted),
			maxCap: 1024,
		},
		{
			name:   "a long response.created gives the early id",
			api:    Responses,
			max:    1024,
			stream: "event: response.created\ndata: {\"response\":{\"id\":\"r\",\"instructions\":\"" + big + "\"}}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1}}}\n\n",
			want:   known(1, -1, -1, -1, "r", "", "", StatusCompleted),
			maxCap: 1024,
		},
		{
			name:   "an unreadable long response.created only loses the early id",
			api:    Responses,
			max:    1024,
			stream: "event: response.created\ndata: {\"response\":{\"id\":\"" + strings.Repeat("i", prunedMax) + "\"}}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1}}}\n\n",
			want:   known(1, -1, -1, -1, "", "", "", StatusCompleted),
			maxCap: 1024,
		},
		{
			name:   "a long chat chunk is read pruned, and so is the next record",
			api:    ChatCompletions,
			max:    1024,
			stream: "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"" + big + "\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":2}}\n\n",
			want:   known(2, -1, -1, -1, "c", "", "", ""),
			maxCap: 1024,
		},
		{
			name:       "an unreadable long chat chunk is an overflow, and the next record is read",
			api:        ChatCompletions,
			max:        1024,
			stream:     "data: {\"choices\":[{\"finish_reason\":\"" + strings.Repeat("f", prunedMax) + "\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":2}}\n\n",
			want:       known(2, -1, -1, -1, "", "", "", ""),
			overflowed: true,
			maxCap:     1024,
		},
		{
			name:   "a record exactly at the bound is read",
			api:    ChatCompletions,
			max:    len(`{"usage":{"prompt_tokens":2}}`),
			stream: "data: {\"usage\":{\"prompt_tokens\":2}}\n\n",
			want:   known(2, -1, -1, -1, "", "", "", ""),
			maxCap: len(`{"usage":{"prompt_tokens":2}}`),
		},
		{
			name:   "the newlines joining data lines count toward the bound, and go to the pruned copy",
			api:    ChatCompletions,
			max:    len(`{"usage":{"prompt_tokens":2}}`),
			stream: "data: {\"usage\":\ndata: {\"prompt_tokens\":2}}\n\n",
			want:   known(2, -1, -1, -1, "", "", "", ""),
			maxCap: len(`{"usage":{"prompt_tokens":2}}`),
		},
		{
			name:   "a very long event name is one we do not read",
			api:    Responses,
			max:    1024,
			stream: "event: response.completed" + big + "\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1}}}\n\n",
			want:   Unknown(),
			maxCap: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, chunks := range [][][]byte{{[]byte(tt.stream)}, chunked([]byte(tt.stream), 1000), chunked([]byte(tt.stream), 7)} {
				s := NewSSE(tt.api, tt.max)
				for _, c := range chunks {
					s.Write(c)
				}
				s.Finish()
				if got := s.Usage(); got != tt.want {
					t.Errorf("in %d chunks: Usage = %+v, want %+v", len(chunks), got, tt.want)
				}
				if got := s.Overflowed(); got != tt.overflowed {
					t.Errorf("in %d chunks: Overflowed = %v, want %v", len(chunks), got, tt.overflowed)
				}
				if c := cap(s.data); c > tt.maxCap {
					t.Errorf("in %d chunks: data buffer grew to %d bytes, bound %d", len(chunks), c, tt.maxCap)
				}
				if s.prune != nil && s.prune.Held() > prunedMax+8 {
					t.Errorf("in %d chunks: the pruner holds %d bytes, bound %d and a word of nesting", len(chunks), s.prune.Held(), prunedMax)
				}
			}
		})
	}
}

// responsesStream builds a realistic Responses stream of n events: created,
// in_progress, item and part added, n-8 text deltas, text, part and item
// done, completed (which repeats the whole text, as the API does).
func responsesStream(n int) []byte {
	var b bytes.Buffer
	var text strings.Builder
	seq := 0
	ev := func(name, data string) {
		fmt.Fprintf(&b, "event: %s\ndata: {\"type\":%q,\"sequence_number\":%d,%s}\n\n", name, name, seq, data)
		seq++
	}
	resp := `"response":{"id":"resp_68af0c1e5a2c8190b2e4c1a9f0e3d7b6","object":"response","created_at":1756302366,"status":"in_progress","model":"gpt-5.5-2026-06-01","service_tier":"auto","instructions":"You are a helpful assistant.","tools":[],"output":[],"usage":null}`
	ev("response.created", resp)
	ev("response.in_progress", resp)
	ev("response.output_item.added", `"output_index":0,"item":{"id":"msg_68af0c1f","type":"message","status":"in_progress","role":"assistant","content":[]}`)
	ev("response.content_part.added", `"item_id":"msg_68af0c1f","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}`)
	words := []string{" the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", "."}
	for i := 0; i < n-8; i++ {
		w := words[i%len(words)]
		text.WriteString(w)
		ev("response.output_text.delta", fmt.Sprintf(`"item_id":"msg_68af0c1f","output_index":0,"content_index":0,"delta":%q,"logprobs":[],"obfuscation":"k3Jd8s"`, w))
	}
	ev("response.output_text.done", fmt.Sprintf(`"item_id":"msg_68af0c1f","output_index":0,"content_index":0,"text":%q,"logprobs":[]`, text.String()))
	ev("response.content_part.done", fmt.Sprintf(`"item_id":"msg_68af0c1f","output_index":0,"content_index":0,"part":{"type":"output_text","text":%q,"annotations":[]}`, text.String()))
	ev("response.output_item.done", fmt.Sprintf(`"output_index":0,"item":{"id":"msg_68af0c1f","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":%q,"annotations":[]}]}`, text.String()))
	ev("response.completed", fmt.Sprintf(`"response":{"id":"resp_68af0c1e5a2c8190b2e4c1a9f0e3d7b6","object":"response","created_at":1756302366,"status":"completed","model":"gpt-5.5-2026-06-01","service_tier":"default","instructions":"You are a helpful assistant.","tools":[],"output":[{"id":"msg_68af0c1f","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":%q,"annotations":[]}]}],"usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":1024,"cache_write_tokens":0},"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":%d}}`, text.String(), n-8, 1234+n-8))
	return b.Bytes()
}

func TestResponsesStreamForBenchmark(t *testing.T) {
	t.Parallel()
	stream := responsesStream(200)
	got := readSSE(Responses, 0, chunked(stream, 1024)...)
	want := sseResult{Usage: withWrites(known(1234, 1024, 192, 0, "resp_68af0c1e5a2c8190b2e4c1a9f0e3d7b6", "gpt-5.5-2026-06-01", "default", StatusCompleted), 0), First: true}
	if got != want {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if n := bytes.Count(stream, []byte("\n\n")); n != 200 {
		t.Fatalf("stream has %d events, want 200", n)
	}
}

// BenchmarkSSEResponses reads a 200-event Responses stream fed in 1 KiB
// chunks, the way Envoy hands the body over.
func BenchmarkSSEResponses(b *testing.B) {
	stream := responsesStream(200)
	chunks := chunked(stream, 1024)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		s := NewSSE(Responses, 0)
		for _, c := range chunks {
			s.Write(c)
		}
		s.Finish()
		if s.Usage().OutputTokens != 192 {
			b.Fatal("usage not read")
		}
	}
}

// BenchmarkSSEResponsesSteadyState reuses the reader's buffers, as a long
// stream does after its first events, to show what reading costs per event.
func BenchmarkSSEResponsesSteadyState(b *testing.B) {
	stream := responsesStream(200)
	chunks := chunked(stream, 1024)
	s := NewSSE(Responses, 0)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		data := s.data
		*s = SSE{}
		s.init(Responses, 0)
		s.data = data[:0]
		for _, c := range chunks {
			s.Write(c)
		}
		s.Finish()
	}
}
