package policy

import (
	"strings"
	"testing"
)

func mustLoad(t testing.TB, yaml string) *Policy {
	t.Helper()
	p, err := Load([]byte(yaml))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return p
}

const semanticsPolicy = `
rules:
- name: pass-for-vip
  service_tier: priority
  action: pass
  groups: [vip]
- name: block-priority-gpt55
  service_tier: priority
  action: block
  model_whitelist: ["gpt-5.5", "gpt-5.5-*"]
- name: fallback-on-mini
  service_tier: priority
  action: filter
  model_whitelist: ["gpt-5-mini"]
  fallback_action: block
  fallback_error_message: "priority only on gpt-5-mini"
  groups: [team-fallback]
- name: chat-only-flex
  service_tier: flex
  action: block
  endpoints: [chat_completions]
  error_message: "no flex on chat"
- name: all-on-o3
  service_tier: all
  action: filter
  model_whitelist: ["o3"]
- name: strip-priority
  service_tier: priority
  action: filter
groups:
- name: forced
  force_service_tier: priority
- name: forced-flex
  force_service_tier: flex
- name: vip
model_aliases:
  gpt-latest: gpt-5.5
`

func TestApplySemantics(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, semanticsPolicy)
	cases := []struct {
		name     string
		endpoint Endpoint
		group    string
		body     string
		action   Action
		rule     string
		status   int
		out      string // expected body when forwarded; "" = unchanged
		message  string
		sent     Tier
	}{
		{
			name: "filter strips priority and leaves the rest byte-identical", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","service_tier":"priority","input":"hi"}`,
			action: ActionFilter, rule: "strip-priority", out: `{"model":"gpt-4o","input":"hi"}`, sent: TierNone,
		},
		{
			name: "filter strips priority even when the key is escaped", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","service\u005ftier":"priority"}`,
			action: ActionFilter, rule: "strip-priority", out: `{"model":"gpt-4o"}`,
		},
		{
			name: "filter strips every occurrence of a duplicated key", endpoint: EndpointChatCompletions,
			body:   `{"service_tier":"default", "model":"gpt-4o", "service_tier":"fast"}`,
			action: ActionFilter, rule: "strip-priority", out: `{"model":"gpt-4o"}`,
		},
		{
			name: "the alias fast is priority", endpoint: EndpointResponses,
			body:   `{"service_tier":"fast","model":"gpt-5.5"}`,
			action: ActionBlock, rule: "block-priority-gpt55", status: 403,
			message: "service_tier=priority is not allowed for model gpt-5.5",
		},
		{
			name: "trimmed and case-folded values are judged", endpoint: EndpointResponses,
			body:   `{"service_tier":" Fast ","model":"gpt-5.5-mini"}`,
			action: ActionBlock, rule: "block-priority-gpt55", status: 403,
			message: "service_tier=priority is not allowed for model gpt-5.5-mini",
		},
		{
			name: "PRIORITY upper case is priority", endpoint: EndpointResponses,
			body:   `{"service_tier":"PRIORITY","model":"gpt-4o"}`,
			action: ActionFilter, rule: "strip-priority", out: `{"model":"gpt-4o"}`,
		},
		{
			name: "pass normalises a non-canonical spelling", endpoint: EndpointResponses, group: "vip",
			body:   `{"service_tier":" Fast ","model":"gpt-5.5"}`,
			action: ActionPass, rule: "pass-for-vip", out: `{"service_tier":"priority","model":"gpt-5.5"}`, sent: TierPriority,
		},
		{
			name: "pass leaves a canonical value byte-identical", endpoint: EndpointResponses, group: "vip",
			body:   `{"service_tier":"priority","model":"gpt-5.5"}`,
			action: ActionPass, rule: "pass-for-vip", sent: TierPriority,
		},
		{
			name: "pass collapses duplicates into the last occurrence's canonical value", endpoint: EndpointResponses, group: "vip",
			body:   `{"service_tier":"default","model":"gpt-5.5","service_tier":"FAST"}`,
			action: ActionPass, rule: "pass-for-vip", out: `{"model":"gpt-5.5","service_tier":"priority"}`, sent: TierPriority,
		},
		{
			name: "first match wins even on pass", endpoint: EndpointResponses, group: "vip",
			body:   `{"service_tier":"priority","model":"gpt-5.5"}`,
			action: ActionPass, rule: "pass-for-vip",
		},
		{
			name: "a model alias is matched as its target", endpoint: EndpointResponses,
			body:   `{"service_tier":"priority","model":"gpt-latest"}`,
			action: ActionBlock, rule: "block-priority-gpt55", status: 403,
			message: "service_tier=priority is not allowed for model gpt-5.5",
		},
		{
			name: "a whitelist miss without fallback falls through to the next rule", endpoint: EndpointResponses,
			body:   `{"service_tier":"priority","model":"gpt-4.1"}`,
			action: ActionFilter, rule: "strip-priority", out: `{"model":"gpt-4.1"}`,
		},
		{
			name: "a whitelist hit takes the rule's action", endpoint: EndpointResponses, group: "team-fallback",
			body:   `{"service_tier":"priority","model":"gpt-5-mini"}`,
			action: ActionFilter, rule: "fallback-on-mini", out: `{"model":"gpt-5-mini"}`,
		},
		{
			name: "a whitelist miss takes the fallback action and message", endpoint: EndpointResponses, group: "team-fallback",
			body:   `{"service_tier":"priority","model":"gpt-4.1"}`,
			action: ActionBlock, rule: "fallback-on-mini", status: 403, message: "priority only on gpt-5-mini",
		},
		{
			name: "a rule scoped to an endpoint applies there", endpoint: EndpointChatCompletions,
			body:   `{"service_tier":"flex","model":"gpt-4o"}`,
			action: ActionBlock, rule: "chat-only-flex", status: 403, message: "no flex on chat",
		},
		{
			name: "a rule scoped to an endpoint does not apply elsewhere", endpoint: EndpointResponses,
			body:   `{"service_tier":"flex","model":"gpt-4o"}`,
			action: ActionPass, sent: TierFlex,
		},
		{
			name: "all matches any recognised tier", endpoint: EndpointResponses,
			body:   `{"service_tier":"scale","model":"o3"}`,
			action: ActionFilter, rule: "all-on-o3", out: `{"model":"o3"}`,
		},
		{
			name: "all does not match a missing tier", endpoint: EndpointResponses,
			body:   `{"model":"o3"}`,
			action: ActionPass, sent: TierNone,
		},
		{
			name: "all does not match an unrecognised tier, which is left for the upstream", endpoint: EndpointResponses,
			body:   `{"model":"o3","service_tier":"turbo"}`,
			action: ActionPass, sent: TierUnrecognised,
		},
		{
			name: "a non-string tier is left alone", endpoint: EndpointResponses,
			body:   `{"model":"o3","service_tier":5}`,
			action: ActionPass, sent: TierUnrecognised,
		},
		{
			name: "the strictest occurrence wins", endpoint: EndpointResponses,
			body:   `{"model":"gpt-5.5","service_tier":"default","service_tier":"priority","service_tier":"auto"}`,
			action: ActionBlock, rule: "block-priority-gpt55", status: 403,
		},
		{
			name: "the strictest model wins when the model key is duplicated", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","service_tier":"priority","model":"gpt-5.5"}`,
			action: ActionBlock, rule: "block-priority-gpt55", status: 403,
		},
		{
			name: "force adds the tier when none was sent", endpoint: EndpointResponses, group: "forced",
			body:   `{"model":"gpt-4o"}`,
			action: ActionFilter, rule: "strip-priority", out: `{"model":"gpt-4o"}`,
		},
		{
			name: "force replaces the sent tier and the rules judge it", endpoint: EndpointResponses, group: "forced",
			body:   `{"model":"gpt-5.5","service_tier":"flex"}`,
			action: ActionBlock, rule: "block-priority-gpt55", status: 403,
		},
		{
			name: "force with a passing tier leaves exactly one key", endpoint: EndpointResponses, group: "forced-flex",
			body:   `{"model":"gpt-4o","service_tier":"priority","service_tier":"auto"}`,
			action: ActionPass, out: `{"model":"gpt-4o","service_tier":"flex"}`, sent: TierFlex,
		},
		{
			name: "force adds a key when none was sent and the tier passes", endpoint: EndpointResponses, group: "forced-flex",
			body:   `{"model":"gpt-4o"}`,
			action: ActionPass, out: `{"model":"gpt-4o","service_tier":"flex"}`, sent: TierFlex,
		},
		{
			name: "force on chat is blocked by an endpoint rule", endpoint: EndpointChatCompletions, group: "forced-flex",
			body:   `{"model":"gpt-4o"}`,
			action: ActionBlock, rule: "chat-only-flex", status: 403,
		},
		{
			name: "null is no tier", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","service_tier":null}`,
			action: ActionPass, sent: TierNone,
		},
		{
			name: "a nested service_tier is not the request's tier", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","metadata":{"service_tier":"priority"}}`,
			action: ActionPass, sent: TierNone,
		},
		{
			name: "invalid JSON is refused", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","service_tier":"priority",}`,
			action: ActionBlock, status: 400,
		},
		{
			name: "a body that is not an object is refused", endpoint: EndpointResponses,
			body:   `["service_tier","priority"]`,
			action: ActionBlock, status: 400, message: "the request body is not a JSON object",
		},
		{
			name: "a number for a body is refused", endpoint: EndpointMessages,
			body:   ` 42 `,
			action: ActionBlock, status: 400, message: "the request body is not a JSON object",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := p.apply(&Request{Endpoint: tc.endpoint, Group: tc.group}, []byte(tc.body))
			if res.Action != tc.action || res.Rule != tc.rule || res.Refusal.Status() != tc.status {
				t.Fatalf("got action=%v rule=%q status=%d, want action=%v rule=%q status=%d",
					res.Action, res.Rule, res.Refusal.Status(), tc.action, tc.rule, tc.status)
			}
			if tc.message != "" && res.Message != tc.message {
				t.Errorf("message = %q, want %q", res.Message, tc.message)
			}
			if tc.status != 0 {
				return
			}
			want := tc.out
			if want == "" {
				want = tc.body
				if res.BodyChanged {
					t.Errorf("body changed to %s, want it untouched", res.Body)
				}
			}
			if string(res.Body) != want {
				t.Errorf("body = %s, want %s", res.Body, want)
			}
			if tc.sent != TierNone && res.Sent != tc.sent {
				t.Errorf("sent = %v, want %v", res.Sent, tc.sent)
			}
		})
	}
}

