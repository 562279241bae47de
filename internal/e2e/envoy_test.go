package e2e

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestThroughEnvoy runs every Envoy-facing promise through real Envoy on
// each shipped bootstrap. One Envoy and one tiergate per bootstrap serve
// all its subtests, which run one after another (some read Envoy's
// counters between two requests).
func TestThroughEnvoy(t *testing.T) {
	for _, bs := range bootstraps {
		t.Run(bs.name, func(t *testing.T) {
			t.Parallel()
			s := startStack(t, bs, testPolicy)
			t.Run("policy", func(t *testing.T) { testPolicyMatrix(t, s) })
			t.Run("refusals", func(t *testing.T) { testRefusals(t, s) })
			t.Run("unpoliced", func(t *testing.T) { testUnpoliced(t, s) })
			t.Run("usage", func(t *testing.T) { testUsage(t, s) })
			t.Run("bodies", func(t *testing.T) { testBodies(t, s) })
			t.Run("websocket", func(t *testing.T) { testWebSocket(t, s) })
			t.Run("openai npm clients", func(t *testing.T) { testNodeClients(t, s) })
			t.Run("fail closed", func(t *testing.T) { testFailClosed(t, s) })
		})
	}
}

// policyCase is one request and what must reach the upstream.
type policyCase struct {
	name   string
	path   string
	header map[string]string
	body   string
	// upstream is the body the provider must receive byte for byte;
	// empty: the request is blocked and nothing reaches it.
	upstream string
	// upstreamHeader are headers the provider must receive ("" = absent).
	upstreamHeader map[string]string
	action, group  string
}

const (
	blockedGPT   = `{"error":{"message":"service_tier=priority is not allowed for model gpt-5.5","type":"forbidden_error","param":"service_tier","code":"policy_violation"}}`
	fastModeBeta = "fast-mode-2026-02-01"
)

