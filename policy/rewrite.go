package policy

import (
	"bytes"
	"slices"
	"sync"

	"github.com/tiergate/tiergate/internal/jsonscan"
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
	// Buf, when non-nil, is storage for a rewritten body: a decision appends to
	// Buf[:0], so a caller that recycles buffers rewrites without
	// allocating. The input body is never written to.
	Buf []byte
}

// Result is a decision plus what to forward.
type Result struct {
	Decision
	// Refusal is why tiergate answers the request or frame itself, with
	// Decision.Message as the error's message; RefusalNone when it goes on.
	Refusal Refusal
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
	keyRequests      = "requests" // a message batch's list of requests
	keyParams        = "params"   // a message batch entry's Messages request
)

// scratch holds the fixed-size buffers one evaluation needs, so a request
// that passes untouched allocates (almost) nothing.
type scratch struct {
	doc     jsonscan.Object
	members [32]jsonscan.Member
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
	s.doc = jsonscan.Object{Members: s.members[:0]}
	s.work = work{}
	return s
}

func putScratch(s *scratch) {
	clear(s.models[:]) // drop references to model strings
	scratchPool.Put(s)
}

// apply decides an HTTP request body (Chat Completions, Responses, Messages)
// and produces what to forward.
func (p *Policy) apply(req *Request, body []byte) Result {
	res, _ := p.applyCounted(req, body)
	return res
}

// applyCounted is apply, also reporting the work it did.
func (p *Policy) applyCounted(req *Request, body []byte) (Result, work) {
	s := getScratch()
	defer putScratch(s)
	res := Result{Body: body, Policed: true}
	isObj, err := jsonscan.Document(body, &s.doc, &scanKeys)
	if err != nil {
		res.Refusal = RefusalInvalidJSON
		res.Decision = Decision{Group: req.Group, Action: ActionBlock, Message: "the request body is not valid JSON: " + err.Error()}
		return res, s.work
	}
	if !isObj {
		// Every policed endpoint takes an object. Anything else is the
		// upstream's to refuse, but it is refused here, with a reason,
		// rather than passed on unjudged.
		res.Refusal = RefusalInvalidJSON
		res.Decision = Decision{Group: req.Group, Action: ActionBlock, Message: "the request body is not a JSON object"}
		return res, s.work
	}
	switch {
	case req.Endpoint == EndpointMessageBatches:
		p.applyBatch(req, body, s, &res)
	case req.Endpoint.anthropic():
		p.applyAnthropic(req, body, s, &res)
	default:
		p.applyOpenAI(req, body, s, &res, false)
	}
	return res, s.work
}

// ApplyFrame decides a WebSocket client frame. Only response.create frames
// are policed; others come back with Policed false and the frame unchanged.
// A frame that is not valid JSON cannot be told apart from a response.create
// a lenient reader would accept, so it is refused (RefusalInvalidJSON).
func (p *Policy) ApplyFrame(req *Request, frame []byte) Result {
	res, _ := p.applyFrameCounted(req, frame)
	return res
}

