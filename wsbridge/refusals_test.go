package wsbridge

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// quietUpstream is an upstream that answers nothing of its own accord: it
// records the frames it receives and sends only what the test tells it to.
// The fake upstream answers every response.create and session.update at
// once; these tests need them left unanswered for as long as they like.
type quietUpstream struct {
	srv       *httptest.Server
	mu        sync.Mutex
	conns     []*quietConn
	connected chan *quietConn
}

// quietConn is one session the quiet upstream accepted.
type quietConn struct {
	c        *websocket.Conn
	mu       sync.Mutex
	frames   [][]byte
	closeErr error
	done     chan struct{}
}

// newQuietUpstream starts one; create it before the harness, so that its
// cleanup runs after the bridge's.
func newQuietUpstream(t testing.TB) *quietUpstream {
	t.Helper()
	q := &quietUpstream{connected: make(chan *quietConn, 8)}
	q.srv = httptest.NewServer(q)
	t.Cleanup(func() {
		q.mu.Lock()
		conns := append([]*quietConn(nil), q.conns...)
		q.mu.Unlock()
		for _, qc := range conns {
			_ = qc.c.CloseNow()
			<-qc.done
		}
		q.srv.Close()
	})
	return q
}

// use points the bridge at the quiet upstream (an Options modifier).
func (q *quietUpstream) use(o *Options) { o.Upstream = "ws://" + q.srv.Listener.Addr().String() }

func (q *quietUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"realtime"}})
	if err != nil {
		return
	}
	c.SetReadLimit(64 << 20)
	qc := &quietConn{c: c, done: make(chan struct{})}
	q.mu.Lock()
	q.conns = append(q.conns, qc)
	q.mu.Unlock()
	q.connected <- qc
	defer close(qc.done)
	for {
		_, data, err := c.Read(context.Background())
		if err != nil {
			qc.mu.Lock()
			qc.closeErr = err
			qc.mu.Unlock()
			return
		}
		qc.mu.Lock()
		qc.frames = append(qc.frames, data)
		qc.mu.Unlock()
	}
}

// next returns the next session the quiet upstream accepted.
func (q *quietUpstream) next(t testing.TB) *quietConn {
	t.Helper()
	select {
	case qc := <-q.connected:
		return qc
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream saw no session")
		return nil
	}
}

// received returns a copy of the frames received so far.
func (qc *quietConn) received() [][]byte {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	return append([][]byte(nil), qc.frames...)
}

