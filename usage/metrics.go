package usage

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// TokensMetric is the name of the token counter. Token counts are the unit,
// so the name carries it (Prometheus naming: a _total counter named by what
// it counts).
const TokensMetric = "tiergate_tokens_total"

// Values of the counter's "type" label. Input includes cached input and
// output includes reasoning, as in the usage record, so the types overlap and
// are not to be summed.
const (
	TokenInput       = "input"        // Usage.InputTokens
	TokenCachedInput = "cached_input" // Usage.CachedInputTokens
	TokenOutput      = "output"       // Usage.OutputTokens
	TokenReasoning   = "reasoning"    // Usage.ReasoningTokens
)

// Metrics counts the tokens upstreams reported, by endpoint, model, billed
// service tier, caller group and token type.
type Metrics struct {
	tokens *prometheus.CounterVec
}

// NewMetrics registers the token counter on reg (never the global registry,
// so that tests and embedded servers stay isolated). Registering on a
// registry that already holds the counter reuses it. A nil reg gives counters
// that count but are not exported.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	tokens := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: TokensMetric,
		Help: "Tokens the upstream reported using, in tokens, by type: input (cached input included), " +
			"cached_input, output (reasoning included), reasoning. Counts the upstream did not report are not added.",
	}, []string{"endpoint", "model", "service_tier", "group", "type"})
	if reg != nil {
		if err := reg.Register(tokens); err != nil {
			are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
			if !ok {
				return nil, err
			}
			existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
			if !ok {
				return nil, err
			}
			tokens = existing
		}
	}
	return &Metrics{tokens: tokens}, nil
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
	for _, c := range [...]struct {
		typ string
		n   int64
	}{
		{TokenInput, u.InputTokens},
		{TokenCachedInput, u.CachedInputTokens},
		{TokenOutput, u.OutputTokens},
		{TokenReasoning, u.ReasoningTokens},
	} {
		if c.n >= 0 {
			m.tokens.WithLabelValues(endpoint, model, tier, group, c.typ).Add(float64(c.n))
		}
	}
}
