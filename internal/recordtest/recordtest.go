// Package recordtest checks usage record lines (JSON, as the record writer
// writes them) for the tests of the packages that price requests and turns:
// policy, extproc and wsbridge.
package recordtest

import (
	"testing"

	"github.com/tidwall/gjson"
)

// CheckCost checks a record line's cost, exactly as written (cost is ""
// where the line has none), its price_tier and its cost_unpriced_reason.
func CheckCost(t testing.TB, line, cost, tier, reason string) {
	t.Helper()
	if got := gjson.Get(line, "cost").Raw; got != cost {
		t.Errorf("cost = %q, want %q\n%s", got, cost, line)
	}
	if got := gjson.Get(line, "price_tier").Str; got != tier {
		t.Errorf("price_tier = %q, want %q", got, tier)
	}
	if got := gjson.Get(line, "cost_unpriced_reason").Str; got != reason {
		t.Errorf("cost_unpriced_reason = %q, want %q", got, reason)
	}
}
