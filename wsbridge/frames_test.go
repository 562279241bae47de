package wsbridge

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// step is one client frame of a scripted session and what must follow.
type step struct {
	send   string
	binary bool
	// want is what the upstream must receive, byte for byte; "" means the
	// frame unchanged.
	want string
	// await is the event the client waits for before the next step.
	await string
	// refused, when set, is the refusal the frame must meet: the session
	// then ends.
	refused *refusal
}

type refusal struct {
	status  int
	typ     string
	code    string
	message string
	close   websocket.StatusCode
}

func blocked(message string) *refusal {
	return &refusal{status: 403, typ: "forbidden_error", code: "policy_violation", message: message, close: websocket.StatusPolicyViolation}
}

var eventID = regexp.MustCompile(`^evt_[0-9a-f]{32}$`)

// play runs steps through the bridge and checks what each side saw.
func play(t *testing.T, h *harness, path string, opts *websocket.DialOptions, steps []step) {
	t.Helper()
	c, _ := h.dial(t, path, opts)
	fc := h.up.next(t)
	if fc.realtime {
		until(t, c, "session.created")
	}
	forwarded := 0
	for i, st := range steps {
		typ := websocket.MessageText
		if st.binary {
			typ = websocket.MessageBinary
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.Write(ctx, typ, []byte(st.send))
		cancel()
		if err != nil {
			t.Fatalf("step %d: send: %v", i, err)
		}
		if r := st.refused; r != nil {
			ce, evs := closed(t, c)
			if len(evs) != 1 {
				t.Fatalf("step %d: the client should get exactly one event before the close, got %v", i, evs)
			}
			ev := evs[0]
			if !eventID.MatchString(ev.Get("event_id").Str) || ev.Get("type").Str != "error" ||
				ev.Get("status").Int() != int64(r.status) || ev.Get("error.type").Str != r.typ ||
				ev.Get("error.code").Str != r.code || ev.Get("error.message").Str != r.message {
				t.Errorf("step %d: error event %s, want status %d, %s/%s, message %q", i, ev.Raw, r.status, r.typ, r.code, r.message)
			}
			if ce.Code != r.close || ce.Reason != truncateReason(r.message) {
				t.Errorf("step %d: close %d %q, want %d %q", i, ce.Code, ce.Reason, r.close, truncateReason(r.message))
			}
			upErr := fc.waitClosed(t)
			if got := fc.received(); len(got) != forwarded {
				t.Errorf("step %d: the upstream received the refused frame: %v", i, got[forwarded:])
			}
			if code := websocket.CloseStatus(upErr); code != websocket.StatusNormalClosure {
				t.Errorf("step %d: the upstream was closed with %v, want 1000", i, upErr)
			}
			return
		}
		forwarded++
		got := waitFrames(t, fc, forwarded)[forwarded-1]
		want := st.want
		if want == "" {
			want = st.send
		}
		if string(got.data) != want || got.typ != typ {
			t.Errorf("step %d: the upstream received\n%s\nwant %s %s", i, got, typ, want)
		}
		if st.await != "" {
			until(t, c, st.await)
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := fc.waitClosed(t); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("the upstream saw %v, want the client's 1000", err)
	}
}

// TestPolicyOnFrames drives scripted sessions through the bridge and checks
// the bytes the upstream received, what the client was told, and the usage
// records.
func TestPolicyOnFrames(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		path    string
		opts    *websocket.DialOptions
		hold    bool // the upstream answers session.update only at the next frame
		steps   []step
		records []map[string]any
	}{
		{
			name: "filter strips priority for a model the policy does not reserve",
			path: PathResponses,
			steps: []step{{
				send:  `{"type":"response.create","model":"gpt-5.4","service_tier":"priority","input":"hi"}`,
				want:  `{"type":"response.create","model":"gpt-5.4","input":"hi"}`,
				await: "response.completed",
			}},
			records: []map[string]any{{
				"endpoint": "responses_ws", "model": "gpt-5.4", "response_model": "gpt-5.4-2026-01-01", "response_id": "resp_1",
				"service_tier_requested": "priority", "service_tier_sent": "none", "service_tier_reported": "default",
				"action": "filter", "rule": "strip-priority", "status": "completed", "stream": true,
				"input_tokens": 120.0, "cached_input_tokens": 20.0, "output_tokens": 45.0, "reasoning_tokens": 12.0,
			}},
		},
		{
			name: "filter strips every occurrence, fast and escaped keys included",
			path: PathResponses,
			steps: []step{{
				send:  `{"type":"response.create","model":"gpt-5.4","service_tier":"fast","service\u005ftier":"FAST"}`,
				want:  `{"type":"response.create","model":"gpt-5.4"}`,
				await: "response.completed",
			}},
			records: []map[string]any{{"action": "filter", "service_tier_requested": "priority", "service_tier_sent": "none", "status": "completed"}},
		},
		{
			name: "block refuses priority on gpt-5.5 and the upstream sees none of the frame",
			path: PathResponses,
			steps: []step{{
				send:    `{"type":"response.create","model":"gpt-5.5","service_tier":"priority"}`,
				refused: blocked("service_tier=priority is not allowed for model gpt-5.5"),
			}},
			records: []map[string]any{{
				"endpoint": "responses_ws", "model": "gpt-5.5", "action": "block", "rule": "no-priority-on-gpt-5.5",
				"service_tier_requested": "priority", "service_tier_sent": "none", "status": "blocked", "http_status": 403.0,
				"input_tokens": nil, "response_id": nil,
			}},
		},
		{
			name: "pass normalises a tier the policy lets through",
			path: PathResponses,
			steps: []step{{
				send:  `{"type":"response.create","model":"gpt-5.4","service_tier":" Flex "}`,
				want:  `{"type":"response.create","model":"gpt-5.4","service_tier":"flex"}`,
				await: "response.completed",
			}},
			records: []map[string]any{{"action": "pass", "service_tier_requested": "flex", "service_tier_sent": "flex", "service_tier_reported": "flex"}},
		},
		{
			name: "pass leaves one key, the last, when the tier is sent twice",
			path: PathResponses,
			steps: []step{{
				send:  `{"type":"response.create","model":"gpt-5.4","service_tier":"default","service_tier":"flex"}`,
				want:  `{"type":"response.create","model":"gpt-5.4","service_tier":"flex"}`,
				await: "response.completed",
			}},
			records: []map[string]any{{"action": "pass", "service_tier_requested": "flex", "service_tier_sent": "flex"}},
		},
		{
			name: "force gives the group's tier to a frame that sent none",
			path: PathResponses,
			opts: withHeader("X-Tiergate-Group", "codex-fast"),
			steps: []step{{
				send:  `{"type":"response.create","model":"gpt-5.5"}`,
				want:  `{"type":"response.create","model":"gpt-5.5","service_tier":"priority"}`,
				await: "response.completed",
			}},
			records: []map[string]any{{
				"group": "codex-fast", "action": "pass", "rule": "fast-group",
				"service_tier_requested": "none", "service_tier_sent": "priority", "service_tier_reported": "priority",
			}},
		},
		{
			name: "force adds the group's tier at the top level when a frame carries one only under response",
			path: PathResponses,
			opts: withHeader("X-Tiergate-Group", "codex-fast"),
			steps: []step{{
				send:  `{"type":"response.create","model":"gpt-5.4","response":{"service_tier":"default"}}`,
				want:  `{"type":"response.create","model":"gpt-5.4","response":{"service_tier":"priority"},"service_tier":"priority"}`,
				await: "response.completed",
			}},
			records: []map[string]any{{
				"group": "codex-fast", "action": "pass", "rule": "fast-group",
				"service_tier_requested": "default", "service_tier_sent": "priority", "service_tier_reported": "priority",
			}},
		},
		{
			name: "the group comes from the key in the openai-insecure-api-key subprotocol",
			path: PathResponses,
			opts: &websocket.DialOptions{Subprotocols: []string{"openai-insecure-api-key.sk-fast"}},
			steps: []step{{
				send:  `{"type":"response.create","model":"gpt-5.5","service_tier":"flex"}`,
				want:  `{"type":"response.create","model":"gpt-5.5","service_tier":"priority"}`,
				await: "response.completed",
			}},
			records: []map[string]any{{"group": "codex-fast", "service_tier_requested": "flex", "service_tier_sent": "priority"}},
		},
		{
			name: "a frame that is not a response.create passes byte-identical, tier and all",
			path: PathResponses,
			steps: []step{{
				send: `{"type":"response.processed","response_id":"resp_0","service_tier":"priority"}`,
			}},
		},
		{
			name: "a binary response.create is policed and stays binary",
			path: PathResponses,
			steps: []step{{
				send:   `{"type":"response.create","model":"gpt-5.4","service_tier":"priority"}`,
				binary: true,
				want:   `{"type":"response.create","model":"gpt-5.4"}`,
				await:  "response.completed",
			}},
			records: []map[string]any{{"action": "filter"}},
		},
		{
			name: "a frame without a model is judged against the session model, and a later one is blocked mid-session",
			path: PathResponses,
			steps: []step{
				{send: `{"type":"response.create","model":"gpt-5.4"}`, await: "response.completed"},
				{send: `{"type":"response.create","service_tier":"priority"}`, want: `{"type":"response.create"}`, await: "response.completed"},
				{send: `{"type":"response.create","model":"gpt-5.5"}`, await: "response.completed"},
				{send: `{"type":"response.create","service_tier":"priority"}`, refused: blocked("service_tier=priority is not allowed for model gpt-5.5")},
			},
			records: []map[string]any{
				{"model": "gpt-5.4", "action": "pass", "service_tier_requested": "none", "status": "completed"},
				{"model": "gpt-5.4", "action": "filter", "service_tier_requested": "priority", "status": "completed"},
				{"model": "gpt-5.5", "action": "pass", "status": "completed"},
				{"model": "gpt-5.5", "action": "block", "status": "blocked"},
			},
		},
		{
			name: "a frame that is not valid JSON is refused with 400 and closed 1007",
			path: PathResponses,
			steps: []step{{
				send: `{"type":"response.create","service_tier":"priority",`,
				refused: &refusal{status: 400, typ: "invalid_request_error", code: "invalid_json",
					message: "the frame is not valid JSON: invalid JSON at byte 52", close: websocket.StatusInvalidFramePayloadData},
			}},
			records: []map[string]any{{"action": "block", "status": "refused", "http_status": 400.0}},
		},
		{
			name: "a session.update claim is judged before the upstream confirms it",
			path: PathRealtime + "?model=gpt-realtime",
			hold: true,
			steps: []step{
				{send: `{"type":"session.update","event_id":"evt_u1","session":{"type":"realtime","model":"gpt-realtime-max"}}`},
				{send: `{"type":"response.create","event_id":"evt_c1","response":{"service_tier":"priority"}}`,
					refused: blocked("service_tier=priority is not allowed for model gpt-realtime-max")},
			},
			records: []map[string]any{{"endpoint": "realtime", "model": "gpt-realtime-max", "status": "blocked"}},
		},
		{
			name: "every session.model of a session.update counts, duplicate keys included",
			path: PathRealtime + "?model=gpt-realtime",
			hold: true,
			steps: []step{
				{send: `{"type":"session.update","session":{"model":"gpt-realtime-max","model":"gpt-realtime"}}`},
				{send: `{"type":"response.create","response":{"service_tier":"priority"}}`,
					refused: blocked("service_tier=priority is not allowed for model gpt-realtime-max")},
			},
		},
		{
			name: "while a switch away from a reserved model is unconfirmed, the old model still counts",
			path: PathRealtime + "?model=gpt-realtime-max",
			hold: true,
			steps: []step{
				{send: `{"type":"session.update","session":{"type":"realtime","model":"gpt-realtime"}}`},
				{send: `{"type":"response.create","response":{"service_tier":"priority"}}`,
					refused: blocked("service_tier=priority is not allowed for model gpt-realtime-max")},
			},
		},
		{
			name: "once the upstream confirms a session.update, the new model alone decides",
			path: PathRealtime + "?model=gpt-realtime-max",
			steps: []step{
				{send: `{"type":"session.update","session":{"type":"realtime","model":"gpt-realtime"}}`, await: "session.updated"},
				{send: `{"type":"response.create","event_id":"evt_c1","response":{"service_tier":"priority","output_modalities":["text"]}}`,
					want:  `{"type":"response.create","event_id":"evt_c1","response":{"output_modalities":["text"]}}`,
					await: "response.done"},
			},
			records: []map[string]any{{
				"endpoint": "realtime", "model": "gpt-realtime", "response_model": "gpt-realtime", "action": "filter",
				"input_tokens": 132.0, "cached_input_tokens": 64.0, "output_tokens": 121.0, "reasoning_tokens": nil,
				"service_tier_reported": nil, "status": "completed",
			}},
		},
		{
			name: "the beta protocol's session.update rotates the model the same way",
			path: PathRealtime + "?model=gpt-realtime",
			opts: withHeader("OpenAI-Beta", "realtime=v1"),
			steps: []step{
				{send: `{"type":"response.create","response":{"modalities":["text"]}}`, await: "response.done"},
				{send: `{"type":"session.update","session":{"model":"gpt-realtime-max"}}`, await: "session.updated"},
				{send: `{"type":"response.create","response":{"service_tier":"priority"}}`,
					refused: blocked("service_tier=priority is not allowed for model gpt-realtime-max")},
			},
			records: []map[string]any{
				{"model": "gpt-realtime", "response_model": "gpt-realtime", "status": "completed", "output_tokens": 121.0},
				{"model": "gpt-realtime-max", "status": "blocked"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, testPolicy)
			h.up.holdSessionUpdated = tc.hold
			play(t, h, tc.path, tc.opts, tc.steps)
			checkRecords(t, h, tc.records)
		})
	}
}

// miniOnlyPolicy allows priority on gpt-5.4-mini alone, so whether a frame
// that names no model passes priority says which models it was judged
// against.
const miniOnlyPolicy = `
rules:
- name: priority-only-on-mini
  service_tier: priority
  action: pass
  model_whitelist: ["gpt-5.4-mini"]
  fallback_action: block
`

// TestSessionModelComesFromTopLevelModels checks which models a
// response.create that names none is judged against on /v1/responses,
// whose upstream reads only a frame's top-level fields (docs/contracts.md,
// "WebSocket sessions and turns"): every top-level model a forwarded frame
// named, the last of which its record takes; never a model named only under
// response, which is a candidate for its own frame alone.
func TestSessionModelComesFromTopLevelModels(t *testing.T) {
	t.Parallel()
	const (
		named55   = `{"type":"response.create","model":"gpt-5.5","input":"a"}`
		namedMini = `{"type":"response.create","model":"gpt-5.4-mini","input":"b"}`
		priority  = `{"type":"response.create","service_tier":"priority","input":"c"}`
	)
	blocked55 := blocked("service_tier=priority is not allowed for model gpt-5.5")
	cases := []struct {
		name    string
		path    string
		steps   []step
		records []map[string]any
	}{
		{
			name: "a frame naming no model is judged against the top-level model named before it",
			steps: []step{
				{send: named55, await: "response.completed"},
				{send: priority, refused: blocked55},
			},
			records: []map[string]any{
				{"model": "gpt-5.5", "status": "completed"},
				{"model": "gpt-5.5", "action": "block", "status": "blocked"},
			},
		},
		{
			name: "a frame naming no model runs under the model named before it, and its record says so",
			steps: []step{
				{send: namedMini, await: "response.completed"},
				{send: priority, await: "response.completed"},
			},
			records: []map[string]any{
				{"model": "gpt-5.4-mini", "status": "completed"},
				{"model": "gpt-5.4-mini", "action": "pass", "service_tier_sent": "priority", "status": "completed"},
			},
		},
		{
			name: "a model named only under response does not become the session model",
			steps: []step{
				{send: named55, await: "response.completed"},
				{send: `{"type":"response.create","response":{"model":"gpt-5.4-mini"},"input":"b"}`, await: "response.completed"},
				{send: priority, refused: blocked55},
			},
		},
		{
			name: "a model under response is judged beside the session model for its own frame",
			steps: []step{
				{send: namedMini, await: "response.completed"},
				{send: `{"type":"response.create","service_tier":"priority","response":{"model":"gpt-5.5"}}`, refused: blocked55},
			},
		},
		{
			name: "the model of a frame the upstream refused stays a candidate beside the earlier one",
			steps: []step{
				{send: named55, await: "response.completed"},
				{send: `{"type":"response.create","model":"gpt-5.4-mini","metadata":{"fake":"error"},"input":"b"}`, await: "error"},
				{send: priority, refused: blocked55},
			},
		},
		{
			name: "every top-level model named stays a candidate, and records take the last one named",
			steps: []step{
				{send: named55, await: "response.completed"},
				{send: namedMini, await: "response.completed"},
				{send: `{"type":"response.create","input":"c"}`, await: "response.completed"},
				{send: priority, refused: blocked55},
			},
			records: []map[string]any{
				{"model": "gpt-5.5"},
				{"model": "gpt-5.4-mini"},
				{"model": "gpt-5.4-mini", "action": "pass", "status": "completed"},
				{"action": "block", "status": "blocked"},
			},
		},
		{
			name: "every occurrence of a repeated top-level model key is a candidate, folded spellings included",
			steps: []step{
				{send: `{"type":"response.create","model":"gpt-5.5","MODEL":"gpt-5.4-mini","input":"a"}`, await: "response.completed"},
				{send: priority, refused: blocked55},
			},
		},
		{
			name: "a ?model= of the connection stays a candidate after a frame names another",
			path: PathResponses + "?model=gpt-5.5",
			steps: []step{
				{send: namedMini, await: "response.completed"},
				{send: priority, refused: blocked55},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, miniOnlyPolicy)
			path := tc.path
			if path == "" {
				path = PathResponses
			}
			play(t, h, path, nil, tc.steps)
			checkRecords(t, h, tc.records)
		})
	}
}

