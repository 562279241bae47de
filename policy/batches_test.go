package policy

import (
	"runtime"
	"strings"
	"testing"
)

func TestMessageBatchesPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		path string
		want Endpoint
	}{
		{"/v1/messages/batches", EndpointMessageBatches},
		{"/v1/messages/batches?beta=true", EndpointMessageBatches},
		{"/V1/Messages/Batches/", EndpointMessageBatches},
		{"/v1/messages/%62atches", EndpointMessageBatches},
		{"/v1/messages", EndpointMessages},
		// The batch's other paths carry no body to judge.
		{"/v1/messages/batches/msgbatch_1/cancel", EndpointUnknown},
		{"/v1/messages/batches/msgbatch_1/results", EndpointUnknown},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if ep, _ := ParsePath(tc.path); ep != tc.want {
				t.Errorf("ParsePath(%q) = %v, want %v", tc.path, ep, tc.want)
			}
		})
	}
}

// TestApplyMessageBatches: each requests[].params of a batch is judged as
// a /v1/messages body under the batch's anthropic-beta header, by the
// same rules as TestApplyAnthropic.
func TestApplyMessageBatches(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, anthropicPolicy)
	entry := func(id, params string) string { return `{"custom_id":"` + id + `","params":` + params + `}` }
	batch := func(entries ...string) string { return `{"requests":[` + strings.Join(entries, ",") + `]}` }
	opusFast := `{"model":"claude-opus-4-6","max_tokens":10,"speed":"fast","messages":[]}`
	opusPlain := `{"model":"claude-opus-4-6","max_tokens":10,"messages":[]}`
	sonnetFast := `{"model":"claude-sonnet-4-5","speed":"fast"}`
	cases := []struct {
		name    string
		group   string
		beta    []string
		body    string
		action  Action
		status  int
		msg     string // a part of the refusal's message
		out     string // "" = unchanged
		beta2   string
		betaMod bool
		req     Tier
		model   string
	}{
		{
			name: "speed fast in an entry is filtered out of that entry only",
			body: batch(entry("a", opusPlain), entry("b", opusFast)), action: ActionFilter, req: TierPriority,
			out:   batch(entry("a", opusPlain), entry("b", `{"model":"claude-opus-4-6","max_tokens":10,"messages":[]}`)),
			model: "claude-opus-4-6",
		},
		{
			name: "a fast fallback inside an entry is judged against its own model", group: "vip",
			body:   batch(entry("a", `{"model":"claude-opus-4-6","fallbacks":[{"model":"claude-haiku-4-5","speed":"fast"}]}`)),
			action: ActionBlock, status: 403, msg: "requests[0]: ", req: TierPriority,
		},
		{
			name:   "a blocked entry refuses the whole batch and names it",
			body:   batch(entry("a", opusPlain), entry("b", `{"model":"claude-haiku-4-5","speed":"fast"}`)),
			action: ActionBlock, status: 403, msg: "requests[1]: service_tier=priority is not allowed for model claude-haiku-4-5",
			req: TierPriority,
		},
		{
			name: "fast mode allowed for the group passes unchanged", group: "vip",
			beta: []string{"fast-mode-2026-02-01"}, body: batch(entry("a", opusFast), entry("b", opusFast)),
			action: ActionPass, req: TierPriority, model: "claude-opus-4-6",
		},
		{
			name: "the header's fast-mode token is stripped when every entry is filtered",
			beta: []string{"fast-mode-2026-02-01,message-batches-2024-09-24"},
			body: batch(entry("a", opusPlain)), action: ActionFilter, req: TierPriority,
			beta2: "message-batches-2024-09-24", betaMod: true, model: "claude-opus-4-6",
		},
		{
			name: "entries needing different headers are refused", group: "vip",
			beta: []string{"fast-mode-2026-02-01"}, body: batch(entry("a", opusFast), entry("b", sonnetFast)),
			action: ActionBlock, status: 403, msg: "requests[0] and requests[1] need different anthropic-beta headers",
			req: TierPriority,
		},
		{
			name:   "a folded requests key and a repeated params key are each judged",
			body:   `{"REQUESTS":[{"custom_id":"a","params":` + opusPlain + `,"Params":` + sonnetFast + `}]}`,
			action: ActionFilter, req: TierPriority,
			out:   `{"REQUESTS":[{"custom_id":"a","params":` + opusPlain + `,"Params":{"model":"claude-sonnet-4-5"}}]}`,
			model: "claude-sonnet-4-5",
		},
		{
			name: "a forced group's entries are judged as forced (here a rule filters it)", group: "forced-vip",
			body: batch(entry("a", `{"model":"claude-opus-4-6"}`)), action: ActionFilter,
			req: TierNone, model: "claude-opus-4-6",
		},
		{
			name: "a batch without entries is judged on its header alone",
			beta: []string{"fast-mode-2026-02-01"}, body: `{"requests":[]}`, action: ActionFilter, req: TierPriority,
			beta2: "", betaMod: true,
		},
		{
			name: "entries that are not objects and params that are not objects are the upstream's to refuse",
			body: `{"requests":[1,"x",{"params":[]},{"params":null}]}`, action: ActionPass,
		},
		{
			name: "a batch without fast mode passes untouched",
			body: batch(entry("a", opusPlain)), action: ActionPass, model: "claude-opus-4-6",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := p.DecideHTTP(&HTTPRequest{Endpoint: EndpointMessageBatches, Group: tc.group, Beta: tc.beta, Body: []byte(tc.body)})
			if res.Action != tc.action || res.Refusal.Status() != tc.status {
				t.Fatalf("action=%v status=%d (%s), want %v %d", res.Action, res.Refusal.Status(), res.Message, tc.action, tc.status)
			}
			if tc.status != 0 {
				if !strings.Contains(res.Message, tc.msg) {
					t.Errorf("message %q, want it to contain %q", res.Message, tc.msg)
				}
				if body := string(res.Refusal.Body(EndpointMessageBatches, res.Message)); !strings.Contains(body, `"type":"permission_error"`) {
					t.Errorf("refusal body %s is not Anthropic's shape", body)
				}
				return
			}
			checkBody(t, res.Body, tc.body, tc.out)
			if res.BetaChanged != tc.betaMod || res.Beta != tc.beta2 {
				t.Errorf("beta = %q (changed %v), want %q (changed %v)", res.Beta, res.BetaChanged, tc.beta2, tc.betaMod)
			}
			if res.Requested != tc.req {
				t.Errorf("requested = %v, want %v", res.Requested, tc.req)
			}
			if res.RequestModel != tc.model {
				t.Errorf("model = %q, want %q", res.RequestModel, tc.model)
			}
		})
	}
}

