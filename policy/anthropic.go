package policy

import (
	"bytes"
	"strings"

	"github.com/tiergate/tiergate/internal/jsonscan"
)

// applyAnthropic polices a Messages request. Fast mode is the tier here:
// requested by an anthropic-beta token holding fast-mode-, by a
// top-level "speed": "fast", or by "speed": "fast" in any fallbacks entry;
// any of them means priority.
//
// A fallbacks entry's speed is judged against that entry's own model (or,
// when the entry names none, the request's): each fallback attempt runs
// under its own model. Fast mode asked at the top level (or forced) is
// judged against every fallback's model too, since a fallback that names
// no speed may inherit the request's.
func (p *Policy) applyAnthropic(req *Request, body []byte, s *scratch, res *Result) {
	tokens := betaTokens(req.Beta)
	rd, ok := readMessages(body, s, tokens, res)
	if !ok {
		refuseTooMany(req, res, false)
		return
	}
	if len(rd.models) > 0 {
		res.RequestModel = rd.models[len(rd.models)-1]
	}
	tiers := s.tiers[:0]
	if rd.fast || len(rd.fastEntryModels) > 0 || rd.fastEntryNoModel {
		tiers = append(tiers, TierPriority)
	}
	// The models fast mode runs under: the request's when fast mode is
	// asked at the top level (or forced, or by a fallback without a model
	// of its own), and each fast fallback's own. A request without fast
	// mode is judged against its models with no tier (a pass).
	judged := rd.models
	groupForced := p.forcedTier(req.Group) != TierNone
	switch {
	case !rd.fast && !groupForced && !rd.fastEntryNoModel && len(rd.fastEntryModels) > 0:
		judged = rd.fastEntryModels
	case rd.fast || groupForced:
		// A fallback that names no speed of its own may inherit the
		// request's: every fallback's model is judged.
		judged = append(judged, rd.entryModels...)
	default:
		judged = append(judged, rd.fastEntryModels...)
	}
	res.Decision = p.evaluate(req.Endpoint, req.Group, tiers, judged, &s.work)
	p.applyBudgets(&res.Decision, req.Spend, judged)
	if res.Action == ActionBlock {
		res.Refusal, res.Sent = refusalOf(&res.Decision), TierNone
		return
	}
	keep := res.Action == ActionPass && res.Sent == TierPriority
	forced := res.Forced && keep
	if !keep {
		res.Sent = TierNone
	}
	res.Beta, res.BetaChanged = betaHeader(tokens, keep, forced)
	rewriteMessages(req, body, s, res, &rd, keep, forced)
}

// messagesRead is what a Messages request says, read from its members and
// its anthropic-beta header.
type messagesRead struct {
	fast      bool     // the top level asks for fast mode (speed or header)
	models    []string // the top level's models
	fallbacks []int    // the fallbacks members that hold arrays
	// fastEntryModels are the models of fallbacks asking for fast mode;
	// fastEntryNoModel: a fast fallback names no model. entryModels are
	// the models of every fallback, fast or not.
	fastEntryModels  []string
	fastEntryNoModel bool
	entryModels      []string
	entry            jsonscan.Object // a fallbacks entry: one buffer for every entry
}

// readMessages reads the top-level members and the entries of every
// fallbacks array. ok is false when a key repeats too often.
func readMessages(body []byte, s *scratch, tokens []string, res *Result) (rd messagesRead, ok bool) {
	top := &s.doc
	if top.TooMany {
		return rd, false
	}
	for _, t := range tokens {
		rd.fast = rd.fast || isFastModeToken(t)
	}
	rd.models = s.models[:0]
	var count occurrences
	for i, m := range top.Members {
		s.work.visits++
		val := body[m.ValStart:m.ValEnd]
		switch classifyKey(body[m.KeyStart:m.KeyEnd]) {
		case kindSpeed:
			count.speeds++
			rd.fast = rd.fast || isFastSpeed(val)
		case kindModel:
			count.models++
			if v, ok := jsonscan.StringValue(nil, val); ok {
				rd.models = append(rd.models, string(v))
			}
		case kindStream:
			res.Stream = string(val) == "true"
		case kindFallbacks:
			if val[0] != '[' {
				break
			}
			rd.readFallbacks(body, m.ValStart, s, &count)
			rd.fallbacks = append(rd.fallbacks, i)
		}
		if count.over() {
			return rd, false
		}
	}
	return rd, true
}

