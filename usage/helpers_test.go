package usage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture reads a file under testdata.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// known returns a Usage with the given counts and strings, for
// expectations; cache writes and audio are unknown (withWrites sets them).
func known(in, cached, out, reasoning int64, id, model, tier, status string) Usage {
	return Usage{
		InputTokens: in, CachedInputTokens: cached, OutputTokens: out, ReasoningTokens: reasoning,
		CacheWriteInputTokens: -1, AudioTokens: -1,
		ResponseID: id, Model: model, ServiceTier: tier, Status: status,
	}
}

// withAudio returns u with its audio count set.
func withAudio(u Usage, audio int64) Usage {
	u.AudioTokens = audio
	return u
}

// withWrites returns u with its cache-write count set.
func withWrites(u Usage, writes int64) Usage {
	u.CacheWriteInputTokens = writes
	return u
}

// framing is one way of writing the lines of an SSE stream: the line endings
// and whether a field's colon is followed by a space.
type framing struct {
	name    string
	endings []string // cycled line by line
	noSpace bool
}

// framings are the variants every stream fixture is read in. The mixed cycle
// never puts a \r ending right before a \n ending, since "\r" + "\n" is one
// CRLF ending and would swallow a blank line.
var framings = []framing{
	{name: "LF endings", endings: []string{"\n"}},
	{name: "CRLF endings", endings: []string{"\r\n"}},
	{name: "CR endings", endings: []string{"\r"}},
	{name: "mixed endings", endings: []string{"\n", "\r", "\r\n"}},
	{name: "no space after the colon", endings: []string{"\n"}, noSpace: true},
	{name: "mixed endings and no space", endings: []string{"\r\n", "\n", "\r"}, noSpace: true},
}

// records splits an LF fixture into its records, each the text of its lines
// without their endings (the blank line that ends a record is an empty last
// line).
func records(src []byte) [][]string {
	var recs [][]string
	var cur []string
	for _, line := range strings.SplitAfter(string(src), "\n") {
		if line == "" {
			continue
		}
		line = strings.TrimSuffix(line, "\n")
		cur = append(cur, line)
		if line == "" {
			recs = append(recs, cur)
			cur = nil
		}
	}
	if cur != nil {
		recs = append(recs, cur)
	}
	return recs
}

// render writes records in a framing and returns each record's bytes, so a
// test can remove one record and know exactly what is left.
func (f framing) render(recs [][]string) []string {
	var out []string
	n := 0
	for _, rec := range recs {
		var b strings.Builder
		for _, line := range rec {
			if f.noSpace {
				for _, field := range []string{"data: ", "event: "} {
					if strings.HasPrefix(line, field) {
						line = strings.TrimSuffix(field, " ") + line[len(field):]
					}
				}
			}
			b.WriteString(line)
			b.WriteString(f.endings[n%len(f.endings)])
			n++
		}
		out = append(out, b.String())
	}
	return out
}

// frame renders a whole LF fixture in framing f.
func (f framing) frame(src []byte) []byte {
	return []byte(strings.Join(f.render(records(src)), ""))
}

// sseResult is everything an SSE reader reports, for comparing runs.
type sseResult struct {
	Usage      Usage
	First      bool
	Overflowed bool
}

// readSSE feeds chunks to a new reader and finishes the stream.
func readSSE(api API, max int, chunks ...[]byte) sseResult {
	s := NewSSE(api, max)
	for _, c := range chunks {
		s.Write(c)
	}
	s.Finish()
	return sseResult{s.Usage(), s.FirstOutput(), s.Overflowed()}
}

// bytewise splits b into 1-byte chunks.
func bytewise(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1]
	}
	return out
}

// chunked splits b into chunks of n bytes.
func chunked(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}