// TestPolicyReloadAppliesToTheNextFrame swaps the policy under an open
// session: the frame after the swap is judged by the new policy.
func TestPolicyReloadAppliesToTheNextFrame(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy)
	c, _ := h.dial(t, PathResponses, nil)
	fc := h.up.next(t)
	send(t, c, `{"type":"response.create","model":"gpt-5.4","service_tier":"priority"}`)
	until(t, c, "response.completed")
	if got := string(waitFrames(t, fc, 1)[0].data); got != `{"type":"response.create","model":"gpt-5.4"}` {
		t.Fatalf("before the reload the upstream got %s", got)
	}
	h.store.Set(mustPolicy(t, `
rules:
- name: no-priority-at-all
  service_tier: priority
  action: block
  error_message: "priority is off for everyone today"
`))
	send(t, c, `{"type":"response.create","model":"gpt-5.4","service_tier":"priority"}`)
	ce, evs := closed(t, c)
	if len(evs) != 1 || evs[0].Get("error.message").Str != "priority is off for everyone today" || ce.Code != websocket.StatusPolicyViolation {
		t.Fatalf("after the reload: events %v, close %v", evs, ce)
	}
	fc.waitClosed(t)
	if n := len(fc.received()); n != 1 {
		t.Errorf("the upstream received %d frames, want only the first", n)
	}
	h.waitSessions(t)
	recs := h.records()
	if len(recs) != 2 || recs[1]["rule"] != "no-priority-at-all" {
		t.Errorf("records: %v", recs)
	}
}

