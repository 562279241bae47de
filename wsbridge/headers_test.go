package wsbridge

import (
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// TestForwardingTables checks the tables on their own: every entry has a
// reason, and the group header never crosses even where a prefix would
// take it.
func TestForwardingTables(t *testing.T) {
	t.Parallel()
	for _, table := range [][]headerRule{upstreamRequestHeaders, neverForwarded, clientResponseHeaders, refusalResponseHeaders} {
		for _, r := range table {
			if r.reason == "" || r.name != strings.ToLower(r.name) {
				t.Errorf("entry %q needs a lower-case name and a reason", r.name)
			}
		}
	}
	in := http.Header{
		"Authorization":          {"Bearer k"},
		"X-Codex-Group":          {"codex-fast"},
		"X-Codex-Turn-State":     {"t"},
		"Openai-Beta":            {"a", "b"},
		"Sec-Websocket-Protocol": {"realtime"},
		"Connection":             {"Upgrade"},
		"Cookie":                 {"c=1"},
	}
	out := upstreamHeaders(in, "x-codex-group")
	if out.Get("X-Codex-Group") != "" {
		t.Error("the group header crossed through the x-codex- prefix")
	}
	if out.Get("Authorization") != "Bearer k" || out.Get("X-Codex-Turn-State") != "t" || len(out.Values("Openai-Beta")) != 2 {
		t.Errorf("forwarded %v", out)
	}
	for _, k := range []string{"Sec-Websocket-Protocol", "Connection", "Cookie"} {
		if out.Get(k) != "" {
			t.Errorf("%s crossed", k)
		}
	}
}

// TestCloseHelpers checks the close-code mapping and reason truncation.
func TestCloseHelpers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want websocket.StatusCode
	}{
		{1000, 1000}, {1001, 1001}, {1003, 1003}, {1004, 1011}, {1005, 1011}, {1006, 1011},
		{1007, 1007}, {1014, 1014}, {1015, 1011}, {2999, 1011}, {3000, 3000}, {4999, 4999}, {5000, 1011},
	} {
		if got := sendable(tc.in); got != tc.want {
			t.Errorf("sendable(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want int
	}{
		{strings.Repeat("a", 123), 123},
		{strings.Repeat("a", 124), 123},
		{strings.Repeat("a", 122) + "é", 122},
		{strings.Repeat("a", 121) + "€", 121},
		{strings.Repeat("€", 41), 123},
	} {
		if got := truncateReason(tc.in); len(got) != tc.want || !strings.HasPrefix(tc.in, got) {
			t.Errorf("truncateReason(%d bytes) = %d bytes, want %d", len(tc.in), len(got), tc.want)
		}
	}
	for code, want := range map[int]string{1000: "1000", 1006: "1006", 1015: "1015", 4000: "other", -1: "other"} {
		if got := closeCodeLabel(code); got != want {
			t.Errorf("closeCodeLabel(%d) = %s, want %s", code, got, want)
		}
	}
}

// TestSniffType checks the upstream pump's shortcut reads a type only when
// it is certain of it.
func TestSniffType(t *testing.T) {
	t.Parallel()
	for frame, want := range map[string]string{
		`{"type":"response.output_text.delta","delta":"x"}`: "response.output_text.delta",
		`{"type":"response.done"}`:                          "response.done",
		`{ "type":"response.done"}`:                         "",
		`{"event_id":"e","type":"response.done"}`:           "",
		`{"type":"response\u002edone"}`:                     "",
		`{"type":"unterminated`:                             "",
	} {
		got, ok := sniffType([]byte(frame))
		if (want == "") == ok || got != want {
			t.Errorf("sniffType(%s) = %q %v, want %q", frame, got, ok, want)
		}
	}
}

// TestNeedsParse: the upstream pump parses every event account acts on
// (terminal ones by usage's own definition), output deltas only while a
// turn awaits its first, and nothing else.
func TestNeedsParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		typ            string
		awaiting, want bool
	}{
		{"response.completed", false, true}, {"response.failed", false, true}, {"response.incomplete", false, true},
		{"response.done", false, true}, {"response.created", false, true}, {"error", false, true},
		{"session.created", false, true}, {"session.updated", false, true},
		{"response.output_audio.delta", true, true}, {"response.output_audio.delta", false, false},
		{"response.output_text.done", true, false}, {"rate_limits.updated", true, false},
		{"response.in_progress", true, false}, {"response.delta", true, false},
	} {
		if got := needsParse(tc.typ, tc.awaiting); got != tc.want {
			t.Errorf("needsParse(%q, awaiting %v) = %v, want %v", tc.typ, tc.awaiting, got, tc.want)
		}
	}
}