// waitFrames waits until the upstream has received n frames.
func (qc *quietConn) waitFrames(t testing.TB, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fs := qc.received()
		if len(fs) >= n {
			return fs
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream received %d frames, want %d", len(fs), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// send writes one event to the bridge, as the upstream.
func (qc *quietConn) send(t testing.TB, frame string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := qc.c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		t.Fatalf("upstream send: %v", err)
	}
}

// waitClosed waits for the session to end and returns how it ended.
func (qc *quietConn) waitClosed(t testing.TB) error {
	t.Helper()
	select {
	case <-qc.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream session did not end")
	}
	qc.mu.Lock()
	defer qc.mu.Unlock()
	return qc.closeErr
}

// expectRefusal checks that the last frame the client sent was refused:
// exactly one error event (403 forbidden_error/policy_violation with msg),
// then a 1008 close with msg; the upstream got a 1000 close and only the
// forwarded frames before it, not the refused one.
func expectRefusal(t *testing.T, c *websocket.Conn, qc *quietConn, msg string, forwarded int) {
	t.Helper()
	ce, evs := closed(t, c)
	if len(evs) != 1 {
		t.Fatalf("the client should get exactly one event before the close, got %d: %v", len(evs), evs)
	}
	ev := evs[0]
	if !eventID.MatchString(ev.Get("event_id").Str) || ev.Get("type").Str != "error" || ev.Get("status").Int() != 403 ||
		ev.Get("error.type").Str != "forbidden_error" || ev.Get("error.code").Str != "policy_violation" ||
		ev.Get("error.message").Str != msg {
		t.Errorf("error event %s, want status 403, forbidden_error/policy_violation, message %q", ev.Raw, msg)
	}
	if ce.Code != websocket.StatusPolicyViolation || ce.Reason != truncateReason(msg) {
		t.Errorf("the client saw close %d %q, want 1008 %q", ce.Code, ce.Reason, truncateReason(msg))
	}
	upErr := qc.waitClosed(t)
	if code := websocket.CloseStatus(upErr); code != websocket.StatusNormalClosure {
		t.Errorf("the upstream was closed with %v, want 1000", upErr)
	}
	if got := qc.received(); len(got) != forwarded {
		t.Errorf("the upstream received %d frames, want the %d before the refused one", len(got), forwarded)
	}
}

// refusedAfter opens a session on path (request id requestID) to an
// upstream that answers nothing, sends script (every frame of which must
// reach the upstream), then refused, which must be refused with msg
// (expectRefusal), and returns the session's usage records.
func refusedAfter(t *testing.T, path, requestID string, script []string, refused, msg string) []map[string]any {
	t.Helper()
	q := newQuietUpstream(t)
	h := newHarness(t, testPolicy, q.use)
	c, _ := h.dial(t, path, withHeader("X-Request-Id", requestID))
	qc := q.next(t)
	sendAll(t, c, script)
	qc.waitFrames(t, len(script)) // none was refused
	send(t, c, refused)
	expectRefusal(t, c, qc, msg, len(script))
	h.waitSessions(t)
	return h.records()
}

// sendAll sends frames in order.
func sendAll(t *testing.T, c *websocket.Conn, frames []string) {
	t.Helper()
	for _, f := range frames {
		send(t, c, f)
	}
}

// TestBacklogOfWaitingResponseCreatesIsRefused pipelines response.create
// frames to an upstream that never answers them: maxWaiting of them wait,
// and the one past that is refused (refuseOverload) with an error event, a
// 1008 close, a "blocked" usage record, and the waiting turns recorded as
// cut short.
func TestBacklogOfWaitingResponseCreatesIsRefused(t *testing.T) {
	t.Parallel()
	const msg = "too many response.create frames are waiting for the upstream's response.created"
	cases := []struct {
		name string
		// answered frames are sent first, each answered by a
		// response.created before the next: under way, they wait no more.
		answered int
		frame    func(i int) string // the i-th frame left waiting
	}{
		{
			name:  "frames without stream_id: the one past maxWaiting is refused",
			frame: func(int) string { return `{"type":"response.create","model":"gpt-5.4"}` },
		},
		{
			name: "the bound is the session's, not a stream_id lane's",
			frame: func(i int) string {
				return fmt.Sprintf(`{"type":"response.create","model":"gpt-5.4","stream_id":"lane-%d"}`, i%5)
			},
		},
		{
			name:     "a frame whose response.created came no longer counts",
			answered: 2,
			frame:    func(int) string { return `{"type":"response.create","model":"gpt-5.4"}` },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := newQuietUpstream(t)
			h := newHarness(t, testPolicy, q.use)
			c, _ := h.dial(t, PathResponses, withHeader("X-Tiergate-Group", "codex-fast", "X-Request-Id", "req-backlog"))
			qc := q.next(t)
			for i := range tc.answered {
				send(t, c, `{"type":"response.create","model":"gpt-5.4"}`)
				qc.waitFrames(t, i+1)
				qc.send(t, fmt.Sprintf(`{"type":"response.created","sequence_number":%d,"response":{"id":"resp_%d","object":"response","status":"in_progress","model":"gpt-5.4"}}`, i, i+1))
				until(t, c, "response.created")
			}
			frames := make([]string, maxWaiting)
			for i := range frames {
				frames[i] = tc.frame(i)
			}
			sendAll(t, c, frames)
			// Every one of them reached the upstream: none was refused.
			forwarded := tc.answered + maxWaiting
			qc.waitFrames(t, forwarded)

			send(t, c, tc.frame(maxWaiting)) // one too many
			expectRefusal(t, c, qc, msg, forwarded)
			h.waitSessions(t)

			recs := h.records()
			if len(recs) != 1+forwarded {
				t.Fatalf("%d usage records, want 1 for the refusal and %d for the turns cut short", len(recs), forwarded)
			}
			// The refusal is recorded first, before the session ends.
			checkRecord(t, recs[0], map[string]any{
				"request_id": "req-backlog", "endpoint": "responses_ws", "group": "codex-fast",
				"status": "blocked", "http_status": 403.0, "action": "block", "rule": nil,
				"model": nil, "response_id": nil, "service_tier_requested": "none", "service_tier_sent": "none",
				"input_tokens": nil,
			})
			var ids []string
			for i, r := range recs[1:] {
				if r["status"] != "client_closed" || r["action"] != "pass" || r["model"] != "gpt-5.4" || r["http_status"] != nil {
					t.Fatalf("record %d: %v, want a client_closed gpt-5.4 turn without http_status", i+1, r)
				}
				if id, ok := r["response_id"].(string); ok {
					ids = append(ids, id)
				}
			}
			var wantIDs []string
			for i := range tc.answered {
				wantIDs = append(wantIDs, fmt.Sprintf("resp_%d", i+1))
			}
			if strings.Join(ids, ",") != strings.Join(wantIDs, ",") {
				t.Errorf("the turns cut short carry response ids %v, want %v", ids, wantIDs)
			}
			text := gatherText(t, h)
			checkSeries(t, text,
				`tiergate_ws_turns_total{endpoint="responses_ws",status="blocked"} 1`,
				fmt.Sprintf(`tiergate_ws_turns_total{endpoint="responses_ws",status="client_closed"} %d`, forwarded),
				`tiergate_ws_sessions_total{close_code="1008",endpoint="responses_ws"} 1`,
			)
		})
	}
}

