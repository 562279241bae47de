package policy

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"sync"
)

// Request describes the request (or WebSocket frame) a body belongs to.
type Request struct {
	Endpoint Endpoint
	// Group is the caller's group (see Policy.GroupFromHeaders); "" for none.
	Group string
	// Beta holds the anthropic-beta header lines as received (Messages).
	Beta []string
	// SessionModels are the models a WebSocket frame that names none may run
	// under: the confirmed session model, plus any a client claimed that the
	// upstream has not confirmed yet. The frame is judged against each.
	SessionModels []string
	// PathModels are models the request's path names: the deployment of
	// an Azure-style path (…/openai/deployments/<name>/…), or every
	// Realtime ?model= parameter. Each is a candidate beside the body's.
	PathModels []string
	// EnsureUsage asks that a streamed Chat Completions request carry
	// stream_options.include_usage: true, so its usage can be counted.
	EnsureUsage bool
	// Spend is the view of budget spend the decision reads (nil: budgets
	// do not act). It is taken as of the decision time: the request's
	// headers or the frame's arrival.
	Spend SpendView
	// Buf, when non-nil, is storage for a rewritten body: Apply appends to
	// Buf[:0], so a caller that recycles buffers rewrites without
	// allocating. The input body is never written to.
	Buf []byte
}

// Result is a decision plus what to forward.
type Result struct {
	Decision
	// Status is 0 when the request goes on, 403 when the policy refuses it,
	// 429 when a budget does, and 400 when the body is not valid JSON (Err
	// says where).
	Status int
	Err    error
	// Body is what to forward: the input slice itself when BodyChanged is
	// false, so a body that needs no change is never copied.
	Body        []byte
	BodyChanged bool
	// Beta is the new anthropic-beta value when BetaChanged; "" means remove
	// the header.
	Beta        string
	BetaChanged bool
	// RequestModel is the model the body named (the last string occurrence),
	// before aliases; for a WebSocket frame without one, the session model.
	RequestModel string
	// Stream reports that the body asks for a streamed response.
	Stream bool
	// UsageAdded reports that tiergate added stream_options.include_usage, so
	// the usage-only chunk it causes is tiergate's to remove.
	UsageAdded bool
	// Policed is false for a WebSocket frame that is not a response.create:
	// such a frame passes byte-identical.
	Policed bool
}

// Key names, as tiergate compares them after JSON unescaping.
const (
	keyServiceTier   = "service_tier"
	keyModel         = "model"
	keyStream        = "stream"
	keyStreamOptions = "stream_options"
	keyIncludeUsage  = "include_usage"
	keySpeed         = "speed"
	keyFallbacks     = "fallbacks"
	keyType          = "type"
	keyResponse      = "response"
	keySession       = "session"
)

// fastModeBeta is the anthropic-beta token tiergate adds when a group is
// forced to priority on the Messages API.
const fastModeBeta = "fast-mode-2026-02-01"

// scratch holds the fixed-size buffers one evaluation needs, so a request
// that passes untouched allocates (almost) nothing.
type scratch struct {
	doc     object
	members [32]member
	tiers   [8]Tier
	models  [4]string
	edits   [32]edit
	work    work
}

// work counts what one evaluation did, so tests can hold it to the size of
// the body: judgements (a tier and a model through the rules) and member
// visits (a key looked at).
type work struct {
	judgements, visits int
}

// topEdits returns cleared edits for the top-level object's n members. A
// nil s (a nested object's plan) allocates them.
func (s *scratch) topEdits(n int) []edit {
	if s != nil && n <= len(s.edits) {
		e := s.edits[:n]
		clear(e)
		return e
	}
	return make([]edit, n)
}

// scratchPool recycles scratch space: it is too large to zero per request
// and, pointing into itself, would escape to the heap anyway.
var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch {
	s := scratchPool.Get().(*scratch)
	s.doc = object{members: s.members[:0]}
	s.work = work{}
	return s
}

func putScratch(s *scratch) {
	clear(s.models[:]) // drop references to model strings
	scratchPool.Put(s)
}

// Apply decides an HTTP request body (Chat Completions, Responses, Messages)
// and produces what to forward.
func (p *Policy) Apply(req *Request, body []byte) Result {
	res, _ := p.applyCounted(req, body)
	return res
}

