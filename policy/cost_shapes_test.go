package policy_test

import (
	"testing"

	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/recordtest"
	"github.com/tiergate/tiergate/policy"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
	"github.com/tiergate/tiergate/usage"
)

// shapePrices prices the models of the wire shapes below. Each expected
// cost is worked out by hand from it, and compared with the record line as
// written, to the last digit.
const shapePrices = `
prices:
  currency: USD
  models:
  - model: gpt-5.5
    tiers:
      default: {input: 5, cached_input: 0.5, output: 30}
      priority: {input: 12.5, cached_input: 1.25, output: 75}
    multipliers: {flex: 0.5}
  - model: claude-opus-4-6
    tiers:
      default: {input: 5, cached_input: 0.5, cache_write: 6.25, output: 25}
    multipliers: {priority: 6}
  - model: gpt-realtime
    tiers:
      default: {input: 4, cached_input: 0.4, output: 16}
`

func TestCostOfEachUsageShape(t *testing.T) {
	t.Parallel()
	pol, err := policy.Load([]byte(shapePrices))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		api        usage.API // 0: a WebSocket event
		body       string
		model      string
		sent       string
		wantCost   string // as written in the record; "" for none
		wantTier   string
		wantReason string
	}{
		{
			name:  "chat completions at the tier reported",
			api:   usage.ChatCompletions,
			body:  `{"id":"c","model":"gpt-5.5-2026-06-01","service_tier":"default","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"prompt_tokens_details":{"cached_tokens":1024},"completion_tokens_details":{"reasoning_tokens":32}}}`,
			model: "gpt-5.5", sent: "priority",
			// 93×5 + 1024×0.5 + 46×30 = 2357 millionths
			wantCost: "0.002357", wantTier: "default",
		},
		{
			name:  "chat completions served at priority",
			api:   usage.ChatCompletions,
			body:  `{"id":"c","service_tier":"priority","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"prompt_tokens_details":{"cached_tokens":1024}}}`,
			model: "gpt-5.5", sent: "priority",
			// 93×12.5 + 1024×1.25 + 46×75 = 5892.5
			wantCost: "0.0058925", wantTier: "priority",
		},
		{
			name:  "responses at flex through a multiplier, reasoning not added again",
			api:   usage.Responses,
			body:  `{"id":"r","status":"completed","service_tier":"flex","usage":{"input_tokens":8438,"input_tokens_details":{"cached_tokens":8192,"cache_write_tokens":0},"output_tokens":398,"output_tokens_details":{"reasoning_tokens":256}}}`,
			model: "gpt-5.5", sent: "flex",
			// 246×2.5 + 8192×0.25 + 398×15 = 8633
			wantCost: "0.008633", wantTier: "flex",
		},
		{
			name:  "anthropic fast mode with cache reads and writes",
			api:   usage.Messages,
			body:  `{"id":"m","model":"claude-opus-4-6","stop_reason":"end_turn","usage":{"input_tokens":25,"cache_creation_input_tokens":200,"cache_read_input_tokens":1024,"output_tokens":15,"speed":"fast"}}`,
			model: "claude-opus-4-6", sent: "priority",
			// ×6: 25×30 + 1024×3 + 200×37.5 + 15×150 = 13572
			wantCost: "0.013572", wantTier: "priority",
		},
		{
			name:  "anthropic standard speed with cache reads and writes",
			api:   usage.Messages,
			body:  `{"id":"m","model":"claude-opus-4-6","stop_reason":"end_turn","usage":{"input_tokens":25,"cache_creation_input_tokens":200,"cache_read_input_tokens":1024,"output_tokens":15,"speed":"standard"}}`,
			model: "claude-opus-4-6", sent: "priority",
			// 25×5 + 1024×0.5 + 200×6.25 + 15×25 = 2262
			wantCost: "0.002262", wantTier: "default",
		},
		{
			name:  "a realtime turn without audio",
			body:  `{"type":"response.done","response":{"id":"resp_1","status":"completed","usage":{"input_tokens":40,"output_tokens":9,"input_token_details":{"text_tokens":40,"audio_tokens":0,"cached_tokens":8},"output_token_details":{"text_tokens":9,"audio_tokens":0}}}}`,
			model: "gpt-realtime", sent: "none",
			// 32×4 + 8×0.4 + 9×16 = 275.2
			wantCost: "0.0002752", wantTier: "default",
		},
		{
			name:  "a realtime turn with audio is left unpriced",
			body:  `{"type":"response.done","response":{"id":"resp_2","status":"completed","usage":{"input_tokens":132,"output_tokens":121,"input_token_details":{"text_tokens":119,"audio_tokens":13,"cached_tokens":64},"output_token_details":{"text_tokens":30,"audio_tokens":91}}}}`,
			model: "gpt-realtime", sent: "none",
			wantReason: policy.UnpricedAudio,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var u usage.Usage
			if c.api == 0 {
				u = usage.ParseEvent([]byte(c.body)).Usage
			} else {
				u = usage.ParseJSON(c.api, []byte(c.body))
			}
			rec := &tiergatev1.UsageRecord{Model: c.model, ServiceTierSent: c.sent, Status: usage.StatusCompleted}
			u.Fill(rec)
			if _, ok := pol.PriceRecord(rec, u.AudioTokens > 0); !ok {
				t.Fatal("PriceRecord did not price the record")
			}
			line := usage.AppendRecord(nil, rec)
			recordtest.CheckCost(t, string(line), c.wantCost, c.wantTier, c.wantReason)
			if cur := gjson.GetBytes(line, "currency").Str; (c.wantCost != "") != (cur == "USD") {
				t.Errorf("currency = %q with cost %q", cur, c.wantCost)
			}
		})
	}
}

func TestPriceRecordLeavesRefusalsAlone(t *testing.T) {
	t.Parallel()
	pol, err := policy.Load([]byte(shapePrices))
	if err != nil {
		t.Fatal(err)
	}
	for _, status := range []string{usage.StatusBlocked, usage.StatusRefused} {
		rec := &tiergatev1.UsageRecord{Model: "gpt-5.5", Status: status, CostUnpricedReason: "stale"}
		if _, ok := pol.PriceRecord(rec, false); ok || rec.CostUnpricedReason != "" || rec.Cost != nil {
			t.Errorf("a %s record was priced: %v", status, rec)
		}
	}
	rec := &tiergatev1.UsageRecord{Model: "gpt-5.5", Status: usage.StatusUpstreamError}
	if c, ok := pol.PriceRecord(rec, false); !ok || c.Unpriced != policy.UnpricedNoUsage || rec.CostUnpricedReason != policy.UnpricedNoUsage {
		t.Errorf("an upstream error without usage: %+v, %v", c, rec)
	}
}
