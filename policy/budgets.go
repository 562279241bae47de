package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tiergate/tiergate/internal/decimal"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// Window is the UTC calendar window a budget keeps its spend in.
type Window uint8

// Windows. The calendar arithmetic lives with the spend (package budget);
// the policy only names the window.
const (
	WindowDay Window = iota
	WindowWeek
	WindowMonth
)

var windowNames = [...]string{WindowDay: "day", WindowWeek: "week", WindowMonth: "month"}

// String returns the window as written in the policy file.
func (w Window) String() string {
	if int(w) < len(windowNames) {
		return windowNames[w]
	}
	return "unknown"
}

// MicrosPerUnit is how many micro-units (10⁻⁶ of the currency) make one
// unit: budgets keep spend and limits in integer micro-units, so sums are
// exact and a limit compares without rounding.
const MicrosPerUnit = 1_000_000

// Budget is one compiled entry of budgets:. It is part of an immutable
// Policy; callers must not modify it.
type Budget struct {
	// Name is the budget's name, used in metrics, records and headers.
	Name string
	// Window is the calendar window spend is kept in.
	Window Window
	// Limit is the cap in micro-units of the currency.
	Limit int64
	// Action is what happens once the cap is reached: ActionFilter or
	// ActionBlock.
	Action Action
	// Groups are the groups it applies to; empty: every group.
	Groups []string
	// Shadow: the budget keeps its spend and acts on nothing; where it
	// would act is reported as a shadow match.
	Shadow bool
	tiers  uint32 // bit set of Tier; 0 = every tier
	models []pattern
}

// AppliesToGroup reports whether the budget applies to a spend bucket (a
// group as GroupBucket names it).
func (b *Budget) AppliesToGroup(bucket string) bool {
	return len(b.Groups) == 0 || slices.Contains(b.Groups, bucket)
}

// CountsTier reports whether the budget counts (and acts on) a tier, as
// sent or as billed. No tier is billed as default, and so is auto unless
// the budget lists auto itself.
func (b *Budget) CountsTier(t Tier) bool {
	if b.tiers == 0 {
		return true
	}
	if b.tiers&(1<<t) != 0 {
		return true
	}
	return (t == TierNone || t == TierAuto) && b.tiers&(1<<TierDefault) != 0
}

// CoversModel reports whether the budget counts a model (after aliases).
func (b *Budget) CoversModel(model string) bool {
	if len(b.models) == 0 {
		return true
	}
	for _, p := range b.models {
		if p.match(model) {
			return true
		}
	}
	return false
}

// BudgetLabel is how records, metrics and metadata name the budget that
// acted on a decision: its name, or "none" when none did.
func BudgetLabel(name string) string {
	if name == "" {
		return "none"
	}
	return name
}

// Budgets returns the policy's budgets in file order.
func (p *Policy) Budgets() []Budget { return p.budgets }

// GroupBucket names the spend bucket of a group: a group the policy names
// anywhere keeps its own, every other group header value shares "other",
// and no group is "none". It is GroupLabel: the metric label and the
// bucket are bounded by the same rule.
func (p *Policy) GroupBucket(group string) string { return p.GroupLabel(group) }

// SpendView is a read-only view of budget spend as of one decision time.
// The policy decides from it and never writes to it; reading must be cheap
// (a map or atomic read), as it is done for every request and frame.
type SpendView interface {
	// Spent returns the spend of a group bucket on b, in micro-units, in the
	// window that contains the decision time, and the whole seconds
	// (rounded up) from the decision time to that window's end.
	Spent(b *Budget, bucket string) (micros, secondsLeft int64)
}

// applyBudgets is the last step of evaluation (after the rules and force):
// each budget that applies to the caller's group, one of the candidate
// models and the tier about to be sent, and whose spend has reached its
// limit, acts. The strictest budget wins (block over filter; the first in
// file order among equals). A rule's block stands as it is. A shadow
// budget that applies is reported as a shadow match (pass under its limit,
// its action at or above it) and acts on nothing.
func (p *Policy) applyBudgets(d *Decision, view SpendView, models []string) {
	if len(p.budgets) == 0 || view == nil || d.Action == ActionBlock {
		return
	}
	tier := TierNone
	if d.Action == ActionPass {
		tier = d.Sent
	}
	if tier == TierUnrecognised {
		return // left for the upstream to refuse; nothing will be billed
	}
	bucket := p.GroupBucket(d.Group)
	var acting *Budget
	var secondsLeft int64
	for i := range p.budgets {
		b := &p.budgets[i]
		if !b.Shadow && acting != nil && b.Action <= acting.Action {
			continue
		}
		if !b.AppliesToGroup(bucket) || !b.CountsTier(tier) || !b.coversAny(p, models) {
			continue
		}
		if b.Action == ActionFilter && !tier.Concrete() {
			continue // nothing to remove
		}
		spent, left := view.Spent(b, bucket)
		if b.Shadow {
			// Reported, never acting: what it would do with this spend.
			a := ActionPass
			if spent >= b.Limit {
				a = b.Action
			}
			d.shadow(ShadowMatch{Rule: b.Name, Action: a, Budget: true})
			continue
		}
		if spent < b.Limit {
			continue
		}
		acting, secondsLeft = b, left
	}
	if acting == nil {
		return
	}
	d.Budget = acting.Name
	d.Action = acting.Action
	d.Sent = TierNone
	d.Tier = tier
	if acting.Action == ActionBlock {
		d.RetryAfter = secondsLeft
		d.Message = "budget " + acting.Name + " is exhausted for group " + bucket +
			" until the " + acting.Window.String() + " ends; service_tier=" + tier.String() + " is refused"
	}
}

