package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	hash := sha256Hex("k1")
	cases := []struct {
		name string
		file string
		want []string // every line expected, in any order
	}{
		{"an unknown key is refused", "rules: []\nrulez: []\n",
			[]string{"rulez: unknown field (known: budget_store, budgets, groups, identity, metrics, model_aliases, prices, rules)"}},
		{"a camelCase key is refused with its snake_case spelling", "rules: [{serviceTier: priority, service_tier: priority, action: block}]\n",
			[]string{"rules[0].serviceTier: unknown field (did you mean service_tier? fields are written in snake_case)"}},
		{"an unknown action names the place and the choices", "rules:\n- {service_tier: priority, action: pass}\n- {service_tier: priority, action: pass}\n- {service_tier: priority, action: blok}\n",
			[]string{`rules[2].action: unknown action "blok" (want pass, filter or block)`}},
		{"an upper-case value is refused with a hint", "rules: [{service_tier: Priority, action: filter}]\n",
			[]string{`rules[0].service_tier: unknown service tier "Priority" (want priority, fast, flex, auto, default, scale, ultrafast or all); values are written in lower case`}},
		{"an unknown endpoint is refused", "rules: [{service_tier: flex, action: block, endpoints: [chat, responses]}]\n",
			[]string{`rules[0].endpoints[0]: unknown endpoint "chat" (want chat_completions, responses, messages, responses_ws or realtime)`}},
		{"a number where a name is expected is refused", "rules: [{name: 42, service_tier: priority, action: block}]\n",
			[]string{"rules[0].name: want a string, got number 42"}},
		{"a null is refused", "rules: [{service_tier: priority, action: }]\n",
			[]string{"rules[0].action: null is not allowed (leave the key out instead)"}},
		{"a blank whitelist entry is refused", "rules: [{service_tier: priority, action: block, model_whitelist: [gpt-5, \" \"]}]\n",
			[]string{"rules[0].model_whitelist[1]: blank model name"}},
		{"duplicate rule names are refused", "rules:\n- {name: a, service_tier: priority, action: block}\n- {name: a, service_tier: flex, action: block}\n",
			[]string{`rules[1].name: duplicate rule name "a" (also rules[0])`}},
		{"duplicate group names are refused", "groups: [{name: g}, {name: g}]\n",
			[]string{`groups[1].name: duplicate group name "g" (also groups[0])`}},
		{"a key digest in two groups is refused", "groups:\n- {name: a, api_key_sha256: [" + hash + "]}\n- {name: b, api_key_sha256: [" + hash + "]}\n",
			[]string{"groups[1].api_key_sha256[0]: key digest already listed at groups[0].api_key_sha256[0] (a key belongs to one group only)"}},
		{"a malformed digest is refused", "groups: [{name: a, api_key_sha256: [abc, " + strings.ToUpper(hash) + "]}]\n",
			[]string{
				`groups[0].api_key_sha256[0]: not a SHA-256 digest: want 64 lower-case hex digits (printf %s "$KEY" | sha256sum)`,
				`groups[0].api_key_sha256[1]: not a SHA-256 digest: want 64 lower-case hex digits (printf %s "$KEY" | sha256sum)`,
			}},
		{"missing required fields are named", "rules: [{name: x}]\n",
			[]string{"rules[0].service_tier: required (priority, fast, flex, auto, default, scale, ultrafast or all)", "rules[0].action: required (pass, filter or block)"}},
		{"all cannot be forced", "groups: [{name: g, force_service_tier: all}]\n",
			[]string{"groups[0].force_service_tier: all is not a tier a request can be forced to (want priority, flex, auto, default, scale or ultrafast)"}},
		{"a fallback without a whitelist is refused", "rules: [{service_tier: priority, action: pass, fallback_action: block}]\n",
			[]string{"rules[0].fallback_action: needs a non-empty model_whitelist (an empty whitelist already matches every model)"}},
		{"a rule name starting with # is refused", "rules: [{name: '#1', service_tier: priority, action: pass}]\n",
			[]string{"rules[0].name: rule names must not start with # (unnamed rules are labelled #1, #2... by position)"}},
		{"duplicate YAML keys are refused", "rules: []\nrules: []\n", []string{"not valid YAML or JSON"}},
		{"an empty file is refused", "  \n", []string{"the file is empty (write `rules: []` for a policy with no rules)"}},
		{"a list at the top is refused", "- a\n", []string{"want a mapping, got a list"}},
		{"a bad header name is refused", "identity: {group_header: \"x group\"}\n", []string{`identity.group_header: "x group" is not a valid HTTP header name`}},
		{"every problem is reported", "rules:\n- {service_tier: turbo, action: blok}\n- {service_tier: priority, action: block, model_whitelist: [\"\"]}\n",
			[]string{
				`rules[0].service_tier: unknown service tier "turbo" (want priority, fast, flex, auto, default, scale, ultrafast or all)`,
				`rules[0].action: unknown action "blok" (want pass, filter or block)`,
				"rules[1].model_whitelist[0]: blank model name",
			}},
		{"JSON is accepted and checked the same way", `{"rules":[{"service_tier":"priority","action":"blok"}]}`,
			[]string{`rules[0].action: unknown action "blok" (want pass, filter or block)`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load([]byte(tc.file))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Load returned %v, want a *ConfigError", err)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) && !strings.HasPrefix(tc.want[0], "not valid") {
				t.Errorf("got %d problems, want %d:\n%s", len(lines), len(tc.want), err)
			}
			for _, w := range tc.want {
				found := false
				for _, l := range lines {
					if l == w || (strings.HasPrefix(w, "not valid") && strings.HasPrefix(l, w)) {
						found = true
					}
				}
				if !found {
					t.Errorf("missing problem %q in:\n%s", w, err)
				}
			}
		})
	}
}

func TestConfigAccepted(t *testing.T) {
	t.Parallel()
	file := `
rules:
- name: fast-only-for-gpt-5.5
  service_tier: fast
  action: block
  error_message: "fast mode is not allowed"
  model_whitelist: ["gpt-5.5", "gpt-5.5-*"]
  fallback_action: pass
  fallback_error_message: ""
  groups: [team-a]
  endpoints: [chat_completions, responses, messages, responses_ws, realtime]
groups:
- name: codex-fast
  force_service_tier: priority
  api_key_sha256: ["` + sha256Hex("k") + `"]
identity:
  group_header: x-tiergate-group
model_aliases:
  gpt-latest: gpt-5.5
metrics:
  models: ["gpt-5.5", "gpt-5.4"]
`
	p, err := Load([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Config().Rules[0].ServiceTier.String(); got != "SERVICE_TIER_PRIORITY" {
		t.Errorf("fast loads as %s", got)
	}
	if len(p.SHA256()) != 64 {
		t.Errorf("SHA256 = %q", p.SHA256())
	}
	if p.groupForKeys([]string{"k"}) != "codex-fast" {
		t.Errorf("key did not resolve to its group")
	}
}
