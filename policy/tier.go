package policy

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tiergate/tiergate/internal/jsonscan"
)

// Tier is a service tier as the policy sees it: canonical, with the alias
// fast folded into Priority and Anthropic fast mode counted as Priority.
type Tier uint8

// Tiers. TierNone means no tier was sent; TierUnrecognised means a value was
// sent that tiergate does not know (a non-string, or an unknown name): it is
// left for the upstream to reject and matches no rule.
const (
	TierNone Tier = iota
	TierPriority
	TierFlex
	TierAuto
	TierDefault
	TierScale
	TierUltrafast
	TierUnrecognised
)

var tierNames = [...]string{
	TierNone:         "none",
	TierPriority:     "priority",
	TierFlex:         "flex",
	TierAuto:         "auto",
	TierDefault:      "default",
	TierScale:        "scale",
	TierUltrafast:    "ultrafast",
	TierUnrecognised: "unrecognised",
}

// String returns the canonical name: the value written upstream for a
// concrete tier, "none" or "unrecognised" otherwise.
func (t Tier) String() string {
	if int(t) < len(tierNames) {
		return tierNames[t]
	}
	return "unrecognised"
}

// concrete reports whether t is a tier that can be written upstream.
func (t Tier) concrete() bool { return t >= TierPriority && t <= TierUltrafast }

// quoted returns the JSON string token of a concrete tier.
func (t Tier) quoted() string { return `"` + t.String() + `"` }

// ParseTier normalises a tier name as a client may write it: surrounding
// white space and control characters trimmed (trimmed), case folded as by
// simple folding or upper-casing (fold.go), fast read as priority.
// Anything else is TierUnrecognised; the empty string (after trimming) too.
func ParseTier(s string) Tier {
	s = strings.TrimFunc(s, trimmed)
	if len(s) > 4*len("ultrafast") {
		// No folding shrinks a rune to less than a quarter of its bytes.
		return TierUnrecognised
	}
	return tierByName(asciiLower(s))
}

// trimmed reports whether an upstream's trim may remove r from the ends
// of a value, so that tiergate trims it too: Unicode white space (Go's and
// Python's trims), every control character (Java's String.trim drops all
// of C0, NUL included; a C reader stops at NUL) and the byte order mark
// (JavaScript's trim). "priority\u0000" is priority.
func trimmed(r rune) bool {
	return unicode.IsSpace(r) || unicode.IsControl(r) || r == '\uFEFF'
}

// tierByName maps a trimmed, lower-cased name to its tier.
func tierByName(lower string) Tier {
	switch lower {
	case "priority", "fast":
		return TierPriority
	case "flex":
		return TierFlex
	case "auto":
		return TierAuto
	case "default":
		return TierDefault
	case "scale":
		return TierScale
	case "ultrafast":
		return TierUltrafast
	}
	return TierUnrecognised
}

// asciiLower lower-cases s without allocating when it is already lower-case
// ASCII; other strings are folded as any upstream might fold them
// (foldValue), so that a look-alike spelling (the long s, the Kelvin sign,
// the dotless i, the ligature in "faﬆ") is read the same way.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf || ('A' <= c && c <= 'Z') {
			return foldValue(s)
		}
	}
	return s
}

// TierLabel bounds a tier name an upstream reported (or tiergate sent) for
// use as a metric label: a recognised tier is spelled canonically, no tier
// is "none", and anything else an upstream might send is "other".
func TierLabel(t string) string {
	switch pt := ParseTier(t); {
	case pt.concrete():
		return pt.String()
	case t == "none" || t == "":
		return "none"
	}
	return "other"
}

// quotedTier holds the JSON token of each concrete tier (nil otherwise).
var quotedTier = func() [TierUnrecognised + 1][]byte {
	var q [TierUnrecognised + 1][]byte
	for t := TierPriority; t <= TierUltrafast; t++ {
		q[t] = []byte(t.quoted())
	}
	return q
}()

// tierOfValue reads a service_tier value token: a string is normalised,
// null is no tier, anything else is unrecognised.
func tierOfValue(val []byte) Tier {
	if string(val) == "null" {
		return TierNone
	}
	var buf [48]byte
	s, ok := jsonscan.StringValue(buf[:0], val)
	if !ok {
		return TierUnrecognised
	}
	// Read whole and trimmed (Java's trim drops a NUL at either end), or
	// up to a NUL (a C reader): a tier name holds no NUL, so at most one
	// reading names a tier, and that is the one judged.
	t := parseTierBytes(s)
	if c := cString(s); !t.concrete() && len(c) < len(s) {
		t = parseTierBytes(c)
	}
	return t
}

// parseTierBytes is ParseTier for a byte slice, without allocating in the
// common case.
func parseTierBytes(b []byte) Tier {
	if len(b) <= 16 {
		var buf [16]byte
		n := 0
		for _, c := range bytes.TrimFunc(b, trimmed) {
			if c >= 0x80 {
				return ParseTier(string(b))
			}
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[n] = c
			n++
		}
		return tierByName(string(buf[:n]))
	}
	return ParseTier(string(b))
}