var policyCases = []policyCase{
	// Chat Completions.
	{name: "chat: an allowed tier passes unchanged", path: "/v1/chat/completions",
		body: `{"model":"gpt-5.4","service_tier":"flex","messages":[]}`, upstream: `{"model":"gpt-5.4","service_tier":"flex","messages":[]}`, action: "pass"},
	{name: "chat: priority is filtered out", path: "/v1/chat/completions",
		body: `{"model":"gpt-5.4","service_tier":"priority","messages":[]}`, upstream: `{"model":"gpt-5.4","messages":[]}`, action: "filter"},
	{name: "chat: priority on gpt-5.5 is blocked", path: "/v1/chat/completions",
		body: `{"model":"gpt-5.5","service_tier":"priority","messages":[]}`, action: "block"},
	{name: "chat: the identity's group gets its forced tier", path: "/v1/chat/completions",
		header: map[string]string{identityHeader: "flex-group"},
		body:   `{"model":"gpt-5.4","messages":[]}`, upstream: `{"model":"gpt-5.4","messages":[],"service_tier":"flex"}`, action: "pass", group: "flex-group"},
	{name: "chat: the key digest's group gets priority forced", path: "/v1/chat/completions",
		header: map[string]string{"authorization": "Bearer " + keyFast},
		body:   `{"model":"gpt-5.5","messages":[]}`, upstream: `{"model":"gpt-5.5","messages":[],"service_tier":"priority"}`, action: "pass", group: "codex-fast"},
	{name: "chat: a group header the client sent is stripped before tiergate reads it", path: "/v1/chat/completions",
		header: map[string]string{"x-tiergate-group": "codex-fast", "authorization": "Bearer " + keyPlain},
		body:   `{"model":"gpt-5.5","service_tier":"priority","messages":[]}`, action: "block"},
	{name: "chat: the identity wins over a client's group header", path: "/v1/chat/completions",
		header: map[string]string{"x-tiergate-group": "codex-fast", identityHeader: "flex-group"},
		body:   `{"model":"gpt-5.5","service_tier":"priority","messages":[]}`, upstream: `{"model":"gpt-5.5","service_tier":"flex","messages":[]}`, action: "pass", group: "flex-group"},
	{name: "chat: a gzip'd body is decoded, filtered and sent plain", path: "/v1/chat/completions",
		header: map[string]string{"content-encoding": "gzip"},
		body:   `{"model":"gpt-5.4","service_tier":"priority","messages":[]}`, upstream: `{"model":"gpt-5.4","messages":[]}`,
		upstreamHeader: map[string]string{"content-encoding": ""}, action: "filter"},

	// Responses.
	{name: "responses: fast from the fast group passes as priority", path: "/v1/responses",
		header: map[string]string{identityHeader: "codex-fast"},
		body:   `{"model":"gpt-5.5","service_tier":"fast","input":"hi"}`, upstream: `{"model":"gpt-5.5","service_tier":"priority","input":"hi"}`, action: "pass", group: "codex-fast"},
	{name: "responses: priority is filtered out", path: "/v1/responses",
		body: `{"model":"gpt-5.4","service_tier":"priority","input":"hi"}`, upstream: `{"model":"gpt-5.4","input":"hi"}`, action: "filter"},
	{name: "responses: priority on gpt-5.5 is blocked", path: "/v1/responses",
		body: `{"model":"gpt-5.5","service_tier":"priority","input":"hi"}`, action: "block"},
	{name: "responses: the identity's group gets its forced tier", path: "/v1/responses",
		header: map[string]string{identityHeader: "flex-group"},
		body:   `{"model":"gpt-5.4","service_tier":"priority","input":"hi"}`, upstream: `{"model":"gpt-5.4","service_tier":"flex","input":"hi"}`, action: "pass", group: "flex-group"},

	// Responses compaction.
	{name: "compact: an allowed tier passes unchanged", path: "/v1/responses/compact",
		body: `{"model":"gpt-5.4","service_tier":"default","input":[]}`, upstream: `{"model":"gpt-5.4","service_tier":"default","input":[]}`, action: "pass"},
	{name: "compact: priority is filtered out", path: "/v1/responses/compact",
		body: `{"model":"gpt-5.4","input":[],"service_tier":"priority"}`, upstream: `{"model":"gpt-5.4","input":[]}`, action: "filter"},
	{name: "compact: priority on gpt-5.5 is blocked", path: "/v1/responses/compact",
		body: `{"model":"gpt-5.5","input":[],"service_tier":"priority"}`, action: "block"},
	{name: "compact: the key digest's group gets priority forced", path: "/v1/responses/compact",
		header: map[string]string{"authorization": "Bearer " + keyFast},
		body:   `{"model":"gpt-5.4","input":[]}`, upstream: `{"model":"gpt-5.4","input":[],"service_tier":"priority"}`, action: "pass", group: "codex-fast"},

	// Anthropic Messages: fast mode is priority.
	{name: "messages: a request without fast mode passes unchanged", path: "/v1/messages",
		header: map[string]string{"anthropic-beta": "other-2025-01-01"},
		body:   `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}`, upstream: `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}`,
		upstreamHeader: map[string]string{"anthropic-beta": "other-2025-01-01"}, action: "pass"},
	{name: "messages: fast mode is filtered from the body and from anthropic-beta", path: "/v1/messages",
		header: map[string]string{"anthropic-beta": "fast-mode-2026-02-01,other-2025-01-01"},
		body:   `{"model":"claude-sonnet-4-5","speed":"fast","max_tokens":5,"messages":[]}`, upstream: `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}`,
		upstreamHeader: map[string]string{"anthropic-beta": "other-2025-01-01"}, action: "filter"},
	{name: "messages: fast mode on claude-opus-4-6 is blocked", path: "/v1/messages",
		header: map[string]string{"anthropic-beta": "fast-mode-2026-02-01"},
		body:   `{"model":"claude-opus-4-6","speed":"fast","max_tokens":5,"messages":[]}`, action: "block"},
	{name: "messages: the key digest's group gets fast mode forced", path: "/v1/messages",
		header: map[string]string{"x-api-key": keyFast},
		body:   `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}`, upstream: `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"speed":"fast"}`,
		upstreamHeader: map[string]string{"anthropic-beta": fastModeBeta}, action: "pass", group: "codex-fast"},

	// Anthropic Message Batches: each requests[].params is a Messages request.
	{name: "message batches: fast mode is filtered from each entry and from anthropic-beta", path: "/v1/messages/batches",
		header:         map[string]string{"anthropic-beta": "fast-mode-2026-02-01,message-batches-2024-09-24"},
		body:           `{"requests":[{"custom_id":"a","params":{"model":"claude-sonnet-4-5","speed":"fast","max_tokens":5,"messages":[]}}]}`,
		upstream:       `{"requests":[{"custom_id":"a","params":{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}}]}`,
		upstreamHeader: map[string]string{"anthropic-beta": "message-batches-2024-09-24"}, action: "filter"},
	{name: "message batches: an entry asking fast mode on claude-opus-4-6 blocks the batch", path: "/v1/messages/batches",
		body:   `{"requests":[{"custom_id":"a","params":{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}},{"custom_id":"b","params":{"model":"claude-opus-4-6","speed":"fast","max_tokens":5,"messages":[]}}]}`,
		action: "block"},
}

