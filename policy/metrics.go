package policy

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// DecisionMetrics counts decisions. The ext_proc server and the WebSocket
// bridge share one, so tiergate_policy_decisions_total covers HTTP requests
// and WebSocket frames alike.
type DecisionMetrics struct {
	decisions *prometheus.CounterVec
	shadows   *prometheus.CounterVec
	// counters keeps each series once resolved (decisionLabels →
	// prometheus.Counter): every request and every client frame counts one,
	// and resolving five label values hashes them each time. The keys are
	// the label values themselves, bounded by the policies loaded, as the
	// CounterVec's own series are.
	counters sync.Map
}

// decisionLabels are one series' label values.
type decisionLabels struct {
	ep          Endpoint
	action      Action
	tier        Tier
	rule, group string
	budget      string
}

// NewDecisionMetrics registers tiergate_policy_decisions_total on reg.
func NewDecisionMetrics(reg prometheus.Registerer) (*DecisionMetrics, error) {
	m := &DecisionMetrics{decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tiergate_policy_decisions_total",
		Help: "Policy decisions on requests and WebSocket frames: endpoint, action (pass, filter, block), the tier judged (none when none was sent), the rule that decided (none when no rule matched), and the caller's group (bounded: other for groups the policy does not name), and the budget that acted (none when none did; a budget's block is a 429, not a policy refusal).",
	}, []string{"endpoint", "action", "service_tier", "rule", "group", "budget"})}
	m.shadows = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tiergate_policy_shadow_decisions_total",
		Help: "Matches of shadow rules and shadow budgets (shadow: true), which decide nothing: rule is the rule's label or the budget's name, action what it would have done (pass, filter, block). Every shadow match of a request or frame is counted.",
	}, []string{"rule", "action"})
	for _, c := range []prometheus.Collector{m.decisions, m.shadows} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register decision metrics: %w", err)
		}
	}
	return m, nil
}

// ObserveShadows counts each shadow match of a decision.
func (m *DecisionMetrics) ObserveShadows(d *Decision) {
	for _, s := range d.Shadows {
		m.shadows.WithLabelValues(s.Rule, s.Action.String()).Inc()
	}
}

// Observe counts one decision made under p.
func (m *DecisionMetrics) Observe(p *Policy, ep Endpoint, d *Decision) {
	m.Counter(p, ep, d).Inc()
}

// Counter is the series a decision made under p counts in.
func (m *DecisionMetrics) Counter(p *Policy, ep Endpoint, d *Decision) prometheus.Counter {
	k := decisionLabels{ep: ep, action: d.Action, tier: d.Tier, rule: d.Rule, group: p.GroupLabel(d.Group), budget: d.Budget}
	if k.rule == "" {
		k.rule = "none"
	}
	k.budget = BudgetLabel(k.budget)
	if c, ok := m.counters.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := m.decisions.WithLabelValues(ep.String(), d.Action.String(), d.Tier.String(), k.rule, k.group, k.budget)
	m.counters.Store(k, c)
	return c
}