func TestDefaultPolicy(t *testing.T) {
	t.Parallel()
	p := Default()
	res := p.apply(&Request{Endpoint: EndpointChatCompletions}, []byte(`{"model":"x","service_tier":"fast"}`))
	if res.Action != ActionFilter || res.Rule != "#1" || string(res.Body) != `{"model":"x"}` {
		t.Fatalf("default policy: action=%v rule=%q body=%s", res.Action, res.Rule, res.Body)
	}
	res = p.apply(&Request{Endpoint: EndpointChatCompletions}, []byte(`{"model":"x","service_tier":"flex"}`))
	if res.Action != ActionPass || res.BodyChanged {
		t.Fatalf("default policy on flex: action=%v changed=%v", res.Action, res.BodyChanged)
	}
}

func TestDefaultMessageUsesModelAsMatched(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, "rules: [{service_tier: priority, action: block}]\nmodel_aliases: {fast-model: gpt-5.5}\n")
	res := p.apply(&Request{Endpoint: EndpointResponses}, []byte(`{"model":"fast-model","service_tier":"priority"}`))
	if want := "service_tier=priority is not allowed for model gpt-5.5"; res.Message != want {
		t.Fatalf("message = %q, want %q", res.Message, want)
	}
	res = p.apply(&Request{Endpoint: EndpointResponses}, []byte(`{"service_tier":"priority"}`))
	if want := "service_tier=priority is not allowed for model "; res.Message != want {
		t.Fatalf("message without a model = %q, want %q", res.Message, want)
	}
}

