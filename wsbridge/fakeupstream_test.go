package wsbridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"
)

// fakeUpstream plays api.openai.com's two WebSocket protocols as
// docs/contracts.md ("Wire facts", "WebSocket sessions and turns")
// describes them, faithfully enough that the openai
// npm clients accept it:
//
//   - Responses (/v1/responses): each response.create is answered with
//     response.created, an output delta and response.completed (usage, the
//     served model, and service_tier reported: fast as priority, absent as
//     default); stream_id is echoed on every event of a lane.
//   - Realtime (/v1/realtime): session.created on connect (the ?model=),
//     session.updated for each session.update (honouring session.model),
//     response.created, a text delta and response.done with usage for each
//     response.create, and a server-started turn for each
//     input_audio_buffer.commit. GA event names, or the beta names
//     (response.text.delta, no session.type) with OpenAI-Beta: realtime=v1.
//
// A test steers one turn through the frame's metadata.fake (Responses:
// top-level metadata; Realtime: response.metadata): "incomplete", "failed",
// "cancel", "error" (an error event, no response.created), "hang" (no
// terminal event), "drop" (the TCP connection dropped mid-turn),
// "close:<code>" (a close frame mid-turn), "defer"/"flush" (hold turns, then
// answer the flushing one first and stream them interleaved), and
// "flood:<n>:<bytes>" (n large deltas). Three frames of the tests' own drive
// the connection: test.echo (sent back as it came), test.close (closed with
// its code and reason) and test.drop (TCP dropped). It records exactly the bytes of
// every frame it received.
type fakeUpstream struct {
	srv *httptest.Server

	// refuse, when it returns a status, answers the handshake with it.
	refuse func(r *http.Request) (status int, header http.Header, body string)
	// headers are added to every 101 response.
	headers http.Header
	// holdSessionUpdated answers a session.update only when the next client
	// frame arrives, so a test controls when the upstream confirms.
	holdSessionUpdated bool
	// floodWrites, when set, receives the outcome of each flood write.
	floodWrites chan floodWrite

	mu        sync.Mutex
	conns     []*fakeConn
	connected chan *fakeConn
}

type floodWrite struct {
	n       int // frames written so far
	blocked bool
}

type fakeFrame struct {
	typ  websocket.MessageType
	data []byte
}

// fakeConn is one session the fake upstream accepted.
type fakeConn struct {
	f           *fakeUpstream
	c           *websocket.Conn
	path        string
	query       string
	header      http.Header
	offered     []string
	extensions  string
	subprotocol string
	realtime    bool
	beta        bool

	mu       sync.Mutex
	frames   []fakeFrame
	closeErr error
	done     chan struct{}

	// Owned by the connection's goroutine.
	nextResp     int
	nextEvent    int
	seq          int
	sessionModel string
	heldUpdate   []byte
	deferred     []gjson.Result
}

func newFakeUpstream(t testing.TB) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{connected: make(chan *fakeConn, 64)}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.close)
	return f
}

// url is the base the bridge dials.
func (f *fakeUpstream) url() string { return "ws://" + f.srv.Listener.Addr().String() }

func (f *fakeUpstream) close() {
	f.mu.Lock()
	conns := append([]*fakeConn(nil), f.conns...)
	f.mu.Unlock()
	for _, c := range conns {
		_ = c.c.CloseNow()
		<-c.done
	}
	f.srv.Close()
}

// next returns the next session the fake accepted.
func (f *fakeUpstream) next(t testing.TB) *fakeConn {
	t.Helper()
	select {
	case c := <-f.connected:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream saw no session")
		return nil
	}
}

func (f *fakeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.refuse != nil {
		if status, h, body := f.refuse(r); status != 0 {
			for k, v := range h {
				w.Header()[k] = v
			}
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
			return
		}
	}
	for k, v := range f.headers {
		w.Header()[k] = v
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{"realtime"},
		CompressionMode: websocket.CompressionNoContextTakeover,
	})
	if err != nil {
		return
	}
	c.SetReadLimit(64 << 20)
	fc := &fakeConn{
		f: f, c: c, path: r.URL.Path, query: r.URL.RawQuery, header: r.Header.Clone(),
		offered:     headerTokens(r.Header, "Sec-WebSocket-Protocol"),
		extensions:  r.Header.Get("Sec-WebSocket-Extensions"),
		subprotocol: c.Subprotocol(),
		realtime:    strings.HasSuffix(r.URL.Path, "/realtime"),
		beta:        hasToken(r.Header, "OpenAI-Beta", "realtime=v1"),
		done:        make(chan struct{}),
	}
	f.mu.Lock()
	f.conns = append(f.conns, fc)
	f.mu.Unlock()
	select {
	case f.connected <- fc:
	default: // nobody is taking them (a load test): the session still runs
	}
	defer close(fc.done)
	fc.serve(r.URL.Query().Get("model"))
}

