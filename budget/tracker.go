package budget

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/policy"
)

// PicosPerMicro is how many of the cost's units (10⁻¹² of the currency)
// make one unit of spend (10⁻⁶).
const PicosPerMicro = 1_000_000

// Charge is what a finished request or WebSocket turn cost, as spend needs
// it. Blocked and refused requests have no charge.
type Charge struct {
	// Group is the caller's group as resolved ("" for none).
	Group string
	// At is the decision time (the request's headers, the turn's
	// response.create): the cost goes to the window that contains it.
	At time.Time
	// Cost is the request's cost under the policy it was decided by (its
	// model after aliases, the tier priced, and the amount or why there is
	// none).
	Cost policy.Cost
}

// Tracker keeps spend for the policy in force: it gives decisions a View of
// spend and adds each finished request's cost to the budgets it falls
// under. It is safe for concurrent use.
type Tracker struct {
	store   Store
	current func() *policy.Policy
	now     func() time.Time
	metrics *metrics
}

// Options tune a Tracker. The zero value is ready to use.
type Options struct {
	// Now is the clock (default time.Now); tests inject their own to cross
	// window boundaries.
	Now func() time.Time
}

// New returns a tracker over store for the policy current returns (read at
// each use, so a reload applies to the next request), registering the
// budget metrics on reg.
func New(store Store, current func() *policy.Policy, reg prometheus.Registerer, opts Options) (*Tracker, error) {
	t := &Tracker{store: store, current: current, now: opts.Now}
	if t.now == nil {
		t.now = time.Now
	}
	m, err := newMetrics(reg, t)
	if err != nil {
		return nil, fmt.Errorf("budget metrics: %w", err)
	}
	t.metrics = m
	return t, nil
}

// Now returns the tracker's clock reading: the decision time of a request
// that starts now.
func (t *Tracker) Now() time.Time { return t.now() }

// Store returns the store spend is kept in.
func (t *Tracker) Store() Store { return t.store }

// View is spend as of one decision time; it implements policy.SpendView.
// Callers keep it in their per-request state and pass its address, so a
// decision allocates nothing for it.
type View struct {
	t  *Tracker
	at time.Time
}

// View returns the view of spend for a decision made at at. A nil tracker
// gives a view that reports no spend.
func (t *Tracker) View(at time.Time) View { return View{t: t, at: at} }

// At returns the decision time the view was taken for.
func (v *View) At() time.Time { return v.at }

// Spent implements policy.SpendView.
func (v *View) Spent(b *policy.Budget, bucket string) (micros, secondsLeft int64) {
	start, end := Bounds(b.Window, v.at)
	if v.t != nil {
		micros = v.t.store.Spent(Key{Budget: b.Name, Group: bucket, Start: start.Unix(), End: end.Unix()})
	}
	return micros, secondsUntil(v.at, end)
}

// Acted counts a decision that a budget acted on (a filter or a 429).
func (t *Tracker) Acted(d *policy.Decision) {
	if t == nil || d.Budget == "" {
		return
	}
	t.metrics.action(d.Budget, d.Action)
}

// Account adds a finished request's cost to every budget of p that applies
// to its group, model and billed tier, in the window that contains its
// decision time. A charge without a cost is counted as unaccounted for each
// of those budgets instead.
func (t *Tracker) Account(p *policy.Policy, c Charge) {
	if t == nil || p == nil {
		return
	}
	budgets := p.Budgets()
	if len(budgets) == 0 {
		return
	}
	bucket := p.GroupBucket(c.Group)
	micros := toMicros(c.Cost.Pico)
	for i := range budgets {
		b := &budgets[i]
		if !b.AppliesToGroup(bucket) || !b.CoversModel(c.Cost.Model) || !b.CountsTier(c.Cost.Tier) {
			continue
		}
		if c.Cost.Unpriced != "" {
			t.metrics.unaccounted(b.Name, c.Cost.Unpriced)
			continue
		}
		if micros == 0 {
			continue
		}
		start, end := Bounds(b.Window, c.At)
		t.store.Add(Key{Budget: b.Name, Group: bucket, Start: start.Unix(), End: end.Unix()}, micros)
	}
}

// toMicros rounds a cost in 10⁻¹² units to micro-units, half to even, so
// that rounding has no bias over many requests.
func toMicros(picos uint64) int64 {
	q, r := int64(picos/PicosPerMicro), picos%PicosPerMicro
	switch {
	case r > PicosPerMicro/2, r == PicosPerMicro/2 && q%2 == 1:
		q++
	}
	return q
}
