package wsbridge

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/usage"
)

func asClose(err error, ce *websocket.CloseError) bool { return errors.As(err, ce) }

// TestTurnAccounting plays one session per case and checks each turn's
// usage record: usage, tiers, status, timing, ids.
func TestTurnAccounting(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		path string
		opts *websocket.DialOptions
		// frames are sent in order, each followed by reading until the
		// event named after "->" (frame -> event).
		frames  []string
		records []map[string]any
		tokens  []string // lines the metrics must contain
	}{
		{
			name: "a completed turn records the usage and the tier the upstream reported",
			path: PathResponses,
			opts: withHeader("X-Tiergate-Group", "codex-fast", "X-Request-Id", "req-42"),
			frames: []string{
				`{"type":"response.create","model":"gpt-5.5","service_tier":"fast"} -> response.completed`,
			},
			records: []map[string]any{{
				"request_id": "req-42", "response_id": "resp_1", "turn": 1.0, "endpoint": "responses_ws", "group": "codex-fast",
				"model": "gpt-5.5", "response_model": "gpt-5.5-2026-01-01",
				"service_tier_requested": "priority", "service_tier_sent": "priority", "service_tier_reported": "priority",
				"action": "pass", "rule": "fast-group", "status": "completed", "stream": true,
				"input_tokens": 120.0, "cached_input_tokens": 20.0, "output_tokens": 45.0, "reasoning_tokens": 12.0,
				"http_status": nil,
			}},
			tokens: []string{
				`tiergate_tokens_total{endpoint="responses_ws",group="codex-fast",model="gpt-5.5",service_tier="priority",type="output"} 45`,
				`tiergate_tokens_total{endpoint="responses_ws",group="codex-fast",model="gpt-5.5",service_tier="priority",type="reasoning"} 12`,
			},
		},
		{
			name: "an incomplete turn is billed and says so",
			path: PathResponses,
			frames: []string{
				`{"type":"response.create","model":"gpt-5.4","metadata":{"fake":"incomplete"}} -> response.incomplete`,
			},
			records: []map[string]any{{"status": "incomplete", "response_id": "resp_1", "output_tokens": 45.0}},
		},
		{
			name: "a failed turn is recorded as failed",
			path: PathResponses,
			frames: []string{
				`{"type":"response.create","model":"gpt-5.4","metadata":{"fake":"failed"}} -> response.failed`,
			},
			records: []map[string]any{{"status": "failed", "response_id": "resp_1", "time_to_first_token_ms": nil}},
		},
		{
			name: "an error event before response.created ends the oldest waiting turn, and the session goes on",
			path: PathResponses,
			frames: []string{
				`{"type":"response.create","model":"gpt-5.4","previous_response_id":"resp_x","metadata":{"fake":"error"}} -> error`,
				`{"type":"response.create","model":"gpt-5.5"} -> response.completed`,
			},
			records: []map[string]any{
				{"status": "upstream_error", "http_status": 400.0, "model": "gpt-5.4", "response_id": nil, "input_tokens": nil, "turn": 1.0},
				{"status": "completed", "model": "gpt-5.5", "response_id": "resp_1", "turn": 2.0}, // the error took no id
			},
		},
		{
			name: "a Realtime turn takes its response model from the session",
			path: PathRealtime + "?model=gpt-realtime",
			frames: []string{
				`{"type":"response.create","event_id":"evt_c1"} -> response.done`,
			},
			records: []map[string]any{{
				"endpoint": "realtime", "model": "gpt-realtime", "response_model": "gpt-realtime", "response_id": "resp_1",
				"action": "pass", "service_tier_requested": "none", "service_tier_sent": "none", "service_tier_reported": nil,
				"input_tokens": 132.0, "cached_input_tokens": 64.0, "output_tokens": 121.0, "status": "completed",
			}},
			tokens: []string{`tiergate_tokens_total{endpoint="realtime",group="none",model="other",service_tier="none",type="input"} 132`},
		},
		{
			name: "a cancelled Realtime response keeps the upstream's status",
			path: PathRealtime + "?model=gpt-realtime",
			frames: []string{
				`{"type":"response.create","response":{"metadata":{"fake":"cancel"}}} -> response.done`,
			},
			records: []map[string]any{{"status": "cancelled", "output_tokens": 121.0}},
		},
		{
			name: "a Realtime error naming the client's event_id ends that frame's turn only",
			path: PathRealtime + "?model=gpt-realtime",
			frames: []string{
				`{"type":"response.create","event_id":"evt_ok","response":{"metadata":{"fake":"hang"}}} -> response.output_text.delta`,
				`{"type":"response.create","event_id":"evt_bad","response":{"service_tier":"flex","metadata":{"fake":"error"}}} -> error`,
			},
			records: []map[string]any{
				{"status": "upstream_error", "service_tier_requested": "flex", "response_id": nil},
				{"status": "client_closed", "response_id": "resp_1"},
			},
		},
		{
			name: "a turn the server started (VAD) is recorded without a decision",
			path: PathRealtime + "?model=gpt-realtime",
			opts: withHeader("Authorization", "Bearer sk-fast"),
			frames: []string{
				`{"type":"input_audio_buffer.append","audio":"AAAA"}`,
				`{"type":"input_audio_buffer.commit"} -> response.done`,
			},
			records: []map[string]any{{
				"group": "codex-fast", "model": "gpt-realtime", "response_id": "resp_1", "action": "pass", "rule": nil,
				"service_tier_requested": "none", "service_tier_sent": "none", "status": "completed", "input_tokens": 132.0,
			}},
		},
		{
			name: "the beta protocol's events are accounted the same way",
			path: PathRealtime + "?model=gpt-realtime",
			opts: withHeader("OpenAI-Beta", "realtime=v1"),
			frames: []string{
				`{"type":"response.create","response":{"modalities":["text"]}} -> response.done`,
			},
			records: []map[string]any{{"status": "completed", "input_tokens": 132.0, "cached_input_tokens": 64.0}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, testPolicy)
			c, _ := h.dial(t, tc.path, tc.opts)
			fc := h.up.next(t)
			if fc.realtime {
				until(t, c, "session.created")
			}
			for _, f := range tc.frames {
				frame, await, _ := strings.Cut(f, " -> ")
				send(t, c, frame)
				if await != "" {
					evs := until(t, c, await)
					if await != "error" && await != "response.failed" && await != "response.output_text.delta" && !hasDelta(evs) {
						t.Errorf("no delta before %s: %v", await, evs)
					}
				}
			}
			_ = c.Close(websocket.StatusNormalClosure, "")
			h.waitSessions(t)
			recs := h.records()
			if len(recs) != len(tc.records) {
				t.Fatalf("%d records, want %d:\n%s", len(recs), len(tc.records), h.usage.String())
			}
			for i, want := range tc.records {
				checkRecord(t, recs[i], want)
				if want["status"] == "completed" {
					if _, ok := recs[i]["time_to_first_token_ms"]; !ok {
						t.Errorf("record %d lacks time_to_first_token_ms: %v", i, recs[i])
					}
				}
			}
			text := gatherText(t, h)
			checkSeries(t, text, tc.tokens...)
		})
	}
}