// readFallbacks reads the entries of the fallbacks array at body[start],
// counting the keys judged into count; it stops once count is over.
func (rd *messagesRead) readFallbacks(body []byte, start int, s *scratch, count *occurrences) {
	o := &rd.entry
	for e := range arrayElements(body, start) {
		*o = jsonscan.Object{Members: o.Members[:0]}
		if !jsonscan.Nested(body, e.start, e.end, o, &scanKeys) {
			continue
		}
		count.nested = count.nested || o.TooMany
		entryFast, named := false, false
		for _, om := range o.Members {
			s.work.visits++
			switch classifyKey(body[om.KeyStart:om.KeyEnd]) {
			case kindSpeed:
				count.speeds++
				entryFast = entryFast || isFastSpeed(body[om.ValStart:om.ValEnd])
			case kindModel:
				count.models++
				named = named || body[om.ValStart] == '"'
			}
		}
		if entryFast {
			rd.fastEntryModels = entryModels(rd.fastEntryModels, body, o)
			rd.fastEntryNoModel = rd.fastEntryNoModel || !named
		}
		rd.entryModels = entryModels(rd.entryModels, body, o)
		if count.over() {
			return
		}
	}
}

// betaHeader returns the anthropic-beta header to send, and whether it
// changed: fast-mode tokens dropped unless fast mode stays (keep), and the
// token added for a forced group that has none.
func betaHeader(tokens []string, keep, forced bool) (string, bool) {
	kept := tokens[:0:0]
	hasFast := false
	for _, t := range tokens {
		if isFastModeToken(t) {
			if !keep {
				continue
			}
			hasFast = true
		}
		kept = append(kept, t)
	}
	if forced && !hasFast {
		kept = append(kept, fastModeBeta)
	}
	if len(kept) == len(tokens) {
		return "", false
	}
	return strings.Join(kept, ","), true
}

// rewriteMessages makes the body's speed members, top level and in each
// fallbacks entry, say what the decision allows: fast only when keep, and
// added at the top level for a forced group.
func rewriteMessages(req *Request, body []byte, s *scratch, res *Result, rd *messagesRead, keep, forced bool) {
	top := &s.doc
	o := &rd.entry
	edits := planSpeed(body, top, keep, forced, s)
	for _, fb := range rd.fallbacks {
		var out []byte
		pos := top.Members[fb].ValStart
		for e := range arrayElements(body, pos) {
			*o = jsonscan.Object{Members: o.Members[:0]}
			if !jsonscan.Nested(body, e.start, e.end, o, &scanKeys) {
				continue
			}
			oe := planSpeed(body, o, keep, false, nil)
			if oe == nil {
				continue
			}
			out = append(out, body[pos:e.start]...)
			out = rebuild(out, body, o, oe, nil)
			pos = e.end
		}
		if out == nil {
			continue
		}
		out = append(out, body[pos:top.Members[fb].ValEnd]...)
		if edits == nil {
			edits = s.topEdits(len(top.Members))
		}
		edits[fb].replace = out
	}
	var adds []string
	if forced && !anyOfKind(body, top, kindSpeed) {
		adds = append(adds, `"speed":"fast"`)
	}
	s.emit(req, body, edits, adds, res)
}

