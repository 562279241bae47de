package extproc

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tiergate/tiergate/internal/compresstest"
	"github.com/tiergate/tiergate/policy"
)

const e2ePolicy = `
identity: {group_header: x-tiergate-group}
groups:
- {name: codex-fast, force_service_tier: priority}
model_aliases: {gpt-latest: gpt-5.5}
rules:
- {name: fast-ok, service_tier: priority, action: pass, groups: [codex-fast]}
- {name: no-priority-55, service_tier: priority, action: block, model_whitelist: [gpt-5.5], error_message: "priority is reserved"}
- {name: no-fast-haiku, service_tier: priority, action: block, model_whitelist: ["claude-haiku-*"], endpoints: [messages]}
- {name: strip, service_tier: priority, action: filter}
`

// TestRequestPolicyThroughEnvoy drives each endpoint and action through a
// real gRPC connection, with envoysim applying tiergate's answers as Envoy
// does (including its content-length check on body mutations).
func TestRequestPolicyThroughEnvoy(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		method     string
		path       string
		header     map[string]string
		body       []byte
		status     int
		clientBody string // exact, when the client gets tiergate's answer
		upstream   string // exact body the upstream must see; "" = nothing reached it
		upHeader   map[string]string
		outcome    string
		record     map[string]any
	}{
		{
			name: "chat completions: priority is filtered", method: "POST", path: "/v1/chat/completions",
			body:   []byte(`{"model":"gpt-4o","service_tier":"priority","messages":[]}`),
			status: 200, upstream: `{"model":"gpt-4o","messages":[]}`, outcome: outcomeRewritten,
			record: map[string]any{"action": "filter", "rule": "strip", "service_tier_requested": "priority", "service_tier_sent": "none", "status": "completed"},
		},
		{
			name: "responses: a blocked tier never reaches the upstream", method: "POST", path: "/v1/responses",
			body:       []byte(`{"model":"gpt-5.5","service_tier":"fast","input":"hi"}`),
			status:     403,
			clientBody: `{"error":{"message":"priority is reserved","type":"forbidden_error","param":"service_tier","code":"policy_violation"}}`,
			outcome:    outcomeBlocked,
			record:     map[string]any{"action": "block", "rule": "no-priority-55", "status": "blocked", "http_status": 403.0, "service_tier_sent": "none"},
		},
		{
			name: "responses compact behind an Azure-style prefix is policed", method: "POST", path: "/openai/v1/responses/compact?api-version=x",
			body:   []byte(`{"model":"gpt-5.1-codex-max","service_tier":"priority","input":[]}`),
			status: 200, upstream: `{"model":"gpt-5.1-codex-max","input":[]}`, outcome: outcomeRewritten,
		},
		{
			name: "a model alias is matched as its target", method: "POST", path: "/v1/responses",
			body: []byte(`{"model":"gpt-latest","service_tier":"priority"}`), status: 403, outcome: outcomeBlocked,
			clientBody: `{"error":{"message":"priority is reserved","type":"forbidden_error","param":"service_tier","code":"policy_violation"}}`,
		},
		{
			name: "group force adds the tier and the group header stays out of the upstream", method: "POST", path: "/v1/responses",
			header: map[string]string{"x-tiergate-group": "codex-fast"},
			body:   []byte(`{"model":"gpt-5.5","input":"hi"}`),
			status: 200, upstream: `{"model":"gpt-5.5","input":"hi","service_tier":"priority"}`,
			upHeader: map[string]string{"X-Tiergate-Group": ""}, outcome: outcomeRewritten,
			record: map[string]any{"group": "codex-fast", "action": "pass", "rule": "fast-ok", "service_tier_requested": "none", "service_tier_sent": "priority"},
		},
		{
			name: "a canonical pass is forwarded untouched", method: "POST", path: "/v1/responses",
			header: map[string]string{"x-tiergate-group": "codex-fast"},
			body:   []byte(`{"model":"gpt-5.5","service_tier":"priority"}`),
			status: 200, upstream: `{"model":"gpt-5.5","service_tier":"priority"}`, outcome: outcomeForwarded,
		},
		{
			name: "anthropic: fast mode is filtered from the body and the beta header", method: "POST", path: "/v1/messages?beta=true",
			header: map[string]string{"anthropic-beta": "fast-mode-2026-02-01,interleaved-thinking-2025-05-14", "x-api-key": "sk-ant-x"},
			body:   []byte(`{"model":"claude-opus-4-6","max_tokens":5,"speed":"fast","messages":[]}`),
			status: 200, upstream: `{"model":"claude-opus-4-6","max_tokens":5,"messages":[]}`,
			upHeader: map[string]string{"Anthropic-Beta": "interleaved-thinking-2025-05-14", "X-Api-Key": "sk-ant-x"}, outcome: outcomeRewritten,
		},
		{
			name: "anthropic: a beta header of fast mode only is removed", method: "POST", path: "/v1/messages",
			header: map[string]string{"anthropic-beta": "fast-mode-2026-02-01"},
			body:   []byte(`{"model":"claude-opus-4-6","max_tokens":5,"messages":[]}`),
			status: 200, upstream: `{"model":"claude-opus-4-6","max_tokens":5,"messages":[]}`,
			upHeader: map[string]string{"Anthropic-Beta": ""}, outcome: outcomeRewritten,
		},
		{
			name: "anthropic: a block uses Anthropic's error shape", method: "POST", path: "/v1/messages",
			body:   []byte(`{"model":"claude-haiku-4-5","max_tokens":5,"speed":"fast","messages":[]}`),
			status: 403, outcome: outcomeBlocked,
			clientBody: `{"type":"error","error":{"type":"permission_error","message":"service_tier=priority is not allowed for model claude-haiku-4-5"}}`,
		},
		{
			name: "a gzip body is decoded, policed and forwarded decoded", method: "POST", path: "/v1/chat/completions",
			header: map[string]string{"content-encoding": "gzip"},
			body:   compresstest.Gzip([]byte(`{"model":"gpt-4o","service_tier":"priority"}`)),
			status: 200, upstream: `{"model":"gpt-4o"}`, upHeader: map[string]string{"Content-Encoding": ""}, outcome: outcomeRewritten,
		},
		{
			name: "invalid JSON is refused with 400", method: "POST", path: "/v1/chat/completions",
			body: []byte(`{"model":"gpt-4o","service_tier":"priority"`), status: 400, outcome: outcomeInvalid,
			clientBody: `{"error":{"message":"the request body is not valid JSON: invalid JSON at byte 43","type":"invalid_request_error","param":null,"code":"invalid_json"}}`,
			record:     map[string]any{"status": "refused", "http_status": 400.0},
		},
		{
			name: "an unsupported encoding is refused with 415", method: "POST", path: "/v1/responses",
			header: map[string]string{"content-encoding": "zstd"}, body: []byte("\x28\xb5\x2f\xfd"), status: 415, outcome: outcomeUnsupported,
			clientBody: `{"error":{"message":"content-encoding \"zstd\" is not supported; send the body uncompressed, gzip or deflate","type":"invalid_request_error","param":null,"code":"unsupported_content_encoding"}}`,
		},
		{
			name: "an unknown path passes untouched", method: "POST", path: "/v1/embeddings",
			body:   []byte(`{"model":"text-embedding-3","service_tier":"priority","input":"x"}`),
			status: 200, upstream: `{"model":"text-embedding-3","service_tier":"priority","input":"x"}`, outcome: outcomeUnpoliced,
		},
		{
			name: "a request without a body passes untouched", method: "GET", path: "/v1/chat/completions?limit=2",
			status: 200, upstream: ``, outcome: outcomeUnpoliced,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, e2ePolicy)
			resp, body := h.doStatus(tc.method, tc.path, tc.header, tc.body, tc.status)
			ups := h.upstream()
			if tc.clientBody != "" {
				if ct := resp.Header.Get("content-type"); ct != "application/json" {
					t.Errorf("content-type %q", ct)
				}
				checkRefused(t, body, tc.clientBody, ups)
			} else {
				if len(ups) != 1 {
					t.Fatalf("the upstream received %d requests, want 1", len(ups))
				}
				if string(ups[0].body) != tc.upstream {
					t.Errorf("upstream body:\n got %s\nwant %s", ups[0].body, tc.upstream)
				}
				if cl := ups[0].header.Get("content-length"); cl != "" && cl != strconv.Itoa(len(ups[0].body)) {
					t.Errorf("upstream content-length %s for %d bytes", cl, len(ups[0].body))
				}
				for k, v := range tc.upHeader {
					if got := ups[0].header.Get(k); got != v {
						t.Errorf("upstream header %s = %q, want %q", k, got, v)
					}
				}
			}
			endpoint, _ := policy.ParsePath(tc.path)
			ep := endpoint.String()
			if n := testutil.ToFloat64(h.srv.metrics.requests.WithLabelValues(ep, tc.outcome)); n != 1 {
				t.Errorf("requests_total{endpoint=%s,outcome=%s} = %v, want 1", ep, tc.outcome, n)
			}
			if tc.outcome == outcomeUnpoliced {
				if recs := records(t, h.usageLog); len(recs) != 0 {
					t.Errorf("an unpoliced request wrote %d usage records", len(recs))
				}
				return
			}
			rec := h.record(1)
			for k, v := range tc.record {
				if fmt.Sprint(rec[k]) != fmt.Sprint(v) {
					t.Errorf("record[%s] = %v, want %v (record %v)", k, rec[k], v, rec)
				}
			}
			// The decision is counted once, under its own labels.
			if action, ok := tc.record["action"].(string); ok {
				labels := map[string]string{"endpoint": ep, "action": action}
				if rule, ok := tc.record["rule"].(string); ok {
					labels["rule"] = rule
				}
				if n := metricValue(t, h.reg, "tiergate_policy_decisions_total", labels); n != 1 {
					t.Errorf("policy_decisions_total%v = %v, want 1", labels, n)
				}
			}
		})
	}
}

