package policy

import (
	"errors"
	"strings"
	"testing"

	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

func TestPriceTableErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		file string
		want []string // every line expected
	}{
		{"a pattern an earlier one always shadows is refused",
			"prices:\n  currency: USD\n  models:\n  - {model: gpt-5*, tiers: {default: {input: 1, output: 2}}}\n  - {model: gpt-4o, tiers: {default: {input: 1, output: 2}}}\n  - {model: gpt-5.5, tiers: {default: {input: 1, output: 2}}}\n",
			[]string{`prices.models[2].model: pattern "gpt-5.5" is always shadowed by prices.models[0] ("gpt-5*")`}},
		{"a narrower prefix after a wider one is shadowed too",
			"prices:\n  currency: USD\n  models:\n  - {model: '*', tiers: {default: {input: 1, output: 2}}}\n  - {model: 'claude-*', tiers: {default: {input: 1, output: 2}}}\n",
			[]string{`prices.models[1].model: pattern "claude-*" is always shadowed by prices.models[0] ("*")`}},
		{"the same exact model twice is shadowed",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {default: {input: 1, output: 2}}}\n  - {model: m, tiers: {flex: {input: 1, output: 2}}}\n",
			[]string{`prices.models[1].model: pattern "m" is always shadowed by prices.models[0] ("m")`}},
		{"a negative price is refused",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {default: {input: -1.5, output: 2}}}\n",
			[]string{"prices.models[0].tiers.default.input: negative price -1.5 (prices are non-negative)"}},
		{"a tier without input or output is refused",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {priority: {cached_input: 1}, flex: {input: 1}}}\n",
			[]string{
				"prices.models[0].tiers.flex.output: required (price per million tokens)",
				"prices.models[0].tiers.priority.input: required (price per million tokens)",
				"prices.models[0].tiers.priority.output: required (price per million tokens)",
			}},
		{"a seventh decimal is refused",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {default: {input: 0.0000001, output: 2}}}\n",
			[]string{"prices.models[0].tiers.default.input: price 1e-7 has more than 6 decimals"}},
		{"a price written as a string is refused",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {default: {input: '1', output: 2}}}\n",
			[]string{`prices.models[0].tiers.default.input: want a number, got string "1"`}},
		{"auto cannot be priced on its own",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {auto: {input: 1, output: 2}}}\n",
			[]string{"prices.models[0].tiers.auto: auto is priced as default (give default instead)"}},
		{"priority and its alias fast are one tier",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {fast: {input: 1, output: 2}, priority: {input: 1, output: 2}}}\n",
			[]string{"prices.models[0].tiers.priority: priority is also given as fast (fast is an alias of priority)"}},
		{"an unknown tier names the choices",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {Flex: {input: 1, output: 2}}}\n",
			[]string{`prices.models[0].tiers.Flex: unknown service tier "Flex" (want default, priority, fast, flex, scale or ultrafast); values are written in lower case`}},
		{"a multiplier needs default prices",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {flex: {input: 1, output: 2}}, multipliers: {priority: 2}}\n",
			[]string{"prices.models[0].multipliers: needs tiers.default (multipliers scale default's prices)"}},
		{"a tier with prices and a multiplier is refused",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {default: {input: 1, output: 2}, priority: {input: 2, output: 4}}, multipliers: {fast: 2}}\n",
			[]string{"prices.models[0].multipliers.fast: priority has its own prices at tiers.priority (give one or the other)"}},
		{"a negative multiplier is refused",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {default: {input: 1, output: 2}}, multipliers: {flex: -0.5}}\n",
			[]string{"prices.models[0].multipliers.flex: negative multiplier -0.5 (multipliers are non-negative)"}},
		{"default has no multiplier",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {default: {input: 1, output: 2}}, multipliers: {default: 2}}\n",
			[]string{"prices.models[0].multipliers.default: default cannot have a multiplier (multipliers scale default's prices)"}},
		{"the currency is required and must be a code",
			"prices:\n  models: []\n---\n",
			[]string{"prices.currency: required (an ISO 4217 code, e.g. USD)"}},
		{"a lower-case currency is refused",
			"prices: {currency: usd, as_of: 2026-13-01, models: []}\n",
			[]string{
				`prices.as_of: "2026-13-01" is not a date (want YYYY-MM-DD)`,
				`prices.currency: "usd" is not an ISO 4217 currency code (three capital letters, e.g. USD)`,
			}},
		{"a model entry needs a model and tiers",
			"prices:\n  currency: USD\n  models:\n  - {multipliers: {}}\n",
			[]string{
				"prices.models[0].model: required (a model name, or a prefix ending in *)",
				"prices.models[0].tiers: required (prices per tier, at least default or one other tier)",
			}},
		{"an unknown price field is refused",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {default: {input: 1, output: 2, cache_read: 1}}}\n",
			[]string{"prices.models[0].tiers.default.cache_read: unknown field (known: cache_write, cached_input, input, output)"}},
		{"a huge price is refused",
			"prices:\n  currency: USD\n  models:\n  - {model: m, tiers: {default: {input: 1e7, output: 2}}}\n",
			[]string{"prices.models[0].tiers.default.input: price 10000000 is too large (at most 1000000)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := strings.TrimSuffix(tc.file, "---\n")
			_, err := Load([]byte(file))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Load returned %v, want a *ConfigError", err)
			}
			lines := strings.Split(err.Error(), "\n")
			if strings.Join(lines, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", err, strings.Join(tc.want, "\n"))
			}
		})
	}
}

