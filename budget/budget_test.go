package budget

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tiergate/tiergate/internal/pricetest"
	"github.com/tiergate/tiergate/policy"
)

func TestBounds(t *testing.T) {
	t.Parallel()
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		name       string
		window     policy.Window
		t          string
		start, end string
	}{
		{"a day runs from UTC midnight to UTC midnight", policy.WindowDay, "2026-12-07T13:00:00Z", "2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z"},
		{"the last second of a day is in that day", policy.WindowDay, "2026-12-07T23:59:59Z", "2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z"},
		{"midnight belongs to the day it starts", policy.WindowDay, "2026-12-08T00:00:00Z", "2026-12-08T00:00:00Z", "2026-12-09T00:00:00Z"},
		{"a local time is read in UTC", policy.WindowDay, "2026-12-08T01:00:00+02:00", "2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z"},
		{"a week starts on Monday", policy.WindowWeek, "2026-12-09T10:00:00Z", "2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z"},
		{"Sunday ends the week that began the Monday before", policy.WindowWeek, "2026-12-13T23:59:59Z", "2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z"},
		{"Monday midnight starts a new week", policy.WindowWeek, "2026-12-14T00:00:00Z", "2026-12-14T00:00:00Z", "2026-12-21T00:00:00Z"},
		{"a month starts on the first", policy.WindowMonth, "2026-12-31T23:59:59Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"a day before 1970 is still a calendar day", policy.WindowDay, "1969-12-31T12:00:00Z", "1969-12-31T00:00:00Z", "1970-01-01T00:00:00Z"},
		{"a week before 1970 still starts on Monday", policy.WindowWeek, "1969-12-31T12:00:00Z", "1969-12-29T00:00:00Z", "1970-01-05T00:00:00Z"},
		{"February of a leap year has 29 days", policy.WindowMonth, "2028-02-29T12:00:00Z", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start, end := Bounds(tc.window, at(tc.t))
			if !start.Equal(at(tc.start)) || !end.Equal(at(tc.end)) {
				t.Errorf("Bounds = [%s, %s), want [%s, %s)", start, end, tc.start, tc.end)
			}
		})
	}
}

func TestToMicrosRoundsHalfToEven(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		picos uint64
		want  int64
	}{
		{"an exact micro stays", 3_000_000, 3},
		{"below half rounds down", 2_499_999, 2},
		{"above half rounds up", 2_500_001, 3},
		{"half rounds to the even micro below", 2_500_000, 2},
		{"half rounds to the even micro above", 3_500_000, 4},
		{"half of the first micro rounds to zero", 500_000, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := toMicros(tc.picos); got != tc.want {
				t.Errorf("toMicros(%d) = %d, want %d", tc.picos, got, tc.want)
			}
		})
	}
}

var trackerPolicy = pricetest.Table() + `identity: {group_header: x-tiergate-group}
groups: [{name: codex-fast}, {name: team-a}]
budgets:
- name: fast-daily
  groups: [codex-fast]
  service_tiers: [priority]
  window: day
  limit: 2
  on_exhausted: filter
- name: all-weekly
  window: week
  limit: 5
  on_exhausted: block
- name: all-monthly
  service_tiers: [priority]
  models: ["gpt-5.5*"]
  window: month
  limit: 100
  on_exhausted: block
`

// clock is an injectable clock tests move by hand.
type clock struct{ ns atomic.Int64 }

func newClock(s string) *clock {
	c := &clock{}
	c.set(s)
	return c
}

func (c *clock) set(s string) {
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	c.ns.Store(v.UnixNano())
}

func (c *clock) now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

type trackerFixture struct {
	tracker *Tracker
	clock   *clock
	reg     *prometheus.Registry
	pol     atomic.Pointer[policy.Policy]
}

