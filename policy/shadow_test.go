package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

const shadowPolicy = `
identity: {group_header: x-tiergate-group}
rules:
- name: would-block-priority
  service_tier: priority
  action: block
  shadow: true
  model_whitelist: ["gpt-5.5*"]
  fallback_action: filter
- name: would-block-everything
  service_tier: all
  action: block
  shadow: true
  groups: [team-a]
- name: team-a-flex
  service_tier: flex
  action: pass
  groups: [team-a]
- name: later-shadow
  service_tier: flex
  action: filter
  shadow: true
- name: strip-priority
  service_tier: priority
  action: filter
budgets:
- name: team-a-shadow
  groups: [team-a]
  window: day
  limit: 10
  on_exhausted: block
  shadow: true
`

func TestShadowRules(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, budgetTestPrices+shadowPolicy)
	cases := []struct {
		name    string
		group   string
		body    string
		spend   map[string]int64
		action  Action
		rule    string
		shadows string // every match, "rule=action" in order; the first is the record's
	}{
		{
			name:   "a shadow rule that would block leaves the request to the next rule",
			body:   `{"model":"gpt-5.5","service_tier":"priority"}`,
			action: ActionFilter, rule: "strip-priority",
			shadows: "would-block-priority=block",
		},
		{
			name:   "a shadow rule's fallback is what it would have done outside its whitelist",
			body:   `{"model":"gpt-4o","service_tier":"priority"}`,
			action: ActionFilter, rule: "strip-priority",
			shadows: "would-block-priority=filter",
		},
		{
			name:  "several shadow matches are all reported, rules in order, then budgets",
			group: "team-a", body: `{"model":"gpt-5.5","service_tier":"priority"}`,
			action: ActionFilter, rule: "strip-priority",
			shadows: "would-block-priority=block would-block-everything=block team-a-shadow=pass",
		},
		{
			name:  "a shadow rule after the deciding rule is never reached",
			group: "team-a", body: `{"model":"gpt-5.5","service_tier":"flex"}`,
			action: ActionPass, rule: "team-a-flex",
			shadows: "would-block-everything=block team-a-shadow=pass",
		},
		{
			name:   "a shadow rule that matches as pass is reported too",
			body:   `{"model":"gpt-5.5","service_tier":"flex"}`,
			action: ActionPass, rule: "",
			shadows: "later-shadow=filter",
		},
		{
			name:   "a request no shadow rule matches reports none",
			body:   `{"model":"gpt-5.5"}`,
			action: ActionPass,
		},
		{
			name:   "a shadow rule judged for several models reports its strictest verdict once",
			body:   `{"model":"gpt-4o","model":"gpt-5.5","service_tier":"priority"}`,
			action: ActionFilter, rule: "strip-priority",
			shadows: "would-block-priority=block",
		},
		{
			name:  "an exhausted shadow budget says it would block, and acts on nothing",
			group: "team-a", body: `{"model":"gpt-5.5","service_tier":"flex"}`,
			spend:  map[string]int64{"team-a-shadow/team-a": 10},
			action: ActionPass, rule: "team-a-flex",
			shadows: "would-block-everything=block team-a-shadow=block",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := p.apply(&Request{Endpoint: EndpointResponses, Group: tc.group, Spend: fixedSpend{units: tc.spend}}, []byte(tc.body))
			if res.Action != tc.action || res.Rule != tc.rule || res.Budget != "" || res.Refusal.Status() != 0 {
				t.Fatalf("action %v rule %q budget %q status %d, want %v %q, no budget, forwarded",
					res.Action, res.Rule, res.Budget, res.Refusal.Status(), tc.action, tc.rule)
			}
			var got []string
			for _, m := range res.Shadows {
				got = append(got, fmt.Sprintf("%s=%v", m.Rule, m.Action))
			}
			if g := strings.Join(got, " "); g != tc.shadows {
				t.Errorf("shadow matches %q, want %q", g, tc.shadows)
			}
			first, firstAction := "", ActionPass
			if len(res.Shadows) > 0 {
				first, firstAction = res.Shadows[0].Rule, res.Shadows[0].Action
			}
			if res.ShadowRule != first || res.ShadowAction != firstAction {
				t.Errorf("recorded shadow %q=%v, want the first match %q=%v", res.ShadowRule, res.ShadowAction, first, firstAction)
			}
		})
	}
}