// testPrices is the table the cost tests price with; every figure they
// expect is worked out by hand from it.
const testPrices = `
model_aliases: {gpt-latest: gpt-5.5}
prices:
  currency: USD
  as_of: "2026-12-07"
  models:
  - model: gpt-5.5
    tiers:
      default: {input: 5, cached_input: 0.5, output: 30}
      priority: {input: 12.5, cached_input: 1.25, output: 75}
    multipliers: {flex: 0.5}
  - model: claude-opus-4-6
    tiers:
      default: {input: 5, cached_input: 0.5, cache_write: 6.25, output: 25}
    multipliers: {priority: 6}
  - model: gpt-realtime*
    tiers:
      default: {input: 4, cached_input: 0.4, output: 16}
  - model: tiny
    tiers:
      default: {input: 0.000001, output: 0.000003}
    multipliers: {priority: 0.333333, flex: 0.5}
`

func TestCost(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, testPrices)
	tk := func(in, cached, writes, out int64) Tokens { return Tokens{in, cached, writes, out} }
	cases := []struct {
		name     string
		b        Billable
		pico     uint64
		tier     Tier
		unpriced string
	}{
		{"the default tier prices uncached, cached and output tokens",
			Billable{Model: "gpt-5.5", TierSent: "none", Tokens: tk(1117, 1024, -1, 46)},
			// 93×5 + 1024×0.5 + 46×30 = 2357 millionths
			2357 * 1_000_000, TierDefault, ""},
		{"the reported tier wins over the tier sent",
			Billable{Model: "gpt-5.5", TierSent: "priority", TierReported: "default", Tokens: tk(1117, 1024, -1, 46)},
			2357 * 1_000_000, TierDefault, ""},
		{"priority has its own prices",
			Billable{Model: "gpt-5.5", TierSent: "priority", Tokens: tk(1117, 1024, -1, 46)},
			// 93×12.5 + 1024×1.25 + 46×75 = 5892.5
			5_892_500_000, TierPriority, ""},
		{"auto is priced as default",
			Billable{Model: "gpt-latest", TierSent: "auto", Tokens: tk(1000, 0, 0, 0)},
			5000 * 1_000_000, TierDefault, ""},
		{"a multiplier derives a tier from default",
			Billable{Model: "gpt-5.5", TierReported: "flex", Tokens: tk(8438, 8192, 0, 398)},
			// 246×2.5 + 8192×0.25 + 398×15 = 8633
			8633 * 1_000_000, TierFlex, ""},
		{"cache writes are priced apart from uncached input",
			Billable{Model: "claude-opus-4-6", TierReported: "priority", Tokens: tk(1249, 1024, 200, 15)},
			// ×6: 25×30 + 1024×3 + 200×37.5 + 15×150 = 13572
			13572 * 1_000_000, TierPriority, ""},
		{"one token at the smallest price is one unit",
			Billable{Model: "tiny", Tokens: tk(1, 0, 0, 0)},
			1, TierDefault, ""},
		{"a multiplied price is rounded half to even to millionths",
			// 0.000003 × 0.333333 = 0.000000999999 -> 0.000001; 0.000001 × 0.333333 -> 0
			Billable{Model: "tiny", TierSent: "priority", Tokens: tk(1, 0, 0, 1)},
			1, TierPriority, ""},
		{"half a unit rounds to even",
			// 0.000001 × 0.5 = 0.0000005 -> 0; 0.000003 × 0.5 = 0.0000015 -> 0.000002
			Billable{Model: "tiny", TierSent: "flex", Tokens: tk(1, 0, 0, 1)},
			2, TierFlex, ""},
		{"the response model is priced when the request named none",
			Billable{ResponseModel: "gpt-realtime-2025-08-28", Tokens: tk(40, 8, 0, 9)},
			// 32×4 + 8×0.4 + 9×16 = 275.2
			275_200_000, TierDefault, ""},
		{"counts that contradict each other never bill below zero",
			Billable{Model: "gpt-5.5", Tokens: tk(10, 20, -1, 0)},
			// uncached 0; 20×0.5 = 10
			10 * 1_000_000, TierDefault, ""},
		{"unknown output is no_usage",
			Billable{Model: "gpt-5.5", Tokens: tk(10, -1, -1, -1)},
			0, TierDefault, UnpricedNoUsage},
		{"audio tokens are not priced",
			Billable{Model: "gpt-realtime", Audio: true, Tokens: tk(10, 0, 0, 1)},
			0, TierDefault, UnpricedAudio},
		{"a model without prices is no_price",
			Billable{Model: "o3", Tokens: tk(10, 0, 0, 1)},
			0, TierDefault, UnpricedNoPrice},
		{"a tier without prices or a multiplier is no_price",
			Billable{Model: "gpt-realtime-mini", TierReported: "priority", Tokens: tk(10, 0, 0, 1)},
			0, TierPriority, UnpricedNoPrice},
		{"an unrecognised reported tier is no_price",
			Billable{Model: "gpt-5.5", TierReported: "turbo", Tokens: tk(10, 0, 0, 1)},
			0, TierUnrecognised, UnpricedNoPrice},
		{"counts too large to believe are not billed",
			Billable{Model: "gpt-5.5", Tokens: tk(1<<62, 0, 0, 1<<62)},
			0, TierDefault, UnpricedNoUsage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := p.Cost(&c.b)
			if got.Pico != c.pico || got.Tier != c.tier || got.Unpriced != c.unpriced || got.Currency != "USD" {
				t.Errorf("Cost = %+v, want %d units at %s, unpriced %q", got, c.pico, c.tier, c.unpriced)
			}
		})
	}
}

