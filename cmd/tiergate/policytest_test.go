package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func TestPolicyTests(t *testing.T) {
	t.Parallel()
	const dir = "testdata/policytest/"
	cases := []struct {
		name  string
		files []string
		code  int
		want  string // stdout, exactly
	}{
		{
			name: "a correct file passes every case", files: []string{"rollout_test.yaml"}, code: 0,
			want: "8 passed, 0 failed\n",
		},
		{
			name: "a wrong expectation fails with want and got on a line per field", files: []string{"rollout_wrong_test.yaml"}, code: 1,
			want: dir + `rollout_wrong_test.yaml: a wrong expectation: action: want "block", got "filter"` + "\n" +
				dir + "rollout_wrong_test.yaml: a wrong expectation: cost: want 0.02, got 0.008\n" +
				"1 passed, 1 failed\n",
		},
		{
			name: "results add up over several files", files: []string{"rollout_test.yaml", "rollout_wrong_test.yaml"}, code: 1,
			want: dir + `rollout_wrong_test.yaml: a wrong expectation: action: want "block", got "filter"` + "\n" +
				dir + "rollout_wrong_test.yaml: a wrong expectation: cost: want 0.02, got 0.008\n" +
				"9 passed, 1 failed\n",
		},
		{
			name: "a malformed file is refused with every problem", files: []string{"malformed_test.yaml", "rollout_test.yaml"}, code: 2,
			want: dir + "malformed_test.yaml: cases[0].want.acton: unknown field (known: action, budget, cost, message, rule, service_tier_sent, shadow_action, shadow_rule, status, upstream_body)\n" +
				dir + `malformed_test.yaml: cases[1].path: "v1/responses": a path starts with / (as Envoy's :path)` + "\n" +
				dir + `malformed_test.yaml: cases[1].want.status: want a whole number, got string "403"` + "\n" +
				dir + "malformed_test.yaml: cases[1]: give the body one way only: body, json, or model and service_tier\n" +
				"8 passed, 0 failed\n",
		},
		{
			name: "a policy that does not load is refused", files: []string{"badpolicy_test.yaml"}, code: 2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var args []string
			for _, f := range tc.files {
				args = append(args, dir+f)
			}
			r := runBinary(t, nil, append([]string{"test"}, args...)...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d\n%s%s", r.code, tc.code, r.stdout, r.stderr)
			}
			if tc.want != "" && r.stdout != tc.want {
				t.Errorf("output\n%s\nwant\n%s", r.stdout, tc.want)
			}
			if tc.want == "" && !strings.Contains(r.stdout, `badpolicy_test.yaml: policy ../bad.yaml: rules[0].action: unknown action "blok"`) {
				t.Errorf("output lacks the policy's problem:\n%s", r.stdout)
			}
		})
	}
}

func TestPolicyTestFileProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := []struct {
		name, file, want string
	}{
		{"a budget the policy does not have", "cases:\n- {name: x, path: /v1/responses, body: '{}', budget_spent: {nobody: 1}, want: {action: pass}}\n",
			`cases[0].budget_spent.nobody: the policy has no budget "nobody"`},
		{"a case without a body", "cases:\n- {name: x, path: /v1/responses, want: {action: pass}}\n",
			"cases[0]: no body: give body (raw text), json (an object), or model and service_tier"},
		{"a tier other than priority on messages", "cases:\n- {name: x, path: /v1/messages, service_tier: flex, want: {action: pass}}\n",
			"cases[0].service_tier: on /v1/messages only priority (fast mode) can be written as service_tier"},
		{"model and service_tier on a message batch", "cases:\n- {name: x, path: /v1/messages/batches, model: claude-opus-4-6, service_tier: priority, want: {action: pass}}\n",
			"cases[0]: on /v1/messages/batches write the batch body (json with requests[].params)"},
		{"a want with nothing in it", "cases:\n- {name: x, path: /v1/responses, body: '{}', want: {}}\n",
			"cases[0].want: nothing to compare: give at least one field"},
		{"two cases with one name", "cases:\n- {name: x, path: /v1/responses, body: '{}', want: {status: 0}}\n- {name: x, path: /v1/responses, body: '{}', want: {status: 0}}\n",
			`cases[1].name: duplicate case name "x" (also cases[0])`},
		{"a cost with more than 12 decimals", "cases:\n- {name: x, path: /v1/responses, body: '{}', want: {cost: 0.0000000000001}}\n",
			"cases[0].want.cost:"},
		{"no cases", "cases: []\n", "cases: required: at least one case"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := dir + "/" + string(rune('a'+i)) + "_test.yaml"
			writeFile(t, name, "policy: "+absTestdata(t, "policytest/rollout.yaml")+"\n"+tc.file)
			r := runBinary(t, nil, "test", name)
			if r.code != 2 || !strings.Contains(r.stdout, tc.want) {
				t.Errorf("exit %d, want 2 with %q:\n%s%s", r.code, tc.want, r.stdout, r.stderr)
			}
		})
	}
}

func TestEvalBudgetSpent(t *testing.T) {
	t.Parallel()
	body := []byte(`{"model":"gpt-5.5","service_tier":"priority"}`)
	args := []string{"eval", "--config", "testdata/policytest/rollout.yaml", "--path", "/v1/responses", "--header", "x-tiergate-group=team-a"}
	cases := []struct {
		name, spent string
		code        int
		want        map[string]string // decision fields
	}{
		{"under the limit the request passes", "team-a-daily=9.999999", 0,
			map[string]string{"action": "pass", "budget": "none", "shadow_rule": "team-a-shadow", "shadow_action": "pass"}},
		{"at the limit the budget refuses it", "team-a-daily=10", 3,
			map[string]string{"action": "block", "budget": "team-a-daily", "status": "429"}},
		{"a budget the policy does not have is an error", "nobody=1", 1, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runBinary(t, body, append(args, "--budget-spent", tc.spent)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d: %s", r.code, tc.code, r.stderr)
			}
			for k, want := range tc.want {
				if got := gjson.Get(r.stderr, k).String(); got != want {
					t.Errorf("%s = %q, want %q (%s)", k, got, want, r.stderr)
				}
			}
		})
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// absTestdata is the absolute path of a file under testdata.
func absTestdata(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
