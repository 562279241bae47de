package policy

import (
	"slices"
	"strings"
	"testing"
)

func TestLoadTestsDecodesEveryField(t *testing.T) {
	t.Parallel()
	tf, err := LoadTests([]byte(`
policy: p.yaml
cases:
- name: every field
  path: /v1/responses
  headers: {X-Tiergate-Group: team-a}
  json: {service_tier: fast, model: gpt-5.5, count: 2, top_p: 0.5}
  usage: {input_tokens: 10, cached_input_tokens: 2, cache_write_input_tokens: 1, output_tokens: 3, reasoning_tokens: 1, service_tier_reported: default}
  budget_spent: {daily: 12.000001}
  want: {action: pass, rule: "", service_tier_sent: priority, status: 0, message: m, budget: none,
         shadow_rule: s, shadow_action: block, cost: 0.000000000001, upstream_body: "{}"}
`))
	if err != nil {
		t.Fatal(err)
	}
	c := tf.Cases[0]
	if tf.Policy != "p.yaml" || c.Name != "every field" || c.Path != "/v1/responses" || c.Headers["x-tiergate-group"] != "team-a" {
		t.Errorf("case %v", c)
	}
	if c.Json != `{"count":2,"model":"gpt-5.5","service_tier":"fast","top_p":0.5}` {
		t.Errorf("json = %s, want compact with its keys sorted", c.Json)
	}
	if u := c.Usage; u.GetInputTokens() != 10 || u.GetCachedInputTokens() != 2 || u.GetCacheWriteInputTokens() != 1 ||
		u.GetOutputTokens() != 3 || u.GetReasoningTokens() != 1 || u.ServiceTierReported != "default" {
		t.Errorf("usage %v", u)
	}
	if c.BudgetSpent["daily"] != 12.000001 {
		t.Errorf("budget_spent %v", c.BudgetSpent)
	}
	w := c.Want
	if w.Rule == nil || *w.Rule != "" || w.Status == nil || *w.Status != 0 || w.GetAction() != "pass" || w.GetShadowAction() != "block" ||
		w.GetCost() != 1e-12 || w.GetUpstreamBody() != "{}" || w.GetBudget() != "none" {
		t.Errorf("want %v: an empty rule and a 0 status are given, not left out", w)
	}
}

func TestLoadTestsIsStrict(t *testing.T) {
	t.Parallel()
	head := "policy: p.yaml\ncases:\n"
	cases := []struct {
		name, file string
		want       []string
	}{
		{"an unknown field, in camelCase", head + "- {name: x, path: /v1/responses, body: '', want: {serviceTierSent: none}}\n",
			[]string{"cases[0].want.serviceTierSent: unknown field (did you mean service_tier_sent? fields are written in snake_case)"}},
		{"a null", head + "- {name: x, path: /v1/responses, body: null, want: {status: 0}}\n",
			[]string{"cases[0].body: null is not allowed (leave the key out instead)"}},
		{"a number where a string is expected, a negative count, an unknown action", head +
			"- {name: 1, path: /v1/responses, body: '', usage: {input_tokens: -1}, want: {action: blok}}\n",
			[]string{`cases[0].name: want a string, got number 1`, "cases[0].usage.input_tokens: want a whole number 0 or more, got -1",
				`cases[0].want.action: unknown action "blok" (want pass, filter or block)`}},
		{"a status that is not one", head + "- {name: x, path: /v1/responses, body: '', want: {status: 42}}\n",
			[]string{"cases[0].want.status: 42 is not an HTTP status (0: forwarded)"}},
		{"a negative spend and a spend with 7 decimals", head +
			"- {name: x, path: /v1/responses, body: '', budget_spent: {a: -1, b: 0.0000001}, want: {status: 0}}\n",
			[]string{"cases[0].budget_spent.a: must not be negative", "cases[0].budget_spent.b:"}},
		{"a header given twice", head + "- {name: x, path: /v1/responses, body: '', headers: {A: '1', a: '2'}, want: {status: 0}}\n",
			[]string{"cases[0].headers.a: header a is given twice (names are compared in lower case)"}},
		{"no policy", "cases:\n- {name: x, path: /v1/responses, body: '', want: {status: 0}}\n",
			[]string{"policy: required (the policy file under test, relative to this file)"}},
		{"not YAML", "policy: [", []string{"not valid YAML or JSON"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadTests([]byte(tc.file))
			got := problemLines(t, err)
			if len(got) != len(tc.want) || !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, tc.want[0]) }) {
				t.Fatalf("problems\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("problem %d: %q, want %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}
