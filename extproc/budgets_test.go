package extproc

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/internal/pricetest"
	"github.com/tiergate/tiergate/policy"
)

// budgetPrices prices priority at 2 and 4 per million input and output
// tokens, so a response of priorityResponse (500 input and 250 output
// tokens at priority) costs 0.002; callers are named by x-tiergate-group.
var budgetPrices = "identity: {group_header: x-tiergate-group}\n" + pricetest.Table("priority: {input: 2, output: 4}")

// budgetsPolicy: priorityResponse's 0.002 is team-a's whole daily priority
// budget.
var budgetsPolicy = budgetPrices + `groups: [{name: team-a}, {name: team-b}, {name: team-c}]
budgets:
- name: team-a-priority
  groups: [team-a, team-b]
  service_tiers: [priority]
  window: day
  limit: 0.002
  on_exhausted: filter
- name: team-c-hard
  groups: [team-c]
  window: week
  limit: 0.002
  on_exhausted: block
`

// priorityResponse answers with usage worth 0.002 at priority.
func priorityResponse(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("content-type", "application/json")
	_, _ = w.Write([]byte(`{"id":"resp_1","object":"response","status":"completed","model":"gpt-5.5","service_tier":"priority","usage":{"input_tokens":500,"output_tokens":250,"total_tokens":750}}`))
}

// budgetHarness is a harness whose server keeps spend with a clock the test
// sets.
func budgetHarness(t *testing.T, now string) (*harness, *atomic.Int64) {
	t.Helper()
	h, clock, _ := budgetHarnessTracker(t, now)
	return h, clock
}

// budgetHarnessTracker is budgetHarness that also returns the tracker.
func budgetHarnessTracker(t *testing.T, now string) (*harness, *atomic.Int64, *budget.Tracker) {
	t.Helper()
	return trackedHarness(t, budgetsPolicy, now, nil)
}

// trackedHarness is a harness over policyYAML whose server keeps spend
// with a clock starting at now (RFC 3339) that the test may move, and
// answers with priorityResponse. configure, when given, adjusts the
// server's options further.
func trackedHarness(t *testing.T, policyYAML, now string, configure func(*Options)) (*harness, *atomic.Int64, *budget.Tracker) {
	t.Helper()
	var clock atomic.Int64
	start, err := time.Parse(time.RFC3339, now)
	if err != nil {
		t.Fatal(err)
	}
	clock.Store(start.UnixNano())
	var tr *budget.Tracker
	h := newHarnessWith(t, policyYAML, func(o *Options, reg *prometheus.Registry) {
		var err error
		tr, err = budget.New(budget.NewMemory(), o.Store.Load, reg, budget.Options{
			Now: func() time.Time { return time.Unix(0, clock.Load()).UTC() },
		})
		if err != nil {
			t.Fatal(err)
		}
		o.Budgets = tr
		if configure != nil {
			configure(o)
		}
	})
	h.setResponse(priorityResponse)
	return h, &clock, tr
}

func TestBudgetFiltersTheNextPriorityRequest(t *testing.T) {
	t.Parallel()
	h, clock := budgetHarness(t, "2026-12-07T10:00:00Z")
	send := func(group, tier string) {
		t.Helper()
		body := `{"model":"gpt-5.5","input":"hi","service_tier":"` + tier + `"}`
		if resp, b := h.do("POST", "/v1/responses", map[string]string{"x-tiergate-group": group}, []byte(body)); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
	}
	upstreamTier := func(n int) string {
		t.Helper()
		got := h.upstream()
		if len(got) < n {
			t.Fatalf("%d requests reached the upstream, want %d", len(got), n)
		}
		return gjson.GetBytes(got[n-1].body, "service_tier").String()
	}

	send("team-a", "priority") // spends the whole budget
	h.record(1)
	if got := upstreamTier(1); got != "priority" {
		t.Fatalf("the first request went with %q, want priority", got)
	}
	cases := []struct {
		name, group, tier, want, budget string
	}{
		{"the group's next priority request goes without a tier", "team-a", "priority", "", "team-a-priority"},
		{"another group under the same budget keeps its own spend", "team-b", "priority", "priority", "none"},
		{"a tier the budget does not count is untouched", "team-a", "flex", "flex", "none"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			send(tc.group, tc.tier)
			rec := h.record(i + 2)
			if got := upstreamTier(i + 2); got != tc.want {
				t.Errorf("upstream got service_tier %q, want %q", got, tc.want)
			}
			if got, _ := rec["budget"].(string); got != tc.budget {
				t.Errorf("record's budget = %q, want %q (%v)", got, tc.budget, rec)
			}
			if tc.budget != "none" && rec["action"] != "filter" {
				t.Errorf("record's action = %v, want filter", rec["action"])
			}
		})
	}
	t.Run("the next day starts from nothing", func(t *testing.T) {
		clock.Store(time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC).UnixNano())
		send("team-a", "priority")
		if got := upstreamTier(len(cases) + 2); got != "priority" {
			t.Errorf("upstream got service_tier %q after midnight, want priority", got)
		}
	})
	if n := metricValue(t, h.reg, "tiergate_budget_actions_total", map[string]string{"budget": "team-a-priority", "action": "filter"}); n != 1 {
		t.Errorf("tiergate_budget_actions_total = %v, want 1", n)
	}
	if n := metricValue(t, h.reg, "tiergate_policy_decisions_total", map[string]string{"budget": "team-a-priority", "action": "filter"}); n != 1 {
		t.Errorf("tiergate_policy_decisions_total{budget=team-a-priority} = %v, want 1", n)
	}
}

