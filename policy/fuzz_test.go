package policy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"github.com/tiergate/tiergate/internal/foldedjson"
	"github.com/tiergate/tiergate/internal/jsonscan"
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
var fuzzEndpoints = []Endpoint{EndpointChatCompletions, EndpointResponses, EndpointResponsesWS, EndpointMessages, EndpointRealtime}

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
		`{"model":"gpt-5.5","SERVICE_TIER":"priority"}`,
		`{"model":"gpt-4o","\u017fervice_tier":"priority","serviceTier":"scale"}`,
		`{"Model":"gpt-5.5","service-tier":"fast","service_tier":"default"}`,
		`{"TYPE":"response.create","Response":{"ServiceTier":"priority","MODEL":"gpt-5.5"}}`,
		`{"model":"gpt-4o","Speed":"fast","FALLBACKS":[{"model":"gpt-5.5","sPeed":"fast"}]}`,
		`{"type":" Response.CREATE\u0000","model":"gpt-5.5\u0000x","service_tier":"\ufeffpriority\u0000"}`,
		`{"a":1,"b":2,"service_tier":"flex","c":3,"service_tier\u0000":"fast","d":4}`,
		`{"type":"response.create","model":"gpt-4o","response":{"x":1,"service_tier":"priority","y":2}}`,
		`{"model":"gpt-5.5","servıce_tıer":"prıority"}`,
		`{"model":"gpt-4o","service_tier":"faﬆ","ſervice_tier":"flex"}`,
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
		frame := ep == EndpointResponsesWS || ep == EndpointRealtime
		if frame {
			res = p.ApplyFrame(req, body)
		} else {
			res = p.apply(req, body)
		}
		valid := json.Valid(body)
		if !valid && res.Refusal.Status() != 400 {
			t.Fatalf("invalid JSON got status %d: %q", res.Refusal.Status(), body)
		}
		isObject := bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{"))
		if valid && utf8.Valid(body) && res.Refusal.Status() == 400 && (isObject || frame) {
			t.Fatalf("a valid JSON object refused (%v): %q", res.Message, body)
		}
		if valid && !isObject && !frame && res.Refusal.Status() != 400 {
			t.Fatalf("a body that is not an object got status %d: %q", res.Refusal.Status(), body)
		}
		if res.Refusal.Status() != 0 {
			return
		}
		out := res.Body
		if !json.Valid(out) {
			t.Fatalf("output is not valid JSON:\n in: %s\nout: %s", body, out)
		}
		if !res.BodyChanged && !bytes.Equal(out, body) {
			t.Fatalf("BodyChanged is false but the body differs")
		}
		if ep.anthropic() {
			checkAnthropicOutput(t, p, res, out)
			return
		}
		for _, reader := range openAIReaders {
			tierTok, modelTok, nestedTok := reader.read(out)
			if !frame {
				nestedTok = nil // response.service_tier is a tier on frames only
			}
			for _, tok := range [][]byte{tierTok, nestedTok} {
				if tok == nil {
					continue
				}
				if frame && !res.Policed {
					continue
				}
				tier := tierOfValue(tok)
				if reader.value != nil {
					tier = reader.value(tok)
				}
				model := ""
				if m, ok := jsonscan.StringValue(nil, modelTok); ok {
					model = string(m)
				} else if frame {
					model = "gpt-5.5"
				}
				if v := p.judge(ep, group, tier, p.matchModel(model)); v.action != ActionPass {
					t.Fatalf("%s reads service_tier %s (model %q) that the policy refuses (%v):\n in: %s\nout: %s",
						reader.name, tok, model, v.action, body, out)
				}
				if group == "vip" && tier == TierPriority {
					t.Fatalf("%s reads priority past vip's exhausted budget:\n in: %s\nout: %s", reader.name, body, out)
				}
				if tier.concrete() && tier != res.Sent && !frame {
					t.Fatalf("%s reads %v, decision says %v was sent:\n in: %s\nout: %s", reader.name, tier, res.Sent, body, out)
				}
			}
		}
	})
}