func hasDelta(evs []gjson.Result) bool {
	for _, ev := range evs {
		if strings.HasSuffix(ev.Get("type").Str, ".delta") {
			return true
		}
	}
	return false
}

// TestPipelinedTurnsFollowTheirLanes sends several response.create frames
// before any answer. The upstream answers the last lane first and ends the
// turns in reverse order; each record must still carry its own frame's
// model and decision.
func TestPipelinedTurnsFollowTheirLanes(t *testing.T) {
	t.Parallel()
	t.Run("with stream_id lanes answered out of order", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, testPolicy)
		c, _ := h.dial(t, PathResponses, nil)
		send(t, c, `{"type":"response.create","stream_id":"a","model":"gpt-5.4","service_tier":"priority","metadata":{"fake":"defer"}}`)
		send(t, c, `{"type":"response.create","stream_id":"b","model":"gpt-5.5","service_tier":"flex","metadata":{"fake":"defer"}}`)
		send(t, c, `{"type":"response.create","stream_id":"c","model":"gpt-4.1","metadata":{"fake":"flush"}}`)
		var lanes []string
		for range 3 {
			for _, ev := range until(t, c, "response.completed") {
				if ev.Get("type").Str == "response.completed" {
					lanes = append(lanes, ev.Get("stream_id").Str)
				}
			}
		}
		if strings.Join(lanes, ",") != "b,a,c" {
			t.Fatalf("the upstream ended lanes %v, want b,a,c", lanes)
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
		h.waitSessions(t)
		recs := h.records()
		want := []map[string]any{
			{"response_id": "resp_3", "model": "gpt-5.5", "service_tier_sent": "flex", "action": "pass", "status": "completed"},
			{"response_id": "resp_2", "model": "gpt-5.4", "service_tier_sent": "none", "action": "filter", "status": "completed"},
			{"response_id": "resp_1", "model": "gpt-4.1", "service_tier_sent": "none", "action": "pass", "status": "completed"},
		}
		if len(recs) != len(want) {
			t.Fatalf("records:\n%s", h.usage.String())
		}
		for i := range want {
			checkRecord(t, recs[i], want[i])
		}
	})
	t.Run("without lanes, in order", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, testPolicy)
		c, _ := h.dial(t, PathResponses, nil)
		models := []string{"gpt-5.4", "gpt-5.5", "gpt-4.1", "gpt-5.4"}
		for _, m := range models {
			send(t, c, fmt.Sprintf(`{"type":"response.create","model":%q}`, m))
		}
		for range models {
			until(t, c, "response.completed")
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
		h.waitSessions(t)
		recs := h.records()
		if len(recs) != len(models) {
			t.Fatalf("records:\n%s", h.usage.String())
		}
		for i, m := range models {
			checkRecord(t, recs[i], map[string]any{"model": m, "response_id": fmt.Sprintf("resp_%d", i+1), "status": "completed"})
		}
	})
}