func TestShadowMatchesOnFrames(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, budgetTestPrices+shadowPolicy)
	res := p.ApplyFrame(&Request{Endpoint: EndpointResponsesWS, Group: "team-a", SessionModels: []string{"gpt-5.5"}},
		[]byte(`{"type":"response.create","response":{"service_tier":"priority"}}`))
	if res.Action != ActionFilter || res.Rule != "strip-priority" {
		t.Fatalf("action %v rule %q, want the frame filtered by strip-priority", res.Action, res.Rule)
	}
	if res.ShadowRule != "would-block-priority" || res.ShadowAction != ActionBlock || len(res.Shadows) != 2 {
		t.Errorf("shadow %q=%v (%d matches), want would-block-priority=block first of 2", res.ShadowRule, res.ShadowAction, len(res.Shadows))
	}
	if want := `{"type":"response.create","response":{}}`; string(res.Body) != want {
		t.Errorf("frame %s, want %s", res.Body, want)
	}
}

func TestShadowRulesDecideNothing(t *testing.T) {
	t.Parallel()
	// The same policy without its shadow rules and budget must decide every
	// case the same way.
	with := mustLoad(t, budgetTestPrices+shadowPolicy)
	without := mustLoad(t, `
identity: {group_header: x-tiergate-group}
rules:
- {name: team-a-flex, service_tier: flex, action: pass, groups: [team-a]}
- {name: strip-priority, service_tier: priority, action: filter}
`)
	spend := fixedSpend{units: map[string]int64{"team-a-shadow/team-a": 100}}
	for _, group := range []string{"", "team-a"} {
		for _, tier := range []string{"priority", "flex", "ultrafast", "default"} {
			for _, model := range []string{"gpt-5.5", "gpt-4o"} {
				body := []byte(`{"model":"` + model + `","service_tier":"` + tier + `"}`)
				a := with.apply(&Request{Endpoint: EndpointChatCompletions, Group: group, Spend: spend}, body)
				b := without.apply(&Request{Endpoint: EndpointChatCompletions, Group: group, Spend: spend}, body)
				if a.Action != b.Action || a.Rule != b.Rule || a.Sent != b.Sent || string(a.Body) != string(b.Body) {
					t.Errorf("%s %s %q: with shadows %v %q %v, without %v %q %v", group, tier, model, a.Action, a.Rule, a.Sent, b.Action, b.Rule, b.Sent)
				}
			}
		}
	}
}

func TestShadowConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		file string
		want []string
	}{
		{"shadow must be a boolean", "rules: [{service_tier: priority, action: block, shadow: \"yes\"}]\n",
			[]string{`rules[0].shadow: want true or false, got string "yes"`}},
		{"a budget's shadow must be a boolean", budgetTestPrices + "budgets: [{name: b, window: day, limit: 1, on_exhausted: block, shadow: 1}]\n",
			[]string{`budgets[0].shadow: want true or false, got number 1`}},
		{"a shadow budget may not share a rule's name", budgetTestPrices +
			"rules: [{name: x, service_tier: priority, action: block, shadow: true}]\nbudgets: [{name: x, window: day, limit: 1, on_exhausted: block, shadow: true}]\n",
			[]string{`budgets[0].name: "x" is also the name of rules[0] (budgets and rules share the rule label in metrics)`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load([]byte(tc.file))
			got := problemLines(t, err)
			if !slices.Equal(got, tc.want) {
				t.Errorf("problems\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
