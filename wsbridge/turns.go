package wsbridge

import (
	"bytes"
	"slices"
	"time"

	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/policy"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
	"github.com/tiergate/tiergate/usage"
)

// Turn accounting, as docs/contracts.md ("WebSocket sessions and turns")
// states it. Each response.create that
// reaches the upstream waits, in order and per stream_id lane, for the next
// response.created; a response.created with none waiting is a turn the
// server started (Realtime server VAD). A turn is keyed by its response id
// from then on and ends at response.completed, .failed, .incomplete
// (Responses) or response.done (Realtime). An error event that answers a
// response.create before any response.created removes the oldest waiting
// frame (or, on Realtime, the one whose event_id it names), unless a stray
// frame sent before it awaits its error (turnBook.strays). Every turn gets
// one usage record, turns cut short by a close included.

// turn is one response.
type turn struct {
	seq        uint64
	lane       string // the stream_id of the response.create; "" for none
	curLane    string // the lane whose events stream it, once created
	eventID    string // the response.create's event_id (Realtime)
	start      time.Time
	firstToken time.Time
	responseID string
	created    bool // response.created seen
	server     bool // started by the server: no response.create, no decision

	model           string
	group           string
	requested, sent policy.Tier
	action          policy.Action
	rule            string
	budget          string // the budget that acted on its frame, "" for none
	// shadowRule and shadowAction are the frame's first shadow match
	// (shadowRule "" for none).
	shadowRule   string
	shadowAction policy.Action
	// decidedAt is the decision time on the budgets' clock, zero when the
	// policy had no budgets: the turn's cost goes to the windows that
	// contain it, however long the turn runs.
	decidedAt time.Time
	// pol is the policy the turn's frame was judged under: it prices the
	// turn and names itself in the record. nil for a turn no frame started
	// (the policy in force at its end applies).
	pol *policy.Policy
}

// heldBytes is the bytes of the strings a waiting turn holds, counted
// against maxHeld until the upstream answers it. A model taken from the
// session's candidates counts too, though the session holds the same
// string: the turn may wait on after that candidate is gone.
func (t *turn) heldBytes() int { return len(t.lane) + len(t.eventID) + len(t.model) }

// lane is one stream_id's queue: the frames waiting for their
// response.created, oldest first, and the turn whose events stream now.
type lane struct {
	waiting []*turn
	current *turn
}

func (l *lane) shift() *turn {
	t := l.waiting[0]
	l.waiting[0] = nil
	l.waiting = l.waiting[1:]
	if len(l.waiting) == 0 {
		l.waiting = nil
	}
	return t
}

// maxWaiting bounds the response.create frames waiting for the upstream in
// one session; a client that pipelines more is refused, so a slow upstream
// cannot make a client's frames pile up. Turns the upstream opens itself
// are bounded only by the upstream ending them, and by MaxSession: the
// upstream is the one party tiergate trusts.
const maxWaiting = 4096

// maxStrays bounds the strays a session remembers (see turnBook.strays):
// an upstream answers each at once, so more than a few outstanding means
// they were not what they seemed, and the oldest are forgotten.
const maxStrays = 64

// turnBook is a session's turns, guarded by session.mu. Only the upstream
// pump changes turns under way (and, after it has ended, run).
type turnBook struct {
	seq uint64
	// strays are the sequence numbers (in seq's order, shared with the
	// turns) of forwarded client frames the upstream can only answer with
	// an error that names no event: an unknown type, no event_id. Such an
	// error goes to the oldest stray sent before the oldest waiting
	// response.create, not to that turn, which would otherwise be
	// recorded as failed and its real answer as a turn the server began.
	strays  []uint64
	waiting int
	held    int  // the heldBytes of the waiting turns
	def     lane // the lane of frames without stream_id
	lanes   map[string]*lane
	open    map[string]*turn // turns under way, by response id
	// needFirst counts turns under way without an output delta yet: while it
	// is zero the upstream pump need not parse delta events.
	needFirst int
}

func (b *turnBook) lane(id string, create bool) *lane {
	if id == "" {
		return &b.def
	}
	l := b.lanes[id]
	if l == nil && create {
		if b.lanes == nil {
			b.lanes = make(map[string]*lane)
		}
		l = &lane{}
		b.lanes[id] = l
	}
	return l
}

// tidy forgets a named lane with nothing in it.
func (b *turnBook) tidy(id string) {
	if l := b.lanes[id]; id != "" && l != nil && len(l.waiting) == 0 && l.current == nil {
		delete(b.lanes, id)
	}
}

// full reports whether maxWaiting frames wait already.
func (b *turnBook) full() bool { return b.waiting >= maxWaiting }

