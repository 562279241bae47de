package policy

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

const fuzzPolicy = `
rules:
- {service_tier: priority, action: pass, groups: [vip]}
- {service_tier: priority, action: block, model_whitelist: ["gpt-5.5*"]}
- {service_tier: priority, action: filter}
- {service_tier: flex, action: filter, endpoints: [chat_completions]}
- {service_tier: scale, action: block}
groups:
- {name: vip}
- {name: forced, force_service_tier: priority}
- {name: forced-flex, force_service_tier: flex}
prices:
  currency: USD
  models: [{model: "*", tiers: {default: {input: 1, output: 2}}}]
budgets:
- {name: vip-priority, groups: [vip], service_tiers: [priority], window: day, limit: 1, on_exhausted: filter}
- {name: forced-priority, groups: [forced], service_tiers: [priority], window: day, limit: 1, on_exhausted: block}
`

// fuzzSpend has every budget of fuzzPolicy exhausted: vip's priority must
// never reach the upstream (the rules pass it; the budget filters it).
var fuzzSpend = fixedSpend{units: map[string]int64{"vip-priority/vip": 1, "forced-priority/forced": 1}, secondsLeft: 60}

var fuzzGroups = []string{"", "vip", "forced", "forced-flex"}
var fuzzEndpoints = []Endpoint{EndpointChatCompletions, EndpointResponses, EndpointResponsesWS, EndpointMessages}

// FuzzApply checks the product's invariant on arbitrary bodies: what goes
// upstream is valid JSON whenever the input was, and no reader, whichever
// duplicate it believes, finds a tier there that the policy refuses.
func FuzzApply(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-5.5","service_tier":"priority"}`,
		`{"service_tier":"default","service_tier":"fast","model":"gpt-4o"}`,
		`{"service\u005ftier":"priority","model":"o3"}`,
		`{"type":"response.create","response":{"service_tier":"priority"},"service_tier":"flex"}`,
		`{"model":"claude-opus-4-6","speed":"fast","fallbacks":[{"speed":"fast"},"default"]}`,
		`{"stream":true,"model":"m","stream_options":{"include_usage":false}}`,
		` { "model" : "gpt-4o" , "service_tier" : " Fast " } `,
		`{"service_tier":5,"service_tier":null}`,
		`[1,2,3]`,
		`{"a":{"b":[{"service_tier":"priority"}]}}`,
	} {
		for i := range fuzzEndpoints {
			f.Add([]byte(s), uint8(i), uint8(i))
		}
	}
	p, err := Load([]byte(fuzzPolicy))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, epSel, groupSel uint8) {
		ep := fuzzEndpoints[int(epSel)%len(fuzzEndpoints)]
		group := fuzzGroups[int(groupSel)%len(fuzzGroups)]
		req := &Request{Endpoint: ep, Group: group, EnsureUsage: true, SessionModels: []string{"gpt-5.5"}, Spend: fuzzSpend}
		var res Result
		if ep == EndpointResponsesWS {
			res = p.ApplyFrame(req, body)
		} else {
			res = p.Apply(req, body)
		}
		valid := json.Valid(body)
		if !valid && res.Status != 400 {
			t.Fatalf("invalid JSON got status %d: %q", res.Status, body)
		}
		if valid && utf8.Valid(body) && res.Status == 400 {
			t.Fatalf("valid JSON refused (%v): %q", res.Err, body)
		}
		if res.Status != 0 {
			return
		}
		out := res.Body
		if !json.Valid(out) {
			t.Fatalf("output is not valid JSON:\n in: %s\nout: %s", body, out)
		}
		if !res.BodyChanged && !bytes.Equal(out, body) {
			t.Fatalf("BodyChanged is false but the body differs")
		}
		if ep.Anthropic() {
			checkAnthropicOutput(t, p, res, out)
			return
		}
		for _, reader := range []struct {
			name string
			read func([]byte) (tier, model []byte, nested []byte)
		}{{"encoding/json (last key wins)", readLastWins}, {"gjson (first key wins)", readFirstWins}} {
			tierTok, modelTok, nestedTok := reader.read(out)
			if ep != EndpointResponsesWS {
				nestedTok = nil // response.service_tier is a tier on frames only
			}
			for _, tok := range [][]byte{tierTok, nestedTok} {
				if tok == nil {
					continue
				}
				if ep == EndpointResponsesWS && !res.Policed {
					continue
				}
				tier := tierOfValue(tok)
				model := ""
				if m, ok := stringValue(nil, modelTok); ok {
					model = string(m)
				} else if ep == EndpointResponsesWS {
					model = "gpt-5.5"
				}
				if v := p.judge(ep, group, tier, p.MatchModel(model)); v.action != ActionPass {
					t.Fatalf("%s reads service_tier %s (model %q) that the policy refuses (%v):\n in: %s\nout: %s",
						reader.name, tok, model, v.action, body, out)
				}
				if group == "vip" && tier == TierPriority {
					t.Fatalf("%s reads priority past vip's exhausted budget:\n in: %s\nout: %s", reader.name, body, out)
				}
				if tier.Concrete() && tier != res.Sent && ep != EndpointResponsesWS {
					t.Fatalf("%s reads %v, decision says %v was sent:\n in: %s\nout: %s", reader.name, tier, res.Sent, body, out)
				}
			}
		}
	})
}

func readLastWins(out []byte) (tier, model, nested []byte) {
	var m map[string]json.RawMessage
	if json.Unmarshal(out, &m) != nil {
		return nil, nil, nil
	}
	if r, ok := m["response"]; ok {
		var n map[string]json.RawMessage
		if json.Unmarshal(r, &n) == nil {
			nested = n["service_tier"]
		}
	}
	return m["service_tier"], m["model"], nested
}

func readFirstWins(out []byte) (tier, model, nested []byte) {
	if !gjson.ValidBytes(out) || !bytes.HasPrefix(bytes.TrimSpace(out), []byte("{")) {
		return nil, nil, nil
	}
	raw := func(r gjson.Result) []byte {
		if !r.Exists() {
			return nil
		}
		return []byte(r.Raw)
	}
	return raw(gjson.GetBytes(out, "service_tier")), raw(gjson.GetBytes(out, "model")), raw(gjson.GetBytes(out, "response.service_tier"))
}

func checkAnthropicOutput(t *testing.T, p *Policy, res Result, out []byte) {
	t.Helper()
	if res.Sent == TierPriority {
		if res.Group == "vip" {
			t.Fatalf("fast mode sent past vip's exhausted budget: %s", out)
		}
		return
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(out, &m) == nil {
		if isFastSpeed(m["speed"]) {
			t.Fatalf("fast mode survives for encoding/json: %s", out)
		}
	}
	if bytes.HasPrefix(bytes.TrimSpace(out), []byte("{")) {
		if r := gjson.GetBytes(out, "speed"); r.Exists() && isFastSpeed([]byte(r.Raw)) {
			t.Fatalf("fast mode survives for gjson: %s", out)
		}
		var fast bool
		gjson.GetBytes(out, "fallbacks").ForEach(func(_, v gjson.Result) bool {
			if s := v.Get("speed"); s.Exists() && isFastSpeed([]byte(s.Raw)) {
				fast = true
			}
			return true
		})
		if fast {
			t.Fatalf("fast mode survives in fallbacks: %s", out)
		}
	}
	for _, tok := range betaTokens([]string{res.Beta}) {
		if res.BetaChanged && isFastModeToken(tok) {
			t.Fatalf("fast-mode beta token survives: %q", res.Beta)
		}
	}
}
