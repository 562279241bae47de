package usage

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// filterAll runs a new filter over chunks and returns what it forwarded
// (Filter's output for each chunk, then Flush's) and the filter.
func filterAll(max int, chunks ...[]byte) ([]byte, *ChatStreamFilter) {
	f := NewChatStreamFilter(max)
	var out []byte
	for _, c := range chunks {
		out = f.Filter(out, c)
	}
	return f.Flush(out), f
}

// TestChatStreamFilterFixtures cuts each Chat fixture, in every framing, at
// every byte and into single bytes: what reaches the client is exactly the
// stream without the usage-only record, and the usage is read all the same.
func TestChatStreamFilterFixtures(t *testing.T) {
	t.Parallel()
	for _, fx := range sseFixtures {
		if fx.api != ChatCompletions {
			continue
		}
		for _, fr := range framings {
			t.Run(fx.name+", "+fr.name, func(t *testing.T) {
				t.Parallel()
				recs := fr.render(records(fixture(t, fx.file)))
				var stream, want strings.Builder
				removed := 0
				for _, r := range recs {
					stream.WriteString(r)
					if strings.Contains(r, `"choices":[],"usage":{`) {
						removed++
						continue
					}
					want.WriteString(r)
				}
				if removed != 1 {
					t.Fatalf("fixture has %d usage-only records, want 1", removed)
				}
				src := []byte(stream.String())
				check := func(how string, chunks ...[]byte) {
					t.Helper()
					out, f := filterAll(0, chunks...)
					if string(out) != want.String() {
						t.Fatalf("%s: forwarded\n%q\nwant\n%q", how, out, want.String())
					}
					got := sseResult{f.Usage(), f.FirstOutput(), f.Overflowed()}
					if w := (sseResult{Usage: fx.want, First: fx.first}); got != w {
						t.Fatalf("%s: read %+v, want %+v", how, got, w)
					}
					if !f.dropped() {
						t.Fatalf("%s: dropped() = false", how)
					}
				}
				check("whole", src)
				for i := 0; i <= len(src); i++ {
					check("cut at "+strconv.Itoa(i), src[:i], src[i:])
				}
				check("one byte at a time", bytewise(src)...)
			})
		}
	}
}

func TestChatStreamFilter(t *testing.T) {
	t.Parallel()
	const (
		delta = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}],\"usage\":null}\n\n"
		stop  = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
		use   = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12}}\n\n"
		done  = "data: [DONE]\n\n"
	)
	tests := []struct {
		name    string
		max     int
		stream  string
		want    string
		in      int64 // InputTokens read
		dropped bool
	}{
		{
			name:    "the usage-only chunk is removed and everything else passes",
			stream:  delta + stop + use + done,
			want:    delta + stop + done,
			in:      9,
			dropped: true,
		},
		{
			name:   "a stream without a usage chunk passes byte for byte",
			stream: ": comment\n\n" + delta + stop + done,
			want:   ": comment\n\n" + delta + stop + done,
			in:     -1,
		},
		{
			name:   "a chunk with choices and usage is not usage-only",
			stream: "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":9}}\n\n" + done,
			want:   "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":9}}\n\n" + done,
			in:     9,
		},
		{
			name:   "a chunk with empty choices and null usage is kept",
			stream: "data: {\"choices\":[],\"usage\":null}\n\n" + done,
			want:   "data: {\"choices\":[],\"usage\":null}\n\n" + done,
			in:     -1,
		},
		{
			name:    "a usage chunk at the end without its blank line is removed at Flush",
			stream:  delta + strings.TrimSuffix(use, "\n\n"),
			want:    delta,
			in:      9,
			dropped: true,
		},
		{
			name:   "a last record cut mid-line is forwarded as it came",
			stream: delta + "data: {\"choices\":[],\"usa",
			want:   delta + "data: {\"choices\":[],\"usa",
			in:     -1,
		},
		{
			name:    "the usage chunk's comments and fields go with it",
			stream:  delta + ": before\nid: 4\n" + use + done,
			want:    delta + done,
			in:      9,
			dropped: true,
		},
		{
			name:    "extra blank lines around the usage chunk are kept",
			stream:  delta + "\n\n" + use + "\n" + done,
			want:    delta + "\n\n" + "\n" + done,
			in:      9,
			dropped: true,
		},
		{
			name:   "a usage chunk longer than the bound is forwarded, and read pruned",
			max:    40,
			stream: delta + use + done,
			want:   delta + use + done,
			in:     9,
		},
		{
			name:   "a usage chunk whose data fits but whose record does not is forwarded and read",
			max:    len(use) - 3,
			stream: ": " + strings.Repeat("p", 10) + "\n" + use + done,
			want:   ": " + strings.Repeat("p", 10) + "\n" + use + done,
			in:     9,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := []byte(tt.stream)
			for _, chunks := range [][][]byte{{src}, chunked(src, 10), bytewise(src)} {
				out, f := filterAll(tt.max, chunks...)
				if string(out) != tt.want {
					t.Fatalf("in %d chunks: forwarded\n%q\nwant\n%q", len(chunks), out, tt.want)
				}
				if got := f.Usage().InputTokens; got != tt.in {
					t.Errorf("in %d chunks: InputTokens = %d, want %d", len(chunks), got, tt.in)
				}
				if got := f.dropped(); got != tt.dropped {
					t.Errorf("in %d chunks: dropped = %v, want %v", len(chunks), got, tt.dropped)
				}
			}
		})
	}
}

