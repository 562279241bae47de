package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/tiergate/tiergate/internal/decimal"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// maxPrice bounds a price per million tokens (and a multiplier), so that a
// price read as a float64 for the proto turns back into the same millionths
// and a cost cannot overflow on believable token counts.
const maxPrice = 1_000_000

// priceTierKeys are the tiers a price table may name, with the alias fast.
var priceTierKeys = map[string]Tier{
	"default":   TierDefault,
	"priority":  TierPriority,
	"fast":      TierPriority,
	"flex":      TierFlex,
	"scale":     TierScale,
	"ultrafast": TierUltrafast,
}

const priceTierWant = "default, priority, fast, flex, scale or ultrafast"

// prices reads the prices section. Problems are reported in the file's
// terms (prices.models[2].tiers.priority.input).
func (l *loader) prices(path string, v any) *tiergatev1.Prices {
	pr := &tiergatev1.Prices{}
	m, ok := l.object(path, v)
	if !ok {
		return pr
	}
	l.fields(path, m, map[string]func(string, any){
		"currency": func(p string, v any) {
			if s, ok := l.name(p, v); ok {
				if !isCurrencyCode(s) {
					l.addf(p, "%q is not an ISO 4217 currency code (three capital letters, e.g. USD)", s)
				}
				pr.Currency = s
			}
		},
		"as_of": func(p string, v any) {
			if s, ok := l.name(p, v); ok {
				if _, err := time.Parse(time.DateOnly, s); err != nil {
					l.addf(p, "%q is not a date (want YYYY-MM-DD)", s)
				}
				pr.AsOf = s
			}
		},
		"models": func(p string, v any) {
			for i, item := range l.list(p, v) {
				pr.Models = append(pr.Models, l.modelPrices(fmt.Sprintf("%s[%d]", p, i), item))
			}
		},
	})
	if _, ok := m["currency"]; !ok {
		l.addf(path+".currency", "required (an ISO 4217 code, e.g. USD)")
	}
	l.shadowed(path+".models", pr.Models)
	return pr
}

func (l *loader) modelPrices(path string, v any) *tiergatev1.ModelPrices {
	mp := &tiergatev1.ModelPrices{}
	m, ok := l.object(path, v)
	if !ok {
		return mp
	}
	var tierAt, multAt map[Tier]string // tier -> the key that named it
	l.fields(path, m, map[string]func(string, any){
		"model": func(p string, v any) { mp.Model, _ = l.name(p, v) },
		"tiers": func(p string, v any) {
			obj, ok := l.object(p, v)
			if !ok {
				return
			}
			mp.Tiers = map[string]*tiergatev1.TierPrices{}
			tierAt = map[Tier]string{}
			for _, k := range slices.Sorted(maps.Keys(obj)) {
				kp := p + "." + k
				if t, ok := l.priceTier(kp, k, tierAt); ok && l.notNull(kp, obj[k]) {
					mp.Tiers[t.String()] = l.tierPrices(kp, obj[k])
				}
			}
		},
		"multipliers": func(p string, v any) {
			obj, ok := l.object(p, v)
			if !ok {
				return
			}
			mp.Multipliers = map[string]float64{}
			multAt = map[Tier]string{}
			for _, k := range slices.Sorted(maps.Keys(obj)) {
				kp := p + "." + k
				if k == "default" {
					l.addf(kp, "default cannot have a multiplier (multipliers scale default's prices)")
					continue
				}
				t, ok := l.priceTier(kp, k, multAt)
				if !ok {
					continue
				}
				if f, ok := l.amount(kp, obj[k], "multiplier"); ok {
					mp.Multipliers[t.String()] = f
				}
			}
		},
	})
	if _, ok := m["model"]; !ok {
		l.addf(path+".model", "required (a model name, or a prefix ending in *)")
	}
	if _, ok := m["tiers"]; !ok {
		l.addf(path+".tiers", "required (prices per tier, at least default or one other tier)")
	}
	if len(multAt) > 0 && mp.Tiers["default"] == nil && tierAt != nil {
		l.addf(path+".multipliers", "needs tiers.default (multipliers scale default's prices)")
	}
	for t := TierPriority; t < TierUnrecognised; t++ {
		key, mult := multAt[t]
		if own, dup := tierAt[t]; mult && dup {
			l.addf(path+".multipliers."+key, "%s has its own prices at tiers.%s (give one or the other)", t, own)
		}
	}
	return mp
}

// priceTier reads a tier key of tiers or multipliers; seen catches the
// same tier named twice (priority and its alias fast).
func (l *loader) priceTier(path, key string, seen map[Tier]string) (Tier, bool) {
	t, ok := priceTierKeys[key]
	switch {
	case key == "auto" || key == "none":
		l.addf(path, "%s is priced as default (give default instead)", key)
		return 0, false
	case !ok:
		l.addf(path, "unknown service tier %q (want %s)%s", key, priceTierWant, lowerHint(key, priceTierKeys))
		return 0, false
	}
	if other, dup := seen[t]; dup {
		l.addf(path, "%s is also given as %s (fast is an alias of priority)", key, other)
		return 0, false
	}
	seen[t] = key
	return t, true
}

func (l *loader) notNull(path string, v any) bool {
	if v == nil {
		l.addf(path, "null is not allowed (leave the key out instead)")
	}
	return v != nil
}

