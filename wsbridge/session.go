package wsbridge

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/policy"
)

// session is one bridged WebSocket session: the client's connection, the
// upstream's, the two pumps between them (relay.go), the session model, and
// the turns in flight (turns.go).
type session struct {
	b         *Bridge
	ep        policy.Endpoint
	em        *epMetrics
	client    *websocket.Conn
	upstream  *websocket.Conn
	header    http.Header // the upgrade request's, to resolve the group
	keys      []string    // API keys offered as openai-insecure-api-key.<key>
	requestID string
	start     time.Time

	// lastData is when the last data frame went either way, in nanoseconds
	// since start (monotonic). Pings do not count.
	lastData atomic.Int64
	// writing is, per side, when the write to it in progress began, in
	// nanoseconds since start plus one; 0 when none is. The watchdog reads it.
	writing [2]atomic.Int64
	// stopRelay is set once the session is ending: the pumps still read
	// (so the close handshakes complete and late events are accounted) but
	// forward nothing more.
	stopRelay atomic.Bool
	// records numbers the session's usage records (their turn field), from
	// 1; the pumps, the timers and Shutdown all write records.
	records atomic.Uint32

	// Owned by the client pump.
	groupPol *policy.Policy // the policy group was resolved under
	group    string
	cands    []string // scratch for the candidate models
	// spend is the budgets' view for the frame being policed (client pump
	// only); the decision reads it through a pointer, allocating nothing.
	spend budget.View

	// mu guards what both pumps, the timers and Shutdown share.
	mu     sync.Mutex
	models models
	turns  turnBook
	ended  bool
	cause  endCause
	idle   *time.Timer
	max    *time.Timer

	closers          sync.WaitGroup // the goroutines running the two closes
	c2uDone, u2cDone chan struct{}
}

func newSession(b *Bridge, ep policy.Endpoint, r *http.Request, client, up *websocket.Conn, keys []string) *session {
	client.SetReadLimit(b.opts.ReadLimit)
	s := &session{
		b:         b,
		ep:        ep,
		em:        b.eps[ep],
		client:    client,
		upstream:  up,
		header:    r.Header,
		keys:      keys,
		requestID: r.Header.Get("X-Request-Id"),
		start:     time.Now(),
		c2uDone:   make(chan struct{}),
		u2cDone:   make(chan struct{}),
	}
	if r.URL.RawQuery != "" {
		s.models.connect(queryModels(r.URL.RawQuery))
	}
	return s
}

// run relays until the session ends, then records the turns still open and
// counts the session. It returns once every goroutine of the session has.
func (s *session) run() {
	s.em.active.Inc()
	s.mu.Lock()
	s.idle = time.AfterFunc(s.b.opts.IdleTimeout, s.checkIdle)
	s.max = time.AfterFunc(s.b.opts.MaxSession, func() { s.end(causeMaxSession) })
	s.mu.Unlock()

	go func() {
		defer close(s.u2cDone)
		s.upstreamToClient()
	}()
	s.clientToUpstream()
	close(s.c2uDone)
	<-s.u2cDone
	s.closers.Wait()

	s.mu.Lock()
	s.idle.Stop()
	s.max.Stop()
	cause := s.cause
	s.mu.Unlock()
	s.recordOpen(cause.turnStatus)
	s.em.active.Dec()
	s.em.m.sessions.WithLabelValues(s.em.endpoint, closeCodeLabel(cause.label)).Inc()
	s.b.log.Debug("session ended", "request_id", s.requestID, "endpoint", s.em.endpoint,
		"close_code", cause.label, "why", cause.why, "duration", time.Since(s.start).String())
}

// touch notes a data frame, for the idle timeout, and returns when it was
// (nanoseconds since start).
func (s *session) touch() int64 {
	now := int64(time.Since(s.start))
	s.lastData.Store(now)
	return now
}

// checkIdle runs when the idle timer fires: it ends the session if no data
// frame went either way for IdleTimeout, and otherwise sets the timer for
// when that would be.
func (s *session) checkIdle() {
	idle := time.Since(s.start) - time.Duration(s.lastData.Load())
	if idle >= s.b.opts.IdleTimeout {
		s.end(causeIdle)
		return
	}
	s.mu.Lock()
	if !s.ended {
		s.idle.Reset(s.b.opts.IdleTimeout - idle)
	}
	s.mu.Unlock()
}

// end ends the session for cause; the first cause wins. Both connections
// are closed concurrently, each with its close code (or at once, for a side
// already gone), and the pumps see their reads fail.
func (s *session) end(c endCause) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.cause = c
	// Before the unlock: run may reach closers.Wait as soon as both pumps
	// end, which a peer can make happen at any moment once ended is set;
	// an Add from zero after that Wait began would be lost.
	s.stopRelay.Store(true)
	s.closers.Add(2)
	s.mu.Unlock()
	go s.closeConn(s.client, c.toClient)
	go s.closeConn(s.upstream, c.toUpstream)
}

