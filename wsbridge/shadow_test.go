package wsbridge

import (
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"
)

// wsShadowPolicy prices a fake upstream turn at 0.0021 at priority (see
// wsBudgetPolicy), above the shadow budget's limit: the first turn
// exhausts it.
const wsShadowPolicy = `
identity: {group_header: x-tiergate-group}
prices:
  currency: USD
  models:
  - model: "*"
    tiers:
      default: {input: 1, output: 2}
      priority: {input: 10, output: 20}
groups: [{name: team-a}]
rules:
- name: would-block-priority
  service_tier: priority
  action: block
  shadow: true
- name: strip-priority
  service_tier: priority
  action: filter
  groups: [nobody]
budgets:
- name: team-a-shadow
  groups: [team-a]
  service_tiers: [priority]
  window: day
  limit: 0.002
  on_exhausted: filter
  shadow: true
`

func TestShadowMatchesOnResponseCreateFrames(t *testing.T) {
	t.Parallel()
	h := newHarness(t, wsShadowPolicy, withBudgets(t, "2026-12-07T10:00:00Z"))
	c, _ := h.dial(t, PathResponses, withHeader("x-tiergate-group", "team-a"))
	fc := h.up.next(t)
	frame := `{"type":"response.create","model":"gpt-5.5","service_tier":"priority","input":"hi"}`
	send(t, c, frame)
	until(t, c, "response.completed")
	send(t, c, frame)
	until(t, c, "response.completed")
	for i, got := range frameTexts(waitFrames(t, fc, 2)) {
		if got != frame {
			t.Errorf("turn %d went upstream as %s, want it untouched: shadows decide nothing", i+1, got)
		}
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	h.waitSessions(t)
	recs := h.records()
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	for _, rec := range recs {
		checkRecord(t, rec, map[string]any{"action": "pass", "rule": nil, "budget": "none",
			"service_tier_sent": "priority", "shadow_rule": "would-block-priority", "shadow_action": "block"})
	}
	metrics := gatherText(t, h)
	for _, want := range []string{
		`tiergate_policy_shadow_decisions_total{action="block",rule="would-block-priority"} 2`,
		`tiergate_policy_shadow_decisions_total{action="pass",rule="team-a-shadow"} 1`,
		`tiergate_policy_shadow_decisions_total{action="filter",rule="team-a-shadow"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	var logged int
	for _, l := range h.logs.Lines() {
		if gjson.Get(l, "msg").String() == "shadow match" && gjson.Get(l, "level").String() == "INFO" &&
			gjson.Get(l, "endpoint").String() == "responses_ws" {
			logged++
		}
	}
	if logged != 4 {
		t.Errorf("%d shadow match lines logged at info, want 4 (two matches on each of two frames)", logged)
	}
}