func (b *Budget) coversAny(p *Policy, models []string) bool {
	if len(b.models) == 0 {
		return true
	}
	if len(models) == 0 {
		return b.CoversModel("")
	}
	for _, m := range models {
		if b.CoversModel(p.MatchModel(m)) {
			return true
		}
	}
	return false
}

// CheckSuccessor refuses a policy that may not replace next in force: one
// that changes the price table's currency while both have budgets (the
// spend kept so far is in the old currency, and limits would silently
// compare amounts in two).
func CheckSuccessor(current, next *Policy) error {
	if current == nil || len(current.budgets) == 0 || len(next.budgets) == 0 {
		return nil
	}
	if a, b := current.Currency(), next.Currency(); a != b {
		return &ConfigError{Problems: []Problem{{Path: "prices.currency",
			Message: fmt.Sprintf("changes from %s to %s while budgets keep spend in %s (remove the budgets first, or restart)", a, b, a)}}}
	}
	return nil
}

// validName reports whether s is a name budgets, rules and groups may take.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// reservedNames are the spend buckets of callers the policy does not name.
var reservedNames = map[string]string{
	"none":  "callers with no group",
	"other": "group header values the policy does not name",
}

// checkName reports a name that breaks the naming rule or is reserved.
func (l *loader) checkName(path, s, what string) {
	if !validName(s) {
		l.addf(path, "%s %q: names use only letters, digits, '.', '_' and '-'", what, s)
		return
	}
	if why, ok := reservedNames[s]; ok {
		l.addf(path, "%q is reserved (it names the spend and metrics of %s)", s, why)
	}
}

var windowValues = map[string]tiergatev1.BudgetWindow{
	"day":   tiergatev1.BudgetWindow_BUDGET_WINDOW_DAY,
	"week":  tiergatev1.BudgetWindow_BUDGET_WINDOW_WEEK,
	"month": tiergatev1.BudgetWindow_BUDGET_WINDOW_MONTH,
}

func (l *loader) budget(path string, v any) *tiergatev1.Budget {
	b := &tiergatev1.Budget{}
	m, ok := l.object(path, v)
	if !ok {
		return b
	}
	l.fields(path, m, map[string]func(string, any){
		"name": func(p string, v any) {
			if s, ok := l.name(p, v); ok {
				l.checkName(p, s, "budget name")
				b.Name = s
			}
		},
		"groups": func(p string, v any) {
			b.Groups = l.names(p, v, "group name")
			for i, g := range b.Groups {
				l.checkName(fmt.Sprintf("%s[%d]", p, i), g, "group name")
			}
		},
		"service_tiers": func(p string, v any) {
			for i, item := range l.list(p, v) {
				ip := fmt.Sprintf("%s[%d]", p, i)
				t := l.tier(ip, item, false)
				if t == 0 {
					continue
				}
				if slices.Contains(b.ServiceTiers, t) {
					l.addf(ip, "%s is listed twice", tierFromProto(t))
					continue
				}
				b.ServiceTiers = append(b.ServiceTiers, t)
			}
		},
		"models": func(p string, v any) { b.Models = l.names(p, v, "model name") },
		"window": func(p string, v any) {
			if s, ok := l.name(p, v); ok {
				w, known := windowValues[s]
				if !known {
					l.addf(p, "unknown window %q (want day, week or month)%s", s, lowerHint(s, windowValues))
				}
				b.Window = w
			}
		},
		"limit": func(p string, v any) {
			micros, ok := l.limitAmount(p, v)
			if !ok {
				return
			}
			if micros <= 0 {
				l.addf(p, "must be greater than 0")
				return
			}
			b.Limit = float64(micros) / MicrosPerUnit
			l.limits[b] = micros
		},
		"shadow": func(p string, v any) { b.Shadow, _ = l.boolean(p, v) },
		"on_exhausted": func(p string, v any) {
			a := l.action(p, v)
			if a == tiergatev1.Action_ACTION_PASS {
				l.addf(p, "pass is not a budget action (want filter or block)")
				return
			}
			b.OnExhausted = a
		},
	})
	for _, k := range []string{"name", "window", "limit", "on_exhausted"} {
		if _, ok := m[k]; !ok {
			switch k {
			case "window":
				l.addf(join(path, k), "required (day, week or month)")
			case "on_exhausted":
				l.addf(join(path, k), "required (filter or block)")
			case "limit":
				l.addf(join(path, k), "required (the cap, in units of the price table's currency)")
			default:
				l.addf(join(path, k), "required")
			}
		}
	}
	if b.OnExhausted == tiergatev1.Action_ACTION_FILTER {
		if _, listed := m["service_tiers"]; !listed || len(b.ServiceTiers) == 0 && !l.failedAt(join(path, "service_tiers")) {
			l.addf(join(path, "service_tiers"), "required when on_exhausted is filter (name the tiers to remove once the limit is reached)")
		}
		if i := slices.Index(b.ServiceTiers, tiergatev1.ServiceTier_SERVICE_TIER_DEFAULT); i >= 0 {
			l.addf(fmt.Sprintf("%s.service_tiers[%d]", path, i),
				"default cannot be filtered: removing the tier does not lower the default tier's spend (use on_exhausted: block)")
		}
	}
	return b
}