func TestPriceTableNamesModelLabels(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, testPrices)
	for model, want := range map[string]string{"claude-opus-4-6": "claude-opus-4-6", "gpt-realtime-x": "other"} {
		if got := p.ModelLabel(model); got != want {
			t.Errorf("ModelLabel(%q) = %q, want %q", model, got, want)
		}
	}
}

func TestNoPricesPricesNothing(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, "rules: []\n")
	if p.Priced() {
		t.Error("a policy without prices says it is priced")
	}
}

// TestReloadSwapsPrices: prices are part of the policy, so a reload puts
// new prices in force with the rules, and a bad price table is refused
// like any bad file, keeping the last good prices.
func TestReloadSwapsPrices(t *testing.T) {
	t.Parallel()
	table := func(input string) string {
		return "prices: {currency: USD, models: [{model: m, tiers: {default: {input: " + input + ", output: 0}}}]}\n"
	}
	k := newKubeletDir(t, table("1"))
	store, w, _ := startWatcher(t, k.path())
	cost := func() Cost {
		return store.Load().Cost(&Billable{Model: "m", Tokens: Tokens{Input: 1_000_000, Output: 0}})
	}
	if got := cost().Pico; got != 1_000_000_000_000 {
		t.Fatalf("cost %d before the reload, want 1 USD", got)
	}
	k.update(table("2.5"))
	if r := w.reload(); r != reloadSuccess {
		t.Fatalf("reload = %q", r)
	}
	if got := cost().Pico; got != 2_500_000_000_000 {
		t.Errorf("cost %d after the reload, want 2.5 USD", got)
	}
	k.update(table("-1"))
	if r := w.reload(); r != reloadInvalid {
		t.Fatalf("a negative price reloaded as %q", r)
	}
	if got := cost().Pico; got != 2_500_000_000_000 {
		t.Errorf("cost %d after a refused reload, want the last good 2.5 USD", got)
	}
}

// BenchmarkPriceRecord is the whole of pricing one record: the model
// looked up after aliases, the tier chosen, the sum taken, the fields set.
func BenchmarkPriceRecord(b *testing.B) {
	p := mustLoad(b, testPrices)
	in, cached, out := uint64(8438), uint64(8192), uint64(398)
	rec := &tiergatev1.UsageRecord{Model: "gpt-latest", ServiceTierSent: "priority", ServiceTierReported: "priority",
		InputTokens: &in, CachedInputTokens: &cached, OutputTokens: &out, Status: "completed"}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := p.PriceRecord(rec, false); !ok {
			b.Fatal("not priced")
		}
	}
}
