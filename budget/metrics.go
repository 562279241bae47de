package budget

import (
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/policy"
)

// Metric names, defined once.
const (
	metricSpent       = "tiergate_budget_spent"
	metricLimit       = "tiergate_budget_limit"
	metricActions     = "tiergate_budget_actions_total"
	metricUnaccounted = "tiergate_budget_unaccounted_total"
	metricStoreUp     = "tiergate_budget_store_up"
	metricStoreErrors = "tiergate_budget_store_errors_total"
	metricDropped     = "tiergate_budget_increments_dropped_total"
)

type metrics struct {
	actions        *prometheus.CounterVec
	unaccountedVec *prometheus.CounterVec
	store          *storeMetrics
}

// storeMetrics are the shared store's health: they exist with the memory
// store too (up, no errors), so alerts need no special case.
type storeMetrics struct {
	up      prometheus.Gauge
	errors  *prometheus.CounterVec
	dropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, t *Tracker) (*metrics, error) {
	m := &metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricActions,
			Help: "Requests and WebSocket turns an exhausted budget acted on: action filter (the tier was removed) or block (refused with 429).",
		}, []string{"budget", "action"}),
		unaccountedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricUnaccounted,
			Help: "Finished requests and turns a budget applied to that added nothing to its spend, by reason: no_usage (the upstream reported no usage), no_price (no price for the model or tier), audio (a Realtime turn with audio tokens).",
		}, []string{"budget", "reason"}),
		store: &storeMetrics{
			up: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: metricStoreUp,
				Help: "1 when the budget store answers (always with the memory store), 0 while Redis is unreachable or refuses the credentials.",
			}),
			errors: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: metricStoreErrors,
				Help: "Failed budget store operations, by op: connect (the client could not be set up: unreadable TLS files), incr (sending increments), incr_retry (increments sent again after an ambiguous failure: they may count twice), refresh (reading the totals back).",
			}, []string{"op"}),
			dropped: prometheus.NewCounter(prometheus.CounterOpts{
				Name: metricDropped,
				Help: "Budget increments dropped because more distinct keys than the bound (10,000) were waiting for Redis.",
			}),
		},
	}
	m.store.up.Set(1)
	for _, op := range storeOps {
		m.store.errors.WithLabelValues(op)
	}
	for _, c := range []prometheus.Collector{m.actions, m.unaccountedVec, spendCollector{t}, m.store.up, m.store.errors, m.store.dropped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	return m, nil
}

// Prepare starts at zero the counters of p's budgets (each budget's own
// action, and every unaccounted reason), so that rates and alerts see a
// series before its first event. Call it whenever p comes into force.
func (t *Tracker) Prepare(p *policy.Policy) {
	for _, b := range p.Budgets() {
		t.metrics.actions.WithLabelValues(b.Name, b.Action.String())
		for _, r := range policy.UnpricedReasons {
			t.metrics.unaccountedVec.WithLabelValues(b.Name, r)
		}
	}
}

func (m *metrics) action(budget string, a policy.Action) {
	m.actions.WithLabelValues(budget, a.String()).Inc()
}

func (m *metrics) unaccounted(budget, reason string) {
	m.unaccountedVec.WithLabelValues(budget, reason).Inc()
}

var (
	spentDesc = prometheus.NewDesc(metricSpent,
		"Spend in the current window, in currency units, as this replica knows it (with a per-replica store, each replica's own; dashboards take max by (budget, group)).",
		[]string{"budget", "group"}, nil)
	limitDesc = prometheus.NewDesc(metricLimit,
		"Each budget's limit for one group in one window, in currency units.",
		[]string{"budget"}, nil)
)

// spendCollector reports spend and limits of the policy in force at scrape
// time, so a reload that adds, drops or changes a budget shows at once.
type spendCollector struct{ t *Tracker }

func (c spendCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- spentDesc
	ch <- limitDesc
}

func (c spendCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.t.Snapshot() {
		ch <- prometheus.MustNewConstMetric(spentDesc, prometheus.GaugeValue, units(s.Spent), s.Budget, s.Group)
	}
	p := c.t.current()
	if p == nil {
		return
	}
	for _, b := range p.Budgets() {
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, units(b.Limit), b.Name)
	}
}

// units converts micro-units to currency units for display.
func units(micros int64) float64 { return float64(micros) / policy.MicrosPerUnit }

// Status is one budget's spend for one group in the current window.
type Status struct {
	Budget      string
	Group       string
	WindowStart time.Time
	WindowEnd   time.Time
	// Spent and Limit are in micro-units.
	Spent, Limit int64
	// Shadow: the budget acts on nothing (its state says what it would do).
	Shadow bool
}

// Exhausted reports whether the spend has reached the limit: the budget
// acts on the group's next request it applies to.
func (s Status) Exhausted() bool { return s.Spent >= s.Limit }

// Snapshot lists, for the policy in force, each budget's spend in its
// current window: every group with spend there, and every group a budget
// names even with none. Ordered by budget (file order), then group.
func (t *Tracker) Snapshot() []Status {
	p := t.current()
	if p == nil || len(p.Budgets()) == 0 {
		return nil
	}
	now := t.now()
	var out []Status
	// The longest window is a month: every current window starts after
	// this.
	entries := t.Store().Entries(now.AddDate(0, -1, -1))
	for _, b := range p.Budgets() {
		start, end := Bounds(b.Window, now)
		spent := map[string]int64{}
		for _, g := range b.Groups {
			spent[g] = 0
		}
		for _, e := range entries {
			if e.Budget == b.Name && e.Start == start.Unix() {
				spent[e.Group] += e.Spent
			}
		}
		groups := make([]string, 0, len(spent))
		for g := range spent {
			groups = append(groups, g)
		}
		slices.Sort(groups)
		for _, g := range groups {
			out = append(out, Status{Budget: b.Name, Group: g, WindowStart: start, WindowEnd: end, Spent: spent[g], Limit: b.Limit, Shadow: b.Shadow})
		}
	}
	return out
}
