package extproc

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tiergate/tiergate/policy"
)

// TestMessageBatchesArePoliced: a Message Batches create is judged entry by
// entry on its way through Envoy, refused in Anthropic's shape when an
// entry is blocked, and recorded under message_batches without counting
// its answer's missing usage as unknown (a batch's usage comes later, with
// results tiergate does not see).
func TestMessageBatchesArePoliced(t *testing.T) {
	t.Parallel()
	const policyYAML = `
rules:
- {name: no-fast-haiku, service_tier: priority, action: block, model_whitelist: ["claude-haiku-*"]}
- {name: strip-fast, service_tier: priority, action: filter}
`
	const batchAnswer = `{"id":"msgbatch_01","type":"message_batch","processing_status":"in_progress"}`
	cases := []struct {
		name     string
		body     string
		beta     string
		status   int
		upstream string // the body the provider receives; "" = nothing reaches it
		upBeta   string
		record   map[string]string
	}{
		{
			name:     "fast mode is filtered out of each entry and the header",
			body:     `{"requests":[{"custom_id":"a","params":{"model":"claude-opus-4-6","max_tokens":8,"speed":"fast","messages":[]}}]}`,
			beta:     "fast-mode-2026-02-01,message-batches-2024-09-24",
			status:   http.StatusOK,
			upstream: `{"requests":[{"custom_id":"a","params":{"model":"claude-opus-4-6","max_tokens":8,"messages":[]}}]}`,
			upBeta:   "message-batches-2024-09-24",
			record: map[string]string{"endpoint": "message_batches", "action": "filter", "rule": "strip-fast",
				"service_tier_requested": "priority", "service_tier_sent": "none", "model": "claude-opus-4-6", "status": "completed"},
		},
		{
			name:   "a blocked entry refuses the batch",
			body:   `{"requests":[{"custom_id":"a","params":{"model":"claude-opus-4-6"}},{"custom_id":"b","params":{"model":"claude-haiku-4-5","speed":"fast"}}]}`,
			status: http.StatusForbidden,
			record: map[string]string{"endpoint": "message_batches", "action": "block", "rule": "no-fast-haiku", "status": "blocked"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, policyYAML)
			h.setResponse(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("content-type", "application/json")
				_, _ = w.Write([]byte(batchAnswer))
			})
			header := map[string]string{"content-type": "application/json", "anthropic-version": "2023-06-01"}
			if tc.beta != "" {
				header["anthropic-beta"] = tc.beta
			}
			_, body := h.doStatus("POST", "/v1/messages/batches", header, []byte(tc.body), tc.status)
			ups := h.upstream()
			if tc.upstream == "" {
				if !strings.Contains(string(body), `"type":"permission_error"`) || !strings.Contains(string(body), "requests[1]: ") {
					t.Errorf("refusal body %s: want Anthropic's permission_error naming requests[1]", body)
				}
				if len(ups) != 0 {
					t.Fatalf("the upstream received %d requests, want none", len(ups))
				}
			} else {
				if len(ups) != 1 || string(ups[0].body) != tc.upstream {
					t.Fatalf("the upstream received %d requests, the first %q; want %q", len(ups), firstBody(ups), tc.upstream)
				}
				if got := ups[0].header.Get("anthropic-beta"); got != tc.upBeta {
					t.Errorf("anthropic-beta upstream %q, want %q", got, tc.upBeta)
				}
				if string(body) != batchAnswer {
					t.Errorf("client got %s, want the provider's answer", body)
				}
			}
			rec := h.record(1)
			for k, want := range tc.record {
				if got, _ := rec[k].(string); got != want {
					t.Errorf("record[%s] = %v, want %q\nrecord: %v", k, rec[k], want, rec)
				}
			}
			if _, ok := rec["input_tokens"]; ok {
				t.Errorf("a batch's record carries tokens: %v", rec)
			}
			if n := testutil.ToFloat64(h.srv.metrics.usageUnknown.WithLabelValues("message_batches", unknownMissing)); n != 0 {
				t.Errorf("usage_unknown_total{endpoint=message_batches,reason=missing} = %v, want 0", n)
			}
		})
	}
}

func firstBody(ups []upstreamRequest) string {
	if len(ups) == 0 {
		return ""
	}
	return string(ups[0].body)
}

// TestAMessageBatchIsInNoBudget: a batch's spend comes with results
// tiergate never sees, so where prices and a budget apply its record is
// unpriced (no_usage) and the budget counts it as unaccounted, rather than
// the batch silently costing nothing.
func TestAMessageBatchIsInNoBudget(t *testing.T) {
	t.Parallel()
	h, _ := budgetHarness(t, "2026-12-07T10:00:00Z")
	h.setResponse(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"id":"msgbatch_01","type":"message_batch","processing_status":"in_progress"}`))
	})
	h.doStatus("POST", "/v1/messages/batches", map[string]string{"x-tiergate-group": "team-c"},
		[]byte(`{"requests":[{"custom_id":"a","params":{"model":"claude-opus-4-6","max_tokens":8,"messages":[]}}]}`), http.StatusOK)
	rec := h.record(1)
	if got := rec["cost_unpriced_reason"]; got != policy.UnpricedNoUsage {
		t.Errorf("record's cost_unpriced_reason %v, want %s: %v", got, policy.UnpricedNoUsage, rec)
	}
	for _, m := range []struct {
		name   string
		labels map[string]string
	}{
		{"tiergate_cost_unpriced_total", map[string]string{"endpoint": "message_batches", "reason": policy.UnpricedNoUsage}},
		{"tiergate_budget_unaccounted_total", map[string]string{"budget": "team-c-hard", "reason": policy.UnpricedNoUsage}},
	} {
		if got := metricValue(t, h.reg, m.name, m.labels); got != 1 {
			t.Errorf("%s%v = %v, want 1", m.name, m.labels, got)
		}
	}
}
