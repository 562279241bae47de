package policy

import (
	"bytes"
	"strings"
)

// applyAnthropic polices a Messages request. Fast mode is the tier here:
// requested by an anthropic-beta token starting with fast-mode-, by a
// top-level "speed": "fast", or by "speed": "fast" in any fallbacks entry;
// any of them means priority.
//
// A fallbacks entry's speed is judged against that entry's own model (or,
// when the entry names none, the request's): each fallback attempt runs
// under its own model.
func (p *Policy) applyAnthropic(req *Request, body []byte, s *scratch, res *Result) {
	top := &s.doc
	if top.tooMany {
		refuseTooMany(req, res)
		return
	}
	tokens := betaTokens(req.Beta)
	fast := false
	for _, t := range tokens {
		fast = fast || isFastModeToken(t)
	}
	models := s.models[:0]
	var fallbacks []int          // the fallbacks members that hold arrays
	var o object                 // a fallbacks entry
	var fastEntryModels []string // the models of fallbacks asking for fast mode
	fastEntryNoModel := false    // a fast fallback that names no model
	var count occurrences
	for i, m := range top.members {
		s.work.visits++
		val := body[m.valStart:m.valEnd]
		switch classifyKey(body[m.keyStart:m.keyEnd]) {
		case kindSpeed:
			count.speeds++
			fast = fast || isFastSpeed(val)
		case kindModel:
			count.models++
			if v, ok := stringValue(nil, val); ok {
				models = append(models, string(v))
			}
		case kindStream:
			res.Stream = string(val) == "true"
		case kindFallbacks:
			if val[0] != '[' {
				break
			}
			for e := range arrayElements(body, m.valStart) {
				o = object{members: o.members[:0]} // one buffer for every entry
				if !scanNested(body, e.start, e.end, &o) {
					continue
				}
				count.nested = count.nested || o.tooMany
				entryFast, named := false, false
				for _, om := range o.members {
					s.work.visits++
					switch classifyKey(body[om.keyStart:om.keyEnd]) {
					case kindSpeed:
						count.speeds++
						entryFast = entryFast || isFastSpeed(body[om.valStart:om.valEnd])
					case kindModel:
						count.models++
						named = named || body[om.valStart] == '"'
					}
				}
				if entryFast {
					fastEntryModels = entryModels(fastEntryModels, body, &o)
					fastEntryNoModel = fastEntryNoModel || !named
				}
				if count.over() {
					break
				}
			}
			fallbacks = append(fallbacks, i)
		}
		if count.over() {
			refuseTooMany(req, res)
			return
		}
	}
	if len(models) > 0 {
		res.RequestModel = models[len(models)-1]
	}
	tiers := s.tiers[:0]
	if fast || len(fastEntryModels) > 0 || fastEntryNoModel {
		tiers = append(tiers, TierPriority)
	}
	// The models fast mode runs under: the request's when fast mode is
	// asked at the top level (or forced, or by a fallback without a model
	// of its own), and each fast fallback's own. A request without fast
	// mode is judged against its models with no tier (a pass).
	judged := models
	if !fast && p.ForcedTier(req.Group) == TierNone && !fastEntryNoModel && len(fastEntryModels) > 0 {
		judged = fastEntryModels
	} else {
		judged = append(judged, fastEntryModels...)
	}
	res.Decision = p.evaluate(req.Endpoint, req.Group, tiers, judged, &s.work)
	p.applyBudgets(&res.Decision, req.Spend, judged)
	if res.Action == ActionBlock {
		res.Status, res.Sent = refusalOf(&res.Decision).Status(), TierNone
		return
	}
	keep := res.Action == ActionPass && res.Sent == TierPriority
	forced := res.Forced && keep
	if !keep {
		res.Sent = TierNone
	}

	// The header: drop fast-mode tokens unless fast mode stays; a forced
	// group gets the token when it has none.
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
	if len(kept) != len(tokens) {
		res.Beta, res.BetaChanged = strings.Join(kept, ","), true
	}

	edits := planSpeed(body, top, keep, forced, s)
	for _, fb := range fallbacks {
		var out []byte
		pos := top.members[fb].valStart
		for e := range arrayElements(body, pos) {
			o = object{members: o.members[:0]}
			if !scanNested(body, e.start, e.end, &o) {
				continue
			}
			oe := planSpeed(body, &o, keep, false, nil)
			if oe == nil {
				continue
			}
			out = append(out, body[pos:e.start]...)
			out = rebuild(out, body, &o, oe, nil)
			pos = e.end
		}
		if out == nil {
			continue
		}
		out = append(out, body[pos:top.members[fb].valEnd]...)
		if edits == nil {
			edits = s.topEdits(len(top.members))
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
func planSpeed(body []byte, obj *object, keep, forceFast bool, s *scratch) []edit {
	first, last, n := membersOfKind(body, obj, kindSpeed, s)
	if n == 0 {
		return nil
	}
	var edits []edit
	if !keep {
		for i := first; i <= last; i++ {
			m := obj.members[i]
			if classifyKey(body[m.keyStart:m.keyEnd]) == kindSpeed && isFastSpeed(body[m.valStart:m.valEnd]) {
				if edits == nil {
					edits = s.topEdits(len(obj.members))
				}
				edits[i].remove = true
			}
		}
		return edits
	}
	lm := obj.members[last]
	lastVal := body[lm.valStart:lm.valEnd]
	replace := (forceFast || isFastSpeed(lastVal)) && !bytes.Equal(lastVal, []byte(`"fast"`))
	rename := !canonicalKey(body[lm.keyStart:lm.keyEnd], kindSpeed)
	if n == 1 && !replace && !rename {
		return nil
	}
	edits = s.topEdits(len(obj.members))
	for i := first; i < last; i++ {
		if classifyKey(body[obj.members[i].keyStart:obj.members[i].keyEnd]) == kindSpeed {
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
func entryModels(dst []string, body []byte, o *object) []string {
	for _, om := range o.members {
		if classifyKey(body[om.keyStart:om.keyEnd]) == kindModel {
			if v, ok := stringValue(nil, body[om.valStart:om.valEnd]); ok {
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
		i := skipWS(body, start+1)
		if i < len(body) && body[i] == ']' {
			return
		}
		for i < len(body) {
			end, ok := validValue(body, i, 1)
			if !ok || !yield(span{i, end}) {
				return
			}
			i = skipWS(body, end)
			if i >= len(body) || body[i] != ',' {
				return
			}
			i = skipWS(body, i+1)
		}
	}
}
