package extproc

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/internal/syncbuf"
)

// shadowPolicy prices as budgetsPolicy does (a priority response of
// priorityResponse costs 0.002), with a shadow rule that would block
// priority before the rule that filters it, and a shadow budget over
// team-a's priority spend that the first response exhausts.
var shadowPolicy = budgetPrices + `groups: [{name: team-a}]
rules:
- name: would-block-priority
  service_tier: priority
  action: block
  shadow: true
- name: team-a-priority
  service_tier: priority
  action: pass
  groups: [team-a]
- name: strip-priority
  service_tier: priority
  action: filter
budgets:
- name: team-a-shadow
  groups: [team-a]
  service_tiers: [priority]
  window: day
  limit: 0.002
  on_exhausted: block
  shadow: true
`

// shadowHarness is a harness over shadowPolicy with a budget tracker and
// the server's log kept in logs.
func shadowHarness(t *testing.T) (h *harness, logs *syncbuf.Buffer, tr *budget.Tracker) {
	t.Helper()
	logs = &syncbuf.Buffer{}
	h, _, tr = trackedHarness(t, shadowPolicy, "2026-12-07T10:00:00Z", func(o *Options) {
		o.Log = slog.New(slog.NewJSONHandler(logs, nil))
	})
	return h, logs, tr
}

func TestAShadowRuleThatWouldBlockLeavesTheRequestToTheNextRule(t *testing.T) {
	t.Parallel()
	h, logs, _ := shadowHarness(t)
	h.doStatus("POST", "/v1/responses", nil, []byte(`{"model":"gpt-5.5","service_tier":"priority"}`), http.StatusOK)
	if got := string(h.upstream()[0].body); got != `{"model":"gpt-5.5"}` {
		t.Errorf("upstream body %s, want priority filtered by strip-priority", got)
	}
	rec := h.record(1)
	for k, want := range map[string]any{"action": "filter", "rule": "strip-priority", "shadow_rule": "would-block-priority", "shadow_action": "block"} {
		if rec[k] != want {
			t.Errorf("record[%s] = %v, want %v", k, rec[k], want)
		}
	}
	md := h.proxy.Metadata()
	if len(md) == 0 {
		t.Fatal("no dynamic metadata")
	}
	fields := md[0].GetFields()[metadataNamespace].GetStructValue().GetFields()
	if fields["shadow_rule"].GetStringValue() != "would-block-priority" || fields["shadow_action"].GetStringValue() != "block" || fields["rule"].GetStringValue() != "strip-priority" {
		t.Errorf("metadata %v, want shadow_rule would-block-priority, shadow_action block, rule strip-priority", fields)
	}
	if n := metricValue(t, h.reg, "tiergate_policy_shadow_decisions_total", map[string]string{"rule": "would-block-priority", "action": "block"}); n != 1 {
		t.Errorf("tiergate_policy_shadow_decisions_total = %v, want 1", n)
	}
	var line string
	for _, l := range logs.Lines() {
		if strings.Contains(l, `"msg":"shadow match"`) {
			line = l
		}
	}
	if gjson.Get(line, "level").String() != "INFO" || gjson.Get(line, "shadow_rule").String() != "would-block-priority" ||
		gjson.Get(line, "shadow_action").String() != "block" || gjson.Get(line, "action").String() != "filter" {
		t.Errorf("shadow log line %q, want an info line naming the shadow rule, its action and what was done", line)
	}
}

func TestAShadowBudgetAccumulatesSpendAndActsOnNothing(t *testing.T) {
	t.Parallel()
	h, _, tr := shadowHarness(t)
	hdr := map[string]string{"x-tiergate-group": "team-a"}
	body := []byte(`{"model":"gpt-5.5","service_tier":"priority"}`)
	for i, want := range []string{"pass", "block"} {
		resp, b := h.do("POST", "/v1/responses", hdr, body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d, want forwarded: %s", i+1, resp.StatusCode, b)
		}
		if got := gjson.GetBytes(h.upstream()[i].body, "service_tier").String(); got != "priority" {
			t.Errorf("request %d went upstream with service_tier %q, want priority", i+1, got)
		}
		rec := h.record(i + 1)
		// Both shadows match; the rule comes first in the record.
		if rec["shadow_rule"] != "would-block-priority" || rec["budget"] != "none" || rec["action"] != "pass" {
			t.Errorf("request %d: record %v", i+1, rec)
		}
		if n := metricValue(t, h.reg, "tiergate_policy_shadow_decisions_total", map[string]string{"rule": "team-a-shadow", "action": want}); n != 1 {
			t.Errorf("request %d: shadow budget counted %v times as %s, want 1", i+1, n, want)
		}
		// The spend is added as the response ends, beside the record.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if s := tr.Snapshot(); len(s) == 1 && s[0].Spent == int64(2000*(i+1)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("request %d's spend never reached the shadow budget: %+v", i+1, tr.Snapshot())
			}
		}
	}
	if n := metricValue(t, h.reg, "tiergate_policy_shadow_decisions_total", map[string]string{"rule": "would-block-priority", "action": "block"}); n != 2 {
		t.Errorf("shadow rule counted %v times, want 2 (every match is counted)", n)
	}
	snap := tr.Snapshot()
	if len(snap) != 1 || snap[0].Budget != "team-a-shadow" || !snap[0].Shadow || !snap[0].Exhausted() || snap[0].Spent != 4000 {
		t.Errorf("snapshot %+v, want team-a-shadow shadow, exhausted, 4000 micro-units spent", snap)
	}
	if n := metricValue(t, h.reg, "tiergate_budget_actions_total", map[string]string{"budget": "team-a-shadow"}); n != 0 {
		t.Errorf("a shadow budget counted %v actions, want none", n)
	}
}
