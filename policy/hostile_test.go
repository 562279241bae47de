package policy

import (
	"bytes"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// These tests hold the classes of input that hostile testing found to slip
// past the policy (docs/contracts.md, "Evaluation", steps 1, 4 and 6).

const hostilePolicy = `
rules:
- {name: block-55, service_tier: priority, action: block, model_whitelist: ["gpt-5.5"]}
- {name: strip, service_tier: priority, action: filter, model_whitelist: ["gpt-4o"]}
- {name: ok, service_tier: priority, action: pass}
groups:
- {name: forced, force_service_tier: priority}
model_aliases:
  my-deployment: gpt-5.5
`

type hostileCase struct {
	name     string
	endpoint Endpoint
	group    string
	session  []string
	path     []string // Request.PathModels
	body     string
	action   Action
	status   int
	out      string // "" = unchanged
	requests Tier   // Decision.Requested, when not TierNone
}

func runHostile(t *testing.T, p *Policy, cases []hostileCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := &Request{Endpoint: tc.endpoint, Group: tc.group, SessionModels: tc.session, PathModels: tc.path}
			var res Result
			if tc.endpoint == EndpointResponsesWS || tc.endpoint == EndpointRealtime {
				res = p.ApplyFrame(req, []byte(tc.body))
			} else {
				res = p.apply(req, []byte(tc.body))
			}
			if res.Action != tc.action || res.Refusal.Status() != tc.status {
				t.Fatalf("action=%v status=%d (%v), want action=%v status=%d", res.Action, res.Refusal.Status(), res.Message, tc.action, tc.status)
			}
			if tc.requests != TierNone && res.Requested != tc.requests {
				t.Errorf("requested = %v, want %v", res.Requested, tc.requests)
			}
			if tc.status != 0 {
				return
			}
			checkBody(t, res.Body, tc.body, tc.out)
		})
	}
}