// upstreamConfirms, in a claims script, has the upstream send one
// session.updated (naming a model) and the client wait for it.
const upstreamConfirms = "<the upstream sends session.updated>"

// updates returns n session.update frames with the given session object.
func updates(n int, session string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"type":"session.update","event_id":"evt_u%d","session":%s}`, i, session)
	}
	return out
}

// TestUnconfirmedSessionUpdateClaimsAreRefused sends session.update frames
// to an upstream that does not confirm them: once the frames waiting, or
// the models they claim, reach maxClaimed, the next session.update is
// refused (refuseOverload) with an error event, a 1008 close and a
// "blocked" usage record.
func TestUnconfirmedSessionUpdateClaimsAreRefused(t *testing.T) {
	t.Parallel()
	const msg = "too many session.update frames are waiting for the upstream's session.updated"
	const oneModel = `{"type":"realtime","model":"gpt-realtime-mini"}`
	cases := []struct {
		name string
		// script is sent in order; every frame must reach the upstream.
		script []string
		// refused is the frame then sent, which must be refused.
		refused string
	}{
		{
			name:    "one model per frame: the claim past maxClaimed is refused",
			script:  updates(maxClaimed, oneModel),
			refused: `{"type":"session.update","event_id":"evt_last","session":{"model":"gpt-realtime"}}`,
		},
		{
			name:    "every session.model of a frame counts, so half as many frames fill the bound",
			script:  updates(maxClaimed/2, `{"model":"gpt-realtime-mini","model":"gpt-realtime"}`),
			refused: `{"type":"session.update","event_id":"evt_last","session":{"model":"gpt-realtime"}}`,
		},
		{
			name:    "frames naming no model count toward the bound",
			script:  slices.Concat(updates(maxClaimed-1, `{"instructions":"be brief"}`), updates(1, oneModel)),
			refused: `{"type":"session.update","event_id":"evt_last","session":{"instructions":"be briefer"}}`,
		},
		{
			name:    "a session.updated settles the oldest claim and makes room for one more",
			script:  slices.Concat(updates(maxClaimed, oneModel), []string{upstreamConfirms}, updates(1, oneModel)),
			refused: `{"type":"session.update","event_id":"evt_last","session":{"model":"gpt-realtime"}}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := newQuietUpstream(t)
			h := newHarness(t, testPolicy, q.use)
			c, _ := h.dial(t, PathRealtime+"?model=gpt-realtime", withHeader("X-Tiergate-Group", "codex-fast", "X-Request-Id", "req-claims"))
			qc := q.next(t)
			forwarded := 0
			for _, f := range tc.script {
				if f == upstreamConfirms {
					qc.waitFrames(t, forwarded)
					qc.send(t, `{"type":"session.updated","event_id":"event_1","session":{"type":"realtime","object":"realtime.session","model":"gpt-realtime-mini"}}`)
					until(t, c, "session.updated")
					continue
				}
				send(t, c, f)
				forwarded++
			}
			qc.waitFrames(t, forwarded) // none was refused

			send(t, c, tc.refused)
			expectRefusal(t, c, qc, msg, forwarded)
			h.waitSessions(t)

			recs := h.records()
			if len(recs) != 1 {
				t.Fatalf("%d usage records, want the refusal's alone:\n%s", len(recs), h.usage.String())
			}
			checkRecord(t, recs[0], map[string]any{
				"request_id": "req-claims", "endpoint": "realtime", "group": "codex-fast",
				"status": "blocked", "http_status": 403.0, "action": "block", "rule": nil,
				"model": nil, "response_id": nil, "service_tier_requested": "none", "service_tier_sent": "none",
			})
			text := gatherText(t, h)
			checkSeries(t, text,
				`tiergate_ws_turns_total{endpoint="realtime",status="blocked"} 1`,
				`tiergate_ws_sessions_total{close_code="1008",endpoint="realtime"} 1`,
			)
		})
	}
}