func testPolicyMatrix(t *testing.T, s *stack) {
	for _, tc := range policyCases {
		for _, cl := range s.clients() {
			t.Run(tc.name+" over "+cl.name, func(t *testing.T) {
				id := newID(t)
				body := []byte(tc.body)
				if tc.header["content-encoding"] == "gzip" {
					body = gzipBytes(body)
				}
				got := s.send(t, cl.c, http.MethodPost, withID(tc.path, id, ""), tc.header, body)
				wantProto := map[string]string{"HTTP/1.1": "HTTP/1.1", "HTTP/2": "HTTP/2.0"}[cl.name]
				if got.proto != wantProto {
					t.Errorf("the answer came over %s, want %s", got.proto, wantProto)
				}
				log := s.accessLine(t, id)
				if a := log.Get("tiergate.action").Str; a != tc.action {
					t.Errorf("access log: tiergate.action %q, want %q (%s)", a, tc.action, log.Raw)
				}
				if g := log.Get("tiergate.group").Str; g != tc.group {
					t.Errorf("access log: tiergate.group %q, want %q", g, tc.group)
				}
				if tc.upstream == "" {
					if got.status != http.StatusForbidden {
						t.Fatalf("status %d, want 403: %s", got.status, got.body)
					}
					s.up.none(t, id)
					return
				}
				if got.status != http.StatusOK {
					t.Fatalf("status %d, want 200: %s", got.status, got.body)
				}
				up := s.up.take(t, id)
				if string(up.body) != tc.upstream {
					t.Errorf("the upstream received\n  %s\nwant\n  %s", up.body, tc.upstream)
				}
				if cl := up.header.Get("content-length"); cl != strconv.Itoa(len(tc.upstream)) {
					t.Errorf("the upstream's content-length %q, want %d", cl, len(tc.upstream))
				}
				if g := up.header.Values("x-tiergate-group"); len(g) > 0 {
					t.Errorf("the group header reached the upstream: %q", g)
				}
				for k, want := range tc.upstreamHeader {
					if got := strings.Join(up.header.Values(k), ","); got != want {
						t.Errorf("the upstream's %s %q, want %q", k, got, want)
					}
				}
				if rec := s.usageRecord(t, up.header.Get("x-request-id")); rec.Get("action").Str != tc.action {
					t.Errorf("usage record action %q, want %q", rec.Get("action").Str, tc.action)
				}
			})
		}
	}
}

// testRefusals: what a client receives, through Envoy, when tiergate
// refuses a request.
func testRefusals(t *testing.T, s *stack) {
	for _, tc := range []struct {
		name, path string
		header     map[string]string
		body       []byte
		status     int
		want       string // the exact body
	}{
		{"a blocked OpenAI request gets 403 in OpenAI's shape", "/v1/responses", nil,
			[]byte(`{"model":"gpt-5.5","service_tier":"priority"}`), http.StatusForbidden, blockedGPT},
		{"a blocked Anthropic request gets 403 in Anthropic's shape", "/v1/messages", nil,
			[]byte(`{"model":"claude-opus-4-6","speed":"fast"}`), http.StatusForbidden,
			`{"type":"error","error":{"type":"permission_error","message":"service_tier=priority is not allowed for model claude-opus-4-6"}}`},
		{"a body that is not JSON gets 400", "/v1/chat/completions", nil,
			[]byte(`{"model":"gpt-5.4","service_tier":"priority"`), http.StatusBadRequest, ""},
		{"an Anthropic body that is not JSON gets 400 in Anthropic's shape", "/v1/messages", nil,
			[]byte(`{"model":`), http.StatusBadRequest, ""},
		{"an unknown content-encoding gets 415", "/v1/responses", map[string]string{"content-encoding": "br"},
			[]byte("\x1b\x00\x00"), http.StatusUnsupportedMediaType, ""},
	} {
		for _, cl := range s.clients() {
			t.Run(tc.name+" over "+cl.name, func(t *testing.T) {
				id := newID(t)
				got := s.send(t, cl.c, http.MethodPost, withID(tc.path, id, ""), tc.header, tc.body)
				if got.status != tc.status {
					t.Fatalf("status %d, want %d: %s", got.status, tc.status, got.body)
				}
				if ct := got.header.Get("content-type"); ct != "application/json" {
					t.Errorf("content-type %q, want application/json", ct)
				}
				if cl := got.header.Get("content-length"); cl != strconv.Itoa(len(got.body)) {
					t.Errorf("content-length %q for a body of %d bytes", cl, len(got.body))
				}
				if !gjsonValid(got.body) {
					t.Fatalf("the body is not JSON: %q", got.body)
				}
				if tc.want != "" && string(got.body) != tc.want {
					t.Errorf("body\n  %s\nwant\n  %s", got.body, tc.want)
				}
				anthropic := strings.HasSuffix(tc.path, "/messages")
				switch {
				case tc.status == http.StatusBadRequest && anthropic:
					if gjson.GetBytes(got.body, "type").Str != "error" || gjson.GetBytes(got.body, "error.type").Str != "invalid_request_error" {
						t.Errorf("want Anthropic's error shape: %s", got.body)
					}
				case tc.status == http.StatusBadRequest:
					if gjson.GetBytes(got.body, "error.code").Str != "invalid_json" || gjson.GetBytes(got.body, "error.type").Str != "invalid_request_error" {
						t.Errorf("want code invalid_json: %s", got.body)
					}
				case tc.status == http.StatusUnsupportedMediaType:
					if gjson.GetBytes(got.body, "error.code").Str != "unsupported_content_encoding" {
						t.Errorf("want code unsupported_content_encoding: %s", got.body)
					}
				}
				s.up.none(t, id)
			})
		}
	}
}