// TestTurnsCutShort ends sessions in the middle of a turn from either side
// and checks what the other side is told and how the turn is recorded.
func TestTurnsCutShort(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		control string
		// client acts once the turn's first delta arrived: "drop" (TCP),
		// "close" (1000), or "" (the upstream acts).
		client      string
		clientClose websocket.StatusCode // what the client must see
		clientWhy   string
		upClose     websocket.StatusCode // what the upstream must see (-1: nothing)
		upWhy       string
		status      string
		opts        func(*Options)
	}{
		{name: "the upstream stalling mid-turn past the idle timeout gives both sides 1008 and records upstream_closed", control: "hang",
			clientClose: websocket.StatusPolicyViolation, clientWhy: "idle timeout", upClose: websocket.StatusPolicyViolation, upWhy: "idle timeout",
			status: "upstream_closed", opts: func(o *Options) { o.IdleTimeout = 300 * time.Millisecond }},
		{name: "the upstream dropping mid-turn gives the client 1011 and records upstream_closed", control: "drop",
			clientClose: websocket.StatusInternalError, clientWhy: "upstream connection lost", upClose: -1, status: "upstream_closed"},
		{name: "the upstream closing mid-turn passes its code on and records upstream_closed", control: "close:4001",
			clientClose: 4001, clientWhy: "upstream says bye", upClose: -1, status: "upstream_closed"},
		{name: "the client dropping mid-turn gives the upstream 1011 and records client_closed", control: "hang", client: "drop",
			clientClose: -1, upClose: websocket.StatusInternalError, upWhy: "client connection lost", status: "client_closed"},
		{name: "the client closing mid-turn passes its code on and records client_closed", control: "hang", client: "close",
			clientClose: websocket.StatusNormalClosure, upClose: websocket.StatusNormalClosure, upWhy: "bye", status: "client_closed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mods []func(*Options)
			if tc.opts != nil {
				mods = append(mods, tc.opts)
			}
			h := newHarness(t, testPolicy, mods...)
			c, _ := h.dial(t, PathResponses, nil)
			fc := h.up.next(t)
			send(t, c, `{"type":"response.create","model":"gpt-5.4","service_tier":"priority","metadata":{"fake":"`+tc.control+`"}}`)
			until(t, c, "response.output_text.delta")
			switch tc.client {
			case "drop":
				_ = c.CloseNow()
			case "close":
				_ = c.Close(websocket.StatusNormalClosure, "bye")
			default:
				ce, _ := closed(t, c)
				if ce.Code != tc.clientClose || ce.Reason != tc.clientWhy {
					t.Errorf("the client saw %d %q, want %d %q", ce.Code, ce.Reason, tc.clientClose, tc.clientWhy)
				}
			}
			upErr := fc.waitClosed(t)
			if tc.upClose != -1 {
				var ce websocket.CloseError
				if !asClose(upErr, &ce) || ce.Code != tc.upClose || ce.Reason != tc.upWhy {
					t.Errorf("the upstream saw %v, want %d %q", upErr, tc.upClose, tc.upWhy)
				}
			}
			h.waitSessions(t)
			recs := h.records()
			if len(recs) != 1 {
				t.Fatalf("records:\n%s", h.usage.String())
			}
			checkRecord(t, recs[0], map[string]any{
				"status": tc.status, "response_id": "resp_1", "action": "filter", "input_tokens": nil, "output_tokens": nil,
			})
			if _, ok := recs[0]["time_to_first_token_ms"]; !ok {
				t.Errorf("the cut turn had output; its record lacks time_to_first_token_ms: %v", recs[0])
			}
		})
	}
}

