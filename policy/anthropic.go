package policy

import (
	"bytes"
	"strings"
)

// applyAnthropic polices a Messages request. Fast mode is the tier here:
// requested by an anthropic-beta token starting with fast-mode-, by a
// top-level "speed": "fast", or by "speed": "fast" in any fallbacks entry;
// any of them means priority.
func (p *Policy) applyAnthropic(req *Request, body []byte, s *scratch, res *Result) {
	top := &s.doc
	tokens := betaTokens(req.Beta)
	fast := false
	for _, t := range tokens {
		fast = fast || isFastModeToken(t)
	}
	models := s.models[:0]
	type arrayMember struct {
		member int
		elems  []span
	}
	var fallbacks []arrayMember
	for i, m := range top.members {
		key := body[m.keyStart:m.keyEnd]
		val := body[m.valStart:m.valEnd]
		switch {
		case keyEquals(key, keySpeed):
			fast = fast || isFastSpeed(val)
		case keyEquals(key, keyModel):
			if v, ok := stringValue(nil, val); ok {
				models = append(models, string(v))
			}
		case keyEquals(key, keyStream):
			res.Stream = string(val) == "true"
		case keyEquals(key, keyFallbacks) && val[0] == '[':
			elems := arrayElements(body, m.valStart)
			for _, e := range elems {
				var o object
				if scanNested(body, e.start, e.end, &o) {
					for _, om := range o.members {
						if keyEquals(body[om.keyStart:om.keyEnd], keySpeed) {
							fast = fast || isFastSpeed(body[om.valStart:om.valEnd])
						}
					}
				}
			}
			fallbacks = append(fallbacks, arrayMember{member: i, elems: elems})
		}
	}
	tiers := s.tiers[:0]
	if fast {
		tiers = append(tiers, TierPriority)
	}
	if len(models) > 0 {
		res.RequestModel = models[len(models)-1]
	}
	res.Decision = p.Evaluate(req.Endpoint, req.Group, tiers, models)
	p.applyBudgets(&res.Decision, req.Spend, models)
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
		pos := top.members[fb.member].valStart
		for _, e := range fb.elems {
			var o object
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
		out = append(out, body[pos:top.members[fb.member].valEnd]...)
		if edits == nil {
			edits = s.topEdits(len(top.members))
		}
		edits[fb.member].replace = out
	}
	var adds []string
	if forced && !anyMember(body, top, keySpeed) {
		adds = append(adds, `"speed":"fast"`)
	}
	s.emit(req, body, edits, adds, res)
}

// planSpeed plans the speed members of one object. Without keep, every
// speed that asks for fast mode goes. With keep, exactly one speed member is
// left, the last, spelled "fast" when it asks for fast mode or when forceFast
// (other values are kept as they are). It returns nil when nothing changes.
//
// Top-level plans use s's storage; nested ones (s nil) allocate.
func planSpeed(body []byte, obj *object, keep, forceFast bool, s *scratch) []edit {
	var idx [8]int
	found := membersNamed(idx[:0], body, obj, keySpeed)
	if len(found) == 0 {
		return nil
	}
	var edits []edit
	if !keep {
		for _, i := range found {
			if isFastSpeed(body[obj.members[i].valStart:obj.members[i].valEnd]) {
				if edits == nil {
					edits = s.topEdits(len(obj.members))
				}
				edits[i].remove = true
			}
		}
		return edits
	}
	li := found[len(found)-1]
	last := body[obj.members[li].valStart:obj.members[li].valEnd]
	replace := (forceFast || isFastSpeed(last)) && !bytes.Equal(last, []byte(`"fast"`))
	if len(found) == 1 && !replace {
		return nil
	}
	edits = s.topEdits(len(obj.members))
	for _, i := range found[:len(found)-1] {
		edits[i].remove = true
	}
	if replace {
		edits[li].replace = []byte(`"fast"`)
	}
	return edits
}

// span is a value's extent in a document.
type span struct{ start, end int }

// arrayElements returns the spans of the elements of the validated array
// starting at body[start] == '['.
func arrayElements(body []byte, start int) []span {
	var out []span
	i := skipWS(body, start+1)
	if i < len(body) && body[i] == ']' {
		return nil
	}
	for i < len(body) {
		end, ok := validValue(body, i, 1)
		if !ok {
			return out
		}
		out = append(out, span{i, end})
		i = skipWS(body, end)
		if i >= len(body) || body[i] != ',' {
			return out
		}
		i = skipWS(body, i+1)
	}
	return out
}
