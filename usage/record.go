package usage

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tiergate/tiergate/internal/decimal"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// AppendRecord appends r to dst as one line of JSON (snake_case names, the
// proto's field order, then "\n") and returns the extended slice.
//
// It is written by hand rather than with protojson for what the log's readers
// need: token counts and durations are JSON numbers (protojson writes 64-bit
// integers as strings), a string that is not valid UTF-8 (a model name from a
// client's body) is written with U+FFFD instead of failing the record, and the
// output is stable (protojson's deliberately varies its spacing). cost,
// held in 10⁻¹² units, is written in currency units as a trimmed exact
// decimal (0.0012345), never through a float.
//
// time, endpoint, action, status, duration_ms and stream are always written;
// other strings are left out when empty, turn when 0 (an HTTP request) and
// optional fields when unset, so an unknown token count is absent rather
// than 0.
func AppendRecord(dst []byte, r *tiergatev1.UsageRecord) []byte {
	dst = append(dst, `{"time":`...)
	dst = appendString(dst, r.GetTime())
	dst = appendNonEmpty(dst, `,"request_id":`, r.GetRequestId())
	dst = appendNonEmpty(dst, `,"response_id":`, r.GetResponseId())
	if n := r.GetTurn(); n > 0 {
		dst = append(dst, `,"turn":`...)
		dst = strconv.AppendUint(dst, uint64(n), 10)
	}
	dst = append(dst, `,"endpoint":`...)
	dst = appendString(dst, r.GetEndpoint())
	dst = appendNonEmpty(dst, `,"group":`, r.GetGroup())
	dst = appendNonEmpty(dst, `,"model":`, r.GetModel())
	dst = appendNonEmpty(dst, `,"response_model":`, r.GetResponseModel())
	dst = appendNonEmpty(dst, `,"service_tier_requested":`, r.GetServiceTierRequested())
	dst = appendNonEmpty(dst, `,"service_tier_sent":`, r.GetServiceTierSent())
	dst = appendNonEmpty(dst, `,"service_tier_reported":`, r.GetServiceTierReported())
	dst = append(dst, `,"action":`...)
	dst = appendString(dst, r.GetAction())
	dst = appendNonEmpty(dst, `,"rule":`, r.GetRule())
	dst = appendNonEmpty(dst, `,"policy_sha256":`, r.GetPolicySha256())
	if r != nil {
		dst = appendOptional(dst, `,"input_tokens":`, r.InputTokens)
		dst = appendOptional(dst, `,"cached_input_tokens":`, r.CachedInputTokens)
		dst = appendOptional(dst, `,"cache_write_input_tokens":`, r.CacheWriteInputTokens)
		dst = appendOptional(dst, `,"output_tokens":`, r.OutputTokens)
		dst = appendOptional(dst, `,"reasoning_tokens":`, r.ReasoningTokens)
		if r.Cost != nil {
			dst = append(dst, `,"cost":`...)
			dst = decimal.Append(dst, *r.Cost, 12)
		}
	}
	dst = appendNonEmpty(dst, `,"currency":`, r.GetCurrency())
	dst = appendNonEmpty(dst, `,"price_tier":`, r.GetPriceTier())
	dst = appendNonEmpty(dst, `,"cost_unpriced_reason":`, r.GetCostUnpricedReason())
	dst = append(dst, `,"duration_ms":`...)
	dst = strconv.AppendUint(dst, r.GetDurationMs(), 10)
	if r != nil {
		dst = appendOptional(dst, `,"time_to_first_token_ms":`, r.TimeToFirstTokenMs)
	}
	dst = append(dst, `,"stream":`...)
	dst = strconv.AppendBool(dst, r.GetStream())
	dst = append(dst, `,"status":`...)
	dst = appendString(dst, r.GetStatus())
	if r != nil && r.HttpStatus != nil {
		dst = append(dst, `,"http_status":`...)
		dst = strconv.AppendUint(dst, uint64(*r.HttpStatus), 10)
	}
	dst = appendNonEmpty(dst, `,"budget":`, r.GetBudget())
	dst = appendNonEmpty(dst, `,"shadow_rule":`, r.GetShadowRule())
	dst = appendNonEmpty(dst, `,"shadow_action":`, r.GetShadowAction())
	return append(dst, "}\n"...)
}

// Stamp sets the times of r, the record of a request or turn that began at
// start and ends now: its time, its duration, the time to its first output
// when firstOutput is set, and its HTTP status when one is known (> 0).
func Stamp(r *tiergatev1.UsageRecord, start, firstOutput, now time.Time, httpStatus int) {
	r.Time = FormatTime(now)
	r.DurationMs = uint64(now.Sub(start).Milliseconds())
	if !firstOutput.IsZero() {
		r.TimeToFirstTokenMs = ptr(uint64(firstOutput.Sub(start).Milliseconds()))
	}
	if httpStatus > 0 {
		r.HttpStatus = ptr(uint32(httpStatus))
	}
}

// FormatTime formats t the way a record's time is written: RFC 3339 in UTC
// with milliseconds.
func FormatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func appendNonEmpty(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	dst = append(dst, key...)
	return appendString(dst, s)
}

func appendOptional(dst []byte, key string, v *uint64) []byte {
	if v == nil {
		return dst
	}
	dst = append(dst, key...)
	return strconv.AppendUint(dst, *v, 10)
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string. Control characters are escaped,
// invalid UTF-8 becomes U+FFFD (a log line must stay valid JSON whatever a
// client sent), and U+2028 and U+2029 are escaped because JavaScript readers
// of the log take them for line ends.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
