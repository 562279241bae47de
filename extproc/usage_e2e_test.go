package extproc

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/compresstest"
	"github.com/tiergate/tiergate/internal/contentcoding"
)

const chatStream = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"service_tier\":\"default\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n" +
	"data:{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"service_tier\":\"default\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\r\n\r\n" +
	"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"service_tier\":\"default\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21,\"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":2}}}\r\n\r\n" +
	"data: [DONE]\r\n\r\n"

const responsesStream = "event: response.created\n" +
	"data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"model\":\"gpt-5.5-2026\",\"usage\":null}}\n\n" +
	"event: response.output_text.delta\n" +
	"data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n" +
	"event: response.completed\n" +
	"data: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"model\":\"gpt-5.5-2026\",\"service_tier\":\"flex\",\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":30,\"cache_write_tokens\":0},\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":5},\"total_tokens\":48}}}\n\n"

const messagesStream = "event: message_start\n" +
	"data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-opus-4-6\",\"content\":[],\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":1024,\"service_tier\":\"standard\",\"speed\":\"fast\"}}}\n\n" +
	"event: ping\ndata: {\"type\":\"ping\"}\n\n" +
	"event: content_block_delta\n" +
	"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
	"event: message_delta\n" +
	"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n" +
	"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

func sse(body string, sizes ...int) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "text/event-stream")
		writeChunks(w, []byte(body), sizes...)
	}
}

