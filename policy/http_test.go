package policy

import (
	"slices"
	"testing"
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
		{"an unstreamed one is left alone", EndpointChatCompletions, none, nil,
			`{"model":"gpt-4o"}`, `{"model":"gpt-4o"}`, nil},
		{"no body passes untouched", EndpointResponses, none, nil, ``, ``, nil},
		{"fast mode's beta token goes, the rest stays", EndpointMessages, none, []string{"fast-mode-2026-02-01, context-1m-2025-08-07"},
			`{"model":"claude-opus-4-6","speed":"fast"}`, `{"model":"claude-opus-4-6"}`,
			[]HeaderEdit{{Name: "anthropic-beta", Value: "context-1m-2025-08-07"}}},
		{"a beta header of fast mode alone is removed", EndpointMessages, none, []string{"fast-mode-2026-02-01"},
			`{"model":"claude-opus-4-6"}`, `{"model":"claude-opus-4-6"}`,
			[]HeaderEdit{{Name: "anthropic-beta", Remove: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := p.DecideHTTP(&HTTPRequest{Endpoint: tc.ep, Header: tc.header, Beta: tc.beta, Body: []byte(tc.body), MaxDecoded: 1 << 20})
			if out.Refused || out.Action == ActionBlock {
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