// TestABatchRewriteAllocatesAboutOneBody: a batch whose every entry is
// rewritten costs about one output body, however many entries it has:
// each entry's rewrite is copied into one buffer as it is judged, not kept
// until the end. (Per entry, judging allocates only the model's string.)
func TestABatchRewriteAllocatesAboutOneBody(t *testing.T) {
	p := mustLoad(t, anthropicPolicy)
	for _, tc := range []struct {
		name   string
		params string
	}{
		{"tiny entries, each filtered", `{"speed":"fast"}`},
		{"entries naming a model, each filtered", `{"model":"claude-opus-4-6","speed":"fast","max_tokens":8}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 100_000
			var b strings.Builder
			b.WriteString(`{"requests":[`)
			for i := range n {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(`{"params":` + tc.params + `}`)
			}
			b.WriteString(`]}`)
			body := []byte(b.String())
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			res := p.DecideHTTP(&HTTPRequest{Endpoint: EndpointMessageBatches, Body: body})
			runtime.ReadMemStats(&after)
			if res.Action != ActionFilter || !res.BodyChanged {
				t.Fatalf("action %v, body changed %v; want every entry filtered", res.Action, res.BodyChanged)
			}
			if raceEnabled {
				// The race detector's sync.Pool drops items on purpose, so
				// each entry's scratch is new: CI checks this without it.
				t.Logf("%d bytes allocated under -race (not checked)", after.TotalAlloc-before.TotalAlloc)
				return
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3*uint64(len(body)) {
				t.Errorf("a %d-byte batch allocated %d bytes (%.1f times the body)", len(body), alloc, float64(alloc)/float64(len(body)))
			}
			if objects := after.Mallocs - before.Mallocs; objects > n+n/2 {
				t.Errorf("%d heap objects for %d entries", objects, n)
			}
		})
	}
}