func (fc *fakeConn) serve(model string) {
	ctx := context.Background()
	if fc.realtime {
		if model == "" {
			model = "gpt-realtime"
		}
		fc.sessionModel = model
		fc.send(fc.sessionEvent("session.created"))
	}
	for {
		typ, data, err := fc.c.Read(ctx)
		if err != nil {
			fc.mu.Lock()
			fc.closeErr = err
			fc.mu.Unlock()
			return
		}
		fc.mu.Lock()
		fc.frames = append(fc.frames, fakeFrame{typ, data})
		fc.mu.Unlock()
		if fc.heldUpdate != nil {
			held := fc.heldUpdate
			fc.heldUpdate = nil
			fc.answerSessionUpdate(held)
		}
		if !gjson.ValidBytes(data) {
			continue
		}
		ev := gjson.ParseBytes(data)
		switch ev.Get("type").Str {
		case "response.create":
			if fc.realtime {
				fc.realtimeResponse(ev)
			} else {
				fc.responsesResponse(ev)
			}
		case "session.update":
			if fc.f.holdSessionUpdated {
				fc.heldUpdate = data
			} else {
				fc.answerSessionUpdate(data)
			}
		case "input_audio_buffer.commit":
			if fc.realtime { // server VAD: a turn no client frame asked for
				fc.realtimeResponse(gjson.Result{})
			}
		case "test.echo": // send the frame back as it came
			_ = fc.c.Write(context.Background(), typ, data)
		case "test.close": // close with the code and reason asked for
			code := websocket.StatusCode(ev.Get("code").Int())
			_ = fc.c.Close(code, ev.Get("reason").Str)
		case "test.drop": // drop the TCP connection
			_ = fc.c.CloseNow()
		}
	}
}

// received returns a copy of the frames received so far.
func (fc *fakeConn) received() []fakeFrame {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]fakeFrame(nil), fc.frames...)
}

// waitClosed waits for the session to end and returns how it ended.
func (fc *fakeConn) waitClosed(t testing.TB) error {
	t.Helper()
	select {
	case <-fc.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream session did not end")
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.closeErr
}

func (fc *fakeConn) send(b []byte) bool {
	return fc.c.Write(context.Background(), websocket.MessageText, b) == nil
}

func (fc *fakeConn) respID() string {
	fc.nextResp++
	return "resp_" + strconv.Itoa(fc.nextResp)
}

func (fc *fakeConn) eventID() string {
	fc.nextEvent++
	return "event_" + strconv.Itoa(fc.nextEvent)
}

// obj renders a JSON object with its members in the order given (the real
// upstream writes "type" first); values are marshalled unless they are
// json.RawMessage.
func obj(kv ...any) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if v, ok := kv[i+1].(omit); ok && bool(v) {
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(kv[i])
		b.Write(k)
		b.WriteByte(':')
		switch v := kv[i+1].(type) {
		case json.RawMessage:
			b.Write(v)
		case []byte:
			b.Write(v)
		default:
			m, _ := json.Marshal(v)
			b.Write(m)
		}
	}
	b.WriteByte('}')
	return b.Bytes()
}

// omit drops a member from obj when true.
type omit bool

// ---- Responses over WebSocket ----

// responsesTurn is one response.create as the fake answers it.
type responsesTurn struct {
	id, model, tier, streamID, control string
}

