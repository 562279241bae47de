package wsbridge

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/internal/pricetest"
)

// wsTurnPrices prices one turn of the fake upstream (120 input tokens, 20
// cached, 45 output) at 0.0021 at priority and 0.00021 at default; callers
// are named by x-tiergate-group.
var wsTurnPrices = "identity: {group_header: x-tiergate-group}\n" + pricetest.Table("priority: {input: 10, output: 20}")

// wsBudgetPolicy: one turn at priority, or at default, costs more than its
// budget's limit.
var wsBudgetPolicy = wsTurnPrices + `groups: [{name: team-a}, {name: team-c}]
budgets:
- name: team-a-priority
  groups: [team-a]
  service_tiers: [priority]
  window: day
  limit: 0.002
  on_exhausted: filter
- name: team-c-hard
  groups: [team-c]
  window: day
  limit: 0.0002
  on_exhausted: block
`

// withBudgets is a harness option giving the bridge a tracker on a clock
// fixed at now.
func withBudgets(t *testing.T, now string) func(*Options) {
	t.Helper()
	at, err := time.Parse(time.RFC3339, now)
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(at.UnixNano())
	return func(o *Options) {
		tr, err := budget.New(budget.NewMemory(), o.Store.Load, o.Registerer, budget.Options{
			Now: func() time.Time { return time.Unix(0, clock.Load()).UTC() },
		})
		if err != nil {
			t.Fatal(err)
		}
		o.Budgets = tr
	}
}

// priorityFrame is a Responses response.create asking for priority.
const priorityFrame = `{"type":"response.create","model":"gpt-5.5","service_tier":"priority","input":"hi"}`

// twoPriorityTurns runs two turns of priorityFrame in one session as
// team-a, then ends the session, and returns what reached the upstream and
// the two records.
func twoPriorityTurns(t *testing.T, h *harness) (upstream []string, recs []map[string]any) {
	t.Helper()
	c, _ := h.dial(t, PathResponses, withHeader("x-tiergate-group", "team-a"))
	fc := h.up.next(t)
	for range 2 {
		send(t, c, priorityFrame)
		until(t, c, "response.completed")
	}
	upstream = frameTexts(waitFrames(t, fc, 2))
	_ = c.Close(websocket.StatusNormalClosure, "")
	h.waitSessions(t)
	recs = h.records()
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	return upstream, recs
}

func TestBudgetJudgesEveryResponseCreate(t *testing.T) {
	t.Parallel()
	h := newHarness(t, wsBudgetPolicy, withBudgets(t, "2026-12-07T23:00:00Z"))
	got, recs := twoPriorityTurns(t, h)
	if got[0] != priorityFrame {
		t.Errorf("the first turn went upstream as %s, want it untouched", got[0])
	}
	if want := `{"type":"response.create","model":"gpt-5.5","input":"hi"}`; got[1] != want {
		t.Errorf("the turn after the budget ran out went upstream as %s, want %s", got[1], want)
	}
	checkRecord(t, recs[0], map[string]any{"action": "pass", "service_tier_sent": "priority", "budget": "none"})
	checkRecord(t, recs[1], map[string]any{"action": "filter", "service_tier_sent": "none", "budget": "team-a-priority"})
}

func TestBudgetRefusesATurnWithA429Event(t *testing.T) {
	t.Parallel()
	h := newHarness(t, wsBudgetPolicy, withBudgets(t, "2026-12-07T23:00:00Z"))
	c, _ := h.dial(t, PathResponses, withHeader("x-tiergate-group", "team-c"))
	fc := h.up.next(t)
	send(t, c, `{"type":"response.create","model":"gpt-5.5","input":"hi"}`)
	until(t, c, "response.completed")
	send(t, c, `{"type":"response.create","model":"gpt-5.5","input":"again"}`)
	ce, evs := closed(t, c)
	if ce.Code != websocket.StatusPolicyViolation {
		t.Errorf("closed with %d, want 1008", ce.Code)
	}
	if len(evs) != 1 {
		t.Fatalf("%d events before the close, want the error event only", len(evs))
	}
	ev := evs[0]
	for path, want := range map[string]string{
		"type": "error", "status": "429", "error.type": "rate_limit_error", "error.code": "budget_exhausted",
		"headers.retry-after": "3600",
	} {
		if got := ev.Get(strings.ReplaceAll(path, "retry-after", "retry\\-after")).String(); got != want {
			t.Errorf("event %s = %q, want %q (%s)", path, got, want, ev.Raw)
		}
	}
	if n := len(fc.received()); n != 1 {
		t.Errorf("the upstream received %d frames, want only the first turn's", n)
	}
	h.waitSessions(t)
	recs := h.records()
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	checkRecord(t, recs[1], map[string]any{"action": "block", "status": "blocked", "http_status": 429.0, "budget": "team-c-hard"})
}