// applyCounted is Apply, also reporting the work it did.
func (p *Policy) applyCounted(req *Request, body []byte) (Result, work) {
	s := getScratch()
	defer putScratch(s)
	res := Result{Body: body, Policed: true}
	isObj, err := scanDocument(body, &s.doc)
	if err != nil {
		res.Status, res.Err = 400, err
		res.Decision = Decision{Group: req.Group, Action: ActionBlock}
		return res, s.work
	}
	if !isObj {
		s.doc = object{}
	}
	if req.Endpoint.Anthropic() {
		p.applyAnthropic(req, body, s, &res)
		return res, s.work
	}
	p.applyOpenAI(req, body, s, &res, false)
	return res, s.work
}

// ApplyFrame decides a WebSocket client frame. Only response.create frames
// are policed; others come back with Policed false and the frame unchanged.
// A frame that is not valid JSON cannot be told apart from a response.create
// a lenient reader would accept, so it is refused with Status 400.
func (p *Policy) ApplyFrame(req *Request, frame []byte) Result {
	res, _ := p.applyFrameCounted(req, frame)
	return res
}

// applyFrameCounted is ApplyFrame, also reporting the work it did.
func (p *Policy) applyFrameCounted(req *Request, frame []byte) (Result, work) {
	s := getScratch()
	defer putScratch(s)
	res := Result{Body: frame}
	isObj, err := scanDocument(frame, &s.doc)
	if err != nil {
		res.Status, res.Err, res.Policed = 400, err, true
		res.Decision = Decision{Group: req.Group, Action: ActionBlock}
		return res, s.work
	}
	if s.doc.tooMany {
		// Its type members were not all recorded: it may be a
		// response.create, and is refused as one would be.
		res.Policed = true
		refuseTooMany(req, &res)
		return res, s.work
	}
	if !isObj || !hasStringMember(frame, &s.doc, kindType, "response.create") {
		return res, s.work
	}
	res.Policed = true
	p.applyOpenAI(req, frame, s, &res, true)
	return res, s.work
}

// nestedResponse is a "response" member of a frame whose value is an object.
type nestedResponse struct {
	member int
	obj    object
}