// TestTurnBookMatching checks how upstream events find the frames waiting
// for them, lane by lane.
func TestTurnBookMatching(t *testing.T) {
	t.Parallel()
	type frame struct{ lane, eventID, model string }
	cases := []struct {
		name   string
		frames []frame
		// events: "created:<stream_id>" or "error:<stream_id>:<event_id>";
		// want is the model each event matched ("server" for a turn of
		// the server's own, "" for none).
		events []string
		want   []string
	}{
		{
			name:   "frames in one lane are matched first in, first out",
			frames: []frame{{"", "", "m1"}, {"", "", "m2"}},
			events: []string{"created:", "created:"},
			want:   []string{"m1", "m2"},
		},
		{
			name:   "each lane keeps its own order",
			frames: []frame{{"a", "", "a1"}, {"b", "", "b1"}, {"a", "", "a2"}},
			events: []string{"created:b", "created:a", "created:a", "created:b"},
			want:   []string{"b1", "a1", "a2", "server"},
		},
		{
			name:   "an upstream that does not echo stream_id gets the oldest frame of any lane",
			frames: []frame{{"a", "", "a1"}, {"b", "", "b1"}},
			events: []string{"created:", "created:"},
			want:   []string{"a1", "b1"},
		},
		{
			name:   "an event for a lane with nothing waiting takes nothing from another lane",
			frames: []frame{{"a", "", "a1"}},
			events: []string{"error:b:", "created:b", "created:a"},
			want:   []string{"", "server", "a1"},
		},
		{
			name:   "an error naming an event_id takes that frame, and one naming another takes none",
			frames: []frame{{"", "e1", "m1"}, {"", "e2", "m2"}},
			events: []string{"error::e2", "error::nope", "error::", "created:"},
			want:   []string{"m2", "", "m1", "server"},
		},
		{
			name:   "an error naming nothing answers a stray sent before the oldest waiting frame",
			frames: []frame{{model: "stray"}, {"", "", "m1"}},
			events: []string{"error::", "created:"},
			want:   []string{"", "m1"},
		},
		{
			name:   "a stray sent after the oldest waiting frame leaves the error to that frame",
			frames: []frame{{"", "", "m1"}, {model: "stray"}},
			events: []string{"error::", "created:"},
			want:   []string{"m1", "server"},
		},
		{
			name:   "a frame's response.created settles the strays sent before it",
			frames: []frame{{model: "stray"}, {"", "", "m1"}, {"", "", "m2"}},
			events: []string{"created:", "error::"},
			want:   []string{"m1", "m2"},
		},
		{
			name:   "an error in a lane never answers a stray",
			frames: []frame{{model: "stray"}, {"a", "", "a1"}},
			events: []string{"error:a:"},
			want:   []string{"a1"},
		},
		{
			name:   "an error naming nothing answers a session.update without event_id sent before the waiting frame",
			frames: []frame{{model: "claim"}, {"", "", "m1"}},
			events: []string{"error::", "created:"},
			want:   []string{"claim", "m1"},
		},
		{
			name:   "a session.update sent after the waiting frame leaves the error to that frame",
			frames: []frame{{"", "", "m1"}, {model: "claim"}, {model: "stray"}},
			events: []string{"error::", "error::", "error::"},
			want:   []string{"m1", "claim", ""},
		},
		{
			name:   "with nothing waiting, an error naming nothing settles a stray and takes no turn",
			frames: []frame{{model: "stray"}, {model: "stray"}},
			events: []string{"error::", "error::", "error::"},
			want:   []string{"", "", ""},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b turnBook
			var claim uint64 // the place of the one claim a case may have
			for _, f := range tc.frames {
				switch f.model {
				case "stray":
					b.stray()
					continue
				case "claim":
					claim = b.next()
					continue
				}
				b.push(&turn{lane: f.lane, eventID: f.eventID, model: f.model})
			}
			for i, ev := range tc.events {
				kind, rest, _ := strings.Cut(ev, ":")
				var got *turn
				switch kind {
				case "created":
					e := usage.Event{Type: "response.created", StreamID: rest, ResponseID: fmt.Sprintf("resp_%d", i)}
					b.created(&e, time.Now(), "server")
					got = b.open[e.ResponseID]
				case "error":
					lane, eventID, _ := strings.Cut(rest, ":")
					var claimAnswered bool
					if got, claimAnswered = b.failed(lane, eventID, claim); claimAnswered {
						got, claim = &turn{model: "claim"}, 0
					}
				}
				model := ""
				if got != nil {
					model = got.model
				}
				if model != tc.want[i] {
					t.Errorf("event %d (%s) matched %q, want %q", i, ev, model, tc.want[i])
				}
			}
		})
	}
}