// TestTrailersOnAnUnpolicedStream: Envoy may send trailers on a stream
// tiergate never policed; that must be answered, not crash the server.
func TestTrailersOnAnUnpolicedStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "")
	stream, err := h.proxy.Client.Process(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":path", RawValue: []byte("/v1/models")}}}}}},
		{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
	} {
		if err := stream.Send(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("answer to %T: %v", msg.Request, err)
		}
	}
	_ = stream.CloseSend()
}

// TestStreamedRequestBodyIsRefused: a filter set to send the request body
// in chunks (not BUFFERED) would forward what it cannot judge, so the
// first chunk is answered with a 500 in the endpoint's own error shape
// (a server error, not a policy block) and counted as an error.
func TestStreamedRequestBodyIsRefused(t *testing.T) {
	t.Parallel()
	const msg = "tiergate is misconfigured: the request body must be BUFFERED"
	for _, tc := range []struct {
		path, endpoint, body string
	}{
		{"/v1/responses", "responses", `{"error":{"message":"` + msg + `","type":"server_error","param":null,"code":"tiergate_misconfigured"}}`},
		{"/v1/messages", "messages", `{"type":"error","error":{"type":"api_error","message":"` + msg + `"}}`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, "")
			chunk := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
				RequestBody: &extprocv3.HttpBody{Body: []byte(`{"model":"gpt-5.5",`), EndOfStream: false}}}
			answer := exchangeByHand(t, h, requestHeaders(tc.path), chunk)
			ir := answer.GetImmediateResponse()
			if ir == nil || ir.GetStatus().GetCode() != 500 || string(ir.GetBody()) != tc.body {
				t.Fatalf("answer to a streamed chunk = %v, want an immediate 500 with %s", answer, tc.body)
			}
			if n := metricValue(t, h.reg, "tiergate_extproc_requests_total", map[string]string{"endpoint": tc.endpoint, "outcome": "error"}); n != 1 {
				t.Errorf("requests{outcome=error} = %v, want 1", n)
			}
		})
	}
}

