package wsbridge

import (
	"testing"

	"github.com/tidwall/gjson"
)

// wsShadowPolicy prices a fake upstream turn at 0.0021 at priority (see
// wsTurnPrices), above the shadow budget's limit: the first turn exhausts
// it.
var wsShadowPolicy = wsTurnPrices + `groups: [{name: team-a}]
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
	upstream, recs := twoPriorityTurns(t, h)
	for i, got := range upstream {
		if got != priorityFrame {
			t.Errorf("turn %d went upstream as %s, want it untouched: shadows decide nothing", i+1, got)
		}
	}
	for _, rec := range recs {
		checkRecord(t, rec, map[string]any{"action": "pass", "rule": nil, "budget": "none",
			"service_tier_sent": "priority", "shadow_rule": "would-block-priority", "shadow_action": "block"})
	}
	metrics := gatherText(t, h)
	checkSeries(t, metrics,
		`tiergate_policy_shadow_decisions_total{action="block",rule="would-block-priority"} 2`,
		`tiergate_policy_shadow_decisions_total{action="pass",rule="team-a-shadow"} 1`,
		`tiergate_policy_shadow_decisions_total{action="filter",rule="team-a-shadow"} 1`,
	)
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