// applyOpenAI polices an OpenAI body or frame: every service_tier member at
// the top level and, on frames, in every "response" object.
func (p *Policy) applyOpenAI(req *Request, body []byte, s *scratch, res *Result, frame bool) {
	top := &s.doc
	if top.tooMany {
		refuseTooMany(req, res)
		return
	}
	tiers := s.tiers[:0]
	models := s.models[:0]
	var nested []nestedResponse
	var count occurrences
	stream := 0 // 1: every stream member is true; -1: one is not
	for i, m := range top.members {
		s.work.visits++
		val := body[m.valStart:m.valEnd]
		switch classifyKey(body[m.keyStart:m.keyEnd]) {
		case kindServiceTier:
			count.tiers++
			tiers = append(tiers, tierOfValue(val))
		case kindModel:
			count.models++
			if v, ok := stringValue(nil, val); ok {
				models = append(models, string(v))
			}
		case kindStream:
			if string(val) == "true" && stream >= 0 {
				stream = 1
			} else {
				stream = -1
			}
		case kindResponse:
			if !frame {
				break
			}
			var o object
			if scanNested(body, m.valStart, m.valEnd, &o) {
				nested = append(nested, nestedResponse{member: i, obj: o})
				count.nested = count.nested || o.tooMany
			}
		}
		if count.over() {
			refuseTooMany(req, res)
			return
		}
	}
	topModels := len(models)
	for _, n := range nested {
		for _, m := range n.obj.members {
			s.work.visits++
			switch classifyKey(body[m.keyStart:m.keyEnd]) {
			case kindServiceTier:
				count.tiers++
				tiers = append(tiers, tierOfValue(body[m.valStart:m.valEnd]))
			case kindModel:
				// A model under response is a candidate beside the
				// session's, not instead of it (Realtime's response.model).
				count.models++
				if v, ok := stringValue(nil, body[m.valStart:m.valEnd]); ok {
					models = append(models, string(v))
				}
			}
			if count.over() {
				refuseTooMany(req, res)
				return
			}
		}
	}
	if len(models) > 0 {
		res.RequestModel = models[len(models)-1]
		if topModels > 0 {
			res.RequestModel = models[topModels-1]
		}
	}
	// A Realtime response.create has no top-level model (PROTOCOLS.md §4):
	// the upstream runs it under the session model whatever the frame
	// names there, so the session's models stay candidates beside it.
	if frame && (topModels == 0 || req.Endpoint == EndpointRealtime) {
		models = append(models, req.SessionModels...)
		if res.RequestModel == "" && len(req.SessionModels) > 0 {
			res.RequestModel = req.SessionModels[len(req.SessionModels)-1]
		}
	}
	models = append(models, req.PathModels...)
	res.Stream = stream == 1 || frame
	res.Decision = p.evaluate(req.Endpoint, req.Group, tiers, models, &s.work)
	p.applyBudgets(&res.Decision, req.Spend, models)
	if res.Action == ActionBlock {
		res.Status = refusalOf(&res.Decision).Status()
		res.Sent = TierNone
		return
	}

	// What each object that carries the key must end up with: nothing on
	// filter; on pass, one member with the canonical value (or, for a value
	// tiergate does not recognise, the raw value of the last occurrence).
	keep := res.Action == ActionPass
	var want []byte
	if keep && res.Forced {
		want = quotedTier[res.Sent]
	}
	topEdits := planTier(body, top, keep, want, s)
	carried := count.tiers > 0
	for _, n := range nested {
		if e := planTier(body, &n.obj, keep, want, nil); e != nil {
			if topEdits == nil {
				topEdits = s.topEdits(len(top.members))
			}
			// Sized up front: a large object grown by appends costs
			// twice its size.
			buf := make([]byte, 0, n.obj.end-n.obj.start)
			topEdits[n.member].replace = rebuild(buf, body, &n.obj, e, nil)
		}
	}
	var adds []string
	// Force adds a key only where none was sent, and never to a Realtime
	// frame: Realtime has no service_tier parameter, and an unknown one may
	// fail the turn (DESIGN.md, Evaluation 6).
	if res.Forced && res.Action == ActionPass && !carried && req.Endpoint != EndpointRealtime {
		adds = append(adds, `"service_tier":`+res.Sent.quoted())
	}
	if req.EnsureUsage && req.Endpoint == EndpointChatCompletions && stream == 1 {
		var added, tooMany bool
		topEdits, adds, added, tooMany = ensureIncludeUsage(body, top, topEdits, adds, s)
		if tooMany {
			refuseTooMany(req, res)
			return
		}
		res.UsageAdded = added
	}
	s.emit(req, body, topEdits, adds, res)
}

// maxOccurrences bounds the occurrences of service_tier, model or speed a
// body or frame may carry at the levels read (DESIGN.md, Evaluation 4):
// every occurrence is judged, and no honest client repeats a key 65 times.
const maxOccurrences = 64

// ErrTooManyOccurrences is Result.Err for a body or frame with more than 64
// occurrences of service_tier, model or speed at the levels read, or more
// than 64 of any other key tiergate reads in one object (which would
// otherwise be recorded without bound).
var ErrTooManyOccurrences = errors.New("more than 64 occurrences of service_tier, model, speed or another key read")

// occurrences counts the raw (folded) occurrences of the keys judged.
type occurrences struct {
	tiers, models, speeds int
	nested                bool // a nested object read repeats a key too often
}

func (c *occurrences) over() bool {
	return c.tiers > maxOccurrences || c.models > maxOccurrences || c.speeds > maxOccurrences || c.nested
}

// refuseTooMany refuses a body or frame that carries too many occurrences.
func refuseTooMany(req *Request, res *Result) {
	res.Status, res.Err = 400, ErrTooManyOccurrences
	res.Decision = Decision{Group: req.Group, Action: ActionBlock, Requested: TierNone}
}

// emit writes the body with the top-level object's edits and additions
// into the caller's buffer (req.Buf), when there is anything to change.
func (s *scratch) emit(req *Request, body []byte, edits []edit, adds []string, res *Result) {
	top := &s.doc
	if edits == nil && adds == nil || top.end == 0 {
		// Nothing to change, or a body that is not an object and so has no
		// members to edit (the upstream will refuse it).
		return
	}
	if edits == nil {
		edits = s.topEdits(len(top.members))
	}
	out := slices.Grow(req.Buf[:0], len(body)+64)
	out = append(out, body[:top.start]...)
	out = rebuild(out, body, top, edits, adds)
	out = append(out, body[top.end:]...)
	res.Body, res.BodyChanged = out, true
}

