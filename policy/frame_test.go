package policy

import "testing"

func TestApplyFrame(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, `
rules:
- {name: ok-mini, service_tier: priority, action: pass, model_whitelist: [gpt-5-mini]}
- {name: block-55, service_tier: priority, action: block, model_whitelist: [gpt-5.5]}
- {name: strip, service_tier: priority, action: filter}
groups: [{name: forced, force_service_tier: flex}]
`)
	cases := []struct {
		name     string
		group    string
		session  []string
		frame    string
		policed  bool
		action   Action
		status   int
		out      string
		rule     string
		reqModel string
	}{
		{
			name:  "frames other than response.create pass byte-identical",
			frame: `{"type":"session.update","session":{"service_tier":"priority"}}`,
		},
		{
			name:    "a tier under response is policed too",
			frame:   `{"type":"response.create","model":"gpt-4o","response":{"service_tier":"priority","instructions":"x"}}`,
			policed: true, action: ActionFilter, rule: "strip",
			out:      `{"type":"response.create","model":"gpt-4o","response":{"instructions":"x"}}`,
			reqModel: "gpt-4o",
		},
		{
			name:    "both places are filtered",
			frame:   `{"type":"response.create","service_tier":"fast","response":{"service_tier":"priority"}}`,
			session: []string{"gpt-4o"}, policed: true, action: ActionFilter, rule: "strip",
			out: `{"type":"response.create","response":{}}`, reqModel: "gpt-4o",
		},
		{
			name:    "a frame without a model is judged against the session model",
			frame:   `{"type":"response.create","service_tier":"priority"}`,
			session: []string{"gpt-5.5"}, policed: true, action: ActionBlock, status: 403, rule: "block-55",
		},
		{
			name:    "an unconfirmed session model is judged too and the strictest wins",
			frame:   `{"type":"response.create","service_tier":"priority"}`,
			session: []string{"gpt-5-mini", "gpt-5.5"}, policed: true, action: ActionBlock, status: 403, rule: "block-55",
		},
		{
			name:    "the frame's own model beats the session model",
			frame:   `{"type":"response.create","model":"gpt-5-mini","service_tier":"priority"}`,
			session: []string{"gpt-5.5"}, policed: true, action: ActionPass, rule: "ok-mini", reqModel: "gpt-5-mini",
		},
		{
			name:  "force applies to frames",
			frame: `{"type":"response.create","model":"gpt-4o"}`,
			group: "forced", policed: true, action: ActionPass,
			out: `{"type":"response.create","model":"gpt-4o","service_tier":"flex"}`, reqModel: "gpt-4o",
		},
		{
			name:    "an invalid frame is refused",
			frame:   `{"type":"response.create","service_tier":"priority"`,
			policed: true, action: ActionBlock, status: 400,
		},
		{
			name:    "an escaped type is still response.create",
			frame:   `{"type":"response\u002ecreate","service_tier":"priority","model":"gpt-4o"}`,
			policed: true, action: ActionFilter, rule: "strip",
			out: `{"type":"response\u002ecreate","model":"gpt-4o"}`, reqModel: "gpt-4o",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := p.ApplyFrame(&Request{Endpoint: EndpointResponsesWS, Group: tc.group, SessionModels: tc.session}, []byte(tc.frame))
			if res.Policed != tc.policed || res.Action != tc.action || res.Refusal.Status() != tc.status || res.Rule != tc.rule {
				t.Fatalf("policed=%v action=%v status=%d rule=%q, want %v %v %d %q",
					res.Policed, res.Action, res.Refusal.Status(), res.Rule, tc.policed, tc.action, tc.status, tc.rule)
			}
			if tc.status == 0 {
				checkBody(t, res.Body, tc.frame, tc.out)
			}
			if tc.reqModel != "" && res.RequestModel != tc.reqModel {
				t.Errorf("request model = %q, want %q", res.RequestModel, tc.reqModel)
			}
		})
	}
}

func TestEnsureUsage(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, "rules: []")
	cases := []struct {
		name  string
		body  string
		out   string
		added bool
	}{
		{"added when absent", `{"model":"m","stream":true}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, true},
		{"set when null", `{"stream":true,"stream_options":null}`, `{"stream":true,"stream_options":{"include_usage":true}}`, true},
		{"set when false, other options kept", `{"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":false}}`,
			`{"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true}}`, true},
		{"left alone when the client asked for it", `{"stream":true,"stream_options":{"include_usage":true}}`, "", false},
		{"not added when not streaming", `{"model":"m","stream":false}`, "", false},
		{"not added without stream", `{"model":"m"}`, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := p.apply(&Request{Endpoint: EndpointChatCompletions, EnsureUsage: true}, []byte(tc.body))
			want := tc.out
			if want == "" {
				want = tc.body
			}
			if string(res.Body) != want || res.UsageAdded != tc.added {
				t.Fatalf("body = %s added=%v, want %s added=%v", res.Body, res.UsageAdded, want, tc.added)
			}
		})
	}
}