// TestUsageMetadataWhenTheResponseEndsEarly: a response that ends at its
// headers (no body) or at its trailers still hands Envoy its usage
// metadata, on the answer to that last message, and gets its one record.
func TestUsageMetadataWhenTheResponseEndsEarly(t *testing.T) {
	t.Parallel()
	respHeaders := func(end bool) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":status", RawValue: []byte("200")}, {Key: "content-type", RawValue: []byte("application/json")}}},
			EndOfStream: end}}}
	}
	chunk := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: []byte(`{"id":"resp_1","usage":{"input_tokens":7,"output_tokens":2}}`)}}}
	trailers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{
		ResponseTrailers: &extprocv3.HttpTrailers{Trailers: &corev3.HeaderMap{}}}}
	for _, tc := range []struct {
		name     string
		response []*extprocv3.ProcessingRequest
		input    float64 // the usage's input_tokens; 0 for none
	}{
		{"ends at its headers", []*extprocv3.ProcessingRequest{respHeaders(true)}, 0},
		{"ends at its trailers", []*extprocv3.ProcessingRequest{respHeaders(false), chunk, trailers}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, "rules: []")
			body := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
				RequestBody: &extprocv3.HttpBody{Body: []byte(`{"model":"gpt-5.5"}`), EndOfStream: true}}}
			answer := exchangeByHand(t, h, append([]*extprocv3.ProcessingRequest{requestHeaders("/v1/responses"), body}, tc.response...)...)
			us := answer.GetDynamicMetadata().GetFields()["tiergate"].GetStructValue()
			if us == nil || us.Fields["status"].GetStringValue() == "" {
				t.Fatalf("the answer to the last message carries %v; want the usage metadata", answer.GetDynamicMetadata())
			}
			if got := us.Fields["input_tokens"].GetNumberValue(); got != tc.input {
				t.Errorf("usage metadata input_tokens %v; want %v (%v)", got, tc.input, us)
			}
			if rec := h.record(1); rec["http_status"] != 200.0 {
				t.Errorf("record %v; want one, with http_status 200", rec)
			}
		})
	}
}

// requestHeaders is a POST's request_headers message for path.
func requestHeaders(path string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":path", RawValue: []byte(path)}, {Key: ":method", RawValue: []byte("POST")}}}}}}
}

// exchangeByHand sends msgs on one stream to h's server, as Envoy would
// but without its proxy, awaiting each answer; it returns the last.
func exchangeByHand(t *testing.T, h *harness, msgs ...*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	t.Helper()
	stream, err := h.proxy.Client.Process(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stream.CloseSend() }()
	var answer *extprocv3.ProcessingResponse
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
		if answer, err = stream.Recv(); err != nil {
			t.Fatalf("answer to %T: %v", m.Request, err)
		}
	}
	return answer
}