// applyFrameCounted is ApplyFrame, also reporting the work it did.
func (p *Policy) applyFrameCounted(req *Request, frame []byte) (Result, work) {
	s := getScratch()
	defer putScratch(s)
	res := Result{Body: frame}
	isObj, err := jsonscan.Document(frame, &s.doc, &scanKeys)
	if err != nil {
		res.Refusal, res.Policed = RefusalInvalidJSON, true
		res.Decision = Decision{Group: req.Group, Action: ActionBlock, Message: "the frame is not valid JSON: " + err.Error()}
		return res, s.work
	}
	if s.doc.TooMany {
		// Its type members were not all recorded: it may be a
		// response.create, and is refused as one would be.
		res.Policed = true
		refuseTooMany(req, &res, true)
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
	obj    jsonscan.Object
}

// applyOpenAI polices an OpenAI body or frame: every service_tier member at
// the top level and, on frames, in every "response" object.
func (p *Policy) applyOpenAI(req *Request, body []byte, s *scratch, res *Result, frame bool) {
	rd, ok := readOpenAI(body, s, frame)
	if !ok {
		refuseTooMany(req, res, frame)
		return
	}
	models := rd.models
	if len(models) > 0 {
		res.RequestModel = models[len(models)-1]
		if rd.topModels > 0 {
			res.RequestModel = models[rd.topModels-1]
		}
	}
	// A Realtime response.create has no top-level model (docs/contracts.md,
	// "Wire facts"):
	// the upstream runs it under the session model whatever the frame
	// names there, so the session's models stay candidates beside it.
	if frame && (rd.topModels == 0 || req.Endpoint == EndpointRealtime) {
		models = append(models, req.SessionModels...)
		if res.RequestModel == "" && len(req.SessionModels) > 0 {
			res.RequestModel = req.SessionModels[len(req.SessionModels)-1]
		}
	}
	models = append(models, req.PathModels...)
	res.Stream = rd.stream == 1 || frame
	res.Decision = p.evaluate(req.Endpoint, req.Group, rd.tiers, models, &s.work)
	p.applyBudgets(&res.Decision, req.Spend, models)
	if res.Action == ActionBlock {
		res.Refusal, res.Sent = refusalOf(&res.Decision), TierNone
		return
	}
	rewriteOpenAI(req, body, s, res, &rd)
}

// openAIRead is what an OpenAI body or frame says, read from its members.
type openAIRead struct {
	tiers []Tier // every service_tier, top level and nested
	// models are every model named, the top level's first (topModels of
	// them), then the nested objects'.
	models    []string
	topModels int
	nested    []nestedResponse // a frame's response objects
	stream    int              // 1: every stream member is true; -1: one is not
	carried   bool             // a top-level service_tier member was sent
}

// readOpenAI reads the top-level members and, on frames, those of every
// "response" object. ok is false when a key repeats too often.
func readOpenAI(body []byte, s *scratch, frame bool) (rd openAIRead, ok bool) {
	top := &s.doc
	if top.TooMany {
		return rd, false
	}
	rd.tiers, rd.models = s.tiers[:0], s.models[:0]
	var count occurrences
	for i, m := range top.Members {
		s.work.visits++
		val := body[m.ValStart:m.ValEnd]
		switch classifyKey(body[m.KeyStart:m.KeyEnd]) {
		case kindServiceTier:
			count.tiers++
			rd.tiers = append(rd.tiers, tierOfValue(val))
		case kindModel:
			count.models++
			if v, ok := jsonscan.StringValue(nil, val); ok {
				rd.models = append(rd.models, string(v))
			}
		case kindStream:
			if string(val) == "true" && rd.stream >= 0 {
				rd.stream = 1
			} else {
				rd.stream = -1
			}
		case kindResponse:
			if !frame {
				break
			}
			var o jsonscan.Object
			if jsonscan.Nested(body, m.ValStart, m.ValEnd, &o, &scanKeys) {
				rd.nested = append(rd.nested, nestedResponse{member: i, obj: o})
				count.nested = count.nested || o.TooMany
			}
		}
		if count.over() {
			return rd, false
		}
	}
	rd.topModels = len(rd.models)
	rd.carried = count.tiers > 0 // before the nested tiers are counted
	for _, n := range rd.nested {
		for _, m := range n.obj.Members {
			s.work.visits++
			switch classifyKey(body[m.KeyStart:m.KeyEnd]) {
			case kindServiceTier:
				count.tiers++
				rd.tiers = append(rd.tiers, tierOfValue(body[m.ValStart:m.ValEnd]))
			case kindModel:
				// A model under response is a candidate beside the
				// session's, not instead of it (Realtime's response.model).
				count.models++
				if v, ok := jsonscan.StringValue(nil, body[m.ValStart:m.ValEnd]); ok {
					rd.models = append(rd.models, string(v))
				}
			}
			if count.over() {
				return rd, false
			}
		}
	}
	return rd, true
}

// rewriteOpenAI makes the body carry what the decision in res allows.
func rewriteOpenAI(req *Request, body []byte, s *scratch, res *Result, rd *openAIRead) {
	top := &s.doc
	// What each object that carries the key must end up with: nothing on
	// filter; on pass, one member with the canonical value (or, for a value
	// tiergate does not recognise, the raw value of the last occurrence).
	keep := res.Action == ActionPass
	var want []byte
	if keep && res.Forced {
		want = quotedTier[res.Sent]
	}
	topEdits := planTier(body, top, keep, want, s)
	for _, n := range rd.nested {
		if e := planTier(body, &n.obj, keep, want, nil); e != nil {
			if topEdits == nil {
				topEdits = s.topEdits(len(top.Members))
			}
			// Sized up front: a large object grown by appends costs
			// twice its size.
			buf := make([]byte, 0, n.obj.End-n.obj.Start)
			topEdits[n.member].replace = rebuild(buf, body, &n.obj, e, nil)
		}
	}
	var adds []string
	// Force adds a key when the top level sent none (a tier only under
	// response is rewritten but is not one the Responses upstream reads),
	// and never to a Realtime frame: Realtime has no service_tier
	// parameter, and an unknown one may fail the turn (docs/contracts.md,
	// "Evaluation", step 6).
	if res.Forced && res.Action == ActionPass && !rd.carried && req.Endpoint != EndpointRealtime {
		adds = append(adds, `"service_tier":`+res.Sent.quoted())
	}
	if req.EnsureUsage && req.Endpoint == EndpointChatCompletions && rd.stream == 1 {
		var added, tooMany bool
		topEdits, adds, added, tooMany = ensureIncludeUsage(body, top, topEdits, adds, s)
		if tooMany {
			refuseTooMany(req, res, false)
			return
		}
		res.UsageAdded = added
	}
	s.emit(req, body, topEdits, adds, res)
}

// maxOccurrences bounds the occurrences of service_tier, model or speed a
// body or frame may carry at the levels read (docs/contracts.md,
// "Evaluation", step 4):
// every occurrence is judged, and no honest client repeats a key 65 times.
const maxOccurrences = 64

// occurrences counts the raw (folded) occurrences of the keys judged.
type occurrences struct {
	tiers, models, speeds int
	nested                bool // a nested object read repeats a key too often
}

func (c *occurrences) over() bool {
	return c.tiers > maxOccurrences || c.models > maxOccurrences || c.speeds > maxOccurrences || c.nested
}

// refuseTooMany refuses a body or frame with more than 64 occurrences of
// service_tier, model or speed at the levels read, or more than 64 of any
// other key tiergate reads in one object (which would otherwise be recorded
// without bound).
func refuseTooMany(req *Request, res *Result, frame bool) {
	what := "body"
	if frame {
		what = "frame"
	}
	res.Refusal = RefusalTooManyOccurrences
	res.Decision = Decision{Group: req.Group, Action: ActionBlock, Requested: TierNone,
		Message: "the " + what + " repeats service_tier, model, speed or another key tiergate reads more than 64 times"}
}

// emit writes the body with the top-level object's edits and additions
// into the caller's buffer (req.Buf), when there is anything to change.
func (s *scratch) emit(req *Request, body []byte, edits []edit, adds []string, res *Result) {
	top := &s.doc
	if edits == nil && adds == nil || top.End == 0 {
		// Nothing to change, or a body that is not an object and so has no
		// members to edit (the upstream will refuse it).
		return
	}
	if edits == nil {
		edits = s.topEdits(len(top.Members))
	}
	out := slices.Grow(req.Buf[:0], len(body)+64)
	out = append(out, body[:top.Start]...)
	out = rebuild(out, body, top, edits, adds)
	out = append(out, body[top.End:]...)
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
func planTier(body []byte, obj *jsonscan.Object, keep bool, want []byte, s *scratch) []edit {
	first, last, n := membersOfKind(body, obj, kindServiceTier, s)
	if n == 0 {
		return nil
	}
	lm := obj.Members[last]
	lastVal := body[lm.ValStart:lm.ValEnd]
	if keep && want == nil {
		want = quotedTier[tierOfValue(lastVal)]
	}
	replace := keep && want != nil && !bytes.Equal(lastVal, want)
	rename := keep && !canonicalKey(body[lm.KeyStart:lm.KeyEnd], kindServiceTier)
	if keep && n == 1 && !replace && !rename {
		return nil
	}
	edits := s.topEdits(len(obj.Members))
	for i := first; i < last; i++ {
		if n > 1 && classifyKey(body[obj.Members[i].KeyStart:obj.Members[i].KeyEnd]) == kindServiceTier {
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
func membersOfKind(body []byte, obj *jsonscan.Object, k keyKind, s *scratch) (first, last, n int) {
	for i, m := range obj.Members {
		if s != nil {
			s.work.visits++
		}
		if classifyKey(body[m.KeyStart:m.KeyEnd]) == k {
			if n == 0 {
				first = i
			}
			last = i
			n++
		}
	}
	return first, last, n
}

// rebuild appends obj to dst with per-member edits applied and adds (each a
// rendered "key":value) appended as new members. White space between kept
// members is preserved; commas come from the gaps that separated members.
func rebuild(dst, src []byte, obj *jsonscan.Object, edits []edit, adds []string) []byte {
	if len(obj.Members) == 0 {
		dst = append(dst, '{')
		for i, a := range adds {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, a...)
		}
		return append(dst, src[obj.Start+1:obj.End]...)
	}
	dst = append(dst, src[obj.Start:obj.Members[0].KeyStart]...)
	first := true
	for i, m := range obj.Members {
		e := edits[i]
		if e.remove {
			continue
		}
		if !first {
			// The gap after the previous member holds exactly one comma,
			// whether or not that member is kept.
			dst = append(dst, src[obj.Members[i-1].ValEnd:m.KeyStart]...)
		}
		first = false
		from := m.KeyStart
		if e.rename != "" {
			dst = append(dst, '"')
			dst = append(dst, e.rename...)
			dst = append(dst, '"')
			from = m.KeyEnd
		}
		if e.replace != nil {
			dst = append(dst, src[from:m.ValStart]...)
			dst = append(dst, e.replace...)
		} else {
			dst = append(dst, src[from:m.ValEnd]...)
		}
	}
	for _, a := range adds {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, a...)
	}
	return append(dst, src[obj.Members[len(obj.Members)-1].ValEnd:obj.End]...)
}

// ensureIncludeUsage makes every stream_options carry include_usage: true,
// adding the member when there is none. tooMany reports a stream_options
// that repeats a key too often to be rewritten.
func ensureIncludeUsage(body []byte, top *jsonscan.Object, edits []edit, adds []string, s *scratch) (_ []edit, _ []string, added, tooMany bool) {
	seen := false
	for i, m := range top.Members {
		if classifyKey(body[m.KeyStart:m.KeyEnd]) != kindStreamOptions {
			continue
		}
		seen = true
		val := body[m.ValStart:m.ValEnd]
		var repl []byte
		switch {
		case string(val) == "null":
			repl = []byte(`{"include_usage":true}`)
		case val[0] == '{':
			var o jsonscan.Object
			jsonscan.Nested(body, m.ValStart, m.ValEnd, &o, &scanKeys)
			if o.TooMany {
				return edits, adds, false, true
			}
			ok, n := true, 0
			for _, om := range o.Members {
				if classifyKey(body[om.KeyStart:om.KeyEnd]) == kindIncludeUsage {
					n++
					ok = ok && string(body[om.ValStart:om.ValEnd]) == "true"
				}
			}
			if ok && n > 0 {
				continue
			}
			oe := make([]edit, len(o.Members))
			for j, om := range o.Members {
				oe[j].remove = classifyKey(body[om.KeyStart:om.KeyEnd]) == kindIncludeUsage
			}
			add := `"include_usage":true`
			repl = rebuild(make([]byte, 0, o.End-o.Start+len(add)+1), body, &o, oe, []string{add})
		default:
			continue // not an object: the upstream will refuse it
		}
		if edits == nil {
			edits = s.topEdits(len(top.Members))
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

// anyOfKind reports whether obj has a member of kind k.
func anyOfKind(body []byte, obj *jsonscan.Object, k keyKind) bool {
	for _, m := range obj.Members {
		if classifyKey(body[m.KeyStart:m.KeyEnd]) == k {
			return true
		}
	}
	return false
}

// hasStringMember reports whether any member of kind k has a string value
// that names want (after unescaping, as TypeIs reads it).
func hasStringMember(body []byte, obj *jsonscan.Object, k keyKind, want string) bool {
	for _, m := range obj.Members {
		if classifyKey(body[m.KeyStart:m.KeyEnd]) == k {
			var buf [32]byte
			if v, ok := jsonscan.StringValue(buf[:0], body[m.ValStart:m.ValEnd]); ok && typeIs(v, want) {
				return true
			}
		}
	}
	return false
}
