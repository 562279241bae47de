package usage

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// TokensMetric is the name of the token counter. Token counts are the unit,
// so the name carries it (Prometheus naming: a _total counter named by what
// it counts).
const TokensMetric = "tiergate_tokens_total"

// Cost metric names. Cost is counted in currency units (the policy's
// prices.currency), the unit Prometheus naming asks to be in the name but
// which the policy chooses; the records say which.
const (
	CostMetric         = "tiergate_cost_total"
	CostUnpricedMetric = "tiergate_cost_unpriced_total"
)

// Values of the counter's "type" label. Input includes cached input and
// output includes reasoning, as in the usage record, so the types overlap and
// are not to be summed.
const (
	TokenInput       = "input"        // Usage.InputTokens
	TokenCachedInput = "cached_input" // Usage.CachedInputTokens
	// TokenCacheWriteInput counts Usage.CacheWriteInputTokens (part of input).
	TokenCacheWriteInput = "cache_write_input"
	TokenOutput          = "output"    // Usage.OutputTokens
	TokenReasoning       = "reasoning" // Usage.ReasoningTokens
)

// Metrics counts the tokens upstreams reported, by endpoint, model, billed
// service tier, caller group and token type.
type Metrics struct {
	tokens   *prometheus.CounterVec
	cost     *prometheus.CounterVec
	unpriced *prometheus.CounterVec

	// mu guards costSeries and tokenSeries: each series resolved once
	// (every request adds to up to five token series and a priced one to a
	// cost series, and resolving their label values validates and hashes
	// them each time). Bounded as the series are: by the labels' bounds.
	mu          sync.RWMutex
	costSeries  map[[4]string]prometheus.Counter
	tokenSeries map[[4]string]*tokenCounters
}

// tokenCounters are the series of one endpoint, model, tier and group, by
// token type (tokenTypes' order), each resolved when it is first counted,
// so that a type never reported has no series.
type tokenCounters [len(tokenTypes)]prometheus.Counter

// tokenTypes are the values of the token counter's type label.
var tokenTypes = [...]string{TokenInput, TokenCachedInput, TokenCacheWriteInput, TokenOutput, TokenReasoning}

// NewMetrics registers the token counter on reg (never the global registry,
// so that tests and embedded servers stay isolated). Registering on a
// registry that already holds the counter reuses it. A nil reg gives counters
// that count but are not exported.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: TokensMetric,
			Help: "Tokens the upstream reported using, in tokens, by type: input (cached and cache-write input included), " +
				"cached_input, cache_write_input, output (reasoning included), reasoning. Counts the upstream did not report are not added.",
		}, []string{"endpoint", "model", "service_tier", "group", "type"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: CostMetric,
			Help: "What requests and WebSocket turns cost at the policy's prices, in units of its currency, by endpoint, " +
				"model priced (bounded), the tier priced (price_tier) and group (bounded).",
		}, []string{"endpoint", "model", "price_tier", "group"}),
		unpriced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: CostUnpricedMetric,
			Help: "Requests and WebSocket turns the policy's prices could not price, by endpoint and reason: " +
				"no_usage (tokens unknown), no_price (no price for the model or tier), audio (a Realtime turn with audio tokens).",
		}, []string{"endpoint", "reason"}),
	}
	for _, c := range []**prometheus.CounterVec{&m.tokens, &m.cost, &m.unpriced} {
		if err := register(reg, c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// register registers *c on reg, or takes the one reg already holds. A nil
// reg registers nothing.
func register(reg prometheus.Registerer, c **prometheus.CounterVec) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(*c)
	if err == nil {
		return nil
	}
	are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
	if !ok {
		return err
	}
	existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
	if !ok {
		return err
	}
	*c = existing
	return nil
}

// StartUnpriced creates the unpriced series of endpoint at zero, one per
// reason, so that rate() and alerts see them before the first one counts.
func (m *Metrics) StartUnpriced(endpoint string, reasons ...string) {
	if m == nil {
		return
	}
	for _, r := range reasons {
		m.unpriced.WithLabelValues(endpoint, r)
	}
}

// AddCost counts a priced request or turn: pico is its cost in units of
// 10⁻¹² of the currency. The labels must be bounded, as for Add.
func (m *Metrics) AddCost(endpoint, model, tier, group string, pico uint64) {
	if m == nil {
		return
	}
	k := [4]string{endpoint, model, tier, group}
	m.mu.RLock()
	c, ok := m.costSeries[k]
	m.mu.RUnlock()
	if !ok {
		c = m.cost.WithLabelValues(endpoint, model, tier, group)
		m.mu.Lock()
		if m.costSeries == nil {
			m.costSeries = map[[4]string]prometheus.Counter{}
		}
		m.costSeries[k] = c
		m.mu.Unlock()
	}
	c.Add(float64(pico) / 1e12)
}

// Unpriced counts a request or turn that could not be priced, and why.
func (m *Metrics) Unpriced(endpoint, reason string) {
	if m == nil {
		return
	}
	m.unpriced.WithLabelValues(endpoint, reason).Inc()
}

// Add counts the known token counts of u; an unknown count adds nothing.
//
// Every label must come from a bounded set, or the series multiply without
// end: endpoint, tier and group come from the policy, and model must already
// be bounded by the caller (the policy's metrics.models and the models its
// rules name, every other model as "other"). Add does not check. tier is the
// tier billed (Usage.BilledTier), bounded. A nil *Metrics counts nothing.
func (m *Metrics) Add(endpoint, model, tier, group string, u Usage) {
	if m == nil {
		return
	}
	counts := [len(tokenTypes)]int64{u.InputTokens, u.CachedInputTokens, u.CacheWriteInputTokens, u.OutputTokens, u.ReasoningTokens}
	k := [4]string{endpoint, model, tier, group}
	var series tokenCounters
	m.mu.RLock()
	if s := m.tokenSeries[k]; s != nil {
		series = *s
	}
	m.mu.RUnlock()
	for i, n := range counts {
		if n < 0 {
			continue
		}
		if series[i] == nil {
			series[i] = m.tokenSeriesOf(k, i)
		}
		series[i].Add(float64(n))
	}
}

// tokenSeriesOf resolves and keeps the series of k for token type i.
func (m *Metrics) tokenSeriesOf(k [4]string, i int) prometheus.Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.tokenSeries[k]
	if s == nil {
		if m.tokenSeries == nil {
			m.tokenSeries = map[[4]string]*tokenCounters{}
		}
		s = new(tokenCounters)
		m.tokenSeries[k] = s
	}
	if s[i] == nil {
		s[i] = m.tokens.WithLabelValues(k[0], k[1], k[2], k[3], tokenTypes[i])
	}
	return s[i]
}