func (fc *fakeConn) responsesResponse(ev gjson.Result) {
	rt := responsesTurn{
		model:    ev.Get("model").Str,
		streamID: ev.Get("stream_id").Str,
		control:  ev.Get("metadata.fake").Str,
	}
	switch t := strings.ToLower(strings.TrimSpace(ev.Get("service_tier").Str)); t {
	case "":
		rt.tier = "default"
	case "fast":
		rt.tier = "priority"
	default:
		rt.tier = t
	}
	if rt.model == "" {
		rt.model = "gpt-default"
	}
	switch {
	case rt.control == "defer":
		fc.deferred = append(fc.deferred, ev)
		return
	case rt.control == "flush":
		rt.id = fc.respID()
		// The flushing turn's lane is answered first, then the deferred
		// ones: all created, then deltas, then terminal events in reverse.
		turns := []responsesTurn{rt}
		for _, d := range fc.deferred {
			turns = append(turns, responsesTurn{id: fc.respID(), model: d.Get("model").Str, tier: "default", streamID: d.Get("stream_id").Str})
		}
		fc.deferred = nil
		for _, t := range turns {
			fc.send(fc.responsesEvent("response.created", t, "in_progress", false))
		}
		for _, t := range turns {
			fc.send(fc.responsesDelta(t, "Hello"))
		}
		for i := len(turns) - 1; i >= 0; i-- {
			fc.send(fc.responsesEvent("response.completed", turns[i], "completed", true))
		}
		return
	case rt.control == "error":
		fc.send(obj("type", "error", "status", 400, "stream_id", orOmit(rt.streamID), "sequence_number", fc.nextSeq(),
			"error", obj("type", "invalid_request_error", "code", "previous_response_not_found",
				"message", "Previous response with id 'resp_x' not found.", "param", "previous_response_id")))
		return
	}
	rt.id = fc.respID()
	fc.send(fc.responsesEvent("response.created", rt, "in_progress", false))
	if rt.control == "failed" {
		fc.send(fc.responsesEvent("response.failed", rt, "failed", true))
		return
	}
	if n, size, ok := parseFlood(rt.control); ok {
		fc.flood(rt, n, size)
		fc.send(fc.responsesEvent("response.completed", rt, "completed", true))
		return
	}
	fc.send(fc.responsesDelta(rt, "Hello"))
	switch {
	case rt.control == "incomplete":
		fc.send(fc.responsesEvent("response.incomplete", rt, "incomplete", true))
	case rt.control == "hang":
	case rt.control == "drop":
		_ = fc.c.CloseNow()
	case strings.HasPrefix(rt.control, "close:"):
		code, _ := strconv.Atoi(strings.TrimPrefix(rt.control, "close:"))
		_ = fc.c.Close(websocket.StatusCode(code), "upstream says bye")
	default:
		fc.send(fc.responsesEvent("response.completed", rt, "completed", true))
	}
}

func orOmit(s string) any {
	if s == "" {
		return omit(true)
	}
	return s
}

func (fc *fakeConn) nextSeq() int {
	fc.seq++
	return fc.seq - 1
}

func (fc *fakeConn) responsesEvent(typ string, rt responsesTurn, status string, final bool) []byte {
	model, tier, usage := rt.model, any(omit(true)), json.RawMessage("null")
	if final {
		model += "-2026-01-01"
		tier = rt.tier
		usage = json.RawMessage(`{"input_tokens":120,"input_tokens_details":{"cached_tokens":20},"output_tokens":45,"output_tokens_details":{"reasoning_tokens":12},"total_tokens":165}`)
	}
	var errObj any = omit(true)
	if status == "failed" {
		errObj = json.RawMessage(`{"code":"server_error","message":"The model failed."}`)
	}
	return obj("type", typ, "sequence_number", fc.nextSeq(), "stream_id", orOmit(rt.streamID),
		"response", obj("id", rt.id, "object", "response", "status", status, "model", model,
			"service_tier", tier, "error", errObj, "usage", usage))
}

func (fc *fakeConn) responsesDelta(rt responsesTurn, text string) []byte {
	return obj("type", "response.output_text.delta", "sequence_number", fc.nextSeq(), "stream_id", orOmit(rt.streamID),
		"item_id", "msg_"+rt.id, "output_index", 0, "content_index", 0, "delta", text)
}

func parseFlood(control string) (n, size int, ok bool) {
	rest, ok := strings.CutPrefix(control, "flood:")
	if !ok {
		return 0, 0, false
	}
	a, b, _ := strings.Cut(rest, ":")
	n, _ = strconv.Atoi(a)
	size, _ = strconv.Atoi(b)
	return n, size, n > 0 && size > 0
}