func (s *session) closeConn(c *websocket.Conn, m closeMsg) {
	defer s.closers.Done()
	if m.code == 0 {
		_ = c.CloseNow()
		return
	}
	// Close writes the close frame (after any frame being written) and
	// waits up to 5s for the peer's.
	_ = c.Close(m.code, m.reason)
}

// groupFor resolves the caller's group under p, once per policy: a reload
// can change the group header or the key digests.
func (s *session) groupFor(p *policy.Policy) string {
	if p != s.groupPol {
		s.group = p.GroupFromHeaders(s.header.Get, s.keys...)
		s.groupPol = p
	}
	return s.group
}

// models tracks the model a session runs under (DESIGN.md, "Session model"
// and Evaluation 6). Guarded by session.mu.
type models struct {
	// current is the settled session model: ?model= at connect, then what
	// the upstream reports in session.created and session.updated or, where
	// the upstream reports none (the Responses API), the model of the last
	// response.create that named one.
	current string
	// requested are the ?model= parameters of the connection beyond the
	// first (the first is current): the upstream may run under any of
	// them until it reports which, so each is a candidate until then.
	requested []string
	// reported is the model the upstream itself last reported; a Realtime
	// turn's response names none, so its record takes this one.
	reported string
	// claims are the client's session.update frames the upstream has not
	// answered yet, oldest first. Every model they claim is a candidate
	// until the upstream confirms what the session runs under.
	claims  []claim
	claimed int // models in claims
}

type claim struct {
	eventID string
	models  []string
}

// maxClaimed bounds the session.update frames not yet answered, and the
// models they claim: a client that sends more than the upstream answers is
// refused rather than holding memory without end.
const maxClaimed = 256

// queryModels returns every model= parameter of a raw query as any
// upstream's parser may read it: pairs split at '&' and at ';' (which
// url.ParseQuery refuses, dropping the whole pair "x=1;model=m", while
// older parsers split there), and a value whose escapes do not decode
// kept as it is. The query goes upstream as sent, so each is a candidate.
func queryModels(raw string) []string {
	var out []string
	for pair := range strings.FieldsFuncSeq(raw, func(r rune) bool { return r == '&' || r == ';' }) {
		k, v, _ := strings.Cut(pair, "=")
		if unescapeQuery(k) == "model" {
			out = append(out, unescapeQuery(v))
		}
	}
	return out
}