func TestWhitelistStarMatchesNoModel(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, `rules: [{service_tier: priority, action: block, model_whitelist: ["*"]}]`)
	res := p.apply(&Request{Endpoint: EndpointResponses}, []byte(`{"service_tier":"priority"}`))
	if res.Action != ActionBlock {
		t.Fatalf("\"*\" must match a request without a model, got %v", res.Action)
	}
	p = mustLoad(t, `rules: [{service_tier: priority, action: block, model_whitelist: ["gpt-*"]}]`)
	res = p.apply(&Request{Endpoint: EndpointResponses}, []byte(`{"service_tier":"priority"}`))
	if res.Action != ActionPass {
		t.Fatalf("a prefix pattern must not match a request without a model, got %v", res.Action)
	}
	res = p.apply(&Request{Endpoint: EndpointResponses}, []byte(`{"service_tier":"priority","model":"GPT-5"}`))
	if res.Action != ActionPass {
		t.Fatalf("whitelists are case-sensitive, got %v", res.Action)
	}
}

func TestGroups(t *testing.T) {
	t.Parallel()
	const key = "sk-test-123"
	// sha256("sk-test-123")
	p := mustLoad(t, `
identity: {group_header: X-Tiergate-Group}
groups:
- name: keyed
  api_key_sha256: ["`+sha256Hex(key)+`"]
rules:
- {service_tier: priority, action: pass, groups: [keyed, header-only]}
- {service_tier: priority, action: block}
`)
	cases := []struct {
		name    string
		headers map[string]string
		extra   []string // keys from elsewhere (a WebSocket subprotocol)
		group   string
		action  Action
	}{
		{"the header names the group", map[string]string{"x-tiergate-group": " header-only "}, nil, "header-only", ActionPass},
		{"the header wins over the key", map[string]string{"x-tiergate-group": "someone-else", "authorization": "Bearer " + key}, nil, "someone-else", ActionBlock},
		{"a blank header falls back to the key", map[string]string{"x-tiergate-group": "  ", "authorization": "Bearer " + key}, nil, "keyed", ActionPass},
		{"a bearer key's digest names the group", map[string]string{"authorization": "bearer " + key}, nil, "keyed", ActionPass},
		{"so does Anthropic's x-api-key", map[string]string{"x-api-key": key}, nil, "keyed", ActionPass},
		{"and Azure's api-key", map[string]string{"api-key": key}, nil, "keyed", ActionPass},
		{"and a key found elsewhere", nil, []string{key}, "keyed", ActionPass},
		{"an unknown key is no group", map[string]string{"authorization": "Bearer sk-other"}, nil, "", ActionBlock},
		{"no identity is no group", nil, nil, "", ActionBlock},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := p.GroupFromHeaders(func(name string) string { return tc.headers[name] }, tc.extra...)
			if g != tc.group {
				t.Fatalf("group = %q, want %q", g, tc.group)
			}
			res := p.apply(&Request{Endpoint: EndpointResponses, Group: g}, []byte(`{"service_tier":"priority"}`))
			if res.Action != tc.action {
				t.Fatalf("action = %v, want %v", res.Action, tc.action)
			}
		})
	}
	if p.GroupHeader() != "x-tiergate-group" {
		t.Errorf("GroupHeader = %q, want it lower-cased", p.GroupHeader())
	}
}