// edit says what becomes of one member when its object is rebuilt.
type edit struct {
	remove  bool
	replace []byte // non-nil: the member's new value
	rename  string // non-empty: the member's new key, a folded spelling made canonical
}

// planTier plans the service_tier members of one object. With keep false
// every one is removed; with keep true exactly one is left, the last,
// named service_tier (a folded spelling is renamed) and carrying want when
// it is non-nil (a forced tier) and otherwise the canonical spelling of its
// own value (a value tiergate does not recognise is kept as it is). It
// returns nil when the object needs no change.
//
// Top-level plans use s's storage; nested ones (s nil) allocate.
func planTier(body []byte, obj *object, keep bool, want []byte, s *scratch) []edit {
	first, last, n := membersOfKind(body, obj, kindServiceTier, s)
	if n == 0 {
		return nil
	}
	lm := obj.members[last]
	lastVal := body[lm.valStart:lm.valEnd]
	if keep && want == nil {
		want = quotedTier[tierOfValue(lastVal)]
	}
	replace := keep && want != nil && !bytes.Equal(lastVal, want)
	rename := keep && !canonicalKey(body[lm.keyStart:lm.keyEnd], kindServiceTier)
	if keep && n == 1 && !replace && !rename {
		return nil
	}
	edits := s.topEdits(len(obj.members))
	for i := first; i < last; i++ {
		if n > 1 && classifyKey(body[obj.members[i].keyStart:obj.members[i].keyEnd]) == kindServiceTier {
			edits[i].remove = true
		}
	}
	switch {
	case !keep:
		edits[last].remove = true
	case replace:
		edits[last].replace = want
	}
	if rename {
		edits[last].rename = keyServiceTier
	}
	return edits
}

// membersOfKind finds obj's members of kind k: the first's and the last's
// index and how many there are.
func membersOfKind(body []byte, obj *object, k keyKind, s *scratch) (first, last, n int) {
	for i, m := range obj.members {
		if s != nil {
			s.work.visits++
		}
		if classifyKey(body[m.keyStart:m.keyEnd]) == k {
			if n == 0 {
				first = i
			}
			last = i
			n++
		}
	}
	return first, last, n
}

// quotedTier holds the JSON token of each concrete tier (nil otherwise).
var quotedTier = func() [TierUnrecognised + 1][]byte {
	var q [TierUnrecognised + 1][]byte
	for t := TierPriority; t <= TierUltrafast; t++ {
		q[t] = []byte(t.quoted())
	}
	return q
}()

// rebuild appends obj to dst with per-member edits applied and adds (each a
// rendered "key":value) appended as new members. White space between kept
// members is preserved; commas come from the gaps that separated members.
func rebuild(dst, src []byte, obj *object, edits []edit, adds []string) []byte {
	if len(obj.members) == 0 {
		dst = append(dst, '{')
		for i, a := range adds {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, a...)
		}
		return append(dst, src[obj.start+1:obj.end]...)
	}
	dst = append(dst, src[obj.start:obj.members[0].keyStart]...)
	first := true
	for i, m := range obj.members {
		e := edits[i]
		if e.remove {
			continue
		}
		if !first {
			// The gap after the previous member holds exactly one comma,
			// whether or not that member is kept.
			dst = append(dst, src[obj.members[i-1].valEnd:m.keyStart]...)
		}
		first = false
		from := m.keyStart
		if e.rename != "" {
			dst = append(dst, '"')
			dst = append(dst, e.rename...)
			dst = append(dst, '"')
			from = m.keyEnd
		}
		if e.replace != nil {
			dst = append(dst, src[from:m.valStart]...)
			dst = append(dst, e.replace...)
		} else {
			dst = append(dst, src[from:m.valEnd]...)
		}
	}
	for _, a := range adds {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, a...)
	}
	return append(dst, src[obj.members[len(obj.members)-1].valEnd:obj.end]...)
}

