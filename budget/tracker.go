package budget

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
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
	// store is swapped by Configure; decisions load it once per read.
	store      atomic.Pointer[storeRef]
	current    func() *policy.Policy
	now        func() time.Time
	metrics    *metrics
	log        *slog.Logger
	maxPending int

	// mu serialises Configure and Close; storeCfg is the store's settings
	// (nil: memory).
	mu       sync.Mutex
	storeCfg *policy.RedisStore
}

// storeRef holds the store in force, for an atomic swap.
type storeRef struct{ Store }

// Options tune a Tracker. The zero value is ready to use.
type Options struct {
	// Now is the clock (default time.Now); tests inject their own to cross
	// window boundaries.
	Now func() time.Time
	// Log receives the store's connection changes (default: discarded).
	Log *slog.Logger
	// MaxPending bounds the distinct keys whose increments wait for Redis
	// (default DefaultMaxPending); tests lower it to reach the bound.
	MaxPending int
}

// New returns a tracker over store for the policy current returns (read at
// each use, so a reload applies to the next request), registering the
// budget metrics on reg.
func New(store Store, current func() *policy.Policy, reg prometheus.Registerer, opts Options) (*Tracker, error) {
	t := &Tracker{current: current, now: opts.Now, log: opts.Log, maxPending: opts.MaxPending}
	t.store.Store(&storeRef{store})
	if t.now == nil {
		t.now = time.Now
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if t.maxPending <= 0 {
		t.maxPending = DefaultMaxPending
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
func (t *Tracker) Store() Store { return t.store.Load().Store }

// Configure puts the store cfg describes in force (nil: memory), as a
// policy that comes into force asks. The same settings again change
// nothing. Other Redis settings reconnect the Redis store, which keeps its
// pending increments. Moving from memory to Redis sends this replica's
// spend so far to Redis; moving from Redis to memory keeps the spend last
// known, after one last attempt to send what is pending (what still is, is
// counted as dropped).
func (t *Tracker) Configure(cfg *policy.RedisStore) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.storeCfg.Equal(cfg) {
		return
	}
	t.storeCfg = cfg
	cur := t.Store()
	r, isRedis := cur.(*Redis)
	switch {
	case cfg == nil && isRedis:
		m := NewMemory()
		for _, e := range r.Entries(time.Time{}) {
			m.Add(e.Key, e.Spent)
		}
		t.store.Store(&storeRef{m})
		r.Close()
		t.metrics.store.dropped.Add(float64(r.Pending()))
		t.metrics.store.up.Set(1)
	case cfg == nil:
	case isRedis:
		r.Reconfigure(cfg)
	default:
		nr := newRedis(cfg, redisOptions{log: t.log, metrics: t.metrics.store, maxPending: t.maxPending, now: t.now, keys: t.policyKeys})
		for _, e := range cur.Entries(time.Time{}) {
			nr.Add(e.Key, e.Spent)
		}
		t.store.Store(&storeRef{nr})
	}
}

// StoreStatus returns the Redis store's state (ok, unreachable or
// auth_failed), or "" with the memory store.
func (t *Tracker) StoreStatus() string {
	if r, ok := t.Store().(*Redis); ok {
		return r.Status()
	}
	return ""
}

// Close stops a Redis store after one last attempt to send what is
// pending. The tracker must not be used after.
func (t *Tracker) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r, ok := t.Store().(*Redis); ok {
		r.Close()
	}
}

// policyKeys lists the counters decisions under the policy in force may
// read at now: each budget's groups (every bucket for a budget without
// groups) in its current window.
func (t *Tracker) policyKeys(now time.Time) []Key {
	p := t.current()
	if p == nil {
		return nil
	}
	var every []string
	var keys []Key
	for _, b := range p.Budgets() {
		start, end := Bounds(b.Window, now)
		groups := b.Groups
		if len(groups) == 0 {
			if every == nil {
				every = append(p.GroupNames(), "other", "none")
			}
			groups = every
		}
		for _, g := range groups {
			keys = append(keys, Key{Budget: b.Name, Group: g, Start: start.Unix(), End: end.Unix()})
		}
	}
	return keys
}

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
		micros = v.t.store.Load().Spent(Key{Budget: b.Name, Group: bucket, Start: start.Unix(), End: end.Unix()})
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
	store := t.Store()
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
		store.Add(Key{Budget: b.Name, Group: bucket, Start: start.Unix(), End: end.Unix()}, micros)
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
