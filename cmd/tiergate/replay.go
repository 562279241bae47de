package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/internal/decimal"
	"github.com/tiergate/tiergate/policy"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
	"github.com/tiergate/tiergate/usage"
)

// replayReport is tiergate replay's --json output (docs/contracts.md, "Shadow
// rules, tests and replay"). CostUnknown counts the replayed records whose
// cost before or after cannot be known: one blocked before that would now pass
// used no tokens to price, and one without usage has none.
type replayReport struct {
	Records       uint64       `json:"records"`
	Replayed      uint64       `json:"replayed"`
	NotReplayable uint64       `json:"not_replayable"`
	Changed       uint64       `json:"changed"`
	RuleOnly      uint64       `json:"rule_only"`
	CostUnknown   uint64       `json:"cost_unknown"`
	Changes       []*replayRow `json:"changes"`
}

// replayRow is one kind of change: records of one group whose outcome went
// from one "<action> <tier sent>" to another (the same for a rule-only
// change) under the rules named; where a budget acted, its name stands for
// the rule (budgets and rules share one namespace). Costs are what the rows' records cost
// before and after, both at the replayed policy's prices, over the records
// whose cost is known; absent without prices.
type replayRow struct {
	From       string       `json:"from"`
	To         string       `json:"to"`
	RuleBefore string       `json:"rule_before"`
	RuleAfter  string       `json:"rule_after"`
	Group      string       `json:"group"`
	Count      uint64       `json:"count"`
	CostBefore *json.Number `json:"cost_before,omitempty"`
	CostAfter  *json.Number `json:"cost_after,omitempty"`
	// CostUnknown counts the row's records left out of its costs.
	CostUnknown uint64 `json:"cost_unknown,omitempty"`
	before      uint64
	after       uint64
}

// runReplay re-decides usage logs under a policy file and reports what
// would have been decided differently.
func runReplay(args []string, stdout, stderr io.Writer) error {
	cmd := newLogCommand("replay", "the policy to replay the logs under (required)",
		"tiergate replay --config FILE [--json] [--simulate-budgets] USAGE.jsonl...", stderr)
	simulate := cmd.fs.Bool("simulate-budgets", false, "accumulate each replayed record's cost into the budgets, in order, so a budget exhausted partway acts on the later records (default: budgets start at zero spend and stay there)")
	p, err := cmd.parse(args)
	if err != nil {
		return err
	}
	rp := &replayer{p: p, report: &replayReport{}, rows: map[replayKey]*replayRow{}}
	if *simulate {
		rp.spend, err = budget.New(budget.NewMemory(), func() *policy.Policy { return p }, prometheus.NewRegistry(), budget.Options{})
		if err != nil {
			return fmt.Errorf("budgets: %w", err)
		}
	}
	if err := cmd.eachRecord(rp.replay); err != nil {
		return err
	}
	rep := rp.finish()
	return cmd.write(stdout, rep, func(w io.Writer) { writeReplayTable(w, rep) })
}

type replayKey struct{ from, to, ruleBefore, ruleAfter, group string }

// replayer re-decides records one at a time, in log order.
type replayer struct {
	p      *policy.Policy
	spend  *budget.Tracker // nil: budgets stay at zero spend
	report *replayReport
	rows   map[replayKey]*replayRow
}