func gjsonValid(b []byte) bool { return gjson.ValidBytes(b) }

// testUnpoliced: paths tiergate does not police, and a GET on one it does,
// pass untouched; on the others, tiergate's mode_override leaves Envoy
// sending it nothing past the request headers.
func testUnpoliced(t *testing.T, s *stack) {
	for _, tc := range []struct {
		name, method, path string
		body               string
		// override: tiergate switches ext_proc off after the headers (a
		// request without a body has nothing to police either).
		override bool
	}{
		{"an unknown path with a tier in its body passes untouched", http.MethodPost, "/v1/embeddings",
			`{"model":"text-embedding-3-small","service_tier":"priority","input":"x"}`, true},
		{"a GET of an unknown path passes untouched", http.MethodGet, "/v1/models", "", true},
		{"a GET on a policed path passes untouched", http.MethodGet, "/v1/chat/completions", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newID(t)
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			sentBefore := s.extprocStat(t, "stream_msgs_sent")
			got := s.send(t, s.h1, tc.method, withID(tc.path, id, ""), nil, body)
			if got.status != http.StatusOK {
				t.Fatalf("status %d: %s", got.status, got.body)
			}
			up := s.up.take(t, id)
			if up.method != tc.method || string(up.body) != tc.body {
				t.Errorf("the upstream received %s %q, want %s %q", up.method, up.body, tc.method, tc.body)
			}
			s.accessLine(t, id) // the stream has ended
			sent := s.extprocStat(t, "stream_msgs_sent") - sentBefore
			if tc.override {
				if sent != 1 {
					t.Errorf("Envoy sent tiergate %d messages, want 1 (the request headers, then mode_override turns it off)", sent)
				}
				// With the response phases off, Envoy does not drop the
				// response's content-length as STREAMED mode does.
				if got.header.Get("content-length") == "" {
					t.Errorf("the response lost its content-length: %v", got.header)
				}
			}
		})
	}
}

