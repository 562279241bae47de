package usage

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/tidwall/gjson"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tiergate/tiergate/internal/decimal"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// ParseRecord reads one usage log line (as AppendRecord writes it) back
// into a record. cost, written in currency units, comes back exactly as
// 10⁻¹² units. Fields it does not know (from a newer tiergate) are
// ignored, so an older binary can still re-price a newer log.
func ParseRecord(line []byte) (*tiergatev1.UsageRecord, error) {
	if !gjson.ValidBytes(line) {
		return nil, errors.New("not a JSON object")
	}
	cost := gjson.GetBytes(line, "cost")
	if cost.Exists() {
		if cost.Type != gjson.Number || cost.Index <= 0 {
			return nil, fmt.Errorf("cost: want a number, got %s", cost.Raw)
		}
		pico, err := decimal.Parse(cost.Raw, 12)
		if err != nil {
			return nil, fmt.Errorf("cost %s: %w", cost.Raw, err)
		}
		// protojson reads a uint64 written as a string; put the exact
		// units where the decimal was.
		spliced := make([]byte, 0, len(line)+24)
		spliced = append(spliced, line[:cost.Index]...)
		spliced = strconv.AppendQuote(spliced, strconv.FormatUint(pico, 10))
		line = append(spliced, line[cost.Index+len(cost.Raw):]...)
	}
	r := &tiergatev1.UsageRecord{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(line, r); err != nil {
		return nil, err
	}
	return r, nil
}