// flood writes n deltas of size bytes each, reporting each write's outcome:
// a write that cannot finish within a second is reported "blocked" (the
// bridge is not reading) at once, and the fake then waits for it.
func (fc *fakeConn) flood(rt responsesTurn, n, size int) {
	text := strings.Repeat("x", size)
	for i := range n {
		frame := fc.responsesDelta(rt, text)
		done := make(chan struct{})
		go func() {
			defer close(done)
			fc.send(frame)
		}()
		select {
		case <-done:
			if fc.f.floodWrites != nil {
				fc.f.floodWrites <- floodWrite{n: i + 1}
			}
		case <-time.After(time.Second):
			if fc.f.floodWrites != nil {
				fc.f.floodWrites <- floodWrite{n: i + 1, blocked: true}
			}
			<-done
		}
	}
}

// ---- Realtime ----

func (fc *fakeConn) sessionEvent(typ string) []byte {
	session := obj("type", "realtime", "object", "realtime.session", "id", "sess_1", "model", fc.sessionModel,
		"output_modalities", []string{"audio"})
	if fc.beta {
		session = obj("object", "realtime.session", "id", "sess_1", "model", fc.sessionModel, "modalities", []string{"text", "audio"})
	}
	return obj("type", typ, "event_id", fc.eventID(), "session", session)
}

func (fc *fakeConn) answerSessionUpdate(data []byte) {
	if m := gjson.GetBytes(data, "session.model"); m.Type == gjson.String {
		fc.sessionModel = m.Str
	}
	fc.send(fc.sessionEvent("session.updated"))
}

// realtimeResponse answers a response.create (ev) or, with a zero ev, starts
// a turn of the server's own.
func (fc *fakeConn) realtimeResponse(ev gjson.Result) {
	control := ev.Get("response.metadata.fake").Str
	if control == "error" {
		fc.send(obj("type", "error", "event_id", fc.eventID(),
			"error", obj("type", "invalid_request_error", "code", "invalid_value", "message", "The response could not be created.",
				"param", json.RawMessage("null"), "event_id", orOmit(ev.Get("event_id").Str))))
		return
	}
	id := fc.respID()
	fc.send(obj("type", "response.created", "event_id", fc.eventID(),
		"response", obj("object", "realtime.response", "id", id, "status", "in_progress", "output", []any{}, "usage", nil)))
	deltaType := "response.output_text.delta"
	if fc.beta {
		deltaType = "response.text.delta"
	}
	fc.send(obj("type", deltaType, "event_id", fc.eventID(), "response_id", id, "item_id", "item_"+id,
		"output_index", 0, "content_index", 0, "delta", "Hi"))
	status := "completed"
	switch control {
	case "hang":
		return
	case "drop":
		_ = fc.c.CloseNow()
		return
	case "cancel":
		status = "cancelled"
	}
	if strings.HasPrefix(control, "close:") {
		code, _ := strconv.Atoi(strings.TrimPrefix(control, "close:"))
		_ = fc.c.Close(websocket.StatusCode(code), "upstream says bye")
		return
	}
	details := `"input_token_details":{"text_tokens":119,"audio_tokens":13,"image_tokens":0,"cached_tokens":64,"cached_tokens_details":{"text_tokens":64,"audio_tokens":0,"image_tokens":0}},"output_token_details":{"text_tokens":30,"audio_tokens":91}`
	switch {
	case control == "text": // a text-only turn: no audio tokens
		details = `"input_token_details":{"text_tokens":132,"audio_tokens":0,"image_tokens":0,"cached_tokens":64},"output_token_details":{"text_tokens":121,"audio_tokens":0}`
	case fc.beta:
		details = `"input_token_details":{"cached_tokens":64,"text_tokens":119,"audio_tokens":13},"output_token_details":{"text_tokens":30,"audio_tokens":91}`
	}
	fc.send(obj("type", "response.done", "event_id", fc.eventID(),
		"response", obj("object", "realtime.response", "id", id, "status", status, "conversation_id", "conv_1", "output", []any{},
			"usage", json.RawMessage(`{"total_tokens":253,"input_tokens":132,"output_tokens":121,`+details+`}`))))
}

// String is a frame as a test failure shows it.
func (f fakeFrame) String() string {
	if len(f.data) > 200 {
		return fmt.Sprintf("%s frame of %d bytes: %.200s...", f.typ, len(f.data), f.data)
	}
	return fmt.Sprintf("%s %s", f.typ, f.data)
}