// push queues a forwarded response.create; false when too many wait.
func (b *turnBook) push(t *turn) bool {
	if b.full() {
		return false
	}
	b.seq++
	t.seq = b.seq
	l := b.lane(t.lane, true)
	l.waiting = append(l.waiting, t)
	b.waiting++
	b.held += t.heldBytes()
	return true
}

// next returns the place of a client frame the upstream will answer, in
// the order of the session's frames (turns take theirs in push).
func (b *turnBook) next() uint64 {
	b.seq++
	return b.seq
}

// stray notes a forwarded client frame that can only draw an error naming
// no event (see turnBook.strays).
func (b *turnBook) stray() {
	if len(b.strays) == maxStrays {
		b.strays = slices.Delete(b.strays, 0, 1)
	}
	b.strays = append(b.strays, b.next())
}

// oldestLane returns the lane popWaiting(id) takes from, nil when no frame
// waits there.
func (b *turnBook) oldestLane(id string) *lane {
	l := b.lane(id, false)
	if l != nil && len(l.waiting) > 0 {
		return l
	}
	if id != "" {
		return nil
	}
	l = nil
	for _, c := range b.lanes {
		if len(c.waiting) > 0 && (l == nil || c.waiting[0].seq < l.waiting[0].seq) {
			l = c
		}
	}
	return l
}

// popWaiting takes the oldest frame waiting in lane id. An event without
// stream_id when no frame without one waits (an upstream that does not
// echo stream_id) takes the oldest frame of any lane.
func (b *turnBook) popWaiting(id string) *turn {
	l := b.oldestLane(id)
	if l == nil {
		return nil
	}
	t := l.shift()
	b.waiting--
	b.held -= t.heldBytes()
	b.tidy(t.lane)
	return t
}

// removeWaiting takes the waiting frame whose event_id is id.
func (b *turnBook) removeWaiting(id string) *turn {
	for l := range b.eachLane {
		for i, t := range l.waiting {
			if t.eventID == id {
				l.waiting = slices.Delete(l.waiting, i, i+1)
				b.waiting--
				b.held -= t.heldBytes()
				b.tidy(t.lane)
				return t
			}
		}
	}
	return nil
}

// eachLane yields the default lane, then every stream's (a range-over-func
// iterator: for l := range b.eachLane).
func (b *turnBook) eachLane(yield func(*lane) bool) {
	if !yield(&b.def) {
		return
	}
	for _, l := range b.lanes {
		if !yield(l) {
			return
		}
	}
}

// serverTurn is a turn the upstream started (no client frame of ours asked
// for it, or none we saw): judged by nothing, so passed.
func serverTurn(lane string, now time.Time, sessionModel string) *turn {
	return &turn{lane: lane, start: now, model: sessionModel, server: true, action: policy.ActionPass}
}

// created opens a turn at response.created.
func (b *turnBook) created(e *usage.Event, now time.Time, sessionModel string) {
	t := b.popWaiting(e.StreamID)
	if t == nil {
		t = serverTurn(e.StreamID, now, sessionModel)
	} else {
		// Frames are answered in order: a stray sent before this one that
		// drew no error by now was not one after all.
		n := 0
		for n < len(b.strays) && b.strays[n] < t.seq {
			n++
		}
		b.strays = slices.Delete(b.strays, 0, n)
	}
	t.created = true
	t.responseID = e.ResponseID
	t.curLane = e.StreamID
	if t.responseID != "" {
		if b.open == nil {
			b.open = make(map[string]*turn)
		}
		b.open[t.responseID] = t
	}
	b.lane(e.StreamID, true).current = t
	b.needFirst++
}

// streaming finds the turn under way an event belongs to: by response id
// (Realtime events carry it), else the lane's current turn (Responses
// deltas carry only stream_id), else the only turn under way.
func (b *turnBook) streaming(e *usage.Event) *turn {
	if e.ResponseID != "" {
		if t := b.open[e.ResponseID]; t != nil {
			return t
		}
	}
	if l := b.lane(e.StreamID, false); l != nil && l.current != nil {
		return l.current
	}
	if len(b.open) == 1 {
		for _, t := range b.open {
			return t
		}
	}
	return nil
}

// delta times a turn's first output.
func (b *turnBook) delta(e *usage.Event, now time.Time) {
	if t := b.streaming(e); t != nil && t.firstToken.IsZero() {
		t.firstToken = now
		b.needFirst--
	}
}

// terminal ends a turn at its terminal event and returns it. (ParseEvent
// gives a terminal event's usage the event's response id when its response
// names none.)
func (b *turnBook) terminal(e *usage.Event, now time.Time, sessionModel string) *turn {
	id := e.Usage.ResponseID
	var t *turn
	if id != "" {
		t = b.open[id]
	} else {
		t = b.streaming(e)
	}
	if t == nil {
		// Ended without a response.created we saw.
		if t = b.popWaiting(e.StreamID); t == nil {
			t = serverTurn(e.StreamID, now, sessionModel)
		}
		t.responseID = id
		return t
	}
	b.end(t)
	return t
}