func TestFoldedKeysAreOccurrences(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, hostilePolicy)
	runHostile(t, p, []hostileCase{
		{
			name: "an upper-case service tier key is filtered", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","SERVICE_TIER":"priority"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a mixed-case key is filtered", endpoint: EndpointChatCompletions,
			body:   `{"model":"gpt-4o","Service_Tier":"priority"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "the long s folds to s, raw", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","ſervice_tier":"priority"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "the long s folds to s, escaped", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","\u017fervice_tier":"priority"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "camelCase is what encoding/json/v2 reads as service_tier", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","serviceTier":"priority"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a hyphenated key is filtered", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","service-tier":"priority"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a folded model key names the model that is judged", endpoint: EndpointResponses,
			body:   `{"MODEL":"gpt-5.5","service_tier":"priority"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a key is read up to an escaped NUL, as a C-string reader reads it", endpoint: EndpointResponses,
			body:   `{"model":"gpt-5.5","service_tier\u0000x":"priority"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a passed key cut at a NUL is renamed", endpoint: EndpointResponses,
			body:   `{"model":"gpt-5","SERVICE_TIER\u0000":"fast"}`,
			action: ActionPass, out: `{"model":"gpt-5","service_tier":"priority"}`,
		},
		{
			name: "a passed folded key is renamed service_tier at its place", endpoint: EndpointResponses,
			body:   `{"SERVICE_TIER":"priority","model":"gpt-5"}`,
			action: ActionPass, out: `{"service_tier":"priority","model":"gpt-5"}`,
		},
		{
			name: "exact and folded keys together leave one key, the last one's value", endpoint: EndpointResponses,
			body:   `{"service_tier":"default","serviceTier":"fast","model":"gpt-5"}`,
			action: ActionPass, out: `{"service_tier":"priority","model":"gpt-5"}`, requests: TierPriority,
		},
		{
			name: "a forced group renames a folded key", endpoint: EndpointResponses, group: "forced",
			body:   `{"Service-Tier":"flex","model":"gpt-5"}`,
			action: ActionPass, out: `{"service_tier":"priority","model":"gpt-5"}`,
		},
		{
			name: "a forced group adds no key beside a folded one", endpoint: EndpointResponses, group: "forced",
			body:   `{"SERVICE_TIER":"priority","model":"gpt-5"}`,
			action: ActionPass, out: `{"service_tier":"priority","model":"gpt-5"}`,
		},
		{
			name: "a folded speed is fast mode", endpoint: EndpointMessages,
			body:   `{"model":"gpt-4o","SPEED":"fast"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a folded fallbacks key is read", endpoint: EndpointMessages,
			body:   `{"model":"gpt-4o","Fallbacks":[{"model":"gpt-4o","Speed":"fast"}]}`,
			action: ActionFilter, out: `{"model":"gpt-4o","Fallbacks":[{"model":"gpt-4o"}]}`,
		},
		{
			name: "a passed folded speed is renamed", endpoint: EndpointMessages,
			body:   `{"model":"gpt-5","sPEED":"fast"}`,
			action: ActionPass, out: `{"model":"gpt-5","speed":"fast"}`,
		},
		{
			name: "a folded type makes a frame a response.create", endpoint: EndpointResponsesWS,
			body:   `{"TYPE":"response.create","model":"gpt-4o","service_tier":"priority"}`,
			action: ActionFilter, out: `{"TYPE":"response.create","model":"gpt-4o"}`,
		},
		{
			name: "a folded response key is read", endpoint: EndpointResponsesWS, session: []string{"gpt-4o"},
			body:   `{"type":"response.create","Response":{"serviceTier":"priority"}}`,
			action: ActionFilter, out: `{"type":"response.create","Response":{}}`,
		},
		// Readers that compare upper-cased names (Java's equalsIgnoreCase,
		// .NET's OrdinalIgnoreCase, Python's str.upper) take the dotless ı
		// for i: simple folding alone does not.
		{
			name: "a key with the dotless i is filtered", endpoint: EndpointChatCompletions,
			body:   `{"model":"gpt-4o","servıce_tıer":"priority"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a key with the dotless i escaped is filtered", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","serv\u0131ce_t\u0131er":"priority"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a key with the dotted capital I is filtered", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","SERVİCE_TİER":"priority"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a key with the dotless i is blocked where a rule blocks", endpoint: EndpointChatCompletions,
			body:   `{"model":"gpt-5.5","servıce_tıer":"priority"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a passed key with the dotless i is renamed service_tier at its place", endpoint: EndpointResponses,
			body:   `{"servıce_tıer":"priority","model":"gpt-5"}`,
			action: ActionPass, out: `{"service_tier":"priority","model":"gpt-5"}`,
		},
		{
			name: "a dotless-i key and an exact one leave one key, the last one's value", endpoint: EndpointResponses,
			body:   `{"service_tier":"default","SERVıCE_TıER":"fast","model":"gpt-5"}`,
			action: ActionPass, out: `{"service_tier":"priority","model":"gpt-5"}`, requests: TierPriority,
		},
		{
			name: "a folded stream_options key gets include_usage", endpoint: EndpointChatCompletions,
			body:   `{"model":"gpt-5","stream":true,"streamOptions":{"include_usage":true}}`,
			action: ActionPass,
		},
	})
}

func TestFrameTypesAreReadAsTiersAre(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, hostilePolicy)
	runHostile(t, p, []hostileCase{
		{
			name: "an upper-case type is a response.create", endpoint: EndpointResponsesWS,
			body:   `{"type":"RESPONSE.CREATE","model":"gpt-5.5","service_tier":"priority"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a type padded with white space is a response.create", endpoint: EndpointRealtime, session: []string{"gpt-5.5"},
			body:   `{"type":" response.create\n","response":{"service_tier":"priority"}}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a type spelled with the long s is a response.create", endpoint: EndpointResponsesWS,
			body:   `{"type":"re\u017fpon\u017fe.Create","model":"gpt-4o","service_tier":"priority"}`,
			action: ActionFilter, out: `{"type":"re\u017fpon\u017fe.Create","model":"gpt-4o"}`,
		},
		{
			name: "another type is still not policed", endpoint: EndpointResponsesWS,
			body:   `{"type":"response.cancel","model":"gpt-5.5","service_tier":"priority"}`,
			action: ActionPass,
		},
	})
}

// TestTiersAreReadAsUpperCasingReadersReadThem: a reader that upper-cases
// before it compares (Java's equalsIgnoreCase and toUpperCase, .NET's
// ToUpperInvariant, Python's str.upper) reads the dotless ı as I, and with
// the full mapping the ligatures U+FB00–FB06 as their letters: "prıority"
// and "faﬆ" are priority to it, so they are to tiergate.
func TestTiersAreReadAsUpperCasingReadersReadThem(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, hostilePolicy)
	runHostile(t, p, []hostileCase{
		{
			name: "priority with the dotless i is blocked", endpoint: EndpointChatCompletions,
			body:   `{"model":"gpt-5.5","service_tier":"prıority"}`,
			action: ActionBlock, status: 403, requests: TierPriority,
		},
		{
			name: "upper-case priority with the dotless i is filtered", endpoint: EndpointChatCompletions,
			body:   `{"model":"gpt-4o","service_tier":"PRıORıTY"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "priority with the dotless i escaped is filtered", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","service_tier":"pr\u0131ority"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "fast with the st ligature is priority", endpoint: EndpointChatCompletions,
			body:   `{"model":"gpt-5.5","service_tier":"faﬆ"}`,
			action: ActionBlock, status: 403, requests: TierPriority,
		},
		{
			name: "fast with the long st ligature is filtered", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","service_tier":"FAﬅ"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a dotless-i key and value together are filtered", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","servıce_tıer":"prıorıty"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a passed dotless-i tier is written canonically", endpoint: EndpointResponses,
			body:   `{"model":"gpt-5","service_tier":"prıority"}`,
			action: ActionPass, out: `{"model":"gpt-5","service_tier":"priority"}`,
		},
		{
			name: "a passed ligature tier is written canonically", endpoint: EndpointResponses,
			body:   `{"model":"gpt-5","service_tier":"ﬂex"}`,
			action: ActionPass, out: `{"model":"gpt-5","service_tier":"flex"}`, requests: TierFlex,
		},
		{
			name: "a forced group rewrites a dotless-i key and tier", endpoint: EndpointResponses, group: "forced",
			body:   `{"servıce_tıer":"PRıORıTY","model":"gpt-5"}`,
			action: ActionPass, out: `{"service_tier":"priority","model":"gpt-5"}`,
		},
		{
			name: "fast speed with the st ligature is fast mode", endpoint: EndpointMessages,
			body:   `{"model":"gpt-4o","speed":"faﬆ"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a fallback's fast speed with the st ligature is fast mode", endpoint: EndpointMessages,
			body:   `{"model":"gpt-4o","fallbacks":[{"model":"gpt-5.5","speed":"FAﬆ"}]}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a combining dot after the dotless i is no tier", endpoint: EndpointResponses,
			body:   `{"model":"gpt-5.5","service_tier":"prı̇ority"}`,
			action: ActionPass,
		},
	})
}

func TestValuesAreTrimmedAsAnyUpstreamMightTrimThem(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, hostilePolicy)
	runHostile(t, p, []hostileCase{
		{
			name: "a NUL after the tier is trimmed (Java's trim, a C reader)", endpoint: EndpointResponses,
			body:   `{"model":"gpt-5.5","service_tier":"priority\u0000"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a unit separator before the tier is trimmed (Python's strip)", endpoint: EndpointChatCompletions,
			body:   `{"model":"gpt-5.5","service_tier":"\u001fFast"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a byte order mark before the tier is trimmed (JavaScript's trim)", endpoint: EndpointResponses,
			body:   `{"model":"gpt-4o","service_tier":"\ufeffpriority"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a passed padded tier is written canonically", endpoint: EndpointResponses,
			body:   `{"model":"gpt-5","service_tier":"\u0000priority\u0085"}`,
			action: ActionPass, out: `{"model":"gpt-5","service_tier":"priority"}`,
		},
		{
			name: "a control character after fast is fast mode", endpoint: EndpointMessages,
			body:   `{"model":"gpt-4o","speed":"fast\u0000"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a control character after the type makes a response.create", endpoint: EndpointResponsesWS,
			body:   `{"type":"response.create\u0000","model":"gpt-5.5","service_tier":"priority"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a tier is read up to a NUL, as a C-string reader reads it", endpoint: EndpointResponses,
			body:   `{"model":"gpt-5.5","service_tier":"priority\u0000default"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "speed is read up to a NUL", endpoint: EndpointMessages,
			body:   `{"model":"gpt-4o","speed":"fast\u0000standard"}`,
			action: ActionFilter, out: `{"model":"gpt-4o"}`,
		},
		{
			name: "a type is read up to a NUL", endpoint: EndpointResponsesWS,
			body:   `{"type":"response.create\u0000x","model":"gpt-5.5","service_tier":"priority"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a model is judged as read up to a NUL", endpoint: EndpointResponses,
			body:   `{"model":"gpt-5.5\u0000x","service_tier":"priority"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a padded model is judged as read trimmed", endpoint: EndpointChatCompletions,
			body:   `{"model":"\u0000gpt-5.5 ","service_tier":"priority"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a claimed session model with a NUL is judged as read up to it", endpoint: EndpointRealtime,
			session: []string{"gpt-4o", "gpt-5.5\u0000"},
			body:    `{"type":"response.create","response":{"service_tier":"priority"}}`,
			action:  ActionBlock, status: 403,
		},
		{
			name: "a fallback's model is judged as read up to a NUL", endpoint: EndpointMessages,
			body:   `{"model":"gpt-4o","fallbacks":[{"model":"gpt-5.5\u0000","speed":"fast"}]}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a zero-width space is no trim of any upstream's and stays unrecognised", endpoint: EndpointResponses,
			body:   `{"model":"gpt-5.5","service_tier":"\u200bpriority"}`,
			action: ActionPass,
		},
	})
}

func TestRealtimeForceAddsNoKey(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, hostilePolicy)
	runHostile(t, p, []hostileCase{
		{
			name: "a Realtime frame with no tier gets none", endpoint: EndpointRealtime, group: "forced", session: []string{"gpt-5"},
			body:   `{"type":"response.create","response":{"instructions":"x"}}`,
			action: ActionPass,
		},
		{
			name: "a Realtime frame's own key is still rewritten", endpoint: EndpointRealtime, group: "forced", session: []string{"gpt-5"},
			body:   `{"type":"response.create","response":{"service_tier":"flex"}}`,
			action: ActionPass, out: `{"type":"response.create","response":{"service_tier":"priority"}}`,
		},
		{
			name: "a Responses WebSocket frame still gets the forced tier", endpoint: EndpointResponsesWS, group: "forced", session: []string{"gpt-5"},
			body:   `{"type":"response.create"}`,
			action: ActionPass, out: `{"type":"response.create","service_tier":"priority"}`,
		},
		{
			name: "a Responses WebSocket frame with a tier only under response gets the forced tier at the top level too", endpoint: EndpointResponsesWS, group: "forced", session: []string{"gpt-5"},
			body:   `{"type":"response.create","response":{"service_tier":"default"}}`,
			action: ActionPass, out: `{"type":"response.create","response":{"service_tier":"priority"},"service_tier":"priority"}`,
		},
		{
			name: "a Responses WebSocket frame with a tier at both levels gets no second top-level key", endpoint: EndpointResponsesWS, group: "forced", session: []string{"gpt-5"},
			body:   `{"type":"response.create","service_tier":"flex","response":{"SERVICE_TIER":"default"}}`,
			action: ActionPass, out: `{"type":"response.create","service_tier":"priority","response":{"service_tier":"priority"}}`,
		},
	})
}

func TestEveryModelCandidateIsJudged(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, hostilePolicy)
	runHostile(t, p, []hostileCase{
		{
			name: "response.model joins the session model rather than replacing it", endpoint: EndpointRealtime,
			session: []string{"gpt-5.5"},
			body:    `{"type":"response.create","response":{"model":"gpt-5","service_tier":"priority"}}`,
			action:  ActionBlock, status: 403,
		},
		{
			name: "a Realtime frame's top-level model joins the session model rather than replacing it", endpoint: EndpointRealtime,
			session: []string{"gpt-5.5"},
			body:    `{"type":"response.create","model":"gpt-5","response":{"service_tier":"priority"}}`,
			action:  ActionBlock, status: 403,
		},
		{
			name: "a Realtime frame's folded top-level model joins the session model too", endpoint: EndpointRealtime,
			session: []string{"gpt-5.5"},
			body:    `{"type":"response.create","MODEL":"gpt-5","service_tier":"priority"}`,
			action:  ActionBlock, status: 403,
		},
		{
			name: "a Responses WebSocket frame's top-level model is the one it runs under", endpoint: EndpointResponsesWS,
			session: []string{"gpt-5.5"},
			body:    `{"type":"response.create","model":"gpt-5","service_tier":"priority"}`,
			action:  ActionPass,
		},
		{
			name: "a frame's top-level model and response.model are both judged", endpoint: EndpointResponsesWS,
			body:   `{"type":"response.create","model":"gpt-5","response":{"model":"gpt-5.5"},"service_tier":"priority"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a deployment named in the path is a candidate", endpoint: EndpointChatCompletions,
			path:   []string{"my-deployment"},
			body:   `{"model":"gpt-5","service_tier":"priority"}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a fallback's speed is judged against its own model", endpoint: EndpointMessages,
			body:   `{"model":"gpt-5","fallbacks":[{"model":"gpt-5.5","speed":"fast"}]}`,
			action: ActionBlock, status: 403,
		},
		{
			name: "a fallback without a model is judged against the request's", endpoint: EndpointMessages,
			body:   `{"model":"gpt-4o","fallbacks":[{"speed":"fast"}]}`,
			action: ActionFilter, out: `{"model":"gpt-4o","fallbacks":[{}]}`,
		},
	})
}

func TestTooManyOccurrencesAreRefused(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, hostilePolicy)
	many := func(key, val string, n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`"` + key + `":` + val)
		}
		return b.String()
	}
	for _, tc := range []struct {
		name     string
		endpoint Endpoint
		body     string
		refused  bool
	}{
		{"64 tiers are judged", EndpointResponses, `{` + many("service_tier", `"priority"`, 64) + `}`, false},
		{"65 tiers are refused", EndpointResponses, `{` + many("service_tier", `"priority"`, 65) + `}`, true},
		{"65 folded tiers are refused", EndpointResponses, `{` + many("SERVICE_TIER", `"flex"`, 65) + `}`, true},
		{"65 models are refused", EndpointChatCompletions, `{` + many("model", `"gpt-5"`, 65) + `}`, true},
		{"65 speeds are refused", EndpointMessages, `{` + many("speed", `"fast"`, 65) + `}`, true},
		{"tiers at the top and under response count together", EndpointResponsesWS,
			`{"type":"response.create",` + many("service_tier", `"flex"`, 40) + `,"response":{` + many("service_tier", `"flex"`, 25) + `}}`, true},
		{"fallback entries' models count", EndpointMessages,
			`{"model":"gpt-5","fallbacks":[` + strings.Repeat(`{"model":"gpt-5"},`, 64) + `{"model":"gpt-5"}]}`, true},
		{"other keys are not limited", EndpointResponses, `{` + many("input", `"x"`, 1000) + `}`, false},
		{"64 stream keys are read", EndpointChatCompletions, `{` + many("stream", `true`, 64) + `}`, false},
		{"65 stream keys are refused", EndpointChatCompletions, `{` + many("stream", `true`, 65) + `}`, true},
		{"65 folded type keys on a frame are refused", EndpointResponsesWS, `{` + many("Type", `"response.create"`, 65) + `}`, true},
		{"65 type keys on a body are refused", EndpointResponses, `{` + many("type", `0`, 65) + `}`, true},
		{"65 include_usage keys in stream_options are refused", EndpointChatCompletions,
			`{"stream":true,"stream_options":{` + many("include_usage", `false`, 65) + `}}`, true},
		{"65 service_tier keys under response are refused", EndpointResponsesWS,
			`{"type":"response.create","response":{` + many("serviceTier", `"flex"`, 65) + `}}`, true},
		{"65 fallbacks keys are refused", EndpointMessages, `{` + many("fallbacks", `[]`, 65) + `}`, true},
		{"a fallbacks entry repeating a key 65 times is refused", EndpointMessages,
			`{"fallbacks":[{` + many("type", `0`, 65) + `}]}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := &Request{Endpoint: tc.endpoint, EnsureUsage: true}
			var res Result
			if tc.endpoint == EndpointResponsesWS {
				res = p.ApplyFrame(req, []byte(tc.body))
			} else {
				res = p.apply(req, []byte(tc.body))
			}
			got := res.Refusal == RefusalTooManyOccurrences
			if got != tc.refused || (got && (res.Refusal.Status() != 400 || res.Action != ActionBlock)) {
				t.Fatalf("too many = %v (status %d, action %v, err %v), want %v", got, res.Refusal.Status(), res.Action, res.Message, tc.refused)
			}
		})
	}
}

// TestMemoryIsBoundedByTheKeysRead holds what one decision allocates to
// the size of the body: before members of keys tiergate does not read were
// recorded as runs, a 16 MiB body of "":0 members allocated 755 MiB
// (members and edits for each), enough for one request to kill a sidecar
// with a 256 MiB limit. It is not parallel, so that no other test's
// allocations are counted.
func TestMemoryIsBoundedByTheKeysRead(t *testing.T) {
	p := mustLoad(t, hostilePolicy)
	const size = 4 << 20
	for _, tc := range []struct {
		name            string
		ep              Endpoint
		pre, unit, post string
		status          int
	}{
		{"a flood of unread members", EndpointResponses, `{`, `"":0,`, `"model":"gpt-4o","service_tier":"priority"}`, 0},
		{"a flood of a key read", EndpointResponses, `{`, `"type":0,`, `"model":"gpt-4o"}`, 400},
		{"a flood of unread members under response", EndpointResponsesWS,
			`{"type":"response.create","model":"gpt-4o","service_tier":"priority","response":{`, `"":0,`, `"":0}}`, 0},
		{"a flood of unread members in stream_options", EndpointChatCompletions,
			`{"model":"gpt-4o","stream":true,"stream_options":{`, `"":0,`, `"":0}}`, 0},
		{"a flood of fallbacks elements", EndpointMessages, `{"model":"gpt-4o","speed":"fast","fallbacks":[`, `0,`, `0]}`, 0},
		{"a flood of fallbacks entries", EndpointMessages, `{"model":"gpt-4o","speed":"fast","fallbacks":[`, `{"":0},`, `{}]}`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.pre + strings.Repeat(tc.unit, size/len(tc.unit)) + tc.post)
			req := &Request{Endpoint: tc.ep, EnsureUsage: true}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var res Result
			if tc.ep == EndpointResponsesWS {
				res = p.ApplyFrame(req, body)
			} else {
				res = p.apply(req, body)
			}
			runtime.ReadMemStats(&after)
			if res.Refusal.Status() != tc.status {
				t.Fatalf("status %d (%v), want %d", res.Refusal.Status(), res.Message, tc.status)
			}
			// The rewritten body (twice, for a rewritten nested object; the
			// race detector adds about one more) and small change; not
			// members by the million (47 times the body before).
			alloc := after.TotalAlloc - before.TotalAlloc
			if alloc > 4*uint64(len(body)) {
				t.Errorf("a %d-byte body allocated %d bytes", len(body), alloc)
			}
			t.Logf("%d-byte body: %d bytes allocated", len(body), alloc)
		})
	}
}

func TestRunsOfUnreadMembersRebuildExactly(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, hostilePolicy)
	runHostile(t, p, []hostileCase{
		{
			name: "tiers between runs of other members are removed with their commas", endpoint: EndpointResponses,
			body:   `{"a":1, "b":[2], "service_tier":"priority" ,"c":{"d":3},"e":4,"SERVICE_TIER":"flex","model":"gpt-4o","f":5}`,
			action: ActionFilter, out: `{"a":1, "b":[2] ,"c":{"d":3},"e":4,"model":"gpt-4o","f":5}`,
		},
		{
			name: "a tier first and last among other members", endpoint: EndpointResponses,
			body:   `{"service_tier":"priority","a":1,"b":2,"model":"gpt-4o","c":3,"service_tier":"priority"}`,
			action: ActionFilter, out: `{"a":1,"b":2,"model":"gpt-4o","c":3}`,
		},
		{
			name: "a kept tier among other members keeps its place", endpoint: EndpointResponses,
			body:   `{"a":1,"service_tier":"default","b":2,"c":3,"serviceTier":"fast","d":4,"model":"gpt-5"}`,
			action: ActionPass, out: `{"a":1,"b":2,"c":3,"service_tier":"priority","d":4,"model":"gpt-5"}`,
		},
	})
}

// growthBody is a body of about n members at each level read, with the
// given number of occurrences of each key read at the top level, so that
// any work that grows faster than the body shows.
func growthBody(ep Endpoint, n, occurrences int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"type":"response.create"`)
	for i := range occurrences {
		b.WriteString(`,"service_tier":"` + []string{"priority", "flex", "scale", "default"}[i%4] + `","model":"m` + strconv.Itoa(i%4) + `"`)
		if ep == EndpointMessages {
			b.WriteString(`,"speed":"fast"`)
		}
	}
	for i := range n {
		b.WriteString(`,"k` + strconv.Itoa(i) + `":{"service_tier":"priority","model":"x"}`)
	}
	b.WriteString(`,"response":{`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"r` + strconv.Itoa(i) + `":1`)
	}
	b.WriteString(`},"fallbacks":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"max_tokens":1}`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func TestEvaluationWorkIsLinearInTheBody(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, hostilePolicy)
	session := make([]string, 256)
	for i := range session {
		session[i] = "s" + strconv.Itoa(i)
	}
	for _, tc := range []struct {
		name        string
		ep          Endpoint
		occurrences func(n int) int
	}{
		{"a Responses body at the occurrence limit", EndpointResponses, func(int) int { return 64 }},
		{"a frame at the occurrence limit", EndpointResponsesWS, func(int) int { return 64 }},
		{"a Messages body at the occurrence limit", EndpointMessages, func(int) int { return 64 }},
		{"a Responses body with n occurrences", EndpointResponses, func(n int) int { return n }},
		{"a frame with n occurrences", EndpointResponsesWS, func(n int) int { return n }},
		{"a Messages body with n occurrences", EndpointMessages, func(n int) int { return n }},
	} {
		ep := tc.ep
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var work [3]work
			for i, n := range []int{2000, 4000, 8000} {
				body := growthBody(ep, n, tc.occurrences(n))
				req := &Request{Endpoint: ep, SessionModels: session, PathModels: []string{"d"}}
				var res Result
				if ep == EndpointResponsesWS {
					res, work[i] = p.applyFrameCounted(req, body)
				} else {
					res, work[i] = p.applyCounted(req, body)
				}
				if res.Refusal.Status() != 0 && res.Refusal.Status() != 403 && res.Refusal != RefusalTooManyOccurrences {
					t.Fatalf("n=%d: status %d (%v)", n, res.Refusal.Status(), res.Message)
				}
			}
			for i := 1; i < len(work); i++ {
				// Doubling the body may at most (about) double the work.
				if work[i].judgements > work[0].judgements+work[0].judgements/10 {
					t.Errorf("judgements grow with the body: %+v", work)
				}
				if work[i].visits > 2*work[i-1].visits+work[i-1].visits/5 {
					t.Errorf("members visited grow faster than the body: %+v", work)
				}
			}
			// 4 distinct tiers, each judged once against each distinct
			// candidate: 4 body models and the path's (the body names a
			// model, so the session's are not candidates).
			if work[0].judgements > 4*(4+1) {
				t.Errorf("%d judgements for 4 distinct tiers and 5 distinct models: the candidates are not deduplicated", work[0].judgements)
			}
		})
	}
}

func TestPathsAreNormalisedBeforeMatching(t *testing.T) {
	t.Parallel()
	cases := []struct {
		path       string
		endpoint   Endpoint
		deployment string
	}{
		{"/v1/responses/", EndpointResponses, ""},
		{"/v1/responses//", EndpointResponses, ""},
		{"/V1/Responses", EndpointResponses, ""},
		{"/v1/respons%65s", EndpointResponses, ""},
		{"/v1/chat/completions;x=1", EndpointChatCompletions, ""},
		{"/v1/chat;a=b/completions", EndpointChatCompletions, ""},
		{"/v1/chat/completions/", EndpointChatCompletions, ""},
		{"/v1/messages/", EndpointMessages, ""},
		{"/v1/MESSAGES?beta=true", EndpointMessages, ""},
		{"/v1/x/../messages", EndpointMessages, ""},
		{"/v1/./responses/./compact", EndpointResponses, ""},
		{"/v1%2Fresponses", EndpointResponses, ""},
		{"/openai/deployments/my-deployment/chat/completions?api-version=2024", EndpointChatCompletions, "my-deployment"},
		{"/OpenAI/Deployments/My-Dep/responses/", EndpointResponses, "My-Dep"},
		{"/openai/deployments/dep%2Dx/chat/completions", EndpointChatCompletions, "dep-x"},
		{"/v1/models", EndpointUnknown, ""},
		{"/v1/responses/resp_1", EndpointUnknown, ""},
		{"/v1/messages/count_tokens", EndpointUnknown, ""},
		{"/v1/responses/x/..", EndpointResponses, ""},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			ep, dep := ParsePath(tc.path)
			if ep != tc.endpoint || dep != tc.deployment {
				t.Errorf("ParsePath(%q) = %v, %q; want %v, %q", tc.path, ep, dep, tc.endpoint, tc.deployment)
			}
			if got := endpointForPath(tc.path); got != tc.endpoint {
				t.Errorf("endpointForPath(%q) = %v, want %v", tc.path, got, tc.endpoint)
			}
		})
	}
}

func TestKeyIsFoldsAsGoReaders(t *testing.T) {
	t.Parallel()
	cases := []struct {
		tok, name string
		want      bool
	}{
		{`"service_tier"`, "service_tier", true},
		{`"SERVICE_TIER"`, "service_tier", true},
		{`"ſervice_tier"`, "service_tier", true},
		{`"\u017fervice_tier"`, "service_tier", true},
		{`"service\u005ftier"`, "service_tier", true},
		{`"serviceTier"`, "service_tier", true},
		{`"service-tier"`, "service_tier", true},
		{`"_s_e_r_v_i_c_e_t_i_e_r_"`, "service_tier", true},
		// Upper-casing readers: the dotless ı and the dotted İ are I, the
		// sharp s is SS, a ligature is its letters.
		{`"servıce_tıer"`, "service_tier", true},
		{`"SERVİCE_TİER"`, "service_tier", true},
		{`"serv\u0131ce_t\u0131er"`, "service_tier", true},
		{`"Seßion"`, "session", true},
		{`"ﬆream_optıons"`, "stream_options", true},
		{`"ınclude_usage"`, "include_usage", true},
		{`"ﬀallbacks"`, "fallbacks", false},
		{`"servıce_tıer\u0307"`, "service_tier", false},
		{`"` + strings.Repeat("ﬃ", 6) + `"`, "service_tier", false},
		{`"servicetiers"`, "service_tier", false},
		{`"service tier"`, "service_tier", false},
		{`"Model"`, "model", true},
		{`"models"`, "model", false},
		{`"TYPE"`, "type", true},
		{`"Session"`, "session", true},
		{`"stream"`, "stream_options", false},
		{`"streamOptions"`, "stream_options", true},
		{`"` + strings.Repeat("_", 100) + `model"`, "model", true},
		{`"` + strings.Repeat("x", 100) + `"`, "model", false},
		// Not key tokens at all: gjson gives "" as the key of a frame that
		// is not an object.
		{``, "type", false},
		{`"`, "type", false},
		{`type`, "type", false},
		{`"type`, "type", false},
	}
	for _, tc := range cases {
		t.Run(tc.tok+" is "+tc.name, func(t *testing.T) {
			t.Parallel()
			if got := KeyIs([]byte(tc.tok), tc.name); got != tc.want {
				t.Errorf("KeyIs(%s, %q) = %v, want %v", tc.tok, tc.name, got, tc.want)
			}
		})
	}
}

// TestFoldASCIIKnowsEveryRuneAReaderTakesForASCII holds the whole set of
// non-ASCII runes some upstream's folding makes ASCII letters of (fold.go),
// so that a Unicode update that adds one fails here rather than open a way
// past the policy unseen.
func TestFoldASCIIKnowsEveryRuneAReaderTakesForASCII(t *testing.T) {
	t.Parallel()
	want := map[rune]string{
		'ß': "ss", 'İ': "i", 'ı': "i", 'ſ': "s", '\u212A': "k",
		'\uFB00': "ff", '\uFB01': "fi", '\uFB02': "fl", '\uFB03': "ffi", '\uFB04': "ffl", '\uFB05': "st", '\uFB06': "st",
	}
	for _, tc := range []struct {
		name string
		from rune
		to   rune
	}{
		{"Latin", 0x80, 0x24FF},
		{"the rest of the Basic Multilingual Plane", 0x2500, 0xFFFF},
		{"the supplementary planes", 0x10000, unicode.MaxRune},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for r := tc.from; r <= tc.to; r++ {
				got := foldASCII(r)
				if w := want[r]; got != w {
					t.Errorf("foldASCII(%U %q) = %q, want %q", r, r, got, w)
				}
			}
		})
	}
}

// TestTypeIsFoldsAsValuesAre: a frame's type is read as tier values are,
// so each spelling some upstream's reader takes for the name counts.
func TestTypeIsFoldsAsValuesAre(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value, want string
		is          bool
	}{
		{"session.update", "session.update", true},
		{" Session.UPDATE\x00x", "session.update", true},
		{"ſession.update", "session.update", true},
		{"seßion.update", "session.update", true},  // Python's str.upper: SESSION.UPDATE
		{"SESSıON.update", "session.update", true}, // Java's toUpperCase: SESSION.UPDATE
		{"sessİon.update", "session.update", true},
		{"Response.Create", "response.create", true},
		{"re\u017fponse.create", "response.create", true},
		{"session.updates", "session.update", false},
		{"sesion.update", "session.update", false},
		{"se\u00dfion.update", "response.create", false},
		{"séssion.update", "session.update", false},
	} {
		t.Run(tc.value, func(t *testing.T) {
			if got := TypeIs(tc.value, tc.want); got != tc.is {
				t.Errorf("TypeIs(%q, %q) = %v, want %v", tc.value, tc.want, got, tc.is)
			}
		})
	}
}
