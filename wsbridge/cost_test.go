package wsbridge

import (
	"testing"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/recordtest"
)

// pricedPolicy is testPolicy with prices; the expected costs below are
// worked out by hand from them and the fake upstream's usage (Responses:
// 120 input, 20 cached, 45 output; Realtime: 132 input, 64 cached, 121
// output).
var pricedPolicy = testPolicy + `
prices:
  currency: EUR
  models:
  - model: gpt-5.5
    tiers:
      default: {input: 5, cached_input: 0.5, output: 30}
      priority: {input: 12.5, cached_input: 1.25, output: 75}
  - model: gpt-realtime
    tiers:
      default: {input: 4, cached_input: 0.4, output: 16}
`

// TestTurnCost prices each turn once, at its end, at the tier the upstream
// reported.
func TestTurnCost(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		path   string
		opts   *websocket.DialOptions
		frame  string
		await  string
		cost   string // as written in the record; "" for none
		tier   string
		reason string
		metric string // a line the metrics must contain
	}{
		{
			name: "a forced Responses turn is priced at priority",
			path: PathResponses, opts: withHeader("X-Tiergate-Group", "codex-fast"),
			frame: `{"type":"response.create","model":"gpt-5.5"}`, await: "response.completed",
			// 100×12.5 + 20×1.25 + 45×75 = 4650 millionths
			cost: "0.00465", tier: "priority",
			metric: `tiergate_cost_total{endpoint="responses_ws",group="codex-fast",model="gpt-5.5",price_tier="priority"} 0.00465`,
		},
		{
			name:  "a Responses turn without a tier is priced at default",
			path:  PathResponses,
			frame: `{"type":"response.create","model":"gpt-5.5"}`, await: "response.completed",
			// 100×5 + 20×0.5 + 45×30 = 1860
			cost: "0.00186", tier: "default",
			metric: `tiergate_cost_total{endpoint="responses_ws",group="none",model="gpt-5.5",price_tier="default"} 0.00186`,
		},
		{
			name:  "a Realtime text turn is priced",
			path:  PathRealtime + "?model=gpt-realtime",
			frame: `{"type":"response.create","response":{"metadata":{"fake":"text"}}}`, await: "response.done",
			// 68×4 + 64×0.4 + 121×16 = 2233.6
			cost: "0.0022336", tier: "default",
			metric: `tiergate_cost_total{endpoint="realtime",group="none",model="gpt-realtime",price_tier="default"} 0.0022336`,
		},
		{
			name:  "a Realtime turn with audio is counted as unpriced",
			path:  PathRealtime + "?model=gpt-realtime",
			frame: `{"type":"response.create"}`, await: "response.done",
			reason: "audio",
			metric: `tiergate_cost_unpriced_total{endpoint="realtime",reason="audio"} 1`,
		},
		{
			name:  "a model without a price is counted as unpriced",
			path:  PathResponses,
			frame: `{"type":"response.create","model":"gpt-5.4"}`, await: "response.completed",
			reason: "no_price",
			metric: `tiergate_cost_unpriced_total{endpoint="responses_ws",reason="no_price"} 1`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, pricedPolicy)
			c, _ := h.dial(t, tc.path, tc.opts)
			if h.up.next(t).realtime {
				until(t, c, "session.created")
			}
			send(t, c, tc.frame)
			until(t, c, tc.await)
			_ = c.Close(websocket.StatusNormalClosure, "")
			h.waitSessions(t)
			lines := h.usage.Lines()
			if len(lines) != 1 {
				t.Fatalf("%d records, want 1:\n%s", len(lines), h.usage.String())
			}
			line := lines[0]
			recordtest.CheckCost(t, line, tc.cost, tc.tier, tc.reason)
			if got := gjson.Get(line, "currency").Str; (tc.cost != "") != (got == "EUR") {
				t.Errorf("currency %q with cost %q", got, tc.cost)
			}
			if got := gjson.Get(line, "policy_sha256").Str; got != h.store.Load().SHA256() {
				t.Errorf("policy_sha256 %q, want %q", got, h.store.Load().SHA256())
			}
			checkSeries(t, gatherText(t, h), tc.metric)
		})
	}
}

// TestUnpricedSeriesStartAtZero: dashboards and alerts see every unpriced
// series the bridge can count before the first one moves.
func TestUnpricedSeriesStartAtZero(t *testing.T) {
	t.Parallel()
	text := gatherText(t, newHarness(t, testPolicy))
	checkSeries(t, text,
		`tiergate_cost_unpriced_total{endpoint="responses_ws",reason="no_usage"} 0`,
		`tiergate_cost_unpriced_total{endpoint="responses_ws",reason="no_price"} 0`,
		`tiergate_cost_unpriced_total{endpoint="realtime",reason="audio"} 0`,
	)
}