// TestUsageAccounting reads usage from every response shape, through the
// STREAMED response phase, and checks the record and the token counter.
func TestUsageAccounting(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		path       string
		header     map[string]string
		body       string
		respond    func(http.ResponseWriter, *http.Request)
		clientSees func(t *testing.T, body []byte)
		record     map[string]any
		tokens     map[string]float64 // type -> tiergate_tokens_total for this request's labels
		labels     []string           // endpoint, model, service_tier, group
	}{
		{
			name: "a Responses JSON body", path: "/v1/responses",
			body: `{"model":"gpt-5.5","input":"hi"}`,
			respond: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("content-type", "application/json")
				_, _ = w.Write([]byte(`{"id":"resp_9","object":"response","status":"completed","model":"gpt-5.5-2026","service_tier":"default","usage":{"input_tokens":8438,"input_tokens_details":{"cached_tokens":8192},"output_tokens":398,"output_tokens_details":{"reasoning_tokens":256},"total_tokens":8836}}`))
			},
			record: map[string]any{"response_id": "resp_9", "response_model": "gpt-5.5-2026", "service_tier_reported": "default",
				"input_tokens": 8438.0, "cached_input_tokens": 8192.0, "output_tokens": 398.0, "reasoning_tokens": 256.0, "status": "completed", "stream": false, "http_status": 200.0},
			tokens: map[string]float64{"input": 8438, "cached_input": 8192, "output": 398, "reasoning": 256},
			labels: []string{"responses", "other", "default", "none"},
		},
		{
			name: "a Chat stream split at awkward bytes, with tiergate's usage chunk removed", path: "/v1/chat/completions",
			body:    `{"model":"gpt-4o-mini","stream":true,"messages":[]}`,
			respond: sse(chatStream, 1, 7, 13, 2, 64),
			clientSees: func(t *testing.T, b []byte) {
				if strings.Contains(string(b), `"usage":{`) || !strings.Contains(string(b), `"content":"lo"`) || !strings.HasSuffix(string(b), "data: [DONE]\r\n\r\n") {
					t.Errorf("client stream should lack only the usage chunk:\n%q", b)
				}
			},
			record: map[string]any{"input_tokens": 9.0, "cached_input_tokens": 4.0, "output_tokens": 12.0, "reasoning_tokens": 2.0, "stream": true, "service_tier_reported": "default", "status": "completed"},
			tokens: map[string]float64{"input": 9, "output": 12},
			labels: []string{"chat_completions", "other", "default", "none"},
		},
		{
			name: "a Chat client that asked for usage keeps its usage chunk", path: "/v1/chat/completions",
			body:    `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}`,
			respond: sse(chatStream, 50),
			clientSees: func(t *testing.T, b []byte) {
				if string(b) != chatStream {
					t.Errorf("client stream changed:\n%q", b)
				}
			},
			record: map[string]any{"input_tokens": 9.0, "output_tokens": 12.0},
		},
		{
			name: "a gzip'd Responses stream is decoded for usage and reaches the client unchanged", path: "/v1/responses",
			body: `{"model":"gpt-5.5","stream":true,"input":"hi"}`,
			respond: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("content-type", "text/event-stream")
				w.Header().Set("content-encoding", "gzip")
				writeChunks(w, compresstest.Gzip([]byte(responsesStream)), 3, 17, 5)
			},
			clientSees: func(t *testing.T, b []byte) {
				zr, err := gzip.NewReader(bytes.NewReader(b))
				if err != nil {
					t.Fatalf("client body is not gzip: %v", err)
				}
				plain, _ := io.ReadAll(zr)
				if string(plain) != responsesStream {
					t.Errorf("client stream changed")
				}
			},
			record: map[string]any{"response_id": "resp_1", "input_tokens": 37.0, "cached_input_tokens": 30.0, "output_tokens": 11.0, "reasoning_tokens": 5.0, "service_tier_reported": "flex", "status": "completed"},
			tokens: map[string]float64{"input": 37, "reasoning": 5},
			labels: []string{"responses", "other", "flex", "none"},
		},
		{
			// Codings are undone last-listed first, each layer streaming
			// into the next; identity in the list is no layer.
			name: "a stacked deflate, gzip JSON body is decoded for usage", path: "/v1/responses",
			body: `{"model":"gpt-5.5","input":"hi"}`,
			respond: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("content-type", "application/json")
				w.Header().Set("content-encoding", "deflate, gzip")
				writeChunks(w, compresstest.Gzip(compresstest.Zlib([]byte(`{"id":"resp_7","object":"response","status":"completed","model":"gpt-5.5-2026","usage":{"input_tokens":21,"output_tokens":3}}`))), 4, 9)
			},
			record: map[string]any{"response_id": "resp_7", "input_tokens": 21.0, "output_tokens": 3.0, "status": "completed"},
		},
		{
			name: "a gzip, identity stream is decoded for usage", path: "/v1/responses",
			body: `{"model":"gpt-5.5","stream":true,"input":"hi"}`,
			respond: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("content-type", "text/event-stream")
				w.Header().Set("content-encoding", "gzip, identity")
				writeChunks(w, compresstest.Gzip([]byte(responsesStream)), 11)
			},
			record: map[string]any{"response_id": "resp_1", "input_tokens": 37.0, "output_tokens": 11.0, "status": "completed"},
		},
		{
			name: "an Anthropic stream counts cache reads and writes as input", path: "/v1/messages",
			body:    `{"model":"claude-opus-4-6","max_tokens":64,"stream":true,"messages":[]}`,
			respond: sse(messagesStream, 9, 31),
			record: map[string]any{"response_id": "msg_01", "input_tokens": 1059.0, "cached_input_tokens": 1024.0, "output_tokens": 15.0,
				"service_tier_reported": "priority", "status": "completed", "stream": true},
			tokens: map[string]float64{"input": 1059, "output": 15},
			labels: []string{"messages", "other", "priority", "none"},
		},
		{
			name: "an upstream error is recorded with its status", path: "/v1/responses",
			body: `{"model":"gpt-5.5","input":"hi"}`,
			respond: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("content-type", "application/json")
				w.WriteHeader(429)
				_, _ = w.Write([]byte(`{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":null}}`))
			},
			record: map[string]any{"status": "upstream_error", "http_status": 429.0},
		},
		{
			name: "a stream cut before its usage is recorded as such", path: "/v1/responses",
			body:    `{"model":"gpt-5.5","stream":true,"input":"hi"}`,
			respond: sse(responsesStream[:strings.Index(responsesStream, "event: response.completed")], 40),
			record:  map[string]any{"status": "upstream_closed", "response_id": "resp_1"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, "rules: []")
			h.setResponse(tc.respond)
			resp, body := h.do("POST", tc.path, tc.header, []byte(tc.body))
			if tc.clientSees != nil {
				tc.clientSees(t, body)
			}
			_ = resp
			rec := h.record(1)
			for k, v := range tc.record {
				if fmt.Sprint(rec[k]) != fmt.Sprint(v) {
					t.Errorf("record[%s] = %v, want %v\nrecord: %v", k, rec[k], v, rec)
				}
			}
			if _, ok := rec["duration_ms"]; !ok {
				t.Errorf("record has no duration_ms")
			}
			for typ, want := range tc.tokens {
				got := metricValue(t, h.reg, "tiergate_tokens_total", map[string]string{
					"endpoint": tc.labels[0], "model": tc.labels[1], "service_tier": tc.labels[2], "group": tc.labels[3], "type": typ})
				if got != want {
					t.Errorf("tiergate_tokens_total{%v,type=%s} = %v, want %v", tc.labels, typ, got, want)
				}
			}
		})
	}
}

