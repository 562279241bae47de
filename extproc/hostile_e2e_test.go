package extproc

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tiergate/tiergate/internal/compresstest"
	"github.com/tiergate/tiergate/policy"
)

// TestHostileRequestsThroughEnvoy drives the classes of input that hostile
// testing found to slip past the policy through envoysim, as Envoy plays
// ext_proc: none may reach the upstream with a tier the policy refuses.
func TestHostileRequestsThroughEnvoy(t *testing.T) {
	t.Parallel()
	const blocked = `{"error":{"message":"priority is reserved","type":"forbidden_error","param":"service_tier","code":"policy_violation"}}`
	cases := []struct {
		name       string
		path       string
		header     map[string]string
		body       string
		status     int
		clientBody string // exact, when tiergate answers itself
		upstream   string // exact body the upstream must see
		outcome    string
		requested  string // the usage record's service_tier_requested, when set
	}{
		{
			name: "an upper-case key is filtered", path: "/v1/chat/completions",
			body:   `{"model":"gpt-4o","SERVICE_TIER":"priority"}`,
			status: 200, upstream: `{"model":"gpt-4o"}`, outcome: outcomeRewritten, requested: "priority",
		},
		{
			name: "the long s, escaped, is filtered", path: "/v1/responses",
			body:   `{"model":"gpt-4o","\u017fervice_tier":"priority"}`,
			status: 200, upstream: `{"model":"gpt-4o"}`, outcome: outcomeRewritten,
		},
		{
			name: "camelCase is filtered", path: "/v1/responses",
			body:   `{"model":"gpt-4o","serviceTier":"priority"}`,
			status: 200, upstream: `{"model":"gpt-4o"}`, outcome: outcomeRewritten, requested: "priority",
		},
		{
			name: "a folded model key is judged", path: "/v1/responses",
			body: `{"Model":"gpt-5.5","service_tier":"priority"}`, status: 403, clientBody: blocked, outcome: outcomeBlocked,
		},
		{
			name: "a folded speed is fast mode", path: "/v1/messages",
			body:   `{"model":"claude-opus-4-6","Speed":"fast"}`,
			status: 200, upstream: `{"model":"claude-opus-4-6"}`, outcome: outcomeRewritten,
		},
		{
			name: "a forced group's folded key is renamed", path: "/v1/responses",
			header: map[string]string{"x-tiergate-group": "codex-fast"},
			body:   `{"model":"gpt-5.5","SERVICE-TIER":"flex"}`,
			status: 200, upstream: `{"model":"gpt-5.5","service_tier":"priority"}`, outcome: outcomeRewritten,
		},
		{
			name: "65 occurrences are refused", path: "/v1/responses",
			body:   `{"model":"gpt-4o"` + strings.Repeat(`,"service_tier":"flex"`, 65) + `}`,
			status: 400, outcome: outcomeInvalid,
			clientBody: `{"error":{"message":"the body repeats service_tier, model, speed or another key tiergate reads more than 64 times","type":"invalid_request_error","param":null,"code":"too_many_occurrences"}}`,
		},
		{
			name: "an Azure deployment is a model candidate", path: "/openai/deployments/gpt-latest/chat/completions?api-version=1",
			body: `{"model":"gpt-4o","service_tier":"priority"}`, status: 403, clientBody: blocked, outcome: outcomeBlocked,
		},
		{
			name: "a fallback's speed is judged against its own model", path: "/v1/messages",
			body:   `{"model":"claude-opus-4-6","fallbacks":[{"model":"claude-haiku-4-5","speed":"fast"}]}`,
			status: 403, outcome: outcomeBlocked,
			clientBody: `{"type":"error","error":{"type":"permission_error","message":"service_tier=priority is not allowed for model claude-haiku-4-5"}}`,
		},
		{
			name: "a trailing slash is policed", path: "/v1/responses/",
			body:   `{"model":"gpt-4o","service_tier":"priority"}`,
			status: 200, upstream: `{"model":"gpt-4o"}`, outcome: outcomeRewritten,
		},
		{
			name: "a path parameter is policed", path: "/v1/chat/completions;x=1",
			body:   `{"model":"gpt-4o","service_tier":"priority"}`,
			status: 200, upstream: `{"model":"gpt-4o"}`, outcome: outcomeRewritten,
		},
		{
			name: "a percent-encoded path is policed", path: "/v1/respons%65s",
			body:   `{"model":"gpt-4o","service_tier":"priority"}`,
			status: 200, upstream: `{"model":"gpt-4o"}`, outcome: outcomeRewritten,
		},
		{
			name: "an upper-case path is policed", path: "/V1/Responses",
			body:   `{"model":"gpt-4o","service_tier":"priority"}`,
			status: 200, upstream: `{"model":"gpt-4o"}`, outcome: outcomeRewritten,
		},
		{
			name: "a messages path with a trailing slash is policed", path: "/v1/messages/",
			body:   `{"model":"claude-opus-4-6","speed":"fast"}`,
			status: 200, upstream: `{"model":"claude-opus-4-6"}`, outcome: outcomeRewritten,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, e2ePolicy)
			_, body := h.doStatus("POST", tc.path, tc.header, []byte(tc.body), tc.status)
			ups := h.upstream()
			if tc.clientBody != "" {
				checkRefused(t, body, tc.clientBody, ups)
			} else if len(ups) != 1 || string(ups[0].body) != tc.upstream {
				t.Fatalf("upstream got %v, want one request with %s", ups, tc.upstream)
			}
			endpoint, _ := policy.ParsePath(tc.path)
			ep := endpoint.String()
			if n := metricValue(t, h.reg, "tiergate_extproc_requests_total", map[string]string{"endpoint": ep, "outcome": tc.outcome}); n != 1 {
				t.Errorf("requests_total{endpoint=%s,outcome=%s} = %v, want 1", ep, tc.outcome, n)
			}
			if tc.requested != "" {
				// The folded key is the tier requested, in the record and
				// in the decision metrics.
				if rec := h.record(1); rec["service_tier_requested"] != tc.requested {
					t.Errorf("record %v, want service_tier_requested %s", rec, tc.requested)
				}
				if n := metricValue(t, h.reg, "tiergate_policy_decisions_total", map[string]string{"endpoint": ep, "action": "filter"}); n != 1 {
					t.Errorf("policy_decisions_total{action=filter} = %v, want 1", n)
				}
			}
		})
	}
}

