package policy

import (
	"encoding/json"
	"testing"
)

// fixedSpend is a SpendView with fixed spend per "budget/bucket", in whole
// currency units, and a fixed time to the window's end.
type fixedSpend struct {
	units       map[string]int64
	secondsLeft int64
}

func (f fixedSpend) Spent(b *Budget, bucket string) (int64, int64) {
	return f.units[b.Name+"/"+bucket] * MicrosPerUnit, f.secondsLeft
}

const budgetPolicy = `
identity: {group_header: x-tiergate-group}
rules:
- name: vip-priority
  service_tier: priority
  action: pass
groups:
- name: codex-fast
  force_service_tier: priority
- name: team-a
budgets:
- name: codex-fast-daily
  groups: [codex-fast, team-a]
  service_tiers: [priority]
  models: ["gpt-5.5*"]
  window: day
  limit: 200
  on_exhausted: filter
- name: team-a-hard
  groups: [team-a]
  service_tiers: [priority, flex]
  window: week
  limit: 500
  on_exhausted: block
- name: everyone-default
  service_tiers: [default]
  window: month
  limit: 50
  on_exhausted: block
`

func TestBudgetEvaluation(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, budgetTestPrices+budgetPolicy)
	cases := []struct {
		name     string
		endpoint Endpoint
		group    string
		spend    map[string]int64
		body     string
		action   Action
		budget   string
		status   int
		out      string // the forwarded body; "" = unchanged
	}{
		{
			name: "a group under its limit keeps priority", endpoint: EndpointResponses, group: "team-a",
			spend: map[string]int64{"codex-fast-daily/team-a": 199},
			body:  `{"model":"gpt-5.5","service_tier":"priority"}`, action: ActionPass,
		},
		{
			name: "a group at its limit has priority filtered", endpoint: EndpointResponses, group: "team-a",
			spend: map[string]int64{"codex-fast-daily/team-a": 200},
			body:  `{"model":"gpt-5.5","service_tier":"priority","input":"hi"}`, action: ActionFilter, budget: "codex-fast-daily",
			out: `{"model":"gpt-5.5","input":"hi"}`,
		},
		{
			name: "another group's spend does not touch this one", endpoint: EndpointResponses, group: "codex-fast",
			spend: map[string]int64{"codex-fast-daily/team-a": 1000},
			body:  `{"model":"gpt-5.5","service_tier":"priority"}`, action: ActionPass,
		},
		{
			name: "a model the budget does not count is untouched", endpoint: EndpointResponses, group: "team-a",
			spend: map[string]int64{"codex-fast-daily/team-a": 1000},
			body:  `{"model":"gpt-4o","service_tier":"priority"}`, action: ActionPass,
		},
		{
			name: "a tier the budget does not count is untouched", endpoint: EndpointResponses, group: "team-a",
			spend: map[string]int64{"codex-fast-daily/team-a": 1000},
			body:  `{"model":"gpt-5.5","service_tier":"flex"}`, action: ActionPass,
		},
		{
			name: "force never overrides an exhausted budget", endpoint: EndpointResponses, group: "codex-fast",
			spend: map[string]int64{"codex-fast-daily/codex-fast": 200},
			body:  `{"model":"gpt-5.5","input":"hi"}`, action: ActionFilter, budget: "codex-fast-daily",
		},
		{
			name: "force applies while the budget lasts", endpoint: EndpointResponses, group: "codex-fast",
			spend: map[string]int64{"codex-fast-daily/codex-fast": 10},
			body:  `{"model":"gpt-5.5","input":"hi"}`, action: ActionPass,
			out: `{"model":"gpt-5.5","input":"hi","service_tier":"priority"}`,
		},
		{
			name: "the strictest of several exhausted budgets wins", endpoint: EndpointChatCompletions, group: "team-a",
			spend: map[string]int64{"codex-fast-daily/team-a": 200, "team-a-hard/team-a": 500},
			body:  `{"model":"gpt-5.5","service_tier":"priority"}`, action: ActionBlock, budget: "team-a-hard", status: 429,
		},
		{
			name: "a request with no tier counts as default for a block budget", endpoint: EndpointResponses, group: "stranger",
			spend: map[string]int64{"everyone-default/other": 50},
			body:  `{"model":"gpt-4o"}`, action: ActionBlock, budget: "everyone-default", status: 429,
		},
		{
			name: "a budget with no groups keeps each group's spend apart", endpoint: EndpointResponses, group: "",
			spend: map[string]int64{"everyone-default/other": 50},
			body:  `{"model":"gpt-4o"}`, action: ActionPass,
		},
		{
			name: "fast mode is filtered on messages", endpoint: EndpointMessages, group: "team-a",
			spend: map[string]int64{"codex-fast-daily/team-a": 300},
			body:  `{"model":"gpt-5.5-x","speed":"fast","max_tokens":1}`, action: ActionFilter, budget: "codex-fast-daily",
			out: `{"model":"gpt-5.5-x","max_tokens":1}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			view := fixedSpend{units: tc.spend, secondsLeft: 3600}
			res := p.apply(&Request{Endpoint: tc.endpoint, Group: tc.group, Spend: view}, []byte(tc.body))
			if res.Action != tc.action || res.Budget != tc.budget || res.Refusal.Status() != tc.status {
				t.Fatalf("got action=%v budget=%q status=%d, want action=%v budget=%q status=%d",
					res.Action, res.Budget, res.Refusal.Status(), tc.action, tc.budget, tc.status)
			}
			if tc.status != 0 {
				if res.RetryAfter != 3600 {
					t.Errorf("retry after %d s, want 3600", res.RetryAfter)
				}
				return
			}
			if tc.action == ActionFilter && res.Sent != TierNone {
				t.Errorf("sent %v after a budget filter, want none", res.Sent)
			}
			checkBody(t, res.Body, tc.body, tc.out)
		})
	}
}

func TestBudgetRefusalShapes(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, budgetTestPrices+budgetPolicy)
	view := fixedSpend{units: map[string]int64{"team-a-hard/team-a": 600}, secondsLeft: 42}
	header := func(name string) string {
		if name == "x-tiergate-group" {
			return "team-a"
		}
		return ""
	}
	cases := []struct {
		name     string
		endpoint Endpoint
		body     string
		want     string
	}{
		{"OpenAI endpoints answer rate_limit_error with budget_exhausted", EndpointResponses,
			`{"model":"gpt-5.5","service_tier":"flex"}`,
			`{"error":{"message":"budget team-a-hard is exhausted for group team-a until the week ends; service_tier=flex is refused","type":"rate_limit_error","param":"service_tier","code":"budget_exhausted"}}`},
		{"Anthropic answers its own rate_limit_error", EndpointMessages,
			`{"model":"claude","speed":"fast"}`,
			`{"type":"error","error":{"type":"rate_limit_error","message":"budget team-a-hard is exhausted for group team-a until the week ends; service_tier=priority is refused"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := p.DecideHTTP(&HTTPRequest{Endpoint: tc.endpoint, Header: header, Body: []byte(tc.body), Spend: view})
			if out.Refusal != RefusalBudget || out.Refusal.Status() != 429 {
				t.Fatalf("status %d refusal %v, want 429 budget", out.Refusal.Status(), out.Refusal)
			}
			if body := out.Refusal.Body(tc.endpoint, out.Message); string(body) != tc.want {
				t.Errorf("body\n%s\nwant\n%s", body, tc.want)
			}
		})
	}
	t.Run("the WebSocket event carries status 429 and retry-after", func(t *testing.T) {
		t.Parallel()
		var ev struct {
			Type    string            `json:"type"`
			Status  int               `json:"status"`
			Error   map[string]string `json:"error"`
			Headers map[string]string `json:"headers"`
		}
		if err := json.Unmarshal(RefusalBudget.Event("m", 42), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type != "error" || ev.Status != 429 || ev.Headers["retry-after"] != "42" ||
			ev.Error["code"] != "budget_exhausted" || ev.Error["type"] != "rate_limit_error" || ev.Error["message"] != "m" {
			t.Errorf("event %+v", ev)
		}
	})
}