// replay re-decides one record from what it carries: its endpoint, its
// group as recorded, its model and the tier it requested. Paths, duplicate
// occurrences and identity are not in records and are not replayed.
func (rp *replayer) replay(rec *tiergatev1.UsageRecord) error {
	rep := rp.report
	rep.Records++
	ep, ok := endpointNamed(rec.GetEndpoint())
	requested := policy.ParseTier(rec.GetServiceTierRequested())
	if rec.GetServiceTierRequested() == "none" {
		requested = policy.TierNone
	}
	if !ok || rec.GetStatus() == usage.StatusRefused || requested == policy.TierUnrecognised ||
		ep == policy.EndpointMessages && requested != policy.TierNone && requested != policy.TierPriority {
		rep.NotReplayable++
		return nil
	}
	at, err := decisionTime(rec)
	if err != nil {
		return err
	}
	var spend policy.SpendView = fixedSpend{at: at}
	if rp.spend != nil {
		view := rp.spend.View(at)
		spend = &view
	}
	body := replayBody(ep, rec.GetModel(), requested)
	var res policy.Result
	switch ep {
	case policy.EndpointResponsesWS, policy.EndpointRealtime:
		req := &policy.Request{Endpoint: ep, Group: rec.GetGroup(), Spend: spend}
		if rec.GetModel() != "" {
			req.SessionModels = []string{rec.GetModel()}
		}
		res = rp.p.ApplyFrame(req, body)
	default:
		res = rp.p.DecideHTTP(&policy.HTTPRequest{Endpoint: ep, Group: rec.GetGroup(), Body: body, Spend: spend}).Result
	}
	if res.Refusal == policy.RefusalInvalidJSON || res.Refusal == policy.RefusalTooManyOccurrences || !res.Policed {
		rep.NotReplayable++
		return nil
	}
	rep.Replayed++

	// Both costs at the replayed policy's prices, so the difference is the
	// decision's alone. A blocked record used nothing: zero before, and
	// unknown if it would now go through.
	var before, after policy.Cost
	beforeKnown, afterKnown := true, true
	if rec.GetStatus() != usage.StatusBlocked {
		before, beforeKnown = rp.cost(rec, rec.GetServiceTierSent(), rec.GetServiceTierReported())
	}
	switch {
	case res.Action == policy.ActionBlock:
	case rec.GetStatus() == usage.StatusBlocked:
		afterKnown = false
	default:
		reported := rec.GetServiceTierReported()
		if res.Sent.String() != tierOrNone(rec.GetServiceTierSent()) {
			reported = "" // another tier sent: what the upstream reported no longer applies
		}
		after, afterKnown = rp.cost(rec, res.Sent.String(), reported)
		if rp.spend != nil && rp.p.Priced() {
			rp.spend.Account(rp.p, budget.Charge{Group: rec.GetGroup(), At: at, Cost: after})
		}
	}

	from := rec.GetAction() + " " + tierOrNone(rec.GetServiceTierSent())
	to := res.Action.String() + " " + res.Sent.String()
	budgetBefore := rec.GetBudget()
	if budgetBefore == policy.BudgetLabel("") {
		budgetBefore = "" // none acted
	}
	ruleBefore, ruleAfter := cmp.Or(budgetBefore, rec.GetRule()), cmp.Or(res.Budget, res.Rule)
	switch {
	case from != to:
		rep.Changed++
	case ruleBefore != ruleAfter:
		rep.RuleOnly++
	default:
		return nil
	}
	k := replayKey{from, to, ruleBefore, ruleAfter, rec.GetGroup()}
	row := rp.rows[k]
	if row == nil {
		row = &replayRow{From: from, To: to, RuleBefore: k.ruleBefore, RuleAfter: k.ruleAfter, Group: k.group}
		rp.rows[k] = row
		rep.Changes = append(rep.Changes, row)
	}
	row.Count++
	if beforeKnown && afterKnown {
		row.before += before.Pico
		row.after += after.Pico
	} else {
		row.CostUnknown++
		rep.CostUnknown++
	}
	return nil
}

// cost prices the record's tokens at the tiers given, with the replayed
// policy's prices. Without prices every cost is a known nothing.
func (rp *replayer) cost(rec *tiergatev1.UsageRecord, sent, reported string) (policy.Cost, bool) {
	if !rp.p.Priced() {
		return policy.Cost{}, true
	}
	r := proto.Clone(rec).(*tiergatev1.UsageRecord)
	r.ServiceTierSent, r.ServiceTierReported, r.Status = sent, reported, usage.StatusCompleted
	c, ok := rp.p.PriceRecord(r, rec.GetCostUnpricedReason() == policy.UnpricedAudio)
	return c, ok && c.Unpriced == ""
}

