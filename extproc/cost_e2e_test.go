package extproc

import (
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/recordtest"
)

// costPolicy filters priority for team-a, forces it for vip, and prices
// gpt-5.5; every expected cost below is worked out by hand from it.
const costPolicy = `
rules:
- {name: strip-priority, service_tier: priority, action: filter, groups: [team-a]}
groups:
- {name: vip, force_service_tier: priority}
identity: {group_header: x-tiergate-group}
prices:
  currency: USD
  models:
  - model: gpt-5.5
    tiers:
      default: {input: 5, cached_input: 0.5, output: 30}
      priority: {input: 12.5, cached_input: 1.25, output: 75}
  - model: claude-opus-4-6
    tiers:
      default: {input: 5, cached_input: 0.5, cache_write: 6.25, output: 25}
    multipliers: {priority: 6}
`

// chatAnswer is a Chat Completions answer with 1117 input tokens (1024
// cached) and 46 output; tier is its service_tier member ("" for none).
func chatAnswer(tier string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		t := ""
		if tier != "" {
			t = `"service_tier":"` + tier + `",`
		}
		_, _ = w.Write([]byte(`{"id":"chatcmpl-1","model":"gpt-5.5-2026-06-01",` + t + `"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"prompt_tokens_details":{"cached_tokens":1024}}}`))
	}
}

// TestCostThroughEnvoy prices requests end to end: the tier priced is the
// one served, whatever was asked for.
func TestCostThroughEnvoy(t *testing.T) {
	t.Parallel()
	const (
		atDefault  = "0.002357"  // 93×5 + 1024×0.5 + 46×30 millionths
		atPriority = "0.0058925" // 93×12.5 + 1024×1.25 + 46×75
	)
	cases := []struct {
		name      string
		group     string
		body      string
		reported  string
		sentTier  string // the tier the upstream saw ("" for none)
		wantCost  string // "" for none
		wantTier  string
		wantWhy   string
		wantModel string // the cost series' model label
	}{
		{"a filtered priority request is priced at default", "team-a",
			`{"model":"gpt-5.5","service_tier":"priority","messages":[]}`, "", "", atDefault, "default", "", "gpt-5.5"},
		{"a forced request is priced at priority", "vip",
			`{"model":"gpt-5.5","messages":[]}`, "", "priority", atPriority, "priority", "", "gpt-5.5"},
		{"an upstream that reports default for a priority request is priced at default", "",
			`{"model":"gpt-5.5","service_tier":"priority","messages":[]}`, "default", "priority", atDefault, "default", "", "gpt-5.5"},
		{"a model without a price is counted as unpriced", "",
			`{"model":"o3","messages":[]}`, "default", "", "", "", "no_price", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, costPolicy)
			h.setResponse(chatAnswer(tc.reported))
			hdr := map[string]string{}
			if tc.group != "" {
				hdr["x-tiergate-group"] = tc.group
			}
			h.doStatus(http.MethodPost, "/v1/chat/completions", hdr, []byte(tc.body), http.StatusOK)
			if up := h.upstream(); len(up) != 1 || gjson.GetBytes(up[0].body, "service_tier").Str != tc.sentTier {
				t.Fatalf("upstream saw %q, want tier %q", up, tc.sentTier)
			}
			h.record(1)
			line := h.usageLog.Lines()[0]
			recordtest.CheckCost(t, line, tc.wantCost, tc.wantTier, tc.wantWhy)
			if got := gjson.Get(line, "policy_sha256").Str; len(got) != 64 {
				t.Errorf("policy_sha256 %q, want the policy's digest", got)
			}

			group := tc.group
			if group == "" {
				group = "none"
			}
			if tc.wantCost != "" {
				want := gjson.Parse(tc.wantCost).Float()
				got := metricValue(t, h.reg, "tiergate_cost_total", map[string]string{
					"endpoint": "chat_completions", "model": tc.wantModel, "price_tier": tc.wantTier, "group": group})
				if math.Abs(got-want) > 1e-15 {
					t.Errorf("tiergate_cost_total %v, want %v", got, want)
				}
				if md := usageMetadata(h); md["cost"] != want || md["currency"] != "USD" || md["price_tier"] != tc.wantTier {
					t.Errorf("dynamic metadata %v, want the cost %v at %s", md, want, tc.wantTier)
				}
			} else {
				got := metricValue(t, h.reg, "tiergate_cost_unpriced_total", map[string]string{"endpoint": "chat_completions", "reason": tc.wantWhy})
				if got != 1 {
					t.Errorf("tiergate_cost_unpriced_total{reason=%q} = %v, want 1", tc.wantWhy, got)
				}
				if md := usageMetadata(h); md["cost_unpriced_reason"] != tc.wantWhy || md["cost"] != nil {
					t.Errorf("dynamic metadata %v, want cost_unpriced_reason %q", md, tc.wantWhy)
				}
			}
		})
	}
}