// namedFrames returns response.create frames naming the models
// m-<from> to m-<to-1>, one each.
func namedFrames(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf(`{"type":"response.create","model":"m-%d"}`, i))
	}
	return out
}

// TestTooManyNamedModelsAreRefused has a /v1/responses client name one
// model after another in response.create frames the upstream does not
// answer: each stays a candidate for the rest of the session, so once
// maxClaimed distinct ones were named, a frame naming one more is refused
// (refuseOverload); a model named again takes no more room.
func TestTooManyNamedModelsAreRefused(t *testing.T) {
	t.Parallel()
	msg := fmt.Sprintf("too many distinct models named in response.create frames: at most %d per session", maxClaimed)
	cases := []struct {
		name string
		// script is sent in order; every frame must reach the upstream.
		script []string
		// refused is the frame then sent, which must be refused.
		refused string
	}{
		{
			name:    "the distinct model past maxClaimed is refused",
			script:  namedFrames(0, maxClaimed),
			refused: `{"type":"response.create","model":"one-too-many"}`,
		},
		{
			name:    "a model named again, or a frame naming none, takes no more room",
			script:  slices.Concat(namedFrames(0, maxClaimed), namedFrames(0, 1), []string{`{"type":"response.create"}`}),
			refused: `{"type":"response.create","model":"one-too-many"}`,
		},
		{
			name: "a model repeated in one frame counts once, and every distinct one counts",
			script: slices.Concat(namedFrames(0, maxClaimed-2),
				[]string{`{"type":"response.create","model":"x","Model":"x","MODEL":"y"}`}),
			refused: `{"type":"response.create","model":"m-0","model":"one-too-many"}`,
		},
		{
			name:    "a model only under response takes no room",
			script:  slices.Concat(namedFrames(0, maxClaimed), []string{`{"type":"response.create","response":{"model":"nested"}}`}),
			refused: `{"type":"response.create","model":"one-too-many"}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			recs := refusedAfter(t, PathResponses, "req-named", tc.script, tc.refused, msg)
			if len(recs) != 1+len(tc.script) {
				t.Fatalf("%d usage records, want 1 for the refusal and %d for the turns cut short", len(recs), len(tc.script))
			}
			checkRecord(t, recs[0], map[string]any{
				"request_id": "req-named", "endpoint": "responses_ws",
				"status": "blocked", "http_status": 403.0, "action": "block", "rule": nil, "model": nil,
			})
		})
	}
}

// TestWhatWaitsOnTheUpstreamIsBounded sends frames that leave strings
// waiting on an upstream that answers none of them: a session.update's
// claimed models, a response.create's stream_id, event_id and model, and
// the models response.create frames name. Once they would hold more than
// maxHeld bytes, the frame is refused (refuseOverload) however few frames
// wait, rather than the session pinning up to maxClaimed or maxWaiting
// strings each as long as the read limit.
func TestWhatWaitsOnTheUpstreamIsBounded(t *testing.T) {
	t.Parallel()
	msg := fmt.Sprintf("the frames waiting for the upstream would hold more than %d bytes of models, stream_ids and event_ids", maxHeld)
	const kib = 1 << 10
	repeat := func(n int, f func(i int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	// name returns a distinct string of exactly size bytes.
	name := func(i, size int) string {
		p := fmt.Sprintf("m-%d-", i)
		return p + strings.Repeat("x", size-len(p))
	}
	lane := strings.Repeat("s", 256) // the longest stream_id the API allows (docs/contracts.md, "Wire facts")
	cases := []struct {
		name string
		path string
		// script is sent in order; every frame must reach the upstream.
		script []string
		// refused is the frame then sent, which must be refused.
		refused string
	}{
		{
			name:    "a session.update claiming a model longer than the bound is refused at once",
			path:    PathResponses,
			refused: `{"type":"session.update","session":{"model":"` + strings.Repeat("m", 1<<20) + `"}}`,
		},
		{
			name: "the models of pending session.update claims add up to the bound",
			path: PathResponses,
			script: repeat(maxHeld/kib, func(i int) string {
				return `{"type":"session.update","session":{"model":"` + name(i, kib) + `"}}`
			}),
			refused: `{"type":"session.update","session":{"model":"m"}}`,
		},
		{
			name:    "a response.create with a stream_id longer than the bound is refused at once",
			path:    PathResponses,
			refused: `{"type":"response.create","stream_id":"` + strings.Repeat("s", 1<<20) + `"}`,
		},
		{
			name:    "the stream_ids of waiting response.create frames add up to the bound",
			path:    PathResponses,
			script:  repeat(maxHeld/len(lane), func(int) string { return `{"type":"response.create","stream_id":"` + lane + `"}` }),
			refused: `{"type":"response.create","stream_id":"s"}`,
		},
		{
			name: "so do their event_ids",
			path: PathRealtime,
			script: repeat(maxHeld/kib, func(i int) string {
				return `{"type":"response.create","event_id":"` + name(i, kib) + `"}`
			}),
			refused: `{"type":"response.create","event_id":"e"}`,
		},
		{
			name: "so do the models they name, held by the turn and by the session's named models",
			path: PathResponses,
			script: repeat(maxHeld/(2*kib), func(i int) string {
				return `{"type":"response.create","model":"` + name(i, kib) + `"}`
			}),
			refused: `{"type":"response.create","model":"m"}`,
		},
		{
			name: "waiting turns and claims share one bound",
			path: PathResponses,
			script: slices.Concat(
				repeat(maxHeld/(2*len(lane)), func(int) string { return `{"type":"response.create","stream_id":"` + lane + `"}` }),
				repeat(maxHeld/(2*kib), func(i int) string {
					return `{"type":"session.update","session":{"model":"` + name(i, kib) + `"}}`
				})),
			refused: `{"type":"session.update","session":{"model":"m"}}`,
		},
		{
			// A turn's model may be a session candidate's string, but the
			// turn can outlive the candidate (a confirmed claim), so it
			// counts for the turn too.
			name: "a waiting turn counts the session model it was judged under",
			path: PathResponses,
			script: []string{
				`{"type":"session.update","session":{"model":"` + name(0, maxHeld/2) + `"}}`,
				`{"type":"response.create"}`,
			},
			refused: `{"type":"response.create","stream_id":"s"}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			recs := refusedAfter(t, tc.path, "req-held", tc.script, tc.refused, msg)
			checkRecord(t, recs[0], map[string]any{
				"request_id": "req-held", "status": "blocked", "http_status": 403.0, "action": "block", "rule": nil, "model": nil,
			})
		})
	}
}

