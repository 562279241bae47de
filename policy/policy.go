package policy

import (
	"crypto/sha256"
	"slices"
	"strconv"
	"strings"
	"time"

	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// Policy is a loaded, validated policy, compiled for evaluation. It is
// immutable once built, so every request can read it without locks.
type Policy struct {
	rules       []rule
	forced      map[string]Tier     // group -> forced tier
	keyGroups   map[[32]byte]string // SHA-256 of an API key -> group
	groupHeader string              // lower case; "" = not used
	aliases     map[string]string
	modelLabels map[string]struct{}
	groupLabels map[string]struct{}
	budgets     []Budget
	shadows     bool        // a rule or budget is a shadow
	prices      *priceTable // nil: nothing is priced
	budgetStore *RedisStore // nil: memory
	config      *tiergatev1.Config
	sha256      string
	loadedAt    time.Time
}

type rule struct {
	label       string
	tier        Tier // TierNone with all set
	all         bool
	action      Action
	message     string
	whitelist   []pattern
	hasFallback bool
	fallback    Action
	fallbackMsg string
	groups      []string
	endpoints   uint32 // bit set of Endpoint; 0 = every endpoint
	shadow      bool   // reports what it would do, decides nothing
}

// pattern is one model_whitelist entry.
type pattern struct {
	text   string
	prefix bool // written with a trailing '*'; text holds what precedes it
}

func (p pattern) match(model string) bool {
	if p.prefix {
		return strings.HasPrefix(model, p.text)
	}
	return model == p.text
}

// Config returns the policy as loaded. Callers must not modify it.
func (p *Policy) Config() *tiergatev1.Config { return p.config }

// SHA256 returns the hex SHA-256 of the file the policy was loaded from (of
// the embedded default when none was).
func (p *Policy) SHA256() string { return p.sha256 }

// LoadedAt returns when the policy was loaded.
func (p *Policy) LoadedAt() time.Time { return p.loadedAt }

// GroupHeader returns the lower-case name of the trusted header that names
// the caller's group, or "" when the policy names none.
func (p *Policy) GroupHeader() string { return p.groupHeader }

// groupForKeys returns the group whose api_key_sha256 lists the SHA-256 of
// one of the keys, else "".
func (p *Policy) groupForKeys(apiKeys []string) string {
	for _, k := range apiKeys {
		if k == "" {
			continue
		}
		if g, ok := p.keyGroups[sha256.Sum256([]byte(k))]; ok {
			return g
		}
	}
	return ""
}

// ForcedTier returns the tier a group's requests are forced to, or TierNone.
func (p *Policy) ForcedTier(group string) Tier {
	if group == "" {
		return TierNone
	}
	return p.forced[group]
}

// MatchModel returns the model as rules see it: mapped through model_aliases.
func (p *Policy) MatchModel(model string) string {
	if m, ok := p.aliases[model]; ok {
		return m
	}
	return model
}

// ModelLabel bounds a model name for use as a metric label: models listed in
// metrics.models or named in the policy keep their name, an absent model is
// "none", and every other model is "other".
func (p *Policy) ModelLabel(model string) string {
	if model == "" {
		return "none"
	}
	if _, ok := p.modelLabels[model]; ok {
		return model
	}
	return "other"
}

// GroupLabel bounds a group name for use as a metric label: groups listed in
// the policy (under groups or in a rule) keep their name, no group is
// "none", and any other value a group header carried is "other".
func (p *Policy) GroupLabel(group string) string {
	if group == "" {
		return "none"
	}
	if _, ok := p.groupLabels[group]; ok {
		return group
	}
	return "other"
}

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

// verdict is one rule's answer for one tier and model.
type verdict struct {
	action Action
	rule   *rule
	tier   Tier
	model  string
	msg    string
}

// Evaluate judges a request: each tier occurrence against each candidate
// model, first matching rule per pair, the strictest result over all pairs.
// An empty tiers means no tier was sent; an empty models means the request
// named no model.
func (p *Policy) Evaluate(ep Endpoint, group string, tiers []Tier, models []string) Decision {
	return p.evaluate(ep, group, tiers, models, nil)
}

// evaluate is Evaluate, counting its judgements in w when w is non-nil.
// Repeated tiers and models are judged once each, at their last
// occurrence, so the work is bounded by the distinct values, not by how
// often a body repeats them.
func (p *Policy) evaluate(ep Endpoint, group string, tiers []Tier, models []string, w *work) Decision {
	d := Decision{Group: group, Requested: TierNone}
	if len(tiers) > 0 {
		d.Requested = tiers[len(tiers)-1]
	}
	if f := p.ForcedTier(group); f != TierNone {
		d.Forced = true
		tiers = []Tier{f}
	}
	if len(models) == 0 {
		models = []string{""}
	}
	best := verdict{action: ActionPass, tier: TierNone}
	if len(tiers) > 0 {
		best.tier = tiers[len(tiers)-1]
	}
	best.model = p.MatchModel(models[len(models)-1])
	var hits *shadowHits
	if p.shadows {
		hits = new(shadowHits)
	}
	var mbuf [16]string
	matched := p.distinctModels(mbuf[:0], models)
	var tbuf [TierUnrecognised + 1]Tier
	// Ties go to the later pair, so a pass reports the last occurrence: the
	// one a last-key-wins reader acts on.
	for _, t := range distinctTiers(tbuf[:0], tiers) {
		for _, m := range matched {
			if w != nil {
				w.judgements++
			}
			if v := p.judgeAll(ep, group, t, m, hits); v.action >= best.action {
				best = v
			}
		}
	}
	if hits != nil {
		for _, h := range *hits {
			d.shadow(ShadowMatch{Rule: p.rules[h.rule].label, Action: h.action})
		}
	}
	d.Action, d.Tier, d.Model = best.action, best.tier, best.model
	if best.rule != nil {
		d.Rule = best.rule.label
	}
	switch d.Action {
	case ActionBlock:
		d.Message = best.msg
		if d.Message == "" {
			d.Message = "service_tier=" + best.tier.String() + " is not allowed for model " + best.model
		}
	case ActionPass:
		d.Sent = TierNone
		if len(tiers) > 0 {
			d.Sent = tiers[len(tiers)-1]
		}
	}
	return d
}

// distinctTiers appends each tier of tiers once, in the order of their
// last occurrences.
func distinctTiers(dst, tiers []Tier) []Tier {
	var seen uint32
	for i := len(tiers) - 1; i >= 0; i-- {
		if bit := uint32(1) << tiers[i]; seen&bit == 0 {
			seen |= bit
			dst = append(dst, tiers[i])
		}
	}
	slices.Reverse(dst)
	return dst
}

// distinctModels appends each model of models, mapped through
// model_aliases, once, in the order of their last occurrences. A model
// that a lenient reader reads differently (modelReading) is judged under
// that reading too.
func (p *Policy) distinctModels(dst, models []string) []string {
	var seen map[string]struct{}
	if len(models) > 8 {
		seen = make(map[string]struct{}, 2*len(models))
	}
	for i := len(models) - 1; i >= 0; i-- {
		whole, cut := modelReadings(models[i])
		for _, m := range [...]string{models[i], whole, cut} {
			if m == "" && models[i] != "" {
				continue // a reading that names no model
			}
			if m = p.MatchModel(m); seen != nil {
				if _, dup := seen[m]; dup {
					continue
				}
				seen[m] = struct{}{}
			} else if slices.Contains(dst, m) {
				continue
			}
			dst = append(dst, m)
		}
	}
	slices.Reverse(dst)
	return dst
}

// modelReadings returns a model name as lenient readers may read it:
// trimmed as values are (trimmed), and up to its first NUL (a reader of C
// strings), then trimmed. "gpt-5.5\u0000" and " gpt-5.5" run gpt-5.5
// there, so they are judged as gpt-5.5 too. A reading equal to m is "".
func modelReadings(m string) (whole, cut string) {
	if whole = strings.TrimFunc(m, trimmed); whole == m {
		whole = ""
	}
	if i := strings.IndexByte(m, 0); i >= 0 {
		if cut = strings.TrimFunc(m[:i], trimmed); cut == m || cut == whole {
			cut = ""
		}
	}
	return whole, cut
}

// judge runs the rules for one tier occurrence and one model.
func (p *Policy) judge(ep Endpoint, group string, t Tier, model string) verdict {
	return p.judgeAll(ep, group, t, model, nil)
}

// judgeAll is judge that also adds to hits (when non-nil) each shadow rule
// met before the rule that decides. A shadow rule is evaluated in its
// place and then passed over, as if it had not matched.
func (p *Policy) judgeAll(ep Endpoint, group string, t Tier, model string, hits *shadowHits) verdict {
	v := verdict{action: ActionPass, tier: t, model: model}
	if !t.Concrete() {
		return v // a missing or unrecognised tier matches no rule
	}
	for i := range p.rules {
		r := &p.rules[i]
		if !r.all && r.tier != t {
			continue
		}
		if r.endpoints != 0 && r.endpoints&(1<<ep) == 0 {
			continue
		}
		if len(r.groups) > 0 && !slices.Contains(r.groups, group) {
			continue
		}
		a, msg := r.action, r.message
		if !r.whitelisted(model) {
			if !r.hasFallback {
				continue
			}
			a, msg = r.fallback, r.fallbackMsg
		}
		if r.shadow {
			if hits != nil {
				hits.add(i, a)
			}
			continue
		}
		v.action, v.rule, v.msg = a, r, msg
		return v
	}
	return v
}

func (r *rule) whitelisted(model string) bool {
	if len(r.whitelist) == 0 {
		return true
	}
	for _, p := range r.whitelist {
		if p.match(model) {
			return true
		}
	}
	return false
}

// ruleLabel is the label of an unnamed rule at index i.
func ruleLabel(name string, i int) string {
	if name != "" {
		return name
	}
	return "#" + strconv.Itoa(i+1)
}