// usageMetadata is the tiergate namespace of the last dynamic metadata
// Envoy got that carries a status (the usage's).
func usageMetadata(h *harness) map[string]any {
	var out map[string]any
	for _, md := range h.proxy.Metadata() {
		if ns := md.GetFields()["tiergate"].GetStructValue(); ns != nil && ns.Fields["status"] != nil {
			out = ns.AsMap()
		}
	}
	return out
}

// TestCostOfAnAnthropicStream prices a fast-mode Messages stream read
// through the SSE path: cache reads and writes each at their own price,
// fast mode at priority (6 × default).
func TestCostOfAnAnthropicStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, costPolicy)
	h.setResponse(sse(messagesStream, 7, 31))
	resp, _ := h.do(http.MethodPost, "/v1/messages", map[string]string{"anthropic-beta": "fast-mode-2026-02-01"},
		[]byte(`{"model":"claude-opus-4-6","speed":"fast","max_tokens":64,"stream":true,"messages":[]}`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	h.record(1)
	line := h.usageLog.Lines()[0]
	// 25 uncached × 30 + 1024 cached × 3 + 10 written × 37.5 + 15 output × 150 = 6447 millionths
	for k, want := range map[string]string{"cost": "0.006447", "price_tier": `"priority"`, "cache_write_input_tokens": "10", "input_tokens": "1059"} {
		if got := gjson.Get(line, k).Raw; got != want {
			t.Errorf("%s = %s, want %s\n%s", k, got, want, line)
		}
	}
}

// TestBlockedRequestsCarryNoCost: a refused request reached no upstream,
// so its record has no cost fields and counts nowhere.
func TestBlockedRequestsCarryNoCost(t *testing.T) {
	t.Parallel()
	h2 := newHarness(t, strings.Replace(costPolicy, "action: filter", "action: block", 1))
	resp, _ := h2.do(http.MethodPost, "/v1/chat/completions", map[string]string{"x-tiergate-group": "team-a"},
		[]byte(`{"model":"gpt-5.5","service_tier":"priority","messages":[]}`))
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403", resp.StatusCode)
	}
	h2.record(1)
	line := h2.usageLog.Lines()[0]
	for _, k := range []string{"cost", "currency", "price_tier", "cost_unpriced_reason"} {
		if gjson.Get(line, k).Exists() {
			t.Errorf("a blocked record carries %s: %s", k, line)
		}
	}
	if !gjson.Get(line, "policy_sha256").Exists() {
		t.Errorf("a blocked record lacks policy_sha256: %s", line)
	}
	for _, r := range []string{"no_usage", "no_price"} {
		if got := metricValue(t, h2.reg, "tiergate_cost_unpriced_total", map[string]string{"endpoint": "chat_completions", "reason": r}); got != 0 {
			t.Errorf("unpriced %s = %v, want 0", r, got)
		}
	}
}
