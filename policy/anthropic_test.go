package policy

import "testing"

// anthropicPolicy: fast mode passes for vip on claude-opus-4-6, is blocked
// on the haiku models and filtered elsewhere; two groups are forced.
const anthropicPolicy = `
rules:
- {name: opus-fast-ok, service_tier: priority, action: pass, model_whitelist: [claude-opus-4-6], groups: [vip]}
- {name: no-fast-haiku, service_tier: priority, action: block, model_whitelist: ["claude-haiku-*"]}
- {name: strip-fast, service_tier: priority, action: filter}
groups:
- {name: vip}
- {name: forced-vip, force_service_tier: priority}
- {name: forced-flex, force_service_tier: flex}
`

func TestApplyAnthropic(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, anthropicPolicy)
	cases := []struct {
		name    string
		group   string
		beta    []string
		body    string
		action  Action
		status  int
		out     string // "" = unchanged
		beta2   string
		betaMod bool
		sent    Tier
	}{
		{
			name: "filter removes the fast-mode token and keeps the other betas",
			beta: []string{"fast-mode-2026-02-01,interleaved-thinking-2025-05-14"},
			body: `{"model":"claude-opus-4-6","max_tokens":10}`, action: ActionFilter,
			beta2: "interleaved-thinking-2025-05-14", betaMod: true,
		},
		{
			name: "a quoted fast-mode token, or one run together with another, is fast mode and is dropped whole",
			beta: []string{`"fast-mode-2026-02-01", other-2025-01-01`, "x-2025-01-01;FAST-MODE-2026-02-01", "a-2025-01-01 fast-mode-2026-02-01"},
			body: `{"model":"claude-opus-4-6"}`, action: ActionFilter, beta2: "other-2025-01-01", betaMod: true,
		},
		{
			name: "a token merely holding fast-mode without the dash is not fast mode",
			beta: []string{"no-fastmode-2025-01-01"},
			body: `{"model":"claude-opus-4-6"}`, action: ActionPass,
		},
		{
			name: "filter drops the header when only fast-mode tokens were in it, across lines",
			beta: []string{"fast-mode-2026-02-01", " Fast-Mode-2027-01-01 "},
			body: `{"model":"claude-opus-4-6"}`, action: ActionFilter, beta2: "", betaMod: true,
		},
		{
			name:   "filter removes every speed fast, top level and in fallbacks",
			body:   `{"model":"claude-opus-4-6","speed":"fast","fallbacks":[{"model":"claude-sonnet-4-5","speed":"FAST"},"default",{"model":"x","speed":"standard"}],"speed":"fast"}`,
			action: ActionFilter,
			out:    `{"model":"claude-opus-4-6","fallbacks":[{"model":"claude-sonnet-4-5"},"default",{"model":"x","speed":"standard"}]}`,
		},
		{
			name: "top-level fast mode is judged against a fallback that names no speed of its own", group: "vip",
			body:   `{"model":"claude-opus-4-6","speed":"fast","fallbacks":[{"model":"claude-haiku-4-5"}]}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "without fast mode a fallback's model alone decides nothing", group: "vip",
			body:   `{"model":"claude-opus-4-6","fallbacks":[{"model":"claude-haiku-4-5"}]}`,
			action: ActionPass,
		},
		{
			name:   "a fast fallback alone is a fast-mode request",
			body:   `{"model":"claude-haiku-4-5","fallbacks":[{"model":"claude-haiku-4-5","speed":"fast"}]}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "standard speed is no tier", body: `{"model":"claude-haiku-4-5","speed":"standard"}`,
			action: ActionPass, sent: TierNone,
		},
		{
			name: "pass keeps fast mode and normalises its spelling", group: "vip",
			beta: []string{"fast-mode-2026-02-01"},
			body: `{"model":"claude-opus-4-6","speed":" Fast"}`, action: ActionPass,
			out: `{"model":"claude-opus-4-6","speed":"fast"}`, sent: TierPriority,
		},
		{
			name: "force priority then filtered by a rule sends no fast mode", group: "forced-vip",
			beta: []string{"interleaved-thinking-2025-05-14"},
			body: `{"model":"claude-opus-4-6","max_tokens":5}`, action: ActionFilter,
		},
		{
			name: "force priority then filtered leaves a body without speed untouched", group: "forced-vip",
			body: `{"model":"claude-opus-4-6","max_tokens":5}`, action: ActionFilter,
		},
		{
			name: "force to another tier removes fast mode", group: "forced-flex",
			beta: []string{"fast-mode-2026-02-01"},
			body: `{"model":"claude-opus-4-6","speed":"fast"}`, action: ActionPass,
			out: `{"model":"claude-opus-4-6"}`, beta2: "", betaMod: true, sent: TierNone,
		},
		{
			name: "Anthropic's own service_tier is left alone",
			body: `{"model":"claude-opus-4-6","service_tier":"auto"}`, action: ActionPass,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := p.apply(&Request{Endpoint: EndpointMessages, Group: tc.group, Beta: tc.beta}, []byte(tc.body))
			if res.Action != tc.action || res.Refusal.Status() != tc.status {
				t.Fatalf("action=%v status=%d, want %v %d", res.Action, res.Refusal.Status(), tc.action, tc.status)
			}
			if tc.status == 0 {
				checkBody(t, res.Body, tc.body, tc.out)
			}
			if res.BetaChanged != tc.betaMod || res.Beta != tc.beta2 {
				t.Errorf("beta = %q (changed %v), want %q (changed %v)", res.Beta, res.BetaChanged, tc.beta2, tc.betaMod)
			}
			if res.Sent != tc.sent {
				t.Errorf("sent = %v, want %v", res.Sent, tc.sent)
			}
		})
	}
}

func TestAnthropicForceVIP(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, `
rules: [{service_tier: priority, action: pass, groups: [forced]}]
groups: [{name: forced, force_service_tier: priority}]
`)
	res := p.apply(&Request{Endpoint: EndpointMessages, Group: "forced", Beta: []string{"interleaved-thinking-2025-05-14"}},
		[]byte(`{"model":"claude-opus-4-6","speed":"standard","speed":"standard"}`))
	if res.Action != ActionPass || string(res.Body) != `{"model":"claude-opus-4-6","speed":"fast"}` {
		t.Fatalf("force with duplicates: action=%v body=%s", res.Action, res.Body)
	}
	if !res.BetaChanged || res.Beta != "interleaved-thinking-2025-05-14,fast-mode-2026-02-01" {
		t.Fatalf("beta = %q changed=%v", res.Beta, res.BetaChanged)
	}
	res = p.apply(&Request{Endpoint: EndpointMessages, Group: "forced"}, []byte(`{"model":"claude-opus-4-6"}`))
	if string(res.Body) != `{"model":"claude-opus-4-6","speed":"fast"}` || res.Beta != "fast-mode-2026-02-01" {
		t.Fatalf("force without speed: body=%s beta=%q", res.Body, res.Beta)
	}
}