// TestChatStreamFilterForwardsAtOnce checks the latency promise: a complete
// record goes out with the chunk that completes it, and only an open record
// is held.
func TestChatStreamFilterForwardsAtOnce(t *testing.T) {
	t.Parallel()
	f := NewChatStreamFilter(0)
	rec := "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
	steps := []struct {
		in, out string
	}{
		{rec + rec[:10], rec},
		{rec[10:30], ""},
		{rec[30:] + rec, rec + rec},
		{"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r", ""},
		{"\n\r", ""},
		{"\ndata: [DONE]\r", ""},
		{"\n\r\n", "data: [DONE]\r\n\r\n"},
	}
	for i, st := range steps {
		if got := f.Filter(nil, []byte(st.in)); string(got) != st.out {
			t.Fatalf("step %d: Filter(%q) = %q, want %q", i, st.in, got, st.out)
		}
	}
	if got := f.Flush(nil); len(got) != 0 {
		t.Fatalf("Flush = %q, want nothing", got)
	}
	if got := f.Usage().InputTokens; got != 1 {
		t.Fatalf("InputTokens = %d, want 1", got)
	}
}

func TestChatStreamFilterHoldsAtMostTheBound(t *testing.T) {
	t.Parallel()
	const max = 256
	f := NewChatStreamFilter(max)
	long := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("y", 10_000) + "\"}}]}\n\n"
	var out []byte
	for _, c := range chunked([]byte(long), 100) {
		out = f.Filter(out, c)
		if cap(f.s.held) > max {
			t.Fatalf("held %d bytes, bound %d", cap(f.s.held), max)
		}
	}
	out = f.Flush(out)
	if !bytes.Equal(out, []byte(long)) {
		t.Fatal("a long record was not forwarded whole")
	}
	if f.Overflowed() || !f.FirstOutput() {
		t.Fatalf("a chat chunk longer than the bound is read pruned: overflowed %v, first output %v", f.Overflowed(), f.FirstOutput())
	}
}

// BenchmarkChatStreamFilter filters a 200-chunk Chat stream fed in 1 KiB
// chunks.
func BenchmarkChatStreamFilter(b *testing.B) {
	var sb strings.Builder
	for range 198 {
		sb.WriteString(`data: {"id":"chatcmpl-C1x2","object":"chat.completion.chunk","created":1756302366,"model":"gpt-5.5-2026-06-01","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"Xk2"}` + "\n\n")
	}
	sb.WriteString(`data: {"id":"chatcmpl-C1x2","object":"chat.completion.chunk","created":1756302366,"model":"gpt-5.5-2026-06-01","service_tier":"default","choices":[],"usage":{"prompt_tokens":120,"completion_tokens":198,"total_tokens":318,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}` + "\n\ndata: [DONE]\n\n")
	stream := []byte(sb.String())
	chunks := chunked(stream, 1024)
	out := make([]byte, 0, len(stream))
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		f := NewChatStreamFilter(0)
		out = out[:0]
		for _, c := range chunks {
			out = f.Filter(out, c)
		}
		out = f.Flush(out)
		if f.Usage().OutputTokens != 198 {
			b.Fatal("usage not read")
		}
	}
}
