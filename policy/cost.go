package policy

import (
	"math/bits"

	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// Reasons a record that could be priced has no cost, the values of
// cost_unpriced_reason and of tiergate_cost_unpriced_total's reason.
const (
	// UnpricedNoUsage: the input or output token count is unknown.
	UnpricedNoUsage = "no_usage"
	// UnpricedNoPrice: the price table has no price for the model or tier.
	UnpricedNoPrice = "no_price"
	// UnpricedAudio: a Realtime turn with audio tokens, whose rates the
	// price table does not model.
	UnpricedAudio = "audio"
)

// UnpricedReasons returns every reason, for series started at zero.
func UnpricedReasons() []string {
	return []string{UnpricedNoUsage, UnpricedNoPrice, UnpricedAudio}
}

// Tokens are the counts a cost is worked out from; -1 is unknown. Input
// includes the cached and cache-write tokens, as in the usage record.
type Tokens struct {
	Input, CachedInput, CacheWriteInput, Output int64
}

// Billable is what prices a request or turn: what the record says.
type Billable struct {
	// Model is the model the request named (before aliases), ResponseModel
	// the one the upstream reported; the latter is priced only when the
	// former is empty.
	Model, ResponseModel string
	// TierSent and TierReported are the record's service_tier_sent and
	// service_tier_reported.
	TierSent, TierReported string
	Tokens                 Tokens
	// Audio is set for a Realtime turn that reported audio tokens.
	Audio bool
}

// Cost is what one request or turn cost under a policy's price table.
type Cost struct {
	// Pico is the cost in units of 10⁻¹² of Currency, exact. Zero when
	// Unpriced is set.
	Pico uint64
	// Currency is the price table's ISO 4217 code.
	Currency string
	// Tier is the tier priced (price_tier).
	Tier Tier
	// Model is the model priced, after aliases.
	Model string
	// Unpriced is why there is no cost (UnpricedNoUsage, UnpricedNoPrice,
	// UnpricedAudio), or "" when there is one.
	Unpriced string
}

// Priced reports whether the policy has a price table: without one nothing
// is priced and records carry no cost fields.
func (p *Policy) Priced() bool { return p.prices != nil }

// Currency returns the price table's currency, "" without one.
func (p *Policy) Currency() string {
	if p.prices == nil {
		return ""
	}
	return p.prices.currency
}

// priceTier is the tier a request or turn is priced at: the one the
// upstream reported, else the one sent; no tier and auto are default.
// Anything unrecognised is TierUnrecognised, which has no price.
func priceTier(sent, reported string) Tier {
	s := reported
	if s == "" {
		s = sent
	}
	if s == "" || s == "none" {
		return TierDefault
	}
	switch t := ParseTier(s); t {
	case TierAuto:
		return TierDefault
	default:
		return t
	}
}

// Cost prices b with the policy's price table (docs/contracts.md, "Cost").
func (p *Policy) Cost(b *Billable) Cost {
	c := Cost{Currency: p.Currency(), Tier: priceTier(b.TierSent, b.TierReported)}
	c.Model = b.Model
	if c.Model == "" {
		c.Model = b.ResponseModel
	}
	c.Model = p.matchModel(c.Model)
	tk := b.Tokens
	switch {
	case tk.Input < 0 || tk.Output < 0:
		c.Unpriced = UnpricedNoUsage
		return c
	case b.Audio:
		c.Unpriced = UnpricedAudio
		return c
	}
	price, ok := p.prices.lookup(c.Model, c.Tier)
	if !ok {
		c.Unpriced = UnpricedNoPrice
		return c
	}
	cached, writes := max(tk.CachedInput, 0), max(tk.CacheWriteInput, 0)
	uncached := max(tk.Input-cached-writes, 0) // counts that contradict each other never bill below zero
	var sum uint64
	var overflow bool
	for _, term := range [...]struct{ n, price uint64 }{
		{uint64(uncached), price.input},
		{uint64(cached), price.cachedInput},
		{uint64(writes), price.cacheWrite},
		{uint64(tk.Output), price.output},
	} {
		// tokens × millionths per million tokens is 10⁻¹² units.
		hi, lo := bits.Mul64(term.n, term.price)
		var carry uint64
		sum, carry = bits.Add64(sum, lo, 0)
		overflow = overflow || hi != 0 || carry != 0
	}
	if overflow {
		// More than 18 million currency units for one request: not a count
		// to believe, and not one to bill.
		c.Unpriced = UnpricedNoUsage
		return c
	}
	c.Pico = sum
	return c
}

// lookup finds the prices of model at tier: the first pattern that
// matches decides, whether or not it prices the tier.
func (t *priceTable) lookup(model string, tier Tier) (tierPrices, bool) {
	if t == nil || tier >= TierUnrecognised {
		return tierPrices{}, false
	}
	for i := range t.models {
		if m := &t.models[i]; m.pattern.match(model) {
			return m.tiers[tier], m.has[tier]
		}
	}
	return tierPrices{}, false
}

// Record statuses that carry no cost and count nowhere (usage.StatusBlocked
// and usage.StatusRefused): nothing reached the upstream.
const (
	statusBlocked = "blocked"
	statusRefused = "refused"
)

// PriceRecord prices a usage record in place: it sets cost, currency and
// price_tier, or cost_unpriced_reason, clearing what an earlier pricing
// left. audio marks a Realtime turn that reported audio tokens (a record
// does not carry them: re-pricing a logged record passes whether its
// reason was audio). It reports false, and leaves the cost fields empty,
// when the policy has no prices or the record was blocked or refused.
func (p *Policy) PriceRecord(rec *tiergatev1.UsageRecord, audio bool) (Cost, bool) {
	rec.Cost, rec.Currency, rec.PriceTier, rec.CostUnpricedReason = nil, "", "", ""
	if p.prices == nil || rec.Status == statusBlocked || rec.Status == statusRefused {
		return Cost{}, false
	}
	count := func(v *uint64) int64 {
		if v == nil || *v > 1<<62 {
			return -1
		}
		return int64(*v)
	}
	c := p.Cost(&Billable{
		Model: rec.Model, ResponseModel: rec.ResponseModel,
		TierSent: rec.ServiceTierSent, TierReported: rec.ServiceTierReported,
		Tokens: Tokens{
			Input: count(rec.InputTokens), CachedInput: count(rec.CachedInputTokens),
			CacheWriteInput: count(rec.CacheWriteInputTokens), Output: count(rec.OutputTokens),
		},
		Audio: audio,
	})
	if c.Unpriced != "" {
		rec.CostUnpricedReason = c.Unpriced
		return c, true
	}
	pico := c.Pico
	rec.Cost, rec.Currency, rec.PriceTier = &pico, c.Currency, c.Tier.String()
	return c, true
}