// testUsage: usage read through Envoy's STREAMED response path, written
// once per request and into Envoy's access log.
func testUsage(t *testing.T, s *stack) {
	for _, tc := range []struct {
		name, path, reply, body string
		// client is what the client must receive (plain, after gunzip).
		client   string
		gzipped  bool
		upstream func(t *testing.T, body []byte)
		record   map[string]int64
		reported string
	}{
		{name: "a Responses JSON body", path: "/v1/responses", body: `{"model":"gpt-5.4","input":"hi"}`,
			client: responsesJSON, record: map[string]int64{"input_tokens": 21, "cached_input_tokens": 3, "output_tokens": 8, "reasoning_tokens": 2}, reported: "default"},
		{name: "a Chat JSON body", path: "/v1/chat/completions", body: `{"model":"gpt-5.4","messages":[]}`,
			client: chatJSON, record: map[string]int64{"input_tokens": 11, "output_tokens": 7}, reported: "default"},
		{name: "an Anthropic JSON body", path: "/v1/messages", body: `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}`,
			client: messagesJSON, record: map[string]int64{"input_tokens": 31, "output_tokens": 9}},
		{name: "a Chat stream gets include_usage, and its usage chunk is removed", path: "/v1/chat/completions", reply: "sse",
			body:   `{"model":"gpt-5.4","stream":true,"messages":[]}`,
			client: chatChunks + chatDone,
			upstream: func(t *testing.T, b []byte) {
				if !gjson.GetBytes(b, "stream_options.include_usage").Bool() {
					t.Errorf("tiergate did not ask for usage: %s", b)
				}
			},
			record: map[string]int64{"input_tokens": 13, "output_tokens": 5}, reported: "default"},
		{name: "a Chat stream that asked for usage keeps its chunk", path: "/v1/chat/completions", reply: "sse",
			body:   `{"model":"gpt-5.4","stream":true,"stream_options":{"include_usage":true},"messages":[]}`,
			client: chatChunks + chatUsageChunk + chatDone,
			upstream: func(t *testing.T, b []byte) {
				if string(b) != `{"model":"gpt-5.4","stream":true,"stream_options":{"include_usage":true},"messages":[]}` {
					t.Errorf("the body changed: %s", b)
				}
			},
			record: map[string]int64{"input_tokens": 13, "output_tokens": 5}},
		{name: "a Responses stream", path: "/v1/responses", reply: "sse", body: `{"model":"gpt-5.4","stream":true,"input":"hi"}`,
			client: responsesStream, record: map[string]int64{"input_tokens": 37, "cached_input_tokens": 30, "output_tokens": 11, "reasoning_tokens": 5}, reported: "flex"},
		{name: "a gzip'd Responses stream reaches the client gzip'd and is read", path: "/v1/responses", reply: "sse-gzip",
			body: `{"model":"gpt-5.4","stream":true,"input":"hi"}`, gzipped: true,
			client: responsesStream, record: map[string]int64{"input_tokens": 37, "output_tokens": 11}, reported: "flex"},
		{name: "an Anthropic stream", path: "/v1/messages", reply: "sse", body: `{"model":"claude-sonnet-4-5","stream":true,"max_tokens":5,"messages":[]}`,
			client: messagesStream, record: map[string]int64{"input_tokens": 25 + 1024, "cached_input_tokens": 1024, "output_tokens": 15}},
	} {
		for _, cl := range s.clients() {
			t.Run(tc.name+" over "+cl.name, func(t *testing.T) {
				id := newID(t)
				got := s.send(t, cl.c, http.MethodPost, withID(tc.path, id, tc.reply), nil, []byte(tc.body))
				if got.status != http.StatusOK {
					t.Fatalf("status %d: %s", got.status, got.body)
				}
				// STREAMED: Envoy drops the response's content-length (a chunk
				// could change after the headers went), even on a JSON body
				// the upstream sent with one.
				if cl := got.header.Get("content-length"); cl != "" {
					t.Errorf("the client got content-length %s through the STREAMED response path", cl)
				}
				body := got.body
				if tc.gzipped {
					if ce := got.header.Get("content-encoding"); ce != "gzip" {
						t.Errorf("content-encoding %q, want gzip", ce)
					}
					zr, err := gzip.NewReader(bytes.NewReader(body))
					if err != nil {
						t.Fatalf("the client's body is not gzip: %v", err)
					}
					if body, err = io.ReadAll(zr); err != nil {
						t.Fatal(err)
					}
				}
				if string(body) != tc.client {
					t.Errorf("the client received\n%q\nwant\n%q", body, tc.client)
				}
				up := s.up.take(t, id)
				if tc.upstream != nil {
					tc.upstream(t, up.body)
				}
				rid := up.header.Get("x-request-id")
				rec := s.usageRecord(t, rid)
				log := s.accessLine(t, id)
				for k, want := range tc.record {
					if got := rec.Get(k).Int(); got != want || !rec.Get(k).Exists() {
						t.Errorf("usage record %s = %s, want %d (%s)", k, rec.Get(k).Raw, want, rec.Raw)
					}
					if got := log.Get("tiergate." + k).Int(); got != want {
						t.Errorf("access log tiergate.%s = %s, want %d (%s)", k, log.Get("tiergate."+k).Raw, want, log.Raw)
					}
				}
				if tc.reported != "" && rec.Get("service_tier_reported").Str != tc.reported {
					t.Errorf("usage record service_tier_reported %q, want %q", rec.Get("service_tier_reported").Str, tc.reported)
				}
				if log.Get("request_id").Str != rid {
					t.Errorf("access log request_id %q, upstream saw %q", log.Get("request_id").Str, rid)
				}
				if st := log.Get("tiergate.status").Str; st != "completed" {
					t.Errorf("access log tiergate.status %q, want completed", st)
				}
			})
		}
	}
}