func (l *loader) tierPrices(path string, v any) *tiergatev1.TierPrices {
	tp := &tiergatev1.TierPrices{}
	m, ok := l.object(path, v)
	if !ok {
		return tp
	}
	price := func(dst *float64) func(string, any) {
		return func(p string, v any) {
			if f, ok := l.amount(p, v, "price"); ok {
				*dst = f
			}
		}
	}
	optional := func(dst **float64) func(string, any) {
		return func(p string, v any) {
			if f, ok := l.amount(p, v, "price"); ok {
				*dst = &f
			}
		}
	}
	l.fields(path, m, map[string]func(string, any){
		"input":        price(&tp.Input),
		"output":       price(&tp.Output),
		"cached_input": optional(&tp.CachedInput),
		"cache_write":  optional(&tp.CacheWrite),
	})
	for _, k := range []string{"input", "output"} {
		if _, ok := m[k]; !ok {
			l.addf(path+"."+k, "required (price per million tokens)")
		}
	}
	return tp
}

// amount reads a price or multiplier: a non-negative number with at most 6
// decimals, no larger than maxPrice.
func (l *loader) amount(path string, v any, what string) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		l.addf(path, "want a number, got %s", describe(v))
		return 0, false
	}
	micro, err := decimal.Parse(n.String(), 6)
	switch {
	case strings.HasPrefix(n.String(), "-"):
		l.addf(path, "negative %s %s (%ss are non-negative)", what, n, what)
		return 0, false
	case errors.Is(err, decimal.ErrRange) || err == nil && micro > maxPrice*decimal.Micro:
		l.addf(path, "%s %s is too large (at most %d)", what, n, maxPrice)
		return 0, false
	case err != nil:
		l.addf(path, "%s %s has more than 6 decimals", what, n)
		return 0, false
	}
	return float64(micro) / decimal.Micro, true
}

// shadowed reports every model pattern that an earlier one always matches
// first, so that it could never price anything.
func (l *loader) shadowed(path string, models []*tiergatev1.ModelPrices) {
	for i, m := range models {
		if m.Model == "" {
			continue
		}
		later := parsePattern(m.Model)
		for j, e := range models[:i] {
			if e.Model != "" && parsePattern(e.Model).covers(later) {
				l.addf(fmt.Sprintf("%s[%d].model", path, i), "pattern %q is always shadowed by %s[%d] (%q)", m.Model, path, j, e.Model)
				break
			}
		}
	}
}

// parsePattern reads a model pattern in whitelist syntax.
func parsePattern(w string) pattern {
	if strings.HasSuffix(w, "*") {
		return pattern{text: strings.TrimSuffix(w, "*"), prefix: true}
	}
	return pattern{text: w}
}

// covers reports whether every model q matches, p matches too.
func (p pattern) covers(q pattern) bool {
	if p.prefix {
		return strings.HasPrefix(q.text, p.text)
	}
	return !q.prefix && p.text == q.text
}

func isCurrencyCode(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// priceTable is the compiled price table.
type priceTable struct {
	currency string
	models   []modelPrices
}

// modelPrices are one pattern's prices per tier, indexed by Tier; the ones
// a multiplier gives are worked out at load time.
type modelPrices struct {
	pattern pattern
	tiers   [TierUnrecognised]tierPrices
	has     [TierUnrecognised]bool
}

// tierPrices are in millionths of the currency per million tokens.
type tierPrices struct {
	input, cachedInput, cacheWrite, output uint64
}

// compilePrices turns a validated prices section into the table. Prices
// come back to millionths exactly: each was read with at most 6 decimals
// and is at most maxPrice, well inside float64's exact range.
func compilePrices(pr *tiergatev1.Prices) *priceTable {
	if pr == nil {
		return nil
	}
	micro := func(f float64) uint64 { return uint64(math.Round(f * decimal.Micro)) }
	t := &priceTable{currency: pr.Currency}
	for _, m := range pr.Models {
		mp := modelPrices{pattern: parsePattern(m.Model)}
		for name, tp := range m.Tiers {
			tier := priceTierKeys[name]
			p := tierPrices{input: micro(tp.Input), output: micro(tp.Output)}
			p.cachedInput, p.cacheWrite = p.input, p.input
			if tp.CachedInput != nil {
				p.cachedInput = micro(*tp.CachedInput)
			}
			if tp.CacheWrite != nil {
				p.cacheWrite = micro(*tp.CacheWrite)
			}
			mp.tiers[tier], mp.has[tier] = p, true
		}
		if def := mp.tiers[TierDefault]; mp.has[TierDefault] {
			for name, f := range m.Multipliers {
				tier, factor := priceTierKeys[name], micro(f)
				mp.tiers[tier] = tierPrices{
					input:       scale(def.input, factor),
					cachedInput: scale(def.cachedInput, factor),
					cacheWrite:  scale(def.cacheWrite, factor),
					output:      scale(def.output, factor),
				}
				mp.has[tier] = true
			}
		}
		t.models = append(t.models, mp)
	}
	return t
}

// scale multiplies a price in millionths by a factor in millionths,
// rounding half to even to millionths. Both are at most maxPrice·10⁶, so
// the 128-bit product divides without overflow.
func scale(price, factor uint64) uint64 {
	hi, lo := bits.Mul64(price, factor)
	q, r := bits.Div64(hi, lo, decimal.Micro)
	if twice := 2 * r; twice > decimal.Micro || twice == decimal.Micro && q%2 == 1 {
		q++
	}
	return q
}