func TestLabelsAreBounded(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, `
rules: [{service_tier: priority, action: block, model_whitelist: [gpt-5.5, "o*"], groups: [team-a]}]
metrics: {models: [gpt-4o]}
model_aliases: {latest: gpt-5.4}
groups: [{name: team-b}]
`)
	for model, want := range map[string]string{"gpt-5.5": "gpt-5.5", "gpt-4o": "gpt-4o", "latest": "latest", "gpt-5.4": "gpt-5.4", "o3": "other", "": "none", "attacker-chosen": "other"} {
		if got := p.ModelLabel(model); got != want {
			t.Errorf("ModelLabel(%q) = %q, want %q", model, got, want)
		}
	}
	for group, want := range map[string]string{"team-a": "team-a", "team-b": "team-b", "": "none", "made-up": "other"} {
		if got := p.GroupLabel(group); got != want {
			t.Errorf("GroupLabel(%q) = %q, want %q", group, got, want)
		}
	}
	// Tiers an upstream reports: canonical names, its aliases folded, and
	// anything else it might invent bounded.
	for tier, want := range map[string]string{"priority": "priority", " Fast ": "priority", "flex": "flex", "default": "default",
		"": "none", "none": "none", "priority_v2": "other", "standard": "other", "x" + strings.Repeat("y", 100): "other"} {
		if got := TierLabel(tier); got != want {
			t.Errorf("TierLabel(%q) = %q, want %q", tier, got, want)
		}
	}
}

func TestEndpointForPath(t *testing.T) {
	t.Parallel()
	cases := map[string]Endpoint{
		"/v1/chat/completions": EndpointChatCompletions,
		"/openai/deployments/gpt/chat/completions?api-version=2024": EndpointChatCompletions,
		"/v1/responses":                    EndpointResponses,
		"/v1/responses/compact":            EndpointResponses,
		"/gateway/openai/v1/responses?x=1": EndpointResponses,
		"/v1/messages":                     EndpointMessages,
		"/v1/messages?beta=true":           EndpointMessages,
		"/v1/models":                       EndpointUnknown,
		"/v1/responses/resp_1":             EndpointUnknown,
		"/v1/messages/count_tokens":        EndpointUnknown,
		"/v1/chat/completions/":            EndpointChatCompletions,
	}
	for path, want := range cases {
		if got := endpointForPath(path); got != want {
			t.Errorf("endpointForPath(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestParseTier(t *testing.T) {
	t.Parallel()
	cases := map[string]Tier{
		"priority": TierPriority, "fast": TierPriority, " Fast ": TierPriority, "PRIORITY": TierPriority,
		"flex": TierFlex, "auto": TierAuto, "default": TierDefault, "scale": TierScale, "ultrafast": TierUltrafast,
		"ſcale": TierScale, "prıority": TierPriority, "PRİORİTY": TierPriority, "faﬆ": TierPriority, "FAﬅ": TierPriority,
		"ﬂex": TierFlex, "ultrafaﬆ": TierUltrafast, "prı\u0307ority": TierUnrecognised, "": TierUnrecognised, "turbo": TierUnrecognised, "priority!": TierUnrecognised,
		strings.Repeat("a", 100): TierUnrecognised,
	}
	for in, want := range cases {
		if got := ParseTier(in); got != want {
			t.Errorf("ParseTier(%q) = %v, want %v", in, got, want)
		}
		if got := parseTierBytes([]byte(in)); got != want {
			t.Errorf("parseTierBytes(%q) = %v, want %v", in, got, want)
		}
	}
}