// TestFailOpenCorners: filter settings and headers that used to let a body
// through unjudged.
func TestFailOpenCorners(t *testing.T) {
	t.Parallel()
	t.Run("a body without request headers is refused as misconfigured", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, e2ePolicy)
		h.proxy.SkipRequestHeaders = true
		resp, body := h.do("POST", "/v1/responses", nil, []byte(`{"model":"gpt-5.5","service_tier":"priority"}`))
		want := `{"error":{"message":"tiergate is misconfigured: the request headers must be sent","type":"server_error","param":null,"code":"tiergate_misconfigured"}}`
		if resp.StatusCode != http.StatusInternalServerError || string(body) != want {
			t.Fatalf("got %d %s, want 500 %s", resp.StatusCode, body, want)
		}
		if ups := h.upstream(); len(ups) != 0 {
			t.Fatalf("the upstream received %d requests, want none", len(ups))
		}
	})
	t.Run("a buffered body followed by trailers is judged", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, e2ePolicy)
		req, err := http.NewRequest("POST", h.url+"/v1/chat/completions",
			io.NopCloser(bytes.NewReader([]byte(`{"model":"gpt-4o","service_tier":"priority"}`))))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1 // chunked, so that trailers can follow
		req.Trailer = http.Header{"X-Checksum": {"abc"}}
		client := &http.Client{Timeout: 20 * time.Second}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d (%s), want 200", resp.StatusCode, got)
		}
		if ups := h.upstream(); len(ups) != 1 || string(ups[0].body) != `{"model":"gpt-4o"}` {
			t.Fatalf("upstream got %v, want the filtered body", ups)
		}
	})
	t.Run("a POST claiming a WebSocket upgrade is judged", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, e2ePolicy)
		headers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":path", RawValue: []byte("/v1/responses")}, {Key: ":method", RawValue: []byte("POST")},
				{Key: "upgrade", RawValue: []byte("websocket")}, {Key: "connection", RawValue: []byte("upgrade")},
			}}}}}
		if a := exchangeByHand(t, h, headers); a.GetModeOverride() != nil {
			t.Fatalf("the headers were answered with a mode_override %v: the body would go unjudged", a.GetModeOverride())
		}
		body := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: []byte(`{"model":"gpt-5.5","service_tier":"priority"}`), EndOfStream: true}}}
		a := exchangeByHand(t, h, headers, body)
		if ir := a.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != http.StatusForbidden {
			t.Fatalf("answer %v, want an immediate 403", a)
		}
	})
	t.Run("a GET claiming an upgrade with a body is judged", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, e2ePolicy)
		headers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":path", RawValue: []byte("/v1/responses")}, {Key: ":method", RawValue: []byte("GET")},
				{Key: "upgrade", RawValue: []byte("websocket")}, {Key: "content-length", RawValue: []byte("45")},
			}}}}}
		if a := exchangeByHand(t, h, headers); a.GetModeOverride() != nil {
			t.Fatalf("the headers were answered with a mode_override %v: the body would go unjudged", a.GetModeOverride())
		}
	})
	t.Run("a GET WebSocket upgrade is left to the bridge", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, e2ePolicy)
		headers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":path", RawValue: []byte("/v1/responses")}, {Key: ":method", RawValue: []byte("GET")},
				{Key: "upgrade", RawValue: []byte("websocket")},
			}}}}}
		if a := exchangeByHand(t, h, headers); a.GetModeOverride() == nil {
			t.Fatalf("a GET upgrade was answered without a mode_override: %v", a)
		}
	})
	t.Run("a content-encoding spread over several lines is read whole", func(t *testing.T) {
		t.Parallel()
		// The upstream undoes the codings of every line; tiergate read
		// only the first, so "identity" then "br" waved through a body
		// it could not decode, and "identity" then "gzip" was refused as
		// invalid JSON instead of judged.
		for _, tc := range []struct {
			name      string
			encodings []string
			body      []byte
			status    int
		}{
			{"an unsupported coding on the second line is refused", []string{"identity", "br"},
				[]byte(`{"model":"gpt-4o","service_tier":"priority"}`), http.StatusUnsupportedMediaType},
			{"gzip on the second line is decoded and judged", []string{"identity", "gzip"},
				compresstest.Gzip([]byte(`{"model":"gpt-5.5","service_tier":"priority"}`)), http.StatusForbidden},
			{"gzip on two lines is decoded twice", []string{"gzip", "gzip"},
				compresstest.Gzip(compresstest.Gzip([]byte(`{"model":"gpt-5.5","service_tier":"priority"}`))), http.StatusForbidden},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, e2ePolicy)
				hv := []*corev3.HeaderValue{{Key: ":path", RawValue: []byte("/v1/responses")}, {Key: ":method", RawValue: []byte("POST")}}
				for _, e := range tc.encodings {
					hv = append(hv, &corev3.HeaderValue{Key: "content-encoding", RawValue: []byte(e)})
				}
				headers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
					Headers: &corev3.HeaderMap{Headers: hv}}}}
				body := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
					RequestBody: &extprocv3.HttpBody{Body: tc.body, EndOfStream: true}}}
				a := exchangeByHand(t, h, headers, body)
				if ir := a.GetImmediateResponse(); ir == nil || int(ir.GetStatus().GetCode()) != tc.status {
					t.Fatalf("answer %v, want an immediate %d", a, tc.status)
				}
			})
		}
	})
	t.Run("a policed request whose body the filter will not send is refused at its headers", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, e2ePolicy)
		first := &extprocv3.ProcessingRequest{
			Request:        &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: requestHeaders("/v1/responses").GetRequestHeaders()},
			ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: filterv3.ProcessingMode_NONE},
		}
		a := exchangeByHand(t, h, first)
		if ir := a.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != http.StatusInternalServerError {
			t.Fatalf("answer %v, want an immediate 500: the body would go upstream unjudged", a)
		}
	})
	t.Run("a request without a body passes with the body mode NONE", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, e2ePolicy)
		hdrs := requestHeaders("/v1/responses").GetRequestHeaders()
		hdrs.EndOfStream = true
		first := &extprocv3.ProcessingRequest{
			Request:        &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs},
			ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: filterv3.ProcessingMode_NONE},
		}
		if a := exchangeByHand(t, h, first); a.GetImmediateResponse() != nil {
			t.Fatalf("answer %v, want the headers continued", a)
		}
	})
	t.Run("a second body message is refused as misconfigured", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, e2ePolicy)
		first := &extprocv3.ProcessingRequest{
			Request:        &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: requestHeaders("/v1/responses").GetRequestHeaders()},
			ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: filterv3.ProcessingMode_BUFFERED},
		}
		chunk := func(b string) *extprocv3.ProcessingRequest {
			return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
				RequestBody: &extprocv3.HttpBody{Body: []byte(b)}}}
		}
		a := exchangeByHand(t, h, first, chunk(`{"model":"gpt-4o"}`), chunk(`{"service_tier":"priority"}`))
		if ir := a.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != http.StatusInternalServerError {
			t.Fatalf("answer to a second chunk %v, want an immediate 500", a)
		}
	})
}