// TestSessionModels checks the candidate models through claims,
// confirmations and refusals.
func TestSessionModels(t *testing.T) {
	t.Parallel()
	var m models
	m.current = "gpt-realtime"
	m.claim(1, "u1", []string{"max"})
	m.claim(2, "u2", nil)
	m.claim(3, "u3", []string{"mini", "mini"})
	if got := strings.Join(m.candidates(nil), ","); got != "gpt-realtime,max,mini,mini" {
		t.Errorf("candidates %s", got)
	}
	m.reportedBy("max", true) // answers u1
	if got := strings.Join(m.candidates(nil), ","); got != "max,mini,mini" {
		t.Errorf("after u1 is confirmed: %s", got)
	}
	m.reportedBy("", true) // says nothing of the model: settles nothing
	if !m.refused("u3") || m.refused("u3") || m.refused("") {
		t.Error("refused should drop u3 once")
	}
	if got := strings.Join(m.candidates(nil), ","); got != "max" {
		t.Errorf("after u3 is refused: %s", got)
	}
	m.name([]string{"gpt-5.5"}) // the upstream reports the model: a frame's name does not move it
	if m.current != "max" || m.named != nil {
		t.Errorf("current %s, named %v", m.current, m.named)
	}
	var r models
	r.name([]string{"gpt-5.5"}) // the Responses API: no reports, the frames say
	if r.current != "gpt-5.5" {
		t.Errorf("current %s", r.current)
	}
	// Every top-level model named stays a candidate, as does every
	// ?model=; current, last among them, is the last one named. A model
	// the upstream reports clears them, and frames name none after it.
	var n models
	n.connect([]string{"q"})
	n.name([]string{"a", "b", "a"})
	got := strings.Join(n.candidates(nil), ",")
	if k, bytes := n.unnamed([]string{"b", "cc", "cc"}); got != "q,a,b,a" || k != 1 || bytes != 2 || n.held != 2 {
		t.Errorf("named a, b, a: candidates %s, unnamed(b, cc, cc) %d (%d bytes), held %d; want q,a,b,a, 1 (2 bytes), 2",
			got, k, bytes, n.held)
	}
	n.reportedBy("rt", false)
	n.name([]string{"z"})
	if k, _ := n.unnamed([]string{"z"}); strings.Join(n.candidates(nil), ",") != "rt" || k != 0 || n.held != 0 {
		t.Errorf("after the upstream reported rt: candidates %v, unnamed(z) %d, held %d; want rt alone, 0, 0", n.candidates(nil), k, n.held)
	}
	var c models
	for i := range maxClaimed {
		if !c.claim(uint64(i+1), fmt.Sprint(i), []string{"m"}) {
			t.Fatalf("claim %d refused", i)
		}
	}
	if c.claim(1000, "one-too-many", []string{"m"}) {
		t.Error("a claim beyond the bound was taken")
	}
	// Frames naming no model wait in line too: the bound counts them, and
	// none is dropped for a later claim, or the upstream's answers would
	// settle claims it has not answered yet.
	var e models
	e.current = "gpt-realtime"
	for i := range maxClaimed - 1 {
		if !e.claim(uint64(i+1), fmt.Sprint(i), nil) {
			t.Fatalf("a claim naming no model was refused at %d", i)
		}
	}
	if !e.claim(1000, "x", []string{"x"}) {
		t.Fatal("the last claim within the bound was refused")
	}
	if e.claim(1001, "past", nil) {
		t.Error("a claim naming no model was taken past the bound")
	}
	for range maxClaimed - 1 {
		e.reportedBy("gpt-realtime", true) // answers the frames naming no model
	}
	if got := strings.Join(e.candidates(nil), ","); got != "gpt-realtime,x" {
		t.Errorf("before x's session.update is answered, candidates %s; want gpt-realtime,x", got)
	}
	e.reportedBy("x", true)
	if got := strings.Join(e.candidates(nil), ","); got != "x" {
		t.Errorf("once x is answered, candidates %s; want x", got)
	}
}