// ensureIncludeUsage makes every stream_options carry include_usage: true,
// adding the member when there is none. tooMany reports a stream_options
// that repeats a key too often to be rewritten.
func ensureIncludeUsage(body []byte, top *object, edits []edit, adds []string, s *scratch) (_ []edit, _ []string, added, tooMany bool) {
	seen := false
	for i, m := range top.members {
		if classifyKey(body[m.keyStart:m.keyEnd]) != kindStreamOptions {
			continue
		}
		seen = true
		val := body[m.valStart:m.valEnd]
		var repl []byte
		switch {
		case string(val) == "null":
			repl = []byte(`{"include_usage":true}`)
		case val[0] == '{':
			var o object
			scanNested(body, m.valStart, m.valEnd, &o)
			if o.tooMany {
				return edits, adds, false, true
			}
			ok, n := true, 0
			for _, om := range o.members {
				if classifyKey(body[om.keyStart:om.keyEnd]) == kindIncludeUsage {
					n++
					ok = ok && string(body[om.valStart:om.valEnd]) == "true"
				}
			}
			if ok && n > 0 {
				continue
			}
			oe := make([]edit, len(o.members))
			for j, om := range o.members {
				oe[j].remove = classifyKey(body[om.keyStart:om.keyEnd]) == kindIncludeUsage
			}
			add := `"include_usage":true`
			repl = rebuild(make([]byte, 0, o.end-o.start+len(add)+1), body, &o, oe, []string{add})
		default:
			continue // not an object: the upstream will refuse it
		}
		if edits == nil {
			edits = s.topEdits(len(top.members))
		}
		edits[i].replace = repl
		added = true
	}
	if !seen {
		adds = append(adds, `"stream_options":{"include_usage":true}`)
		added = true
	}
	return edits, adds, added, false
}

// tierOfValue reads a service_tier value token: a string is normalised,
// null is no tier, anything else is unrecognised.
func tierOfValue(val []byte) Tier {
	if string(val) == "null" {
		return TierNone
	}
	var buf [48]byte
	s, ok := stringValue(buf[:0], val)
	if !ok {
		return TierUnrecognised
	}
	// Read whole and trimmed (Java's trim drops a NUL at either end), or
	// up to a NUL (a C reader): a tier name holds no NUL, so at most one
	// reading names a tier, and that is the one judged.
	t := parseTierBytes(s)
	if c := cString(s); !t.Concrete() && len(c) < len(s) {
		t = parseTierBytes(c)
	}
	return t
}

// parseTierBytes is ParseTier for a byte slice, without allocating in the
// common case.
func parseTierBytes(b []byte) Tier {
	if len(b) <= 16 {
		var buf [16]byte
		n := 0
		for _, c := range bytes.TrimFunc(b, trimmed) {
			if c >= 0x80 {
				return ParseTier(string(b))
			}
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[n] = c
			n++
		}
		return tierByName(string(buf[:n]))
	}
	return ParseTier(string(b))
}

// anyOfKind reports whether obj has a member of kind k.
func anyOfKind(body []byte, obj *object, k keyKind) bool {
	for _, m := range obj.members {
		if classifyKey(body[m.keyStart:m.keyEnd]) == k {
			return true
		}
	}
	return false
}

// hasStringMember reports whether any member of kind k has a string value
// that names want (after unescaping, as TypeIs reads it).
func hasStringMember(body []byte, obj *object, k keyKind, want string) bool {
	for _, m := range obj.members {
		if classifyKey(body[m.keyStart:m.keyEnd]) == k {
			var buf [32]byte
			if v, ok := stringValue(buf[:0], body[m.valStart:m.valEnd]); ok && typeIs(v, want) {
				return true
			}
		}
	}
	return false
}

// betaTokens splits anthropic-beta header lines into trimmed tokens.
func betaTokens(lines []string) []string {
	var out []string
	for _, l := range lines {
		for _, t := range strings.Split(l, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

func isFastModeToken(t string) bool {
	return len(t) >= len("fast-mode-") && strings.EqualFold(t[:len("fast-mode-")], "fast-mode-")
}

// isFastSpeed reads a speed value: fast (trimmed as tiers are, any case) is
// fast mode.
func isFastSpeed(val []byte) bool {
	var buf [32]byte
	s, ok := stringValue(buf[:0], val)
	return ok && (isFast(s) || isFast(cString(s)))
}

func isFast(s []byte) bool {
	return strings.EqualFold(string(bytes.TrimFunc(s, trimmed)), "fast")
}
