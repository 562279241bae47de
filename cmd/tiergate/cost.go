package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"text/tabwriter"

	"github.com/tiergate/tiergate/internal/decimal"
	"github.com/tiergate/tiergate/policy"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// costRow is one group, model and tier priced (docs/contracts.md, "Cost":
// tiergate cost --json), with the tokens that were priced.
type costRow struct {
	Group                 string      `json:"group"`
	Model                 string      `json:"model"`
	ServiceTier           string      `json:"service_tier"`
	Requests              uint64      `json:"requests"`
	InputTokens           uint64      `json:"input_tokens"`
	CachedInputTokens     uint64      `json:"cached_input_tokens"`
	CacheWriteInputTokens uint64      `json:"cache_write_input_tokens"`
	OutputTokens          uint64      `json:"output_tokens"`
	Cost                  json.Number `json:"cost"`
	pico                  uint64
}

// costReport is tiergate cost's --json output.
type costReport struct {
	Currency string      `json:"currency"`
	Total    json.Number `json:"total"`
	Unpriced uint64      `json:"unpriced"`
	Rows     []*costRow  `json:"rows"`
}

// runCost re-prices usage logs with a policy's price table: one row per
// group, model and tier priced, then the total. Blocked and refused
// records count nowhere; records that cannot be priced are counted.
func runCost(args []string, stdout, stderr io.Writer) error {
	cmd := newLogCommand("cost", "policy file whose prices re-price the log (required)",
		"tiergate cost --config FILE [--json] USAGE.jsonl...", stderr)
	p, err := cmd.parse(args)
	if err != nil {
		return err
	}
	if !p.Priced() {
		fmt.Fprintf(stderr, "tiergate cost: %s has no prices section\n", *cmd.config)
		return exitCode(exitError)
	}
	rep := &costReport{Currency: p.Currency()}
	rows := map[[3]string]*costRow{}
	var total uint64
	err = cmd.eachRecord(func(rec *tiergatev1.UsageRecord) error {
		c, priced := p.PriceRecord(rec, rec.GetCostUnpricedReason() == policy.UnpricedAudio)
		switch {
		case !priced: // blocked or refused: nothing was used
			return nil
		case c.Unpriced != "":
			rep.Unpriced++
			return nil
		}
		k := [3]string{rec.GetGroup(), c.Model, c.Tier.String()}
		r := rows[k]
		if r == nil {
			r = &costRow{Group: k[0], Model: k[1], ServiceTier: k[2]}
			rows[k] = r
			rep.Rows = append(rep.Rows, r)
		}
		r.Requests++
		r.InputTokens += rec.GetInputTokens()
		r.CachedInputTokens += rec.GetCachedInputTokens()
		r.CacheWriteInputTokens += rec.GetCacheWriteInputTokens()
		r.OutputTokens += rec.GetOutputTokens()
		var carry, carry2 uint64
		r.pico, carry = bits.Add64(r.pico, c.Pico, 0)
		total, carry2 = bits.Add64(total, c.Pico, 0)
		if carry != 0 || carry2 != 0 {
			return errors.New("the total cost overflows")
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(rep.Rows, func(a, b *costRow) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Model, b.Model), cmp.Compare(a.ServiceTier, b.ServiceTier))
	})
	for _, r := range rep.Rows {
		r.Cost = json.Number(decimal.String(r.pico, 12))
	}
	rep.Total = json.Number(decimal.String(total, 12))
	if rep.Rows == nil {
		rep.Rows = []*costRow{}
	}
	return cmd.write(stdout, rep, func(w io.Writer) { writeCostTable(w, rep) })
}

// writeCostTable writes the report as aligned columns, then the total.
func writeCostTable(w io.Writer, rep *costReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tMODEL\tTIER\tREQUESTS\tINPUT\tCACHED\tCACHE_WRITE\tOUTPUT\tCOST\t")
	for _, r := range rep.Rows {
		group := r.Group
		if group == "" {
			group = "(none)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t\n", group, r.Model, r.ServiceTier, r.Requests,
			r.InputTokens, r.CachedInputTokens, r.CacheWriteInputTokens, r.OutputTokens, r.Cost)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "total %s %s\nunpriced records %d\n", rep.Total, rep.Currency, rep.Unpriced)
}
