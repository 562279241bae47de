package policy

import "slices"

// Decision is the policy's verdict on one request or frame.
type Decision struct {
	// Action is what happens: the strictest verdict over every occurrence of
	// the tier and every candidate model.
	Action Action
	// Requested is the tier the client asked for: the canonical form of the
	// last occurrence, as a last-key-wins reader sees it.
	Requested Tier
	// Tier is the tier the deciding verdict judged (after any group force).
	Tier Tier
	// Sent is the tier in what goes upstream (TierNone when blocked or
	// filtered).
	Sent Tier
	// Forced reports that the group's force_service_tier applied.
	Forced bool
	// Rule labels the rule that decided, "" when none matched.
	Rule string
	// Model is the model as matched (after aliases) by the deciding verdict.
	Model string
	// Group is the caller's group, "" for none.
	Group string
	// Message is the refusal message when Action is ActionBlock.
	Message string
	// Budget names the budget that acted (filtered the tier or refused the
	// request), "" when none did.
	Budget string
	// RetryAfter is, when Budget refused the request, the whole seconds to
	// the end of its window (the retry-after header).
	RetryAfter int64
	// ShadowRule and ShadowAction are the first shadow match (rules in
	// order, then budgets): the record's and the metadata's shadow_rule and
	// shadow_action. ShadowRule is "" when nothing matched.
	ShadowRule   string
	ShadowAction Action
	// Shadows are every shadow match, in order, the first included: each
	// is counted once. nil when none matched.
	Shadows []ShadowMatch
}

// ShadowMatch is a shadow rule or budget that matched a request or frame:
// what it would have done had it been enforced.
type ShadowMatch struct {
	// Rule is the rule's label or the budget's name.
	Rule string
	// Action is what it would have done. A shadow rule judged for several
	// tiers or models reports the strictest of its verdicts; a shadow
	// budget reports pass under its limit and on_exhausted at or above it.
	Action Action
	// Budget reports that Rule names a budget.
	Budget bool
}

// shadow adds a match to d, which becomes the first one when none came
// before.
func (d *Decision) shadow(m ShadowMatch) {
	if d.ShadowRule == "" {
		d.ShadowRule, d.ShadowAction = m.Rule, m.Action
	}
	d.Shadows = append(d.Shadows, m)
}

// shadowHits collects, for one decision, the shadow rules that matched
// (by index) with the strictest action each would have taken, in rule
// order.
type shadowHits []shadowHit

type shadowHit struct {
	rule   int
	action Action
}

func (h *shadowHits) add(rule int, a Action) {
	for i := range *h {
		switch hit := &(*h)[i]; {
		case hit.rule == rule:
			hit.action = max(hit.action, a)
			return
		case hit.rule > rule:
			*h = slices.Insert(*h, i, shadowHit{rule, a})
			return
		}
	}
	*h = append(*h, shadowHit{rule, a})
}