// TestAnsweredFramesReleaseWhatTheyHeld has the upstream answer each frame
// before the next is sent, many times over what maxHeld holds: every
// answer that settles a frame (a response.created, an error naming it, a
// session.updated) releases its strings, so the session is never refused.
func TestAnsweredFramesReleaseWhatTheyHeld(t *testing.T) {
	t.Parallel()
	const kib = 1 << 10
	lane := strings.Repeat("s", 256)
	cases := []struct {
		name  string
		path  string
		n     int                  // frames sent
		size  int                  // the bytes each holds while it waits
		frame func(i int) string   // the i-th frame
		reply func(i int) []string // what the upstream answers it with
		await string               // the event the client waits for
	}{
		{
			name: "a response.create released at its response.created, and its turn ended",
			path: PathResponses, n: 4 * maxHeld / len(lane), size: len(lane),
			frame: func(int) string { return `{"type":"response.create","stream_id":"` + lane + `"}` },
			reply: func(i int) []string {
				return []string{
					fmt.Sprintf(`{"type":"response.created","stream_id":"%s","response":{"id":"resp_%d","status":"in_progress"}}`, lane, i),
					fmt.Sprintf(`{"type":"response.completed","stream_id":"%s","response":{"id":"resp_%d","status":"completed","usage":{"input_tokens":1,"output_tokens":1}}}`, lane, i),
				}
			},
			await: "response.completed",
		},
		{
			name: "a response.create released by the upstream's error",
			path: PathResponses, n: 4 * maxHeld / len(lane), size: len(lane),
			frame: func(int) string { return `{"type":"response.create","stream_id":"` + lane + `"}` },
			reply: func(int) []string {
				return []string{`{"type":"error","stream_id":"` + lane + `","status":400,"error":{"type":"invalid_request_error","message":"no"}}`}
			},
			await: "error",
		},
		{
			name: "a Realtime response.create released by an error naming its event_id",
			path: PathRealtime, n: 4 * maxHeld / kib, size: kib,
			frame: func(i int) string {
				return fmt.Sprintf(`{"type":"response.create","event_id":"%0*d"}`, kib, i)
			},
			reply: func(i int) []string {
				return []string{fmt.Sprintf(`{"type":"error","event_id":"event_%d","error":{"type":"invalid_request_error","message":"no","event_id":"%0*d"}}`, i, kib, i)}
			},
			await: "error",
		},
		{
			name: "a session.update's claim released by the session.updated that confirms it",
			path: PathRealtime, n: 4 * maxHeld / kib, size: kib,
			frame: func(i int) string {
				return fmt.Sprintf(`{"type":"session.update","session":{"type":"realtime","model":"%0*d"}}`, kib, i)
			},
			reply: func(i int) []string {
				return []string{fmt.Sprintf(`{"type":"session.updated","event_id":"event_%d","session":{"type":"realtime","model":"%0*d"}}`, i, kib, i)}
			},
			await: "session.updated",
		},
		{
			name: "a session.update's claim released by an error naming its event_id",
			path: PathRealtime, n: 4 * maxHeld / kib, size: kib,
			frame: func(i int) string {
				return fmt.Sprintf(`{"type":"session.update","event_id":"evt_%d","session":{"type":"realtime","model":"%0*d"}}`, i, kib, i)
			},
			reply: func(i int) []string {
				return []string{fmt.Sprintf(`{"type":"error","event_id":"event_%d","error":{"type":"invalid_request_error","message":"no","event_id":"evt_%d"}}`, i, i)}
			},
			await: "error",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.n*tc.size <= 2*maxHeld {
				t.Fatalf("the case sends %d bytes in all, too few to show anything is released", tc.n*tc.size)
			}
			q := newQuietUpstream(t)
			h := newHarness(t, testPolicy, q.use)
			c, _ := h.dial(t, tc.path, nil)
			qc := q.next(t)
			for i := range tc.n {
				send(t, c, tc.frame(i))
				qc.waitFrames(t, i+1)
				for _, r := range tc.reply(i) {
					qc.send(t, r)
				}
				until(t, c, tc.await)
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatalf("the session ended before the client closed it: %v", err)
			}
			if code := websocket.CloseStatus(qc.waitClosed(t)); code != websocket.StatusNormalClosure {
				t.Errorf("the upstream saw close %d, want the client's 1000", code)
			}
			if n := len(qc.received()); n != tc.n {
				t.Errorf("the upstream received %d frames, want all %d", n, tc.n)
			}
		})
	}
}