// end removes a turn under way.
func (b *turnBook) end(t *turn) {
	if t.responseID != "" && b.open[t.responseID] == t {
		delete(b.open, t.responseID)
	}
	if l := b.lane(t.curLane, false); l != nil && l.current == t {
		l.current = nil
		b.tidy(t.curLane)
	}
	if t.created && t.firstToken.IsZero() {
		b.needFirst--
	}
}

// failed takes the waiting frame an upstream error event answers: the one
// whose event_id the error names, or with none named, the lane's oldest.
// An error that names neither an event nor a lane answers the oldest, in
// the order the client sent them, of that frame, a stray, and the
// session.update claim without event_id at place claim (0: none), since
// the upstream answers frames in order: a stray is then settled, and
// claimAnswered says the claim was.
func (b *turnBook) failed(streamID, eventID string, claim uint64) (t *turn, claimAnswered bool) {
	if eventID != "" {
		return b.removeWaiting(eventID), false
	}
	if streamID != "" {
		return b.popWaiting(streamID), false
	}
	const none = ^uint64(0)
	stray, turn := none, none
	if len(b.strays) > 0 {
		stray = b.strays[0]
	}
	if l := b.oldestLane(""); l != nil {
		turn = l.waiting[0].seq
	}
	if claim == 0 {
		claim = none
	}
	switch first := min(stray, turn, claim); {
	case first == none:
		return nil, false
	case first == stray:
		b.strays = slices.Delete(b.strays, 0, 1)
		return nil, false
	case first == claim:
		return nil, true
	}
	return b.popWaiting(""), false
}

// all returns every turn not yet recorded, in the order they began.
func (b *turnBook) all() []*turn {
	var out []*turn
	for l := range b.eachLane {
		out = append(out, l.waiting...)
	}
	for _, t := range b.open {
		out = append(out, t)
	}
	for l := range b.eachLane {
		if t := l.current; t != nil && (t.responseID == "" || b.open[t.responseID] != t) {
			out = append(out, t) // under way without a response id
		}
	}
	slices.SortFunc(out, func(a, c *turn) int {
		return a.start.Compare(c.start)
	})
	return out
}

// needsParse reports whether the upstream pump must parse an event of type
// t: the ones account acts on. Every other event is relayed without a look;
// output deltas are parsed only while a turn awaits its first one.
func needsParse(t string, awaitingFirst bool) bool {
	switch t {
	case "session.created", "session.updated", "response.created", "error":
		return true
	}
	return usage.IsTerminal(t) || awaitingFirst && usage.IsOutputDelta(t)
}

var typePrefix = []byte(`{"type":"`)

// sniffType reads the event type when it is the frame's first member and
// spelled without escapes, as the upstream writes it; ok is false otherwise
// and the frame must be parsed. The string shares frame's memory.
func sniffType(frame []byte) (typ string, ok bool) {
	if !bytes.HasPrefix(frame, typePrefix) {
		return "", false
	}
	rest := frame[len(typePrefix):]
	i := bytes.IndexByte(rest, '"')
	if i < 0 || bytes.IndexByte(rest[:i], '\\') >= 0 {
		return "", false
	}
	return view(rest[:i]), true
}

// account reads one upstream event for the session model and the turns.
// It runs on the upstream pump, before the event is relayed, so a turn that
// completed upstream is recorded as such even if the client has gone.
func (s *session) account(frame []byte) {
	if t, ok := sniffType(frame); ok && !needsParse(t, s.turns.needFirst > 0) {
		return
	}
	e := usage.ParseEvent(frame)
	if e.Type == "" {
		return
	}
	now := time.Now()
	var (
		done       *turn
		status     string
		httpStatus int
	)
	s.mu.Lock()
	switch {
	case e.Type == "session.created" || e.Type == "session.updated":
		s.models.reportedBy(e.SessionModel, e.Type == "session.updated")
	case e.Type == "response.created":
		s.turns.created(&e, now, s.models.current)
	case e.Terminal:
		done = s.turns.terminal(&e, now, s.models.current)
		status = e.Usage.Status
		if status == "" {
			status = usage.StatusCompleted
		}
	case e.IsDelta:
		s.turns.delta(&e, now)
	case e.Type == "error":
		eventID, st := errorDetails(frame)
		if !s.models.refused(eventID) {
			var claimAnswered bool
			done, claimAnswered = s.turns.failed(e.StreamID, eventID, s.models.anonymousClaim())
			if claimAnswered {
				s.models.dropAnonymousClaim()
			}
			status, httpStatus = usage.StatusUpstreamError, st
		}
	}
	reported := s.models.reported
	s.mu.Unlock()
	if done != nil {
		s.record(done, status, httpStatus, e.Usage, reported, now)
	}
}