// openAIReaders are the JSON readers an upstream may use, each reading the
// top-level service_tier and model and, on frames, response.service_tier,
// as raw tokens (nil when absent). README.md's invariant names exactly
// these.
var openAIReaders = []struct {
	name string
	read func([]byte) (tier, model []byte, nested []byte)
	// value reads a tier value as the reader does (nil: as tiergate does).
	value func([]byte) Tier
}{
	{"encoding/json struct (case-insensitive, last match wins)", readStructFolded, nil},
	{"encoding/json/v2 case-insensitive names (also ignoring _ and -)", readV2CaseInsensitive, nil},
	{"gjson (exact key, first match wins)", readFirstWins, nil},
	{"map (exact key, last key wins)", readLastWins, nil},
	{"upper-cased keys and values (Python's str.upper, Java's toUpperCase; last key wins)", readUpperCased, upperCasedTier},
}

// upperFull upper-cases s as Python's str.upper and Java's
// String.toUpperCase do: rune by rune, with the full mapping's expansions
// Go's unicode package leaves out (ß and the Latin ligatures).
func upperFull(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case 'ß':
			b.WriteString("SS")
		case '\uFB00':
			b.WriteString("FF")
		case '\uFB01':
			b.WriteString("FI")
		case '\uFB02':
			b.WriteString("FL")
		case '\uFB03':
			b.WriteString("FFI")
		case '\uFB04':
			b.WriteString("FFL")
		case '\uFB05', '\uFB06':
			b.WriteString("ST")
		default:
			b.WriteRune(unicode.ToUpper(r))
		}
	}
	return b.String()
}

// upperCasedTier reads a tier value as an upper-casing reader does: the
// string trimmed and upper-cased ("prıority" is PRIORITY), else as
// tiergate reads it.
func upperCasedTier(tok []byte) Tier {
	var v string
	if json.Unmarshal(tok, &v) == nil {
		if t := ParseTier(strings.ToLower(upperFull(strings.TrimSpace(v)))); t != TierUnrecognised {
			return t
		}
	}
	return tierOfValue(tok)
}

// readUpperCased reads as a dict-based reader that matches a key by
// upper-casing it: "servıce_tıer" and "SERVICE_TIER" are both service_tier
// to it, and the last match wins.
func readUpperCased(out []byte) (tier, model, nested []byte) {
	members := func(doc []byte) map[string]json.RawMessage { return foldedjson.MembersKeyed(doc, upperFull) }
	top := members(out)
	if top == nil {
		return nil, nil, nil
	}
	if r := top["RESPONSE"]; r != nil {
		nested = members(r)["SERVICE_TIER"]
	}
	return top["SERVICE_TIER"], top["MODEL"], nested
}

// readStructFolded decodes into a struct as a Go relay does: encoding/json
// matches keys to fields with Unicode simple case folding, and the last
// matching key wins.
func readStructFolded(out []byte) (tier, model, nested []byte) {
	var v struct {
		ServiceTier json.RawMessage `json:"service_tier"`
		Model       json.RawMessage `json:"model"`
		Response    json.RawMessage `json:"response"`
	}
	if json.Unmarshal(out, &v) != nil {
		return nil, nil, nil
	}
	var n struct {
		ServiceTier json.RawMessage `json:"service_tier"`
	}
	if v.Response != nil && json.Unmarshal(v.Response, &n) == nil {
		nested = n.ServiceTier
	}
	return v.ServiceTier, v.Model, nested
}

