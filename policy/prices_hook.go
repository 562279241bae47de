package policy

import tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"

// pricesGiven reports whether the file has a price table, which budgets
// need.
func pricesGiven(cfg *tiergatev1.Config) bool { return cfg.GetPrices() != nil }
