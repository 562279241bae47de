// Package pricetest holds the price table that the budget and shadow tests
// of several packages start from, so that the arithmetic in their comments
// (what one response or turn costs) rests on the same known prices.
package pricetest

import "strings"

// Table returns a policy's prices section (YAML, in USD) that charges every
// model ("*") 1 per million input tokens and 2 per million output tokens at
// the default tier. Each of tiers is one more entry under tiers, such as
// "priority: {input: 2, output: 4}".
func Table(tiers ...string) string {
	var b strings.Builder
	b.WriteString("prices:\n  currency: USD\n  models:\n  - model: \"*\"\n    tiers:\n      default: {input: 1, output: 2}\n")
	for _, t := range tiers {
		b.WriteString("      " + t + "\n")
	}
	return b.String()
}