// finish orders the rows (changes first, most frequent first) and writes
// their costs.
func (rp *replayer) finish() *replayReport {
	rep := rp.report
	slices.SortFunc(rep.Changes, func(a, b *replayRow) int {
		return cmp.Or(
			cmp.Compare(btoi(a.From == a.To), btoi(b.From == b.To)),
			cmp.Compare(b.Count, a.Count),
			cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To),
			cmp.Compare(a.RuleBefore, b.RuleBefore), cmp.Compare(a.RuleAfter, b.RuleAfter),
			cmp.Compare(a.Group, b.Group))
	})
	if rp.p.Priced() {
		for _, r := range rep.Changes {
			b, a := json.Number(decimal.String(r.before, 12)), json.Number(decimal.String(r.after, 12))
			r.CostBefore, r.CostAfter = &b, &a
		}
	}
	if rep.Changes == nil {
		rep.Changes = []*replayRow{}
	}
	return rep
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// writeReplayTable writes the report as counts, then the changed rows and
// the rule-only rows as aligned columns.
func writeReplayTable(w io.Writer, rep *replayReport) {
	fmt.Fprintf(w, "records %d, replayed %d, not replayable %d\nchanged %d, rule only %d, cost unknown %d\n",
		rep.Records, rep.Replayed, rep.NotReplayable, rep.Changed, rep.RuleOnly, rep.CostUnknown)
	for _, section := range []struct {
		title    string
		ruleOnly bool
	}{{"changed decisions", false}, {"rule-only changes", true}} {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(w, "\n%s:\n", section.title)
		fmt.Fprintln(tw, "FROM\tTO\tRULE_BEFORE\tRULE_AFTER\tGROUP\tCOUNT\tCOST_BEFORE\tCOST_AFTER\t")
		for _, r := range rep.Changes {
			if (r.From == r.To) != section.ruleOnly {
				continue
			}
			before, after := "-", "-"
			if r.CostBefore != nil {
				before, after = r.CostBefore.String(), r.CostAfter.String()
				if r.CostUnknown > 0 {
					after += fmt.Sprintf(" (%d unknown)", r.CostUnknown)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t\n", r.From, r.To, orDash(r.RuleBefore), orDash(r.RuleAfter),
				orDash(r.Group), r.Count, before, after)
		}
		_ = tw.Flush()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func tierOrNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// replayBody is the smallest body or frame that carries what a record
// says was asked for: the model and the tier (Anthropic: fast mode).
func replayBody(ep policy.Endpoint, model string, tier policy.Tier) []byte {
	var m map[string]string
	switch ep {
	case policy.EndpointMessages:
		m = map[string]string{}
		if tier == policy.TierPriority {
			m["speed"] = "fast"
		}
	case policy.EndpointResponsesWS, policy.EndpointRealtime:
		// The model is the session's (Request.SessionModels).
		m = map[string]string{"type": "response.create"}
		model = ""
		if ep == policy.EndpointRealtime {
			// Realtime carries the tier under response, where tiergate
			// reads it.
			b, _ := json.Marshal(map[string]any{"type": "response.create", "response": tierMap(tier)})
			return b
		}
	default:
		m = map[string]string{}
	}
	if model != "" {
		m["model"] = model
	}
	for k, v := range tierMap(tier) {
		m[k] = v
	}
	b, _ := json.Marshal(m) // maps of strings always encode
	return b
}

func tierMap(t policy.Tier) map[string]string {
	if t == policy.TierNone {
		return map[string]string{}
	}
	return map[string]string{"service_tier": t.String()}
}

// endpointNamed reads a record's endpoint name.
func endpointNamed(name string) (policy.Endpoint, bool) {
	for _, e := range []policy.Endpoint{policy.EndpointChatCompletions, policy.EndpointResponses, policy.EndpointMessages,
		policy.EndpointResponsesWS, policy.EndpointRealtime} {
		if e.String() == name {
			return e, true
		}
	}
	return policy.EndpointUnknown, false
}

// decisionTime is when a record's request was decided: its end less its
// duration.
func decisionTime(rec *tiergatev1.UsageRecord) (time.Time, error) {
	end, err := time.Parse(time.RFC3339Nano, rec.GetTime())
	if err != nil {
		return time.Time{}, fmt.Errorf("time: %w", err)
	}
	return end.Add(-time.Duration(rec.GetDurationMs()) * time.Millisecond), nil
}