// readV2CaseInsensitive reads as encoding/json/v2 with case-insensitive
// name matching does (see package foldedjson).
func readV2CaseInsensitive(out []byte) (tier, model, nested []byte) {
	members := foldedjson.Members(out)
	if members == nil {
		return nil, nil, nil
	}
	tier, model = members["servicetier"], members["model"]
	if r := members["response"]; r != nil {
		nested = foldedjson.Members(r)["servicetier"]
	}
	return tier, model, nested
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

// checkAnthropicOutput checks that, unless fast mode was approved, no
// reader finds it in what goes upstream: not encoding/json's struct
// decode (folded keys, last wins), not encoding/json/v2's case-insensitive
// names, not gjson (first exact key), not a last-key-wins map, at the top
// level or in any fallbacks entry.
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
			t.Fatalf("fast mode survives for a last-key-wins map: %s", out)
		}
	}
	var folded struct {
		Speed     json.RawMessage   `json:"speed"`
		Fallbacks []json.RawMessage `json:"fallbacks"`
	}
	if json.Unmarshal(out, &folded) == nil {
		if isFastSpeed(folded.Speed) {
			t.Fatalf("fast mode survives for encoding/json's struct decode: %s", out)
		}
		for _, fb := range folded.Fallbacks {
			var e struct {
				Speed json.RawMessage `json:"speed"`
			}
			if json.Unmarshal(fb, &e) == nil && isFastSpeed(e.Speed) {
				t.Fatalf("fast mode survives in fallbacks for encoding/json's struct decode: %s", out)
			}
		}
	}
	if v2 := foldedjson.Members(out); v2 != nil {
		if isFastSpeed(v2["speed"]) {
			t.Fatalf("fast mode survives for encoding/json/v2: %s", out)
		}
		var fbs []json.RawMessage
		if json.Unmarshal(v2["fallbacks"], &fbs) == nil {
			for _, fb := range fbs {
				if isFastSpeed(foldedjson.Members(fb)["speed"]) {
					t.Fatalf("fast mode survives in fallbacks for encoding/json/v2: %s", out)
				}
			}
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

// FuzzBatch checks the invariant on Message Batches: under fuzzPolicy with
// every budget exhausted fast mode never passes, so a batch that goes on
// carries it in no entry's params, as any reader finds the entries (folded
// keys, last wins; gjson's first exact key; a last-key-wins map; json/v2's
// folded names), and not in its anthropic-beta header.
func FuzzBatch(f *testing.F) {
	for _, s := range []string{
		`{"requests":[{"custom_id":"a","params":{"model":"claude-opus-4-6","speed":"fast"}}]}`,
		`{"REQUESTS":[{"Params":{"speed":"fast"},"params":{"model":"m"}}],"requests":[{"params":{"Speed":"faﬆ"}}]}`,
		`{"requests":[{"params":{"model":"claude-opus-4-6","fallbacks":[{"speed":"fast"}]}},{"params":{"speed":"FAST"}}]}`,
		`{"requests":[[{"params":{"speed":"fast"}}],{"params":"x"}]}`,
		`{"requests":[{"params":{"speed":"fast"},"params":{"speed":"fast","speed":"fast"}}]}`,
		`{"requests":[]}`,
	} {
		f.Add([]byte(s), uint8(0), false)
		f.Add([]byte(s), uint8(1), true)
	}
	p, err := Load([]byte(fuzzPolicy))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, groupSel uint8, fastBeta bool) {
		group := fuzzGroups[int(groupSel)%len(fuzzGroups)]
		req := &Request{Endpoint: EndpointMessageBatches, Group: group, Spend: fuzzSpend}
		if fastBeta {
			req.Beta = []string{"fast-mode-2026-02-01"}
		}
		res := p.apply(req, body)
		if res.Refusal.Status() != 0 {
			return
		}
		out := res.Body
		if !json.Valid(out) {
			t.Fatalf("output is not valid JSON:\n in: %s\nout: %s", body, out)
		}
		header := strings.Join(req.Beta, ",")
		if res.BetaChanged {
			header = res.Beta
		}
		if isFastModeToken(header) {
			t.Fatalf("the fast-mode token survives in %q:\n in: %s", header, body)
		}
		var entries [][]byte
		var folded struct {
			Requests []struct {
				Params json.RawMessage `json:"params"`
			} `json:"requests"`
		}
		if json.Unmarshal(out, &folded) == nil {
			for _, r := range folded.Requests {
				entries = append(entries, r.Params)
			}
		}
		var exact map[string][]map[string]json.RawMessage
		if json.Unmarshal(out, &exact) == nil {
			for _, r := range exact["requests"] {
				entries = append(entries, r["params"])
			}
		}
		var v2 []json.RawMessage
		if reqs := foldedjson.Members(out)["requests"]; json.Unmarshal(reqs, &v2) == nil {
			for _, r := range v2 {
				entries = append(entries, foldedjson.Members(r)["params"])
			}
		}
		gjson.GetBytes(out, "requests").ForEach(func(_, e gjson.Result) bool {
			if pr := e.Get("params"); pr.Exists() {
				entries = append(entries, []byte(pr.Raw))
			}
			return true
		})
		for _, pr := range entries {
			if len(pr) > 0 && pr[0] == '{' {
				checkAnthropicOutput(t, p, Result{Decision: Decision{Group: group}}, pr)
			}
		}
	})
}
