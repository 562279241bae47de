// Package decimal reads and writes exact decimal amounts held as integers
// of a fixed scale: prices in millionths (10⁻⁶) and costs in 10⁻¹² of a
// currency. Money never goes through a float, so a cost written, read back
// and summed is the same to the last digit.
package decimal

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Scales of the amounts tiergate keeps.
const (
	// Micro is 10⁶: prices per million tokens are kept in millionths.
	Micro = 1_000_000
	// Pico is 10¹²: costs are kept in units of 10⁻¹² of the currency.
	Pico = 1_000_000_000_000
)

// ErrRange reports an amount that does not fit in 64 bits at its scale.
var ErrRange = errors.New("out of range")

// Parse reads a non-negative JSON number (a plain decimal, or with an
// exponent) as an integer count of 10⁻places units. It refuses a negative
// number, more than places decimals (say, a price with 7 of them: the
// amount would not be exact) and a value that does not fit in a uint64.
func Parse(s string, places int) (uint64, error) {
	if strings.HasPrefix(s, "-") {
		return 0, errors.New("negative")
	}
	mant, exp, err := split(s)
	if err != nil {
		return 0, err
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	shift := exp - len(frac) + places // the power of ten digits is multiplied by
	if digits == "" {
		return 0, nil
	}
	if shift < 0 {
		drop := digits[max(len(digits)+shift, 0):]
		if strings.Trim(drop, "0") != "" {
			return 0, fmt.Errorf("more than %d decimals", places)
		}
		digits = digits[:max(len(digits)+shift, 0)]
		shift = 0
	}
	if len(digits)+shift > 20 {
		return 0, ErrRange
	}
	v, err := strconv.ParseUint(digits+strings.Repeat("0", shift), 10, 64)
	if err != nil {
		return 0, ErrRange
	}
	return v, nil
}

// split checks JSON number syntax (RFC 8259, without the sign) and returns
// the mantissa and the exponent.
func split(s string) (mant string, exp int, err error) {
	bad := fmt.Errorf("%q is not a decimal number", s)
	mant, e, hasExp := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, hasFrac := strings.Cut(mant, ".")
	if !allDigits(intPart) || (len(intPart) > 1 && intPart[0] == '0') || (hasFrac && !allDigits(frac)) {
		return "", 0, bad
	}
	if hasExp {
		e = strings.TrimPrefix(e, "+")
		n, perr := strconv.Atoi(e)
		if perr != nil || e == "" || n < -400 || n > 400 {
			return "", 0, bad
		}
		exp = n
	}
	return mant, exp, nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Append appends v, a count of 10⁻places units (places at most 19), as a
// trimmed decimal: no trailing zeros after the point and no point for a
// whole number (1234500000 at 12 places is 0.0012345; 2·10¹² is 2). It
// allocates nothing beyond growing dst: the usage log writes every cost
// with it.
func Append(dst []byte, v uint64, places int) []byte {
	p := uint64(1)
	for range places {
		p *= 10
	}
	dst = strconv.AppendUint(dst, v/p, 10)
	frac := v % p
	if frac == 0 {
		return dst
	}
	var digits [19]byte
	for i := places - 1; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	n := places
	for digits[n-1] == '0' {
		n--
	}
	dst = append(dst, '.')
	return append(dst, digits[:n]...)
}

// String returns v, a count of 10⁻places units, as Append writes it.
func String(v uint64, places int) string {
	return string(Append(nil, v, places))
}
