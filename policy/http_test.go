package policy

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/tiergate/tiergate/internal/compresstest"
)

// TestDecideHTTPAsTheServerForwards: what DecideHTTP decides is what both
// the ext_proc server and `tiergate eval` act on, so it carries the
// server's choices itself: a streamed Chat Completions request asks for its
// usage, a request without a body passes untouched, and the header changes
// that go with the body come from HeaderEdits.
func TestDecideHTTPAsTheServerForwards(t *testing.T) {
	t.Parallel()
	p := Default()
	none := func(string) string { return "" }
	for _, tc := range []struct {
		name   string
		ep     Endpoint
		header func(string) string
		beta   []string
		body   string
		want   string
		edits  []HeaderEdit
	}{
		{"a streamed chat request asks for its usage", EndpointChatCompletions, none, nil,
			`{"model":"gpt-4o","stream":true}`, `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}`,
			[]HeaderEdit{{Name: "accept-encoding", Value: "identity"}}},
		{"a stream key spelled with the st ligature asks for its usage too", EndpointChatCompletions, none, nil,
			`{"model":"gpt-4o","ﬆream":true}`, `{"model":"gpt-4o","ﬆream":true,"stream_options":{"include_usage":true}}`,
			[]HeaderEdit{{Name: "accept-encoding", Value: "identity"}}},
		{"an unstreamed one is left alone", EndpointChatCompletions, none, nil,
			`{"model":"gpt-4o"}`, `{"model":"gpt-4o"}`, nil},
		{"no body passes untouched", EndpointResponses, none, nil, ``, ``, nil},
		{"fast mode's beta token goes, the rest stays", EndpointMessages, none, []string{"fast-mode-2026-02-01, context-1m-2025-08-07"},
			`{"model":"claude-opus-4-6","speed":"fast"}`, `{"model":"claude-opus-4-6"}`,
			[]HeaderEdit{{Name: "anthropic-beta", Value: "context-1m-2025-08-07"}}},
		{"a body under as many codings as contentcoding.MaxCodings is decoded and judged", EndpointChatCompletions,
			func(name string) string {
				if name == "content-encoding" {
					return "gzip, deflate, gzip, deflate"
				}
				return ""
			}, nil,
			string(compresstest.Zlib(compresstest.Gzip(compresstest.Zlib(compresstest.Gzip([]byte(`{"model":"gpt-4o"}`)))))), `{"model":"gpt-4o"}`,
			[]HeaderEdit{{Name: "content-encoding", Remove: true}}},
		{"a beta header of fast mode alone is removed", EndpointMessages, none, []string{"fast-mode-2026-02-01"},
			`{"model":"claude-opus-4-6"}`, `{"model":"claude-opus-4-6"}`,
			[]HeaderEdit{{Name: "anthropic-beta", Remove: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := p.DecideHTTP(&HTTPRequest{Endpoint: tc.ep, Header: tc.header, Beta: tc.beta, Body: []byte(tc.body), MaxDecoded: 1 << 20})
			if out.Refusal != RefusalNone || out.Action == ActionBlock {
				t.Fatalf("refused: %s", out.Message)
			}
			if string(out.Body) != tc.want {
				t.Errorf("body %s, want %s", out.Body, tc.want)
			}
			if got := out.HeaderEdits(nil); !slices.Equal(got, tc.edits) {
				t.Errorf("header edits %+v, want %+v", got, tc.edits)
			}
		})
	}
}

// TestDecideHTTPRefusesWhatItCannotRead: a body tiergate cannot read is
// answered by tiergate, in the endpoint's shape: an unknown coding with
// 415, and a bomb (decoded past MaxDecoded), a corrupt compressed body or
// invalid JSON with 400. Nothing is sent upstream for any of them.
func TestDecideHTTPRefusesWhatItCannotRead(t *testing.T) {
	t.Parallel()
	p := Default()
	bomb := compresstest.Gzip(append([]byte(`{"model":"gpt-5.5","input":"`), bytes.Repeat([]byte("a"), 1<<20)...))
	for _, tc := range []struct {
		name, encoding string
		body           []byte
		status         int
		code, message  string
	}{
		{"brotli", "br", []byte(`{}`), 415, "unsupported_content_encoding", `content-encoding "br" is not supported`},
		{"more codings than contentcoding.MaxCodings", strings.Repeat("deflate,", 7500), []byte(`{}`), 415, "unsupported_content_encoding",
			`content-encoding "deflate,deflate,deflate,deflate,deflate,deflate,deflate,deflate,"… stacks more than 4 codings`},
		{"an unknown coding of 60 KB", strings.Repeat("x", 60000), []byte(`{}`), 415, "unsupported_content_encoding",
			`content-encoding "` + strings.Repeat("x", 64) + `"… is not supported`},
		{"a bomb", "gzip", bomb, 400, "invalid_json", "the decompressed body is too large"},
		{"corrupt gzip", "gzip", []byte("not gzip at all"), 400, "invalid_json", "the body could not be decompressed"},
		{"invalid JSON", "", []byte(`{"model":`), 400, "invalid_json", "the request body is not valid JSON"},
		{"invalid JSON inside gzip", "gzip", compresstest.Gzip([]byte(`{"model":`)), 400, "invalid_json", "the request body is not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			header := func(name string) string {
				if name == "content-encoding" {
					return tc.encoding
				}
				return ""
			}
			out := p.DecideHTTP(&HTTPRequest{Endpoint: EndpointResponses, Header: header, Body: tc.body, MaxDecoded: 64 << 10})
			if out.Refusal == RefusalNone || out.Refusal.Status() != tc.status {
				t.Fatalf("refusal %v, status %d; want %d", out.Refusal, out.Refusal.Status(), tc.status)
			}
			var e struct {
				Error struct{ Message, Code string }
			}
			body := out.Refusal.Body(EndpointResponses, out.Message)
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != tc.code || !strings.HasPrefix(e.Error.Message, tc.message) {
				t.Errorf("error body %s, want code %s and a message starting %q", body, tc.code, tc.message)
			}
			// A header is the client's and may be tens of KB; a message
			// quotes a bounded prefix of it.
			if len(out.Message) > 256 {
				t.Errorf("message is %d bytes, want a bounded quote of the header", len(out.Message))
			}
			if out.Sent != TierNone || out.Action != ActionBlock {
				t.Errorf("sent %v, action %v; want none and block", out.Sent, out.Action)
			}
		})
	}
}