// errorDetails reads the client event id an error event names (Realtime's
// error.event_id) and its HTTP-like status (Responses WebSocket's status,
// or status_code as Codex also reads it).
func errorDetails(frame []byte) (eventID string, status int) {
	r := gjson.GetManyBytes(frame, "error.event_id", "status", "status_code")
	if r[0].Type == gjson.String {
		eventID = r[0].Str
	}
	for _, v := range r[1:] {
		if v.Type == gjson.Number && v.Int() >= 100 && v.Int() <= 599 {
			return eventID, int(v.Int())
		}
	}
	return eventID, 0
}

// recordOpen records the turns the session's end cut short.
func (s *session) recordOpen(status string) {
	s.mu.Lock()
	open := s.turns.all()
	reported := s.models.reported
	s.mu.Unlock()
	now := time.Now()
	for _, t := range open {
		s.record(t, status, 0, usage.Unknown(), reported, now)
	}
}

// record writes a turn's usage record and counts its tokens, cost and
// metrics. It runs once per turn, at its end: that is where a turn is
// priced.
func (s *session) record(t *turn, status string, httpStatus int, u usage.Usage, reportedModel string, now time.Time) {
	pol := t.pol
	if pol == nil {
		pol = s.b.opts.Store.Load()
	}
	group := t.group
	if t.server {
		group = pol.GroupFromHeaders(s.header.Get, s.keys...)
	}
	if !t.firstToken.IsZero() {
		s.em.ttft.Observe(t.firstToken.Sub(t.start).Seconds())
	}
	s.em.duration.Observe(now.Sub(t.start).Seconds())
	s.em.turn(status)
	if s.b.opts.Usage != nil || pol.Priced() { // neither: no record is built
		rec := s.turnRecord(t, pol, group, status, httpStatus, u, reportedModel, now)
		if c, priced := pol.PriceRecord(rec, u.AudioTokens > 0); priced {
			if c.Unpriced != "" {
				s.b.opts.Tokens.Unpriced(s.em.endpoint, c.Unpriced)
			} else {
				s.b.opts.Tokens.AddCost(s.em.endpoint, pol.ModelLabel(c.Model), c.Tier.String(), pol.GroupLabel(group), c.Pico)
			}
			s.chargeBudgets(pol, t, group, c)
		}
		if s.b.opts.Usage != nil {
			if err := s.b.opts.Usage.Write(rec); err != nil {
				s.b.log.Error("usage record lost", "request_id", s.requestID, "err", err)
			}
		}
	}
	s.b.opts.Tokens.Add(s.em.endpoint, pol.ModelLabel(t.model), policy.TierLabel(u.BilledTier(t.sent.String())), pol.GroupLabel(group), u)
}

// chargeBudgets adds a priced turn's cost to the budgets it falls under,
// under the policy that priced it. A turn the server started had no
// decision: it counts in the window of its start.
func (s *session) chargeBudgets(pol *policy.Policy, t *turn, group string, c policy.Cost) {
	tr := s.b.opts.Budgets
	if tr == nil || len(pol.Budgets()) == 0 {
		return
	}
	at := t.decidedAt
	if at.IsZero() {
		at = t.start
	}
	tr.Account(pol, budget.Charge{Group: group, At: at, Cost: c})
}

// turnRecord builds a turn's usage record.
func (s *session) turnRecord(t *turn, pol *policy.Policy, group, status string, httpStatus int, u usage.Usage, reportedModel string, now time.Time) *tiergatev1.UsageRecord {
	rec := &tiergatev1.UsageRecord{
		RequestId:            s.requestID,
		ResponseId:           t.responseID,
		Turn:                 s.records.Add(1),
		Endpoint:             s.em.endpoint,
		Group:                group,
		Model:                t.model,
		ServiceTierRequested: t.requested.String(),
		ServiceTierSent:      t.sent.String(),
		Action:               t.action.String(),
		Rule:                 t.rule,
		Budget:               policy.BudgetLabel(t.budget),
		PolicySha256:         pol.SHA256(),
		ShadowRule:           t.shadowRule,
		Stream:               true,
		Status:               status,
	}
	if t.shadowRule != "" {
		rec.ShadowAction = t.shadowAction.String()
	}
	usage.Stamp(rec, t.start, t.firstToken, now, httpStatus)
	u.Fill(rec)
	if rec.ResponseModel == "" && reportedModel != "" && (t.created || u.Status != "") {
		// Realtime responses name no model; the session's is the one the
		// upstream reported.
		rec.ResponseModel = reportedModel
	}
	return rec
}
