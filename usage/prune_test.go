package usage

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// readBody feeds chunks to a new Body and returns its usage and overflow.
func readBody(api API, max int, chunks ...[]byte) (Usage, bool) {
	b := NewBody(api, max)
	for _, c := range chunks {
		b.Write(c)
	}
	return b.Usage(), b.Overflowed()
}

// oneLine returns doc with its line breaks made spaces, so that it is the
// data of one SSE line.
func oneLine(doc []byte) []byte {
	out := bytes.ReplaceAll(doc, []byte{'\r'}, []byte{' '})
	return bytes.ReplaceAll(out, []byte{'\n'}, []byte{' '})
}

// sseRecord renders one SSE record with the given event name ("" for
// none) and one line of data.
func sseRecord(event string, data []byte) []byte {
	var b bytes.Buffer
	if event != "" {
		b.WriteString("event: " + event + "\n")
	}
	b.WriteString("data: ")
	b.Write(oneLine(data))
	b.WriteString("\n\n")
	return b.Bytes()
}

// prunedCases are documents whose members the pruned readings must find
// exactly as the whole ones do: the corners of gjson's reading that a
// pruned copy could get wrong.
var prunedCases = []struct {
	name string
	doc  string
}{
	{"duplicate usage members: the last object wins in ForEach readers",
		`{"id":"a","usage":{"prompt_tokens":1,"input_tokens":1},"usage":{"prompt_tokens":2,"input_tokens":2},"model":"m"}`},
	{"a later null usage replaces an earlier one",
		`{"usage":{"prompt_tokens":1,"input_tokens":1,"output_tokens":3},"usage":null}`},
	{"duplicate ids, model and tiers, strings and not",
		`{"id":"a","id":7,"model":"m1","model":"m2","service_tier":"flex","service_tier":null,"status":"completed","status":"incomplete"}`},
	{"an escaped member name is the member",
		`{"us\u0061ge":{"prompt_tokens":4,"input_tokens":4,"output_tokens":1},"service\u005ftier":"priority","\u0069d":"e"}`},
	{"a name with a non-ASCII escape is another member",
		`{"usag\u00e9":{"prompt_tokens":4},"id\ud83d\ude00":"x","id":"y"}`},
	{"usage details read first-match inside a kept object",
		`{"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":1},"prompt_tokens_details":{"cached_tokens":2},"input_tokens":9,"input_tokens_details":{"cached_tokens":3},"input_tokens_details":null,"output_tokens_details":{"reasoning_tokens":5,"reasoning_tokens":6}}}`},
	{"error members of every type",
		`{"error":{"message":"x"},"error":null,"error":false,"error":"","error":[],"error":0}`},
	{"an error that is false is no failure", `{"error":false,"usage":{"input_tokens":1}}`},
	{"choices as an object iterate its values",
		`{"choices":{"a":{"finish_reason":"length"},"b":"stop"},"usage":{"prompt_tokens":1}}`},
	{"choices of every type, with deltas",
		`{"choices":[{"finish_reason":"stop","delta":{"content":""}},{"finish_reason":"content_filter","delta":{"tool_calls":[],"refusal":"no"}},3,"s",null,[{"finish_reason":"length"}]]}`},
	{"a delta whose first content is empty and second is not",
		`{"choices":[{"delta":{"content":"","content":"hi"}}]}`},
	{"a delta with a tool call and a function call",
		`{"choices":[{"delta":{"tool_calls":[{"index":0}]}},{"delta":{"function_call":{}}}]}`},
	{"duplicate choices: the last array wins",
		`{"choices":[{"finish_reason":"length"}],"choices":[],"usage":{"prompt_tokens":1}}`},
	{"a usage-only chat chunk", `{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}`},
	{"a Responses terminal event with duplicate responses: the first is read",
		`{"type":"response.completed","response":{"id":"r1","usage":{"input_tokens":1}},"response":{"id":"r2","usage":{"input_tokens":2}}}`},
	{"a response that is not an object",
		`{"type":"response.completed","response":"resp"}`},
	{"a Responses event with a type that is not a string, and an error",
		`{"type":5,"type":"response.completed","error":{"code":"x"}}`},
	{"duplicate types: the first is read", `{"type":"response.completed","type":"error","response":{"status":"completed"}}`},
	{"a response with an error and no status",
		`{"type":"response.failed","response":{"id":"r","error":{"code":"server_error"},"usage":{"input_tokens":1,"output_tokens":0}}}`},
	{"a message_start whose message has duplicate usage",
		`{"type":"message_start","message":{"id":"m","type":"message","usage":{"input_tokens":5,"output_tokens":1,"speed":"fast"},"usage":{"output_tokens":2,"speed":"standard"},"stop_reason":null}}`},
	{"a message_delta with a stop reason and null members",
		`{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_reason":"end_turn"},"usage":{"output_tokens":9,"input_tokens":null,"output_tokens_details":{"thinking_tokens":4}}}`},
	{"a message_delta whose delta is not an object",
		`{"type":"message_delta","delta":"stop","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}`},
	{"an Anthropic error body", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`},
	{"a message body", `{"id":"msg","type":"message","model":"claude","stop_reason":"end_turn","usage":{"input_tokens":3,"cache_read_input_tokens":2,"output_tokens":1}}`},
	{"a document that is an array", `[{"usage":{"prompt_tokens":1}}]`},
	{"a document that is a string", `"usage"`},
	{"a document that is a number", `12`},
	{"an empty object", `{}`},
	{"not JSON", `{"usage":{"prompt_tokens":1}`},
	{"two documents", `{"usage":{"prompt_tokens":1}} {}`},
}

// prunedEvents are the event names a record is read under, none first.
var prunedEvents = []string{
	"", "response.completed", "response.incomplete", "response.failed", "response.created", "error",
	"message_start", "message_delta", "response.output_text.delta", "content_block_delta",
}

// TestPrunedReadsAsWhole: a body or SSE record read pruned, for being
// longer than the bound, gives what the same one gives read whole.
func TestPrunedReadsAsWhole(t *testing.T) {
	t.Parallel()
	for _, tc := range prunedCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkPrunedReadsAsWhole(t, []byte(tc.doc))
		})
	}
	fixtures, err := filepath.Glob(filepath.Join("testdata", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range fixtures {
		t.Run(filepath.Base(name), func(t *testing.T) {
			t.Parallel()
			src, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Ext(name) == ".json" {
				checkPrunedReadsAsWhole(t, src)
				return
			}
			// A whole stream, each record longer than the bound but
			// data: [DONE].
			for api := range API(4) {
				for _, f := range []framing{framings[0], framings[3]} {
					stream := f.frame(src)
					whole, pruned := readSSE(api, 0, stream), readSSE(api, len("[DONE]"), chunked(stream, 5)...)
					if pruned != whole {
						t.Errorf("%v, %s: read pruned %+v, whole %+v", api, f.name, pruned, whole)
					}
				}
			}
		})
	}
}

// checkPrunedReadsAsWhole compares, for each dialect, a body read whole
// and pruned, and (when it is JSON) a record of each event name read
// whole and pruned.
func checkPrunedReadsAsWhole(t testing.TB, doc []byte) {
	t.Helper()
	cut := len(doc) / 3
	for api := range API(4) {
		want := ParseJSON(api, doc)
		for _, chunks := range [][][]byte{{doc}, {doc[:cut], doc[cut:]}} {
			got, over := readBody(api, 1, chunks...)
			if got != want || over {
				t.Fatalf("%v body read pruned in %d chunks: %+v (overflowed %v), whole %+v", api, len(chunks), got, over, want)
			}
		}
		// A record read leniently when it is not JSON cannot be replayed
		// pruned; one longer than the bound that is not JSON is an overflow.
		if !gjson.ValidBytes(oneLine(doc)) {
			continue
		}
		for _, ev := range prunedEvents {
			rec := sseRecord(ev, doc)
			whole := readSSE(api, 0, rec)
			if pruned := readSSE(api, 1, rec); pruned != whole {
				t.Fatalf("%v record %q read pruned: %+v, whole %+v", api, ev, pruned, whole)
			}
			if pruned := readSSE(api, 1, bytewise(rec)...); pruned != whole {
				t.Fatalf("%v record %q read pruned byte by byte: %+v, whole %+v", api, ev, pruned, whole)
			}
			// After message_start or response.created, so that later
			// records overwrite earlier ones as they do whole.
			lead := sseRecord("message_start", []byte(`{"type":"message_start","message":{"id":"m0","model":"c","usage":{"input_tokens":7,"output_tokens":1,"speed":"fast"}}}`))
			lead = append(lead, sseRecord("response.created", []byte(`{"type":"response.created","response":{"id":"r0","model":"g"}}`))...)
			stream := append(lead, rec...)
			if pruned, whole := readSSE(api, 1, stream), readSSE(api, 0, stream); pruned != whole {
				t.Fatalf("%v record %q after a first one, read pruned: %+v, whole %+v", api, ev, pruned, whole)
			}
		}
	}
}

// FuzzOversizedMatchesWhole checks, for any document, that a body or SSE
// record read pruned, as one longer than the bound is, gives what it gives
// read whole. Its seed corpus (the cases above and the fixtures) runs with
// every go test.
func FuzzOversizedMatchesWhole(f *testing.F) {
	for _, tc := range prunedCases {
		f.Add([]byte(tc.doc))
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		if filepath.Ext(name) == ".json" {
			f.Add(src)
			continue
		}
		for _, line := range strings.Split(string(src), "\n") {
			if data, ok := strings.CutPrefix(line, "data: "); ok && data != "[DONE]" {
				f.Add([]byte(data))
			}
		}
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		checkPrunedReadsAsWhole(t, doc)
	})
}

// awkward cuts b into chunks of sizes that cycle through primes, a single
// byte among them, so that cuts fall inside names, escapes, numbers, line
// endings and the usage object.
func awkward(b []byte) [][]byte {
	sizes := []int{1, 7, 4093, 65521, 3, 1 << 20, 2, 999_983}
	var out [][]byte
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// TestTwentyMiBResponsesEventIsReadInBoundedMemory: a response.completed
// repeats the whole output, here generated images of 20 MiB of base64, and
// its usage and tier, at the end of the event, are still read, while the
// reader holds no more than its bound and the pruned copy's.
func TestTwentyMiBResponsesEventIsReadInBoundedMemory(t *testing.T) {
	t.Parallel()
	img := strings.Repeat("iVBORw0KGgoAAAANSUhEUgAA", (10<<20)/24)
	data := `{"type":"response.completed","sequence_number":9,"response":{"id":"resp_big","object":"response","status":"completed","model":"gpt-image-2","service_tier":"priority",` +
		`"output":[{"type":"image_generation_call","id":"ig_1","status":"completed","result":"` + img + `"},{"type":"image_generation_call","id":"ig_2","status":"completed","result":"` + img + `"}],` +
		`"usage":{"input_tokens":120,"input_tokens_details":{"cached_tokens":100},"output_tokens":12800,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":12920}}}`
	stream := []byte("event: response.created\r\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_big\",\"model\":\"gpt-image-2\",\"usage\":null}}\r\n\r\n" +
		"event: response.completed\r\ndata: " + data + "\r\n\r\n")
	if len(stream) < 20<<20 {
		t.Fatalf("the stream is %d bytes, want 20 MiB", len(stream))
	}
	const bound = 8 << 20 // --max-usage-bytes' default
	s := NewSSE(Responses, bound)
	for _, c := range awkward(stream) {
		s.Write(c)
		if cap(s.data) > bound || (s.prune != nil && s.prune.Held() > prunedMax+8) {
			t.Fatalf("the reader holds %d bytes of data and %d pruned", cap(s.data), s.prune.Held())
		}
	}
	s.Finish()
	want := known(120, 100, 12800, 64, "resp_big", "gpt-image-2", "priority", StatusCompleted)
	if got := s.Usage(); got != want || s.Overflowed() {
		t.Fatalf("Usage = %+v (overflowed %v), want %+v", got, s.Overflowed(), want)
	}
}

// TestTwentyMiBChatBodyIsReadInBoundedMemory: a Chat body made 20 MiB by
// top_logprobs is read for its usage and tier, the body held only up to
// the bound.
func TestTwentyMiBChatBodyIsReadInBoundedMemory(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	b.WriteString(`{"id":"chatcmpl-big","object":"chat.completion","model":"gpt-5.5","service_tier":"flex","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"logprobs":{"content":[`)
	for i := 0; b.Len() < 20<<20; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"token":"tok","logprob":-0.25,"bytes":[116,111,107],"top_logprobs":[`)
		for j := range 20 {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"token":"t\u00e9%d","logprob":-%d.5,"bytes":[116]}`, j, j)
		}
		b.WriteString(`]}`)
	}
	b.WriteString(`]},"finish_reason":"length"}],"usage":{"prompt_tokens":30,"completion_tokens":50000,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`)
	const bound = 8 << 20
	body := NewBody(ChatCompletions, bound)
	for _, c := range awkward(b.Bytes()) {
		body.Write(c)
		if cap(body.buf) > bound || (body.prune != nil && body.prune.Held() > prunedMax+8) {
			t.Fatalf("the reader holds %d bytes of body and %d pruned", cap(body.buf), body.prune.Held())
		}
	}
	want := known(30, 0, 50000, 0, "chatcmpl-big", "gpt-5.5", "flex", StatusIncomplete)
	if got := body.Usage(); got != want || body.Overflowed() {
		t.Fatalf("Usage = %+v (overflowed %v), want %+v", got, body.Overflowed(), want)
	}
	if whole := ParseJSON(ChatCompletions, b.Bytes()); whole != want {
		t.Fatalf("read whole: %+v", whole)
	}
}

func TestBody(t *testing.T) {
	t.Parallel()
	long := `{"output":"` + strings.Repeat("x", 1000) + `",`
	for _, tc := range []struct {
		name       string
		body       string
		want       Usage
		overflowed bool
	}{
		{"a body within the bound is read whole",
			`{"id":"r","usage":{"input_tokens":1}}`, known(1, -1, -1, -1, "r", "", "", ""), false},
		{"a longer body is read pruned",
			long + `"id":"r","usage":{"input_tokens":1}}`, known(1, -1, -1, -1, "r", "", "", ""), false},
		{"a longer body that is not JSON is unknown, and no overflow",
			long + `"id":"r","usage":{"input_tokens":1}`, Unknown(), false},
		{"a longer body whose read members outgrow the pruned copy is an overflow",
			long + `"id":"` + strings.Repeat("i", prunedMax) + `","usage":{"input_tokens":1}}`, Unknown(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, over := readBody(Responses, 100, chunked([]byte(tc.body), 64)...)
			if got != tc.want || over != tc.overflowed {
				t.Fatalf("Usage = %+v, overflowed %v; want %+v, %v", got, over, tc.want, tc.overflowed)
			}
		})
	}
}