func unescapeQuery(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// connect takes the connection's ?model= parameters.
func (m *models) connect(params []string) {
	for _, p := range params {
		if p == "" {
			continue
		}
		if m.current == "" {
			m.current = p
		} else if len(m.requested) < maxClaimed {
			m.requested = append(m.requested, p)
		}
	}
}

// candidates appends the models a frame that names none may run under.
func (m *models) candidates(dst []string) []string {
	if m.current != "" {
		dst = append(dst, m.current)
	}
	dst = append(dst, m.requested...)
	for _, c := range m.claims {
		dst = append(dst, c.models...)
	}
	return dst
}

// claim notes a client session.update; false when too many are pending.
// A frame that claims no model waits in line too, and is never dropped to
// make room: each session.updated settles the oldest claim, so one missing
// from the line would let an answer settle a later claim before the
// upstream has answered it, and a model still to come would stop being
// judged.
func (m *models) claim(eventID string, claimed []string) bool {
	if m.claimed+len(claimed) > maxClaimed || len(m.claims) >= maxClaimed {
		return false
	}
	m.claims = append(m.claims, claim{eventID: eventID, models: claimed})
	m.claimed += len(claimed)
	return true
}

// reportedBy takes the upstream's session.created or session.updated. A
// session.updated answers the oldest pending session.update, whose claim
// it settles; one that names no model settles nothing (the claim stays a
// candidate, the strict choice).
func (m *models) reportedBy(model string, updated bool) {
	if model == "" {
		return
	}
	m.current, m.reported = model, model
	m.requested = nil // the upstream has said which model it runs
	if updated && len(m.claims) > 0 {
		m.claimed -= len(m.claims[0].models)
		m.claims[0] = claim{}
		m.claims = m.claims[1:]
		if len(m.claims) == 0 {
			m.claims = nil
		}
	}
}

// refused drops the claim of a session.update the upstream answered with an
// error (matched by the client's event_id); it reports whether one matched.
// An event_id that several pending claims share names none of them for
// certain, so none is dropped: a client that repeats an id must not get
// another frame's claim dropped by the error its decoy draws.
func (m *models) refused(eventID string) bool {
	if eventID == "" {
		return false
	}
	at := -1
	for i, c := range m.claims {
		if c.eventID == eventID {
			if at >= 0 {
				return true // ambiguous: answered, but nothing dropped
			}
			at = i
		}
	}
	if at < 0 {
		return false
	}
	m.claimed -= len(m.claims[at].models)
	m.claims = append(m.claims[:at], m.claims[at+1:]...)
	return true
}

// named takes the model a forwarded response.create named. It settles the
// session model only where the upstream reports none: a Realtime session's
// model is the upstream's to say.
func (m *models) named(model string) {
	if m.reported == "" && model != "" {
		m.current = model
	}
}

// view returns b as a string without copying, for gjson. Nothing returned
// from it may outlive b's next reuse: keep only copies.
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// mayNameSessionUpdate reports whether a frame could hold a type that
// policy.TypeIs reads as session.update: it holds an escape, or the name
// spelled out in some letter case. Cheap where it matters: an audio
// append's base64 holds no '.', so one IndexByte pass answers for it.
func mayNameSessionUpdate(frame []byte) bool {
	if bytes.IndexByte(frame, '\\') >= 0 {
		return true
	}
	for i := 0; ; i++ {
		j := bytes.IndexByte(frame[i:], '.')
		if j < 0 {
			return false
		}
		i += j
		// "update" folds only to ASCII letters; "session" may carry the
		// two-byte long s, so it is compared rune by rune.
		if i+7 <= len(frame) && bytes.EqualFold(frame[i+1:i+7], []byte("update")) && hasSuffixFold(frame[:i], "session") {
			return true
		}
	}
}

// hasSuffixFold reports whether b ends with the ASCII suffix under Unicode
// simple case folding.
func hasSuffixFold(b []byte, suffix string) bool {
	for k := len(suffix) - 1; k >= 0; k-- {
		r, n := utf8.DecodeLastRune(b)
		if n == 0 || !strings.EqualFold(string(r), suffix[k:k+1]) {
			return false
		}
		b = b[:len(b)-n]
	}
	return true
}

// frameMeta is what the session needs from a client frame beyond the
// policy's verdict.
type frameMeta struct {
	// Of a response.create:
	streamID string // the Responses WebSocket lane
	eventID  string // the client's event id (Realtime)
	named    bool   // the frame names a model (top level, or in response)
	// Of a session.update (any "type" occurrence counts, with duplicate
	// keys: a claim only adds candidates):
	update  bool
	claimed []string // every session.model, each occurrence
}

// readFrame reads a client frame the policy found to be valid JSON. A
// response.create (policed) is always read; any other frame only when it
// could be a session.update (mayNameSessionUpdate), so an audio append is
// never parsed. The type is read as policy.TypeIs reads it: an upstream
// that takes "Session.Update" for session.update changes the model too.
func readFrame(frame []byte, policed bool) frameMeta {
	var m frameMeta
	if !policed && !mayNameSessionUpdate(frame) {
		return m
	}
	// Keys are read as the policy reads them, folded (policy.KeyIs): an
	// upstream's reader may take "Type" or "SESSION" for type and session.
	var sessions []gjson.Result
	gjson.Parse(view(frame)).ForEach(func(k, v gjson.Result) bool {
		switch key := []byte(k.Raw); {
		case policy.KeyIs(key, "type"):
			m.update = m.update || v.Type == gjson.String && policy.TypeIs(v.Str, "session.update")
		case k.Str == "stream_id":
			if v.Type == gjson.String {
				m.streamID = v.Str
			}
		case k.Str == "event_id":
			if v.Type == gjson.String {
				m.eventID = v.Str
			}
		case policy.KeyIs(key, "model"):
			m.named = m.named || v.Type == gjson.String
		case policy.KeyIs(key, "response"):
			if v.IsObject() && len(stringModels(nil, v)) > 0 {
				m.named = true
			}
		case policy.KeyIs(key, "session"):
			if v.IsObject() {
				sessions = append(sessions, v)
			}
		}
		return true
	})
	if m.update {
		for _, sess := range sessions {
			m.claimed = stringModels(m.claimed, sess)
		}
	}
	// Copies: the strings point into frame, whose buffer is reused.
	m.streamID = strings.Clone(m.streamID)
	m.eventID = strings.Clone(m.eventID)
	return m
}

// stringModels appends (as copies) the string values of obj's members
// that a reader may take for model.
func stringModels(dst []string, obj gjson.Result) []string {
	obj.ForEach(func(k, v gjson.Result) bool {
		if v.Type == gjson.String && policy.KeyIs([]byte(k.Raw), "model") {
			dst = append(dst, strings.Clone(v.Str))
		}
		return true
	})
	return dst
}

// writeClient writes one frame to the client outside the relay pump (the
// refusal event), bounded by the write timeout.
func (s *session) writeClient(typ websocket.MessageType, p []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.b.opts.WriteTimeout)
	defer cancel()
	return s.client.Write(ctx, typ, p)
}