// TestErrorDetails reads an error event's client event id and status in
// each form the upstreams send.
func TestErrorDetails(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, frame string
		eventID     string
		status      int
	}{
		{"Responses WebSocket status", `{"type":"error","status":429,"error":{"type":"requests","message":"slow down"}}`, "", 429},
		{"status_code, as Codex also reads it", `{"type":"error","status_code":400,"error":{"message":"bad"}}`, "", 400},
		{"status wins over status_code", `{"type":"error","status":503,"status_code":400}`, "", 503},
		{"Realtime's event id", `{"type":"error","event_id":"event_9","error":{"type":"invalid_request_error","event_id":"evt_client"}}`, "evt_client", 0},
		{"a status out of HTTP's range is none", `{"type":"error","status":42}`, "", 0},
		{"a status that is not a number is none", `{"type":"error","status":"429"}`, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id, status := errorDetails([]byte(tc.frame))
			if id != tc.eventID || status != tc.status {
				t.Errorf("errorDetails = %q, %d; want %q, %d", id, status, tc.eventID, tc.status)
			}
		})
	}
}

func TestStrayFrame(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		frame string
		stray bool
	}{
		{`{"type":"bogus"}`, true},
		{`{"type":"bogus","event_id":"e1"}`, false}, // its error names it
		{`{"event_id":"e1"}`, false},
		{`{"input":"no type"}`, true},
		{`[1,2]`, true},
		{`{"type":"input_audio_buffer.append","audio":"AAAA"}`, false},
		{`{"type":"response.processed","response_id":"resp_1"}`, false},
		{`{"type":"response.cancel"}`, false},
		{`{ "audio":"AAAA", "type" : "input_audio_buffer.append"}`, false},
		{`{"audio":"AAAA","type":"input_audio_buffer.appendx"}`, true},
	} {
		t.Run(tc.frame, func(t *testing.T) {
			if got := strayFrame([]byte(tc.frame)); got != tc.stray {
				t.Errorf("strayFrame(%s) = %v, want %v", tc.frame, got, tc.stray)
			}
		})
	}
}

