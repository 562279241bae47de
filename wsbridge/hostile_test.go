package wsbridge

import (
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// hostileStep is one move in a hostile session: a frame the client sends (and the
// upstream must receive), or an event the upstream sends (which the client
// must receive before the next step).
type hostileStep struct {
	client, upstream string
}

// TestHostileFramesThroughTheBridge plays the classes of frame that
// hostile testing found to slip past the policy through the bridge, against
// an upstream that answers nothing unless told. The last frame of each case
// is either refused (with the error event and close it names) or reaches
// the upstream as forwarded.
func TestHostileFramesThroughTheBridge(t *testing.T) {
	t.Parallel()
	blocked55 := "service_tier=priority is not allowed for model gpt-5.5"
	cases := []struct {
		name   string
		path   string
		header []string
		steps  []hostileStep
		last   string
		// Refused: the error event's status and code, the close code, and
		// the message. Forwarded (status 0): what the upstream receives.
		status    int
		code      string
		closeCode websocket.StatusCode
		message   string
		forwarded string
	}{
		{
			name: "a folded session.update claim is a candidate",
			path: PathRealtime + "?model=gpt-4o",
			steps: []hostileStep{
				{client: `{"Type":"session.update","event_id":"u1","SESSION":{"Model":"gpt-5.5"}}`},
			},
			last:   `{"type":"response.create","response":{"service_tier":"priority"}}`,
			status: 403, code: "policy_violation", closeCode: websocket.StatusPolicyViolation, message: blocked55,
		},
		{
			name: "a session.update whose type differs in case and space is a claim",
			path: PathRealtime + "?model=gpt-4o",
			steps: []hostileStep{
				{client: `{"type":" Session.UPDATE","event_id":"u1","session":{"model":"gpt-5.5"}}`},
			},
			last:   `{"type":"response.create","response":{"service_tier":"priority"}}`,
			status: 403, code: "policy_violation", closeCode: websocket.StatusPolicyViolation, message: blocked55,
		},
		{
			name: "a session.update spelled with the long s is a claim",
			path: PathRealtime + "?model=gpt-4o",
			steps: []hostileStep{
				{client: `{"type":"ſession.update","event_id":"u1","session":{"model":"gpt-5.5"}}`},
			},
			last:   `{"type":"response.create","response":{"service_tier":"priority"}}`,
			status: 403, code: "policy_violation", closeCode: websocket.StatusPolicyViolation, message: blocked55,
		},
		{
			name:   "an upper-case response.create is policed",
			path:   PathResponses,
			last:   `{"type":"Response.Create","model":"gpt-5.5","service_tier":"priority"}`,
			status: 403, code: "policy_violation", closeCode: websocket.StatusPolicyViolation, message: blocked55,
		},
		{
			name:   "a Realtime frame's top-level model does not replace the session's",
			path:   PathRealtime + "?model=gpt-5.5",
			last:   `{"type":"response.create","model":"gpt-4o","response":{"service_tier":"priority"}}`,
			status: 403, code: "policy_violation", closeCode: websocket.StatusPolicyViolation, message: blocked55,
		},
		{
			name:   "a folded type makes a frame a response.create",
			path:   PathResponses,
			last:   `{"TYPE":"response.create","model":"gpt-5.5","service_tier":"priority"}`,
			status: 403, code: "policy_violation", closeCode: websocket.StatusPolicyViolation, message: blocked55,
		},
		{
			name:      "a camelCase tier under a folded response key is filtered",
			path:      PathResponses,
			last:      `{"type":"response.create","model":"gpt-4o","Response":{"serviceTier":"priority"}}`,
			forwarded: `{"type":"response.create","model":"gpt-4o","Response":{}}`,
		},
		{
			name:   "every ?model= parameter is a candidate",
			path:   PathRealtime + "?model=gpt-4o&model=gpt-5.5",
			last:   `{"type":"response.create","response":{"service_tier":"priority"}}`,
			status: 403, code: "policy_violation", closeCode: websocket.StatusPolicyViolation, message: blocked55,
		},
		{
			name:   "a ?model= after a semicolon is a candidate",
			path:   PathRealtime + "?x=1;model=gpt-5.5",
			last:   `{"type":"response.create","response":{"service_tier":"priority"}}`,
			status: 403, code: "policy_violation", closeCode: websocket.StatusPolicyViolation, message: blocked55,
		},
		{
			name:   "a ?model= that a semicolon joins to another pair is a candidate",
			path:   PathRealtime + "?model=gpt-4o&model=gpt-5.5;x=1",
			last:   `{"type":"response.create","response":{"service_tier":"priority"}}`,
			status: 403, code: "policy_violation", closeCode: websocket.StatusPolicyViolation, message: blocked55,
		},
		{
			name:   "a frame led by a byte order mark is refused as invalid JSON",
			path:   PathResponses,
			last:   "\ufeff" + `{"type":"response.create","model":"gpt-5.5","service_tier":"priority"}`,
			status: 400, code: "invalid_json", closeCode: websocket.StatusInvalidFramePayloadData,
			message: "the frame is not valid JSON: invalid JSON at byte 0",
		},
		{
			name:   "a frame repeating the type 65 times is refused",
			path:   PathResponses,
			last:   `{"model":"gpt-5.5"` + strings.Repeat(`,"type":"response.create"`, 65) + `}`,
			status: 400, code: "too_many_occurrences", closeCode: websocket.StatusPolicyViolation,
			message: "the frame repeats service_tier, model, speed or another key tiergate reads more than 64 times",
		},
		{
			name: "an error that repeats an event_id drops no other claim",
			path: PathRealtime + "?model=gpt-4o",
			steps: []hostileStep{
				{client: `{"type":"session.update","event_id":"e1","session":{"model":"gpt-5.5"}}`},
				{client: `{"type":"session.update","event_id":"e1","session":{"model":"no-such-model"}}`},
				{upstream: `{"type":"error","event_id":"evt_up1","error":{"type":"invalid_request_error","message":"bad model","event_id":"e1"}}`},
			},
			last:   `{"type":"response.create","response":{"service_tier":"priority"}}`,
			status: 403, code: "policy_violation", closeCode: websocket.StatusPolicyViolation, message: blocked55,
		},
		{
			name:   "response.model joins the session model",
			path:   PathRealtime + "?model=gpt-5.5",
			last:   `{"type":"response.create","response":{"model":"gpt-4o","service_tier":"priority"}}`,
			status: 403, code: "policy_violation", closeCode: websocket.StatusPolicyViolation, message: blocked55,
		},
		{
			name:   "65 occurrences are refused with 400",
			path:   PathResponses,
			last:   `{"type":"response.create","model":"gpt-4o"` + strings.Repeat(`,"service_tier":"flex"`, 65) + `}`,
			status: 400, code: "too_many_occurrences", closeCode: websocket.StatusPolicyViolation,
			message: "the frame repeats service_tier, model, speed or another key tiergate reads more than 64 times",
		},
		{
			name:      "force adds no tier to a Realtime frame",
			path:      PathRealtime + "?model=gpt-4o",
			header:    []string{"X-Tiergate-Group", "codex-fast"},
			last:      `{"type":"response.create","response":{"instructions":"x"}}`,
			forwarded: `{"type":"response.create","response":{"instructions":"x"}}`,
		},
		{
			// gjson hands a frame that is not an object to its iterator with
			// an empty key; reading that key as a key token took the process
			// down.
			name:      "a frame that is a bare JSON string naming session.update is relayed",
			path:      PathRealtime + "?model=gpt-4o",
			steps:     []hostileStep{{client: `"session.update"`}},
			last:      `{"type":"response.create","response":{"instructions":"x"}}`,
			forwarded: `{"type":"response.create","response":{"instructions":"x"}}`,
		},
		{
			name:      "force still renames a key a Realtime client sent",
			path:      PathRealtime + "?model=gpt-4o",
			header:    []string{"X-Tiergate-Group", "codex-fast"},
			last:      `{"type":"response.create","response":{"SERVICE_TIER":"flex"}}`,
			forwarded: `{"type":"response.create","response":{"service_tier":"priority"}}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := newQuietUpstream(t)
			h := newHarness(t, testPolicy, q.use)
			c, _ := h.dial(t, tc.path, withHeader(tc.header...))
			qc := q.next(t)
			sent := 0
			for _, s := range tc.steps {
				if s.client != "" {
					send(t, c, s.client)
					sent++
					qc.waitFrames(t, sent)
					continue
				}
				qc.send(t, s.upstream)
				until(t, c, "error")
			}
			send(t, c, tc.last)
			if tc.status == 0 {
				got := qc.waitFrames(t, sent+1)
				if string(got[sent]) != tc.forwarded {
					t.Fatalf("the upstream received %s, want %s", got[sent], tc.forwarded)
				}
				return
			}
			ce, evs := closed(t, c)
			if len(evs) != 1 {
				t.Fatalf("the client should get exactly one event before the close, got %d: %v", len(evs), evs)
			}
			ev := evs[0]
			if ev.Get("type").Str != "error" || ev.Get("status").Int() != int64(tc.status) ||
				ev.Get("error.code").Str != tc.code || ev.Get("error.message").Str != tc.message {
				t.Errorf("error event %s, want status %d, code %s, message %q", ev.Raw, tc.status, tc.code, tc.message)
			}
			if ce.Code != tc.closeCode {
				t.Errorf("the client saw close %d %q, want %d", ce.Code, ce.Reason, tc.closeCode)
			}
			qc.waitClosed(t)
			if got := qc.received(); len(got) != sent {
				t.Errorf("the upstream received %d frames, want the %d before the refused one", len(got), sent)
			}
		})
	}
}
