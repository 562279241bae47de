package policy

import (
	"slices"
	"strconv"
	"strings"

	"github.com/tiergate/tiergate/internal/jsonscan"
)

// applyBatch polices a Message Batches create request. Each entry's params
// is a whole Messages request, and the batch's anthropic-beta header
// applies to every one of them (params cannot carry betas), so each params
// object is judged exactly as a /v1/messages body with that header: rules
// for messages decide it, and its speed, fallbacks and the header's
// fast-mode tokens are read and rewritten as there. Every requests member
// and every params member of an entry counts, as duplicate keys do
// elsewhere.
//
// The batch then goes on as one request: refused when any entry is
// refused (the first refusal, its message naming the entry), otherwise
// with each entry's rewrite spliced in. The header is one for all entries,
// so a batch whose entries need different headers (fast mode kept for one
// model and stripped for another) is refused: no single header is right
// for all of them. The decision recorded is the strictest entry's.
func (p *Policy) applyBatch(req *Request, body []byte, s *scratch, res *Result) {
	top := &s.doc
	if top.TooMany {
		refuseTooMany(req, res, false)
		return
	}
	entry := *req
	entry.Endpoint, entry.Buf, entry.PathModels = EndpointMessages, nil, nil
	original := strings.Join(req.Beta, ",")

	var (
		// out is the batch rewritten so far, up to body[copied]; nil until
		// an entry changes. Each entry's rewrite is copied in as it is
		// judged, into one buffer, and the entry's own buffer is reused:
		// a batch of many small entries costs about one output body, not
		// an allocation per entry.
		out     []byte
		copied  int
		agg     Result
		beta    string
		betaSet bool
		betaAt  int
		n       int
		entryO  jsonscan.Object
	)
	// judge judges one entry's params, body[start:end] (params itself
	// when not nil: the empty request standing for a batch of none).
	judge := func(at, start, end int, params []byte) bool {
		if params == nil {
			params = body[start:end]
		}
		r := p.apply(&entry, params)
		n++
		if r.Refusal != RefusalNone {
			res.Decision, res.Refusal = r.Decision, r.Refusal
			res.Group, res.Sent = req.Group, TierNone
			res.Message = r.Message
			if end > start {
				res.Message = "requests[" + strconv.Itoa(at) + "]: " + r.Message
			}
			return false
		}
		want := original
		if r.BetaChanged {
			want = r.Beta
		}
		switch {
		case !betaSet:
			beta, betaSet, betaAt = want, true, at
		case want != beta:
			res.Refusal = RefusalPolicy
			res.Decision = Decision{Group: req.Group, Action: ActionBlock, Requested: TierPriority, Model: r.Model,
				Message: "requests[" + strconv.Itoa(betaAt) + "] and requests[" + strconv.Itoa(at) +
					"] need different anthropic-beta headers (fast mode is allowed for one and not the other); send them in separate batches"}
			return false
		}
		if n == 1 || r.Action > agg.Action || agg.Requested == TierNone && r.Requested != TierNone {
			agg = r
			agg.Body = nil // the entry's buffer is reused
		}
		if r.BodyChanged && end > start {
			if out == nil {
				out = slices.Grow(req.Buf[:0], len(body)+len(body)/8)
			}
			out = append(append(out, body[copied:start]...), r.Body...)
			copied = end
			entry.Buf = r.Body[:0]
		}
		return true
	}

	for _, m := range top.Members {
		s.work.visits++
		if classifyKey(body[m.KeyStart:m.KeyEnd]) != kindRequests || body[m.ValStart] != '[' {
			continue
		}
		at := -1
		for e := range arrayElements(body, m.ValStart) {
			at++
			entryO = jsonscan.Object{Members: entryO.Members[:0]}
			if !jsonscan.Nested(body, e.start, e.end, &entryO, &scanKeys) {
				continue // not an object: the upstream refuses it
			}
			if entryO.TooMany {
				refuseTooMany(req, res, false)
				return
			}
			for _, em := range entryO.Members {
				if classifyKey(body[em.KeyStart:em.KeyEnd]) != kindParams || body[em.ValStart] != '{' {
					continue
				}
				if !judge(at, em.ValStart, em.ValEnd, nil) {
					return
				}
			}
		}
	}
	if n == 0 {
		// No entry to judge: the header alone may still ask for fast mode.
		if !judge(0, 0, 0, []byte("{}")) {
			return
		}
	}
	res.Decision, res.RequestModel, res.Shadows = agg.Decision, agg.RequestModel, agg.Shadows
	res.Group = req.Group
	if beta != original {
		res.Beta, res.BetaChanged = beta, true
	}
	if out == nil {
		return
	}
	res.Body, res.BodyChanged = append(out, body[copied:]...), true
}