// TestUpstreamErrorNamingASessionUpdateEndsNoTurn has a Realtime client
// claim gpt-realtime-max in a session.update (event_id evt_u1) the upstream
// leaves unconfirmed, then send a response.create that waits. The upstream
// then sends an error event naming some event_id. An error naming the
// session.update answers that frame: its claim is dropped and no waiting
// turn ends, even one whose response.create carries the same event_id. Any
// other error ends the waiting response.create it names (or, naming none,
// the oldest) as upstream_error, and leaves the claim standing.
//
// Whether the claim stands shows in the next frame: a priority
// response.create naming no model is blocked while gpt-realtime-max is a
// candidate, and only filtered once the claim is gone.
func TestUpstreamErrorNamingASessionUpdateEndsNoTurn(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name          string
		createEventID string // the waiting response.create's event_id
		errorEventID  string // the upstream error's error.event_id ("" none)
		// wantTurn is the waiting turn's record status: upstream_error if
		// the error ended it, client_closed if it still waited at the end.
		wantTurn     string
		claimDropped bool
	}{
		{
			name:          "an error naming the session.update drops its claim and ends no turn",
			createEventID: "evt_c1", errorEventID: "evt_u1",
			wantTurn: "client_closed", claimDropped: true,
		},
		{
			name:          "an error naming an event_id the session.update shares with a waiting response.create is the session.update's",
			createEventID: "evt_u1", errorEventID: "evt_u1",
			wantTurn: "client_closed", claimDropped: true,
		},
		{
			name:          "an error naming the response.create ends its turn as upstream_error",
			createEventID: "evt_c1", errorEventID: "evt_c1",
			wantTurn: "upstream_error",
		},
		{
			name:          "an error naming no event ends the oldest waiting turn as upstream_error",
			createEventID: "evt_c1", errorEventID: "",
			wantTurn: "upstream_error",
		},
		{
			name:          "an error naming an event tiergate never saw ends nothing and drops nothing",
			createEventID: "evt_c1", errorEventID: "evt_nope",
			wantTurn: "client_closed",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := newQuietUpstream(t)
			h := newHarness(t, testPolicy, q.use)
			c, _ := h.dial(t, PathRealtime+"?model=gpt-realtime", nil)
			qc := q.next(t)
			send(t, c, `{"type":"session.update","event_id":"evt_u1","session":{"type":"realtime","model":"gpt-realtime-max"}}`)
			send(t, c, `{"type":"response.create","event_id":"`+tc.createEventID+`","response":{"output_modalities":["text"]}}`)
			qc.waitFrames(t, 2) // the response.create waits: it was queued before it was written

			qc.send(t, string(obj("type", "error", "event_id", "event_9",
				"error", obj("type", "invalid_request_error", "code", "invalid_value", "message", "The request was refused.",
					"param", nil, "event_id", orOmit(tc.errorEventID)))))
			// The bridge accounts an event before relaying it.
			if ev := until(t, c, "error"); ev[len(ev)-1].Get("error.event_id").Str != tc.errorEventID {
				t.Fatalf("the client got %s, want the upstream's error", ev[len(ev)-1].Raw)
			}

			send(t, c, `{"type":"response.create","event_id":"evt_c2","response":{"service_tier":"priority","output_modalities":["text"]}}`)
			next := map[string]any{"model": "gpt-realtime-max", "action": "block", "rule": "no-priority-on-gpt-5.5",
				"service_tier_requested": "priority", "status": "blocked", "http_status": 403.0}
			if tc.claimDropped {
				next = map[string]any{"model": "gpt-realtime", "action": "filter", "rule": "strip-priority",
					"service_tier_requested": "priority", "service_tier_sent": "none", "status": "client_closed", "http_status": nil}
				got := qc.waitFrames(t, 3)[2]
				if want := `{"type":"response.create","event_id":"evt_c2","response":{"output_modalities":["text"]}}`; string(got) != want {
					t.Errorf("the upstream received %s, want %s", got, want)
				}
				if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
					t.Errorf("close: %v", err)
				}
				qc.waitClosed(t)
			} else {
				expectRefusal(t, c, qc, "service_tier=priority is not allowed for model gpt-realtime-max", 2)
			}
			h.waitSessions(t)

			recs := h.records()
			if len(recs) != 2 {
				t.Fatalf("%d usage records, want 2:\n%s", len(recs), h.usage.String())
			}
			// The waiting turn's frame passed (no tier); the next one did not.
			first, second := recs[0], recs[1]
			if first["action"] != "pass" {
				first, second = second, first
			}
			checkRecord(t, first, map[string]any{
				"endpoint": "realtime", "model": "gpt-realtime-max", "action": "pass",
				"status": tc.wantTurn, "response_id": nil, "http_status": nil, "input_tokens": nil,
			})
			checkRecord(t, second, next)
		})
	}
}