func TestBudgetRefusesWithA429(t *testing.T) {
	t.Parallel()
	// Sunday 23:00: the week ends in an hour.
	h, _ := budgetHarness(t, "2026-12-13T23:00:00Z")
	hdr := map[string]string{"x-tiergate-group": "team-c"}
	if resp, b := h.do("POST", "/v1/responses", hdr, []byte(`{"model":"gpt-5.5","service_tier":"priority"}`)); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: status %d: %s", resp.StatusCode, b)
	}
	h.record(1)
	resp, b := h.doStatus("POST", "/v1/chat/completions", hdr, []byte(`{"model":"gpt-5.5","messages":[]}`), http.StatusTooManyRequests)
	for k, want := range map[string]string{"retry-after": "3600", "x-should-retry": "false", "x-tiergate-budget": "team-c-hard", "content-type": "application/json"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if gjson.GetBytes(b, "error.code").String() != "budget_exhausted" || gjson.GetBytes(b, "error.type").String() != "rate_limit_error" {
		t.Errorf("body %s", b)
	}
	if n := len(h.upstream()); n != 1 {
		t.Errorf("%d requests reached the upstream, want 1", n)
	}
	md := h.proxy.Metadata()
	if len(md) == 0 {
		t.Fatal("no dynamic metadata")
	}
	last := md[len(md)-1].GetFields()[metadataNamespace].GetStructValue().GetFields()
	if got := last["budget"].GetStringValue(); got != "team-c-hard" {
		t.Errorf("metadata budget = %q, want team-c-hard (%v)", got, last)
	}
	rec := h.record(2)
	for k, want := range map[string]any{"action": "block", "status": "blocked", "http_status": 429.0, "budget": "team-c-hard"} {
		if rec[k] != want {
			t.Errorf("record[%s] = %v, want %v", k, rec[k], want)
		}
	}
}

func TestAStreamCrossingMidnightCountsInTheDayItStarted(t *testing.T) {
	t.Parallel()
	h, clock, tr := budgetHarnessTracker(t, "2026-12-07T23:59:59Z")
	decided := time.Unix(0, clock.Load()).UTC()
	h.setResponse(func(w http.ResponseWriter, r *http.Request) {
		// The response runs past midnight: its usage arrives on the 8th.
		clock.Store(time.Date(2026, 12, 8, 0, 0, 1, 0, time.UTC).UnixNano())
		sse(responsesPriorityStream, 64)(w, r)
	})
	hdr := map[string]string{"x-tiergate-group": "team-a"}
	h.do("POST", "/v1/responses", hdr, []byte(`{"model":"gpt-5.5","stream":true,"service_tier":"priority"}`))
	h.record(1)
	b := h.srv.opts.Store.Load().Budgets()[0]
	started := tr.View(decided)
	if spent, _ := started.Spent(&b, "team-a"); spent != 2000 {
		t.Errorf("the 7th has %d micro-units spent, want 2000", spent)
	}
	ended := tr.View(tr.Now())
	if spent, _ := ended.Spent(&b, "team-a"); spent != 0 {
		t.Errorf("the 8th has %d micro-units spent, want 0", spent)
	}
}

// responsesPriorityStream is a Responses stream whose usage is worth 0.002
// at priority.
const responsesPriorityStream = "event: response.created\n" +
	"data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_2\",\"status\":\"in_progress\",\"model\":\"gpt-5.5\",\"usage\":null}}\n\n" +
	"event: response.completed\n" +
	"data: {\"type\":\"response.completed\",\"sequence_number\":1,\"response\":{\"id\":\"resp_2\",\"status\":\"completed\",\"model\":\"gpt-5.5\",\"service_tier\":\"priority\",\"usage\":{\"input_tokens\":500,\"output_tokens\":250,\"total_tokens\":750}}}\n\n"

func TestAReloadThatRaisesALimitAppliesToTheNextRequest(t *testing.T) {
	t.Parallel()
	h, _ := budgetHarness(t, "2026-12-07T10:00:00Z")
	hdr := map[string]string{"x-tiergate-group": "team-c"}
	body := []byte(`{"model":"gpt-5.5","service_tier":"priority"}`)
	h.do("POST", "/v1/responses", hdr, body) // spends team-c's whole budget
	h.record(1)
	if resp, _ := h.do("POST", "/v1/responses", hdr, body); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d at the limit, want 429", resp.StatusCode)
	}
	raised, err := policy.Load([]byte(strings.Replace(budgetsPolicy, "limit: 0.002\n  on_exhausted: block", "limit: 0.005\n  on_exhausted: block", 1)))
	if err != nil {
		t.Fatal(err)
	}
	h.srv.opts.Store.Set(raised)
	if resp, b := h.do("POST", "/v1/responses", hdr, body); resp.StatusCode != http.StatusOK {
		t.Errorf("status %d after raising the limit, want 200: %s", resp.StatusCode, b)
	}
}