// TestIncludeUsageIsAddedUpstream checks what tiergate sends for a streamed
// Chat request that did not ask for usage.
func TestIncludeUsageIsAddedUpstream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "rules: []")
	h.setResponse(sse(chatStream, 100))
	h.do("POST", "/v1/chat/completions", map[string]string{"accept-encoding": "gzip"}, []byte(`{"model":"m","stream":true,"messages":[]}`))
	up := h.upstream()[0]
	if !gjson.GetBytes(up.body, "stream_options.include_usage").Bool() {
		t.Fatalf("upstream body lacks include_usage: %s", up.body)
	}
	if ae := up.header.Get("accept-encoding"); ae != "identity" {
		t.Fatalf("upstream accept-encoding = %q, want identity (the stream must be readable to filter it)", ae)
	}
}

func TestDynamicMetadata(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "")
	h.setResponse(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"id":"resp_1","service_tier":"default","usage":{"input_tokens":12,"output_tokens":3}}`))
	})
	h.do("POST", "/v1/responses", nil, []byte(`{"model":"gpt-5.5","service_tier":"priority"}`))
	md := h.proxy.Metadata()
	if len(md) != 2 {
		t.Fatalf("got %d metadata messages, want the decision and the usage", len(md))
	}
	ns := md[0].Fields["tiergate"].GetStructValue()
	for k, want := range map[string]string{"action": "filter", "service_tier_requested": "priority", "service_tier_sent": "none", "rule": "#1", "endpoint": "responses", "model": "gpt-5.5"} {
		if got := ns.Fields[k].GetStringValue(); got != want {
			t.Errorf("metadata tiergate.%s = %q, want %q", k, got, want)
		}
	}
	us := md[1].Fields["tiergate"].GetStructValue()
	if us.Fields["input_tokens"].GetNumberValue() != 12 || us.Fields["output_tokens"].GetNumberValue() != 3 ||
		us.Fields["service_tier_reported"].GetStringValue() != "default" || us.Fields["status"].GetStringValue() != "completed" {
		t.Errorf("usage metadata = %v", us)
	}
	if _, ok := us.Fields["reasoning_tokens"]; ok {
		t.Errorf("an unknown count must be absent from the metadata: %v", us)
	}
}

// TestDynamicMetadataOnRefusals: a request tiergate answers itself still
// hands Envoy its decision (access logs and rate limits want the blocks
// most), and nothing else: no response phase runs.
func TestDynamicMetadataOnRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		header map[string]string
		body   string
		status int
		want   map[string]string
	}{
		{"blocked", nil, `{"model":"gpt-5.5","service_tier":"priority"}`, 403,
			map[string]string{"action": "block", "service_tier_requested": "priority", "service_tier_sent": "none", "rule": "no-priority-55", "endpoint": "responses", "model": "gpt-5.5"}},
		// A body that cannot be read is refused before any rule: no model,
		// tier or rule, the action block (as its usage record says).
		{"unsupported coding", map[string]string{"content-encoding": "br"}, `{"model":"gpt-5.5","service_tier":"priority"}`, 415,
			map[string]string{"action": "block", "service_tier_requested": "none", "service_tier_sent": "none", "rule": "", "endpoint": "responses", "model": ""}},
		{"invalid JSON", nil, `{"model":"gpt-5.5",`, 400,
			map[string]string{"action": "block", "service_tier_requested": "none", "service_tier_sent": "none", "rule": "", "endpoint": "responses", "model": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, e2ePolicy)
			h.doStatus("POST", "/v1/responses", tc.header, []byte(tc.body), tc.status)
			md := h.proxy.Metadata()
			if len(md) != 1 {
				t.Fatalf("got %d metadata messages, want the decision alone", len(md))
			}
			ns := md[0].Fields["tiergate"].GetStructValue()
			for k, want := range tc.want {
				if got, ok := ns.Fields[k]; !ok || got.GetStringValue() != want {
					t.Errorf("metadata tiergate.%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestLargeJSONResponseIsReadWithoutBeingHeld: a JSON response longer than
// --max-usage-bytes reaches the client whole and its usage is still read,
// pruned as it passes; only one whose usage members do not fit either is
// counted as too large.
func TestLargeJSONResponseIsReadWithoutBeingHeld(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "rules: []") // MaxUsageBytes is 1 MiB in the harness
	output := `"output":"` + strings.Repeat("x", 2<<20) + `",`
	for i, tc := range []struct {
		body     string
		read     bool
		tooLarge float64
	}{
		{`{"id":"resp_big",` + output + `"usage":{"input_tokens":1,"output_tokens":1}}`, true, 0},
		{`{"id":"` + strings.Repeat("i", 100<<10) + `",` + output + `"usage":{"input_tokens":1,"output_tokens":1}}`, false, 1},
	} {
		h.setResponse(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("content-type", "application/json")
			_, _ = w.Write([]byte(tc.body))
		})
		resp, body := h.do("POST", "/v1/responses", nil, []byte(`{"model":"m"}`))
		if resp.StatusCode != 200 || len(body) != len(tc.body) {
			t.Fatalf("client got %d with %d bytes, want the whole %d", resp.StatusCode, len(body), len(tc.body))
		}
		rec := h.record(i + 1)
		if _, ok := rec["input_tokens"]; ok != tc.read {
			t.Errorf("body %d: usage read %v, want %v; record %v", i, ok, tc.read, rec)
		}
		if n := testutil.ToFloat64(h.srv.metrics.usageUnknown.WithLabelValues("responses", unknownTooLarge)); n != tc.tooLarge {
			t.Errorf("body %d: usage_unknown_total{reason=too_large} = %v, want %v", i, n, tc.tooLarge)
		}
	}
}

// TestStackedResponseCodingsAreBounded: a response's codings are undone to
// read its usage, a decompressor per coding, so they are bounded as a
// request's are (contentcoding.MaxCodings): an upstream (or whatever sits
// before it) that stacks more gets its usage counted unknown for its
// encoding, built no decoder, and the client still gets the body unchanged.
func TestStackedResponseCodingsAreBounded(t *testing.T) {
	t.Parallel()
	const jsonBody = `{"id":"resp_5","object":"response","status":"completed","usage":{"input_tokens":5,"output_tokens":2}}`
	gzipN := func(n int) []byte {
		b := []byte(jsonBody)
		for range n {
			b = compresstest.Gzip(b)
		}
		return b
	}
	for _, tc := range []struct {
		name     string
		encoding string
		body     []byte
		known    bool
	}{
		{"a response at the cap is decoded for usage", strings.Repeat("gzip,", contentcoding.MaxCodings-1) + "gzip", gzipN(contentcoding.MaxCodings), true},
		{"a response one coding over the cap is not decoded", strings.Repeat("gzip,", contentcoding.MaxCodings) + "gzip", gzipN(contentcoding.MaxCodings + 1), false},
		{"thousands of deflate codings over two bytes are not decoded", strings.TrimSuffix(strings.Repeat("deflate,", 7500), ","), []byte("{}"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, "rules: []")
			h.setResponse(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("content-type", "application/json")
				w.Header().Set("content-encoding", tc.encoding)
				_, _ = w.Write(tc.body)
			})
			resp, body := h.do("POST", "/v1/responses", nil, []byte(`{"model":"m"}`))
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, tc.body) {
				t.Fatalf("client got %d with %d bytes, want 200 and the body unchanged", resp.StatusCode, len(body))
			}
			rec := h.record(1)
			if _, ok := rec["input_tokens"]; ok != tc.known {
				t.Errorf("input_tokens known = %v, want %v; record %v", ok, tc.known, rec)
			}
			unknown := testutil.ToFloat64(h.srv.metrics.usageUnknown.WithLabelValues("responses", unknownEncoding))
			if want := map[bool]float64{true: 0, false: 1}[tc.known]; unknown != want {
				t.Errorf("usage_unknown_total{reason=encoding} = %v, want %v", unknown, want)
			}
		})
	}
}

// TestClientGoneMidStream: a client that leaves during a gzip'd stream gets
// a record saying so, and the decoder goroutine does not outlive the stream.
func TestClientGoneMidStream(t *testing.T) {
	h := newHarness(t, "rules: []")
	release := make(chan struct{})
	h.setResponse(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/event-stream")
		w.Header().Set("content-encoding", "gzip")
		zw := gzip.NewWriter(w)
		_, _ = zw.Write([]byte(responsesStream[:200]))
		_ = zw.Flush()
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", h.url+"/v1/responses", strings.NewReader(`{"model":"m","stream":true}`))
	resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	_, _ = resp.Body.Read(buf)
	cancel()
	_ = resp.Body.Close()
	rec := h.record(1)
	if rec["status"] != "client_closed" {
		t.Errorf("record status = %v, want client_closed", rec["status"])
	}
	close(release)
	// Neither the stream's handler nor its decoder may outlive the stream.
	leaked := func() string {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "extproc.newStreamDecoder") || strings.Contains(g, "extproc.(*Server).Process") {
				return g
			}
		}
		return ""
	}
	deadline := time.Now().Add(5 * time.Second)
	for leaked() != "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if g := leaked(); g != "" {
		t.Fatalf("a goroutine outlived its stream:\n%s", g)
	}
	if n := testutil.ToFloat64(h.srv.metrics.streams); n != 0 {
		t.Fatalf("streams_active = %v after the stream closed", n)
	}
}