// failedAt reports whether a problem was already reported at or under path.
func (l *loader) failedAt(path string) bool {
	for _, p := range l.problems {
		if p.Path == path || strings.HasPrefix(p.Path, path+"[") || strings.HasPrefix(p.Path, path+".") {
			return true
		}
	}
	return false
}

// limitAmount reads a budget's limit, exactly, as micro-units: a number of
// currency units with at most 6 decimals.
func (l *loader) limitAmount(path string, v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		l.addf(path, "want a number of currency units, got %s", describe(v))
		return 0, false
	}
	if strings.HasPrefix(n.String(), "-") {
		l.addf(path, "must be greater than 0")
		return 0, false
	}
	micros, err := decimal.Parse(n.String(), 6)
	switch {
	case errors.Is(err, decimal.ErrRange) || err == nil && micros > maxMicros:
		l.addf(path, "limit %s is too large", n)
		return 0, false
	case err != nil:
		l.addf(path, "%v", err)
		return 0, false
	}
	return int64(micros), true
}

// maxMicros bounds a limit far above any real budget, so sums of spend
// cannot overflow int64.
const maxMicros = 1 << 53

// crossCheckBudgets finds the problems that span budgets and the rest of
// the file: duplicate names, a budget named like a rule, and budgets with
// nothing to price spend by.
func (l *loader) crossCheckBudgets(cfg *tiergatev1.Config, havePrices bool) {
	if len(cfg.Budgets) == 0 {
		return
	}
	if !havePrices {
		l.addf("budgets", "budgets need prices: (spend is the priced cost of each request; without a price table no budget would ever move)")
	}
	rules := map[string]int{}
	for i, r := range cfg.Rules {
		if r.Name != "" {
			rules[r.Name] = i
		}
	}
	at := map[string]int{}
	for i, b := range cfg.Budgets {
		if b.Name == "" {
			continue
		}
		p := fmt.Sprintf("budgets[%d].name", i)
		if j, dup := at[b.Name]; dup {
			l.addf(p, "duplicate budget name %q (also budgets[%d])", b.Name, j)
			continue
		}
		at[b.Name] = i
		if j, clash := rules[b.Name]; clash {
			l.addf(p, "%q is also the name of rules[%d] (budgets and rules share the rule label in metrics)", b.Name, j)
		}
	}
}

// compileBudgets adds the budgets to p; limits holds each budget's exact
// limit as the loader read it.
func compileBudgets(p *Policy, cfg *tiergatev1.Config, limits map[*tiergatev1.Budget]int64) {
	for _, b := range cfg.Budgets {
		cb := Budget{
			Name:   b.Name,
			Limit:  limits[b],
			Action: actionFromProto(b.OnExhausted),
			Groups: b.Groups,
			Shadow: b.Shadow,
		}
		if cb.Limit == 0 {
			cb.Limit = int64(b.Limit*MicrosPerUnit + 0.5) // built from a Config, not a file
		}
		switch b.Window {
		case tiergatev1.BudgetWindow_BUDGET_WINDOW_WEEK:
			cb.Window = WindowWeek
		case tiergatev1.BudgetWindow_BUDGET_WINDOW_MONTH:
			cb.Window = WindowMonth
		}
		for _, t := range b.ServiceTiers {
			cb.tiers |= 1 << tierFromProto(t)
		}
		for _, w := range b.Models {
			if strings.HasSuffix(w, "*") {
				cb.models = append(cb.models, pattern{text: strings.TrimSuffix(w, "*"), prefix: true})
				continue
			}
			cb.models = append(cb.models, pattern{text: w})
			p.modelLabels[w] = struct{}{}
		}
		for _, g := range b.Groups {
			p.groupLabels[g] = struct{}{}
		}
		p.budgets = append(p.budgets, cb)
	}
}
