package policy

import (
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestDecisionMetricsLabels: each decision counts once in the series its
// labels name, also when the counters are served from the table, and a
// reload relabels groups by the new policy (a group the old policy did not
// name was "other", the new one names it).
func TestDecisionMetricsLabels(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := NewDecisionMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	before := Default()
	after, err := Load([]byte("groups: [{name: batch}]\nrules: [{name: strip, service_tier: priority, action: filter}]"))
	if err != nil {
		t.Fatal(err)
	}
	d := Decision{Action: ActionFilter, Tier: TierPriority, Rule: "", Group: "batch"}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				m.Observe(before, EndpointResponses, &d)
			}
		}()
	}
	wg.Wait()
	d.Rule = "strip"
	m.Observe(after, EndpointResponsesWS, &d)
	m.Observe(after, EndpointResponsesWS, &d)
	d.Budget, d.Action = "batch-daily", ActionBlock
	m.Observe(after, EndpointResponses, &d)
	for _, tc := range []struct {
		labels []string // endpoint, action, service_tier, rule, group, budget
		want   float64
	}{
		{[]string{"responses", "filter", "priority", "none", "other", "none"}, 80},
		{[]string{"responses_ws", "filter", "priority", "strip", "batch", "none"}, 2},
		{[]string{"responses_ws", "filter", "priority", "strip", "other", "none"}, 0},
		{[]string{"responses", "block", "priority", "strip", "batch", "batch-daily"}, 1},
	} {
		if got := testutil.ToFloat64(m.decisions.WithLabelValues(tc.labels...)); got != tc.want {
			t.Errorf("%v = %v, want %v", tc.labels, got, tc.want)
		}
	}
}

func TestShadowDecisionsAreCountedByRuleAndAction(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := NewDecisionMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	p := mustLoad(t, budgetTestPrices+shadowPolicy)
	for range 3 {
		res := p.Apply(&Request{Endpoint: EndpointResponses, Group: "team-a", Spend: fixedSpend{}},
			[]byte(`{"model":"gpt-5.5","service_tier":"priority"}`))
		m.ObserveShadows(&res.Decision)
	}
	res := p.Apply(&Request{Endpoint: EndpointResponses}, []byte(`{"model":"gpt-4o","service_tier":"priority"}`))
	m.ObserveShadows(&res.Decision)
	want := `
# HELP tiergate_policy_shadow_decisions_total Matches of shadow rules and shadow budgets (shadow: true), which decide nothing: rule is the rule's label or the budget's name, action what it would have done (pass, filter, block). Every shadow match of a request or frame is counted.
# TYPE tiergate_policy_shadow_decisions_total counter
tiergate_policy_shadow_decisions_total{action="block",rule="would-block-everything"} 3
tiergate_policy_shadow_decisions_total{action="block",rule="would-block-priority"} 3
tiergate_policy_shadow_decisions_total{action="filter",rule="would-block-priority"} 1
tiergate_policy_shadow_decisions_total{action="pass",rule="team-a-shadow"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tiergate_policy_shadow_decisions_total"); err != nil {
		t.Error(err)
	}
}
