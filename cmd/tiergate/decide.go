package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/internal/decimal"
	"github.com/tiergate/tiergate/policy"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
	"github.com/tiergate/tiergate/usage"
)

// offlineRequest is one HTTP request decided outside the server: by
// `tiergate eval` and by each case of `tiergate test`. Both go through
// decideOffline, so they show exactly what the ext_proc server does.
type offlineRequest struct {
	path string
	// header holds the request's header lines by lower-case name.
	header map[string][]string
	body   []byte
	// spent is the spend already counted per budget (micro-units) for the
	// caller's group in the current window.
	spent map[string]int64
	// used is the response's usage as record fields, to price the request;
	// nil: not priced.
	used    *tiergatev1.UsageRecord
	maxBody int64
}

// offlineResult is what becomes of an offlineRequest.
type offlineResult struct {
	decision evalDecision
	// body is what goes upstream, or the error body when refused.
	body    []byte
	refused bool
	// cost is the request's exact cost in 10⁻¹² units, when priced.
	cost   uint64
	priced bool
}

// decideOffline decides r under p through policy.DecideHTTP, the ext_proc
// server's decision, with budgets reading r.spent.
func decideOffline(p *policy.Policy, r *offlineRequest) offlineResult {
	ep, deployment := policy.ParsePath(r.path)
	res := offlineResult{decision: evalDecision{Endpoint: ep.String(), Action: "pass", ServiceTierRequested: "none", ServiceTierSent: "none", Budget: policy.BudgetLabel("")}}
	if ep == policy.EndpointUnknown {
		// Not policed: the ext_proc server lets it through untouched.
		res.body = r.body
		return res
	}
	get := func(name string) string {
		if v := r.header[name]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	spend := fixedSpend{micros: r.spent, at: time.Now()}
	out := p.DecideHTTP(&policy.HTTPRequest{
		Endpoint: ep, Deployment: deployment, Header: get, Beta: r.header["anthropic-beta"],
		ContentEncoding: r.header["content-encoding"], Body: r.body, MaxDecoded: r.maxBody, Spend: spend,
	})
	dec := &res.decision
	dec.Group, dec.Model = out.Group, out.RequestModel
	dec.ServiceTierRequested, dec.ServiceTierSent = out.Requested.String(), out.Sent.String()
	dec.Action, dec.Rule, dec.Message = out.Action.String(), out.Rule, out.Message
	dec.Budget = policy.BudgetLabel(out.Budget)
	if out.ShadowRule != "" {
		dec.ShadowRule, dec.ShadowAction = out.ShadowRule, out.ShadowAction.String()
	}
	if out.Refused() {
		dec.Status = out.Refusal.Status()
		res.body, res.refused = out.ErrorBody, true
		return res
	}
	if r.used != nil {
		res.cost, res.priced = priceEval(dec, p, r.used)
	}
	for _, e := range out.HeaderEdits(nil) {
		if e.Remove {
			dec.RemoveHeaders = append(dec.RemoveHeaders, e.Name)
			continue
		}
		if dec.SetHeaders == nil {
			dec.SetHeaders = map[string]string{}
		}
		dec.SetHeaders[e.Name] = e.Value
	}
	res.body = out.Body
	return res
}

// priceEval prices the decided request with the usage given: its model and
// the tier sent are the decision's, the tokens and any tier reported are
// the usage's. It returns the exact cost and whether there is one.
func priceEval(dec *evalDecision, p *policy.Policy, used *tiergatev1.UsageRecord) (uint64, bool) {
	rec := proto.Clone(used).(*tiergatev1.UsageRecord) // a test file's usage serves again
	rec.Model, rec.ServiceTierSent, rec.Status = dec.Model, dec.ServiceTierSent, usage.StatusCompleted
	c, ok := p.PriceRecord(rec, false)
	switch {
	case !ok:
	case c.Unpriced != "":
		dec.CostUnpricedReason = c.Unpriced
	default:
		n := json.Number(decimal.String(c.Pico, 12))
		dec.Cost, dec.Currency, dec.PriceTier = &n, c.Currency, c.Tier.String()
		return c.Pico, true
	}
	return 0, false
}

// fixedSpend is a policy.SpendView with a fixed spend per budget, whatever
// the group: the spend of the caller's group, as eval's --budget-spent and
// a test case's budget_spent give it.
type fixedSpend struct {
	micros map[string]int64
	at     time.Time
}

// Spent implements policy.SpendView.
func (f fixedSpend) Spent(b *policy.Budget, _ string) (int64, int64) {
	_, end := budget.Bounds(b.Window, f.at)
	left := end.Sub(f.at)
	secs := int64(left / time.Second)
	if left%time.Second != 0 {
		secs++
	}
	return f.micros[b.Name], secs
}

// parseSpent reads NAME=AMOUNT (currency units, at most 6 decimals) into
// micro-units, checking that p has a budget of that name.
func parseSpent(p *policy.Policy, spec string, into map[string]int64) error {
	name, amount, ok := strings.Cut(spec, "=")
	if !ok {
		return fmt.Errorf("%q: want NAME=AMOUNT", spec)
	}
	if !hasBudget(p, name) {
		return fmt.Errorf("%q: the policy has no budget %q", spec, name)
	}
	micros, err := decimal.Parse(strings.TrimSpace(amount), 6)
	switch {
	case err != nil:
		return fmt.Errorf("%q: amount: %w", spec, err)
	case micros > maxSpentMicros:
		return fmt.Errorf("%q: amount too large", spec)
	}
	into[name] = int64(micros)
	return nil
}

// maxSpentMicros bounds a given spend far above any limit, so it fits an
// int64.
const maxSpentMicros = 1 << 53

func hasBudget(p *policy.Policy, name string) bool {
	for _, b := range p.Budgets() {
		if b.Name == name {
			return true
		}
	}
	return false
}