// TestPolicyReloadRegroupsTheNextFrame: a reload that puts the caller's
// key in another group applies to the next frame of a session already
// open, as a rule change does.
func TestPolicyReloadRegroupsTheNextFrame(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy)
	c, _ := h.dial(t, PathResponses, withHeader("Authorization", "Bearer sk-other"))
	fc := h.up.next(t)
	send(t, c, `{"type":"response.create","model":"gpt-5.4","service_tier":"priority"}`)
	until(t, c, "response.completed")
	h.store.Set(mustPolicy(t, strings.Replace(testPolicy, `api_key_sha256: ["`+sha256Hex("sk-fast")+`"]`,
		`api_key_sha256: ["`+sha256Hex("sk-fast")+`", "`+sha256Hex("sk-other")+`"]`, 1)))
	send(t, c, `{"type":"response.create","model":"gpt-5.4","service_tier":"priority"}`)
	until(t, c, "response.completed")
	got := waitFrames(t, fc, 2)
	if a, b := string(got[0].data), string(got[1].data); a != `{"type":"response.create","model":"gpt-5.4"}` ||
		b != `{"type":"response.create","model":"gpt-5.4","service_tier":"priority"}` {
		t.Errorf("the upstream got %s then %s; want priority stripped, then passed for codex-fast", a, b)
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	h.waitSessions(t)
	recs := h.records()
	if len(recs) != 2 || recs[0]["group"] != nil || recs[1]["group"] != "codex-fast" || recs[1]["rule"] != "fast-group" {
		t.Errorf("records: %v; want no group, then codex-fast by rule fast-group", recs)
	}
}