// TestAnErrorForAStrayFrameLeavesTheTurnAlone: a client frame of a type no
// API defines draws an error that names no event; the response.create sent
// right after it keeps its place, and its turn gets one record with its
// own decision.
func TestAnErrorForAStrayFrameLeavesTheTurnAlone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		stray string
	}{
		{"a frame of an unknown type", `{"type":"bogus"}`},
		{"a frame without a type", `{"input":"hi"}`},
		// Its error names it, so it never could take the turn.
		{"an unknown type with an event_id", `{"type":"bogus","event_id":"evt_1"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := newQuietUpstream(t)
			h := newHarness(t, testPolicy, q.use)
			c, _ := h.dial(t, PathResponses, nil)
			qc := q.next(t)
			send(t, c, tc.stray)
			send(t, c, `{"type":"response.create","model":"gpt-5.4","service_tier":"priority","input":"hi"}`)
			qc.waitFrames(t, 2)
			errEvent := `{"type":"error","status":400,"error":{"type":"invalid_request_error","code":"unknown_event_type","message":"Unknown event type."}}`
			if id := gjson.Get(tc.stray, "event_id").Str; id != "" {
				errEvent = `{"type":"error","status":400,"error":{"type":"invalid_request_error","message":"Unknown event type.","event_id":"` + id + `"}}`
			}
			qc.send(t, errEvent)
			qc.send(t, `{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress","model":"gpt-5.4","usage":null}}`)
			qc.send(t, `{"type":"response.completed","sequence_number":1,"response":{"id":"resp_1","status":"completed","model":"gpt-5.4","service_tier":"default","usage":{"input_tokens":100,"output_tokens":10,"total_tokens":110}}}`)
			until(t, c, "response.completed")
			_ = c.Close(websocket.StatusNormalClosure, "")
			h.waitSessions(t)
			recs := h.records()
			if len(recs) != 1 {
				t.Fatalf("%d usage records for one turn, want 1: %v", len(recs), recs)
			}
			checkRecord(t, recs[0], map[string]any{
				"status": "completed", "action": "filter", "rule": "strip-priority",
				"service_tier_requested": "priority", "response_id": "resp_1", "input_tokens": 100.0,
			})
		})
	}
}

// TestARefusedSessionUpdateWithoutEventIDIsSettled: a Realtime
// session.update without event_id (it is optional) that the upstream
// refuses draws an error naming nothing. It settles that claim, so a long
// session with one refused update per accepted one never piles claims up
// to the bound that would refuse its honest frames.
func TestARefusedSessionUpdateWithoutEventIDIsSettled(t *testing.T) {
	t.Parallel()
	s := &session{}
	s.models.connect([]string{"gpt-realtime"})
	s.account([]byte(`{"type":"session.created","event_id":"e0","session":{"type":"realtime","model":"gpt-realtime"}}`))
	for i := range 2 * maxClaimed {
		for _, accepted := range []bool{false, true} {
			frame := []byte(`{"type":"session.update","session":{"type":"realtime","model":"gpt-realtime"}}`)
			meta := readFrame(frame, false)
			if !meta.update {
				t.Fatal("not read as a session.update")
			}
			s.mu.Lock()
			why := s.book(&meta, nil)
			s.mu.Unlock()
			if why != "" {
				t.Fatalf("round %d: a session.update with nothing else unanswered is refused: %s (claims %d, held %d)",
					i, why, len(s.models.claims), s.models.held)
			}
			if accepted {
				s.account([]byte(fmt.Sprintf(`{"type":"session.updated","event_id":"u%d","session":{"type":"realtime","model":"gpt-realtime"}}`, i)))
			} else {
				s.account([]byte(fmt.Sprintf(`{"type":"error","event_id":"x%d","error":{"type":"invalid_request_error","code":"invalid_value","message":"Invalid voice"}}`, i)))
			}
		}
	}
	if len(s.models.claims) != 0 || s.models.held != 0 {
		t.Errorf("%d claims and %d bytes left after every update was answered", len(s.models.claims), s.models.held)
	}
}