func newTrackerFixture(t *testing.T, yaml, now string) *trackerFixture {
	t.Helper()
	f := &trackerFixture{clock: newClock(now), reg: prometheus.NewRegistry()}
	p, err := policy.Load([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	f.pol.Store(p)
	f.tracker, err = New(NewMemory(), f.pol.Load, f.reg, Options{Now: f.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// spent returns what a decision made now reads for budget name and group.
func (f *trackerFixture) spent(t *testing.T, name, bucket string) (int64, int64) {
	t.Helper()
	for _, b := range f.pol.Load().Budgets() {
		if b.Name == name {
			v := f.tracker.View(f.tracker.Now())
			return v.Spent(&b, bucket)
		}
	}
	t.Fatalf("no budget %q", name)
	return 0, 0
}

// charge is a priced charge of units currency units at the clock's time.
func (f *trackerFixture) charge(group, model string, tier policy.Tier, micros int64) Charge {
	return Charge{Group: group, At: f.clock.now(), Cost: policy.Cost{Model: model, Tier: tier, Pico: uint64(micros) * PicosPerMicro}}
}

func TestAccountAddsToEveryApplicableBudget(t *testing.T) {
	t.Parallel()
	f := newTrackerFixture(t, trackerPolicy, "2026-12-07T10:00:00Z")
	p := f.pol.Load()
	f.tracker.Account(p, f.charge("codex-fast", "gpt-5.5", policy.TierPriority, 1_500_000))
	f.tracker.Account(p, f.charge("codex-fast", "gpt-4o", policy.TierNone, 250_000))
	f.tracker.Account(p, f.charge("stranger", "gpt-5.5", policy.TierPriority, 1_000_000))
	cases := []struct {
		name, budget, group string
		want                int64
	}{
		{"a filter budget counts only its tiers", "fast-daily", "codex-fast", 1_500_000},
		{"a block budget without tiers counts every tier", "all-weekly", "codex-fast", 1_750_000},
		{"a budget's models bound what it counts", "all-monthly", "codex-fast", 1_500_000},
		{"an unnamed group spends in other", "all-weekly", "other", 1_000_000},
		{"a budget does not count groups it does not list", "fast-daily", "other", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := f.spent(t, tc.budget, tc.group); got != tc.want {
				t.Errorf("spent = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestWindowsRollOver(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, budget, before, after string
	}{
		{"a day rolls over at UTC midnight", "fast-daily", "2026-12-07T23:59:59Z", "2026-12-08T00:00:00Z"},
		{"a week rolls over on Monday", "all-weekly", "2026-12-13T23:59:59Z", "2026-12-14T00:00:00Z"},
		{"a month rolls over on the first", "all-monthly", "2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newTrackerFixture(t, trackerPolicy, tc.before)
			f.tracker.Account(f.pol.Load(), f.charge("codex-fast", "gpt-5.5", policy.TierPriority, 3_000_000))
			if got, left := f.spent(t, tc.budget, "codex-fast"); got != 3_000_000 || left != 1 {
				t.Fatalf("before the boundary: spent %d with %d s left, want 3000000 with 1 s", got, left)
			}
			f.clock.set(tc.after)
			if got, _ := f.spent(t, tc.budget, "codex-fast"); got != 0 {
				t.Errorf("after the boundary: spent %d, want 0", got)
			}
		})
	}
}

func TestAStreamCrossingMidnightCountsWhereItStarted(t *testing.T) {
	t.Parallel()
	f := newTrackerFixture(t, trackerPolicy, "2026-12-07T23:59:30Z")
	decided := f.clock.now()
	f.clock.set("2026-12-08T00:00:30Z") // the stream ends after midnight
	c := f.charge("codex-fast", "gpt-5.5", policy.TierPriority, 2_000_000)
	c.At = decided
	f.tracker.Account(f.pol.Load(), c)
	if got, _ := f.spent(t, "fast-daily", "codex-fast"); got != 0 {
		t.Errorf("the new day has %d spent, want 0", got)
	}
	v := f.tracker.View(decided)
	b := f.pol.Load().Budgets()[0]
	if got, _ := v.Spent(&b, "codex-fast"); got != 2_000_000 {
		t.Errorf("the day the stream started has %d spent, want 2000000", got)
	}
}

func TestPrepareStartsCountersAtZero(t *testing.T) {
	t.Parallel()
	f := newTrackerFixture(t, trackerPolicy, "2026-12-07T10:00:00Z")
	f.tracker.Prepare(f.pol.Load())
	want := `
# HELP tiergate_budget_actions_total Requests and WebSocket turns an exhausted budget acted on: action filter (the tier was removed) or block (refused with 429).
# TYPE tiergate_budget_actions_total counter
tiergate_budget_actions_total{action="block",budget="all-monthly"} 0
tiergate_budget_actions_total{action="block",budget="all-weekly"} 0
tiergate_budget_actions_total{action="filter",budget="fast-daily"} 0
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "tiergate_budget_actions_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(f.tracker.metrics.unaccountedVec); n != 9 {
		t.Errorf("%d unaccounted series, want 9 (three budgets, three reasons)", n)
	}
}

func TestUnpricedChargesAreCountedAsUnaccounted(t *testing.T) {
	t.Parallel()
	f := newTrackerFixture(t, trackerPolicy, "2026-12-07T10:00:00Z")
	c := f.charge("codex-fast", "gpt-5.5", policy.TierPriority, 0)
	c.Cost.Unpriced = policy.UnpricedNoUsage
	f.tracker.Account(f.pol.Load(), c)
	if got, _ := f.spent(t, "fast-daily", "codex-fast"); got != 0 {
		t.Errorf("spent %d, want 0", got)
	}
	for _, name := range []string{"fast-daily", "all-weekly", "all-monthly"} {
		if got := testutil.ToFloat64(f.tracker.metrics.unaccountedVec.WithLabelValues(name, policy.UnpricedNoUsage)); got != 1 {
			t.Errorf("%s unaccounted = %v, want 1", name, got)
		}
	}
}

func TestMetricsAndAdminEndpoint(t *testing.T) {
	t.Parallel()
	f := newTrackerFixture(t, trackerPolicy, "2026-12-07T10:00:00Z")
	f.tracker.Account(f.pol.Load(), f.charge("codex-fast", "gpt-5.5", policy.TierPriority, 2_000_001))
	want := `
# HELP tiergate_budget_limit Each budget's limit for one group in one window, in currency units.
# TYPE tiergate_budget_limit gauge
tiergate_budget_limit{budget="all-monthly"} 100
tiergate_budget_limit{budget="all-weekly"} 5
tiergate_budget_limit{budget="fast-daily"} 2
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "tiergate_budget_limit"); err != nil {
		t.Error(err)
	}
	wantSpent := `
# HELP tiergate_budget_spent Spend in the current window, in currency units, as this replica knows it (with a per-replica store, each replica's own; dashboards take max by (budget, group)).
# TYPE tiergate_budget_spent gauge
tiergate_budget_spent{budget="all-monthly",group="codex-fast"} 2.000001
tiergate_budget_spent{budget="all-weekly",group="codex-fast"} 2.000001
tiergate_budget_spent{budget="fast-daily",group="codex-fast"} 2.000001
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(wantSpent), "tiergate_budget_spent"); err != nil {
		t.Error(err)
	}
	rec := httptest.NewRecorder()
	f.tracker.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/budgets", nil))
	var rows []map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &rows); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	wantRows := `[{"budget":"fast-daily","group":"codex-fast","window_start":"2026-12-07T00:00:00Z","window_end":"2026-12-08T00:00:00Z","spent":2.000001,"limit":2,"state":"exhausted","shadow":false},` +
		`{"budget":"all-weekly","group":"codex-fast","window_start":"2026-12-07T00:00:00Z","window_end":"2026-12-14T00:00:00Z","spent":2.000001,"limit":5,"state":"ok","shadow":false},` +
		`{"budget":"all-monthly","group":"codex-fast","window_start":"2026-12-01T00:00:00Z","window_end":"2027-01-01T00:00:00Z","spent":2.000001,"limit":100,"state":"ok","shadow":false}]`
	if got := strings.TrimSpace(rec.Body.String()); got != wantRows {
		t.Errorf("/budgets\n%s\nwant\n%s", got, wantRows)
	}
}

func TestAReloadThatChangesALimitAppliesToTheNextRequest(t *testing.T) {
	t.Parallel()
	f := newTrackerFixture(t, trackerPolicy, "2026-12-07T10:00:00Z")
	f.tracker.Account(f.pol.Load(), f.charge("codex-fast", "gpt-5.5", policy.TierPriority, 3_000_000))
	decide := func() policy.Decision {
		p := f.pol.Load()
		v := f.tracker.View(f.tracker.Now())
		return p.DecideHTTP(&policy.HTTPRequest{Endpoint: policy.EndpointResponses, Group: "codex-fast", Spend: &v,
			Body: []byte(`{"model":"gpt-5.5","service_tier":"priority"}`)}).Decision
	}
	if d := decide(); d.Budget != "fast-daily" || d.Action != policy.ActionFilter {
		t.Fatalf("before the reload: budget %q action %v, want fast-daily filter", d.Budget, d.Action)
	}
	raised, err := policy.Load([]byte(strings.Replace(trackerPolicy, "limit: 2\n", "limit: 4\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	f.pol.Store(raised)
	if d := decide(); d.Budget != "" || d.Action != policy.ActionPass {
		t.Errorf("after raising the limit: budget %q action %v, want none pass", d.Budget, d.Action)
	}
}

func TestMemoryDropsWindowsLongPast(t *testing.T) {
	t.Parallel()
	m := NewMemory()
	day := int64(24 * 60 * 60)
	old := Key{Budget: "b", Group: "g", Start: 100 * day, End: 101 * day}
	month := Key{Budget: "b", Group: "g", Start: 120 * day, End: 151 * day}
	m.Add(old, 5)
	m.Add(month, 7)
	m.Add(Key{Budget: "b", Group: "g", Start: 140 * day, End: 141 * day}, 1) // a new window, 40 days on
	if got := m.Spent(old); got != 0 {
		t.Errorf("a window that ended 39 days ago still holds %d", got)
	}
	if got := m.Spent(month); got != 7 {
		t.Errorf("a month's window that has not ended holds %d, want 7", got)
	}
}

func TestAShadowBudgetShowsItsSpendStateAndShadowInBudgets(t *testing.T) {
	t.Parallel()
	f := newTrackerFixture(t, strings.Replace(trackerPolicy, "  on_exhausted: filter\n", "  on_exhausted: filter\n  shadow: true\n", 1), "2026-12-07T10:00:00Z")
	p := f.pol.Load()
	f.tracker.Account(p, f.charge("codex-fast", "gpt-5.5", policy.TierPriority, 2_500_000))
	rec := httptest.NewRecorder()
	f.tracker.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/budgets", nil))
	var rows []struct {
		Budget, State string
		Spent         json.Number
		Shadow        bool
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &rows); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	shadows := 0
	for _, r := range rows {
		if r.Shadow {
			shadows++
			if r.Budget != "fast-daily" || r.State != StateExhausted || r.Spent != "2.5" {
				t.Errorf("shadow row %+v, want fast-daily exhausted at 2.5", r)
			}
		}
	}
	if shadows != 1 {
		t.Errorf("%d rows marked shadow, want fast-daily's only:\n%s", shadows, rec.Body)
	}
}