// TestLongBlockMessageIsTruncatedForTheClose checks the close reason is cut
// to 123 bytes on a UTF-8 boundary while the error event keeps it whole.
func TestLongBlockMessageIsTruncatedForTheClose(t *testing.T) {
	t.Parallel()
	msg := strings.Repeat("é", 100) // 200 bytes
	h := newHarness(t, `
rules:
- service_tier: priority
  action: block
  error_message: "`+msg+`"
`)
	c, _ := h.dial(t, PathResponses, nil)
	send(t, c, `{"type":"response.create","service_tier":"priority"}`)
	ce, evs := closed(t, c)
	if len(evs) != 1 || evs[0].Get("error.message").Str != msg {
		t.Fatalf("error event %v", evs)
	}
	if len(ce.Reason) != 122 || ce.Reason != strings.Repeat("é", 61) {
		t.Errorf("close reason %q (%d bytes), want 61 é (122 bytes)", ce.Reason, len(ce.Reason))
	}
}

// TestFrameCountersAndDecisions checks the frame and decision counters.
func TestFrameCountersAndDecisions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy)
	c, _ := h.dial(t, PathResponses, nil)
	send(t, c, `{"type":"response.create","model":"gpt-5.4","service_tier":"priority"}`)
	until(t, c, "response.completed")
	send(t, c, `{"type":"response.processed","response_id":"resp_1"}`)
	send(t, c, `{"type":"response.create","model":"gpt-5.5","service_tier":"priority"}`)
	closed(t, c)
	h.waitSessions(t)
	text := gatherText(t, h)
	checkSeries(t, text,
		`tiergate_ws_frames_total{direction="client_to_upstream",endpoint="responses_ws"} 3`,
		`tiergate_ws_frames_total{direction="upstream_to_client",endpoint="responses_ws"} 3`,
		`tiergate_policy_decisions_total{action="filter",budget="none",endpoint="responses_ws",group="none",rule="strip-priority",service_tier="priority"} 1`,
		`tiergate_policy_decisions_total{action="block",budget="none",endpoint="responses_ws",group="none",rule="no-priority-on-gpt-5.5",service_tier="priority"} 1`,
		`tiergate_ws_turns_total{endpoint="responses_ws",status="completed"} 1`,
		`tiergate_ws_turns_total{endpoint="responses_ws",status="blocked"} 1`,
		`tiergate_ws_sessions_total{close_code="1008",endpoint="responses_ws"} 1`,
		`tiergate_ws_sessions_active{endpoint="responses_ws"} 0`,
		`tiergate_ws_upgrades_total{endpoint="responses_ws",result="accepted"} 1`,
		`tiergate_tokens_total{endpoint="responses_ws",group="none",model="gpt-5.4",service_tier="default",type="input"} 120`,
		`tiergate_ws_turn_duration_seconds_count{endpoint="responses_ws"} 2`,
		`tiergate_ws_time_to_first_token_seconds_count{endpoint="responses_ws"} 1`,
		// Every upgrade result is there from the start, at zero until its
		// first event: an alert's rate() of a series that does not exist yet
		// is no rate at all.
		`tiergate_ws_upgrades_total{endpoint="responses_ws",result="upstream_unreachable"} 0`,
		`tiergate_ws_upgrades_total{endpoint="realtime",result="upstream_refused"} 0`,
		`tiergate_ws_upgrades_total{endpoint="realtime",result="accepted"} 0`,
	)
	if n := strings.Count(text, "\ntiergate_ws_upgrades_total{"); n != len(wsEndpoints)*len(upgradeResults) {
		t.Errorf("%d tiergate_ws_upgrades_total series; want every result of every endpoint, %d", n, len(wsEndpoints)*len(upgradeResults))
	}
	if strings.Contains(h.logs.String(), "sk-") {
		t.Error("a key reached the log")
	}
	var blockLines int
	for _, l := range h.logs.Lines() {
		if strings.Contains(l, `"msg":"frame refused"`) {
			blockLines++
			if strings.Contains(l, `"type":"response.create"`) {
				t.Errorf("the log holds the frame: %s", l)
			}
		}
	}
	if blockLines != 1 {
		t.Errorf("%d block lines, want 1:\n%s", blockLines, h.logs.String())
	}
}

// checkRecords waits for the harness's sessions to end and checks their
// usage records against want, in order (nil: not checked).
func checkRecords(t *testing.T, h *harness, want []map[string]any) {
	t.Helper()
	h.waitSessions(t)
	recs := h.records()
	if want != nil && len(recs) != len(want) {
		t.Fatalf("%d usage records, want %d:\n%s", len(recs), len(want), h.usage.String())
	}
	for i, w := range want {
		checkRecord(t, recs[i], w)
	}
}
