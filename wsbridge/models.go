package wsbridge

import (
	"net/url"
	"slices"
	"strings"
)

// models tracks the model a session runs under (docs/contracts.md,
// "WebSocket sessions and turns" and "Evaluation", step 6). Guarded by
// session.mu.
type models struct {
	// current is the settled session model: ?model= at connect, then what
	// the upstream reports in session.created and session.updated or, where
	// the upstream reports none (the Responses API), the last top-level
	// model of the last forwarded response.create that named one. Records
	// of frames that name no model take it.
	current string
	// named are the distinct top-level models of every forwarded
	// response.create since the upstream last reported a model, in the
	// order first named. Each stays a candidate beside current: once
	// several were named, tiergate cannot know which one the upstream runs
	// a frame naming none under, nor whether a frame the upstream refused
	// with an error changed it. Empty where the upstream reports the model
	// (Realtime), since frames do not set it there.
	named []string
	// requested are the ?model= parameters of the connection, the first
	// (current at connect) included: the upstream may run under any of
	// them until it reports which, so each is a candidate until then, even
	// once a response.create has named another.
	requested []string
	// reported is the model the upstream itself last reported; a Realtime
	// turn's response names none, so its record takes this one.
	reported string
	// claims are the client's session.update frames the upstream has not
	// answered yet, oldest first. Every model they claim is a candidate
	// until the upstream confirms what the session runs under.
	claims  []claim
	claimed int // models in claims
	// held is the bytes of the model strings claims and named hold,
	// counted against maxHeld.
	held int
}

type claim struct {
	seq     uint64 // its place among the session's frames (turnBook.next)
	eventID string
	models  []string
}

// stringBytes is the bytes of ss's strings.
func stringBytes(ss []string) int {
	n := 0
	for _, s := range ss {
		n += len(s)
	}
	return n
}

// maxClaimed bounds the session.update frames not yet answered, the models
// they claim, and the distinct models response.create frames name (named):
// a client that sends more than the upstream answers, or names model after
// model, is refused rather than holding memory without end.
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
		}
		if len(m.requested) < maxClaimed {
			m.requested = append(m.requested, p)
		}
	}
}

// candidates appends the models a frame that names none may run under.
// The policy takes the last as the frame's model, for its record: current,
// or the newest pending claim, so requested and named come first.
func (m *models) candidates(dst []string) []string {
	dst = append(dst, m.requested...)
	dst = append(dst, m.named...)
	if m.current != "" {
		dst = append(dst, m.current)
	}
	for _, c := range m.claims {
		dst = append(dst, c.models...)
	}
	return dst
}

// roomFor reports whether one more session.update claiming n models may
// wait for its answer.
func (m *models) roomFor(n int) bool {
	return m.claimed+n <= maxClaimed && len(m.claims) < maxClaimed
}

// claim notes a client session.update; false when too many are pending.
// A frame that claims no model waits in line too, and is never dropped to
// make room: each session.updated settles the oldest claim, so one missing
// from the line would let an answer settle a later claim before the
// upstream has answered it, and a model still to come would stop being
// judged.
func (m *models) claim(seq uint64, eventID string, claimed []string) bool {
	if !m.roomFor(len(claimed)) {
		return false
	}
	m.claims = append(m.claims, claim{seq: seq, eventID: eventID, models: claimed})
	m.claimed += len(claimed)
	m.held += stringBytes(claimed)
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
	// The upstream has said which model it runs.
	m.held -= stringBytes(m.named)
	m.requested, m.named = nil, nil
	if updated && len(m.claims) > 0 {
		m.drop(0)
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
	m.drop(at)
	return true
}

// drop removes claim i, answered by the upstream.
func (m *models) drop(i int) {
	m.claimed -= len(m.claims[i].models)
	m.held -= stringBytes(m.claims[i].models)
	m.claims = slices.Delete(m.claims, i, i+1)
	if len(m.claims) == 0 {
		m.claims = nil
	}
}

// anonymousClaim returns the place (its seq) of the oldest claim without an
// event_id, which an error naming no event may answer; 0 when none waits.
func (m *models) anonymousClaim() uint64 {
	for _, c := range m.claims {
		if c.eventID == "" {
			return c.seq
		}
	}
	return 0
}

// dropAnonymousClaim removes the claim anonymousClaim names: the error
// naming no event answered it, so what it claimed never took.
func (m *models) dropAnonymousClaim() {
	for i, c := range m.claims {
		if c.eventID == "" {
			m.drop(i)
			return
		}
	}
}

// unnamed counts the distinct models of top (a response.create's
// top-level models) that naming them would add to named, and their bytes.
func (m *models) unnamed(top []string) (n, bytes int) {
	if m.reported != "" {
		return 0, 0
	}
	for i, model := range top {
		if model != "" && !slices.Contains(m.named, model) && !slices.Contains(top[:i], model) {
			n++
			bytes += len(model)
		}
	}
	return n, bytes
}

// name takes the top-level models of a forwarded response.create (the
// caller has checked unnamed against maxClaimed and maxHeld). They settle
// the session model only where the upstream reports none: a Realtime
// session's model is the upstream's to say.
func (m *models) name(top []string) {
	if m.reported != "" {
		return
	}
	for _, model := range top {
		if model == "" {
			continue
		}
		// top's strings may be views into the frame's buffer: keep copies.
		i := slices.Index(m.named, model)
		if i < 0 {
			i = len(m.named)
			m.named = append(m.named, strings.Clone(model))
			m.held += len(model)
		}
		m.current = m.named[i]
	}
}