// planSpeed plans the speed members of one object. Without keep, every
// speed that asks for fast mode goes. With keep, exactly one speed member is
// left, the last, named speed (a folded spelling is renamed) and spelled
// "fast" when it asks for fast mode or when forceFast (other values are
// kept as they are). It returns nil when nothing changes.
//
// Top-level plans use s's storage; nested ones (s nil) allocate.
func planSpeed(body []byte, obj *jsonscan.Object, keep, forceFast bool, s *scratch) []edit {
	first, last, n := membersOfKind(body, obj, kindSpeed, s)
	if n == 0 {
		return nil
	}
	var edits []edit
	if !keep {
		for i := first; i <= last; i++ {
			m := obj.Members[i]
			if classifyKey(body[m.KeyStart:m.KeyEnd]) == kindSpeed && isFastSpeed(body[m.ValStart:m.ValEnd]) {
				if edits == nil {
					edits = s.topEdits(len(obj.Members))
				}
				edits[i].remove = true
			}
		}
		return edits
	}
	lm := obj.Members[last]
	lastVal := body[lm.ValStart:lm.ValEnd]
	replace := (forceFast || isFastSpeed(lastVal)) && !bytes.Equal(lastVal, []byte(`"fast"`))
	rename := !canonicalKey(body[lm.KeyStart:lm.KeyEnd], kindSpeed)
	if n == 1 && !replace && !rename {
		return nil
	}
	edits = s.topEdits(len(obj.Members))
	for i := first; i < last; i++ {
		if classifyKey(body[obj.Members[i].KeyStart:obj.Members[i].KeyEnd]) == kindSpeed {
			edits[i].remove = true
		}
	}
	if replace {
		edits[last].replace = []byte(`"fast"`)
	}
	if rename {
		edits[last].rename = keySpeed
	}
	return edits
}

// entryModels appends the string models of a fallbacks entry.
func entryModels(dst []string, body []byte, o *jsonscan.Object) []string {
	for _, om := range o.Members {
		if classifyKey(body[om.KeyStart:om.KeyEnd]) == kindModel {
			if v, ok := jsonscan.StringValue(nil, body[om.ValStart:om.ValEnd]); ok {
				dst = append(dst, string(v))
			}
		}
	}
	return dst
}

// span is a value's extent in a document.
type span struct{ start, end int }

// arrayElements yields the spans of the elements of the validated array
// starting at body[start] == '['. It yields rather than returns them: an
// array of a million zeros would cost eight times its size in spans.
func arrayElements(body []byte, start int) func(yield func(span) bool) {
	return func(yield func(span) bool) {
		i := jsonscan.SkipSpace(body, start+1)
		if i < len(body) && body[i] == ']' {
			return
		}
		for i < len(body) {
			end, ok := jsonscan.Value(body, i)
			if !ok || !yield(span{i, end}) {
				return
			}
			i = jsonscan.SkipSpace(body, end)
			if i >= len(body) || body[i] != ',' {
				return
			}
			i = jsonscan.SkipSpace(body, i+1)
		}
	}
}

// fastModeBeta is the anthropic-beta token tiergate adds when a group is
// forced to priority on the Messages API.
const fastModeBeta = "fast-mode-2026-02-01"

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

// isFastModeToken reports whether an anthropic-beta token asks for fast
// mode. Any token that holds fast-mode- in any case counts, not only one
// that starts with it: a token quoted ("fast-mode-…") or run together with
// another by a space or a semicolon may still be read as fast mode by a
// lenient header parser, and the strict reading is the one that cannot let
// fast mode through unjudged. Filtering drops such a token whole.
func isFastModeToken(t string) bool {
	const name = "fast-mode-"
	for i := 0; i+len(name) <= len(t); i++ {
		if strings.EqualFold(t[i:i+len(name)], name) {
			return true
		}
	}
	return false
}

// isFastSpeed reads a speed value: fast (trimmed as tiers are, any case) is
// fast mode.
func isFastSpeed(val []byte) bool {
	var buf [32]byte
	s, ok := jsonscan.StringValue(buf[:0], val)
	return ok && (isFast(s) || isFast(cString(s)))
}

func isFast(s []byte) bool {
	return equalFoldValue(bytes.TrimFunc(s, trimmed), "fast")
}
