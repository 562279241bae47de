package policy

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file holds how tiergate folds the case of a key or a value it reads
// (docs/contracts.md, "Evaluation", step 1). Upstream readers ignore case in
// two ways that part outside ASCII, and a string is what tiergate reads if
// either way makes it so:
//
//   - Unicode simple case folding (Go's encoding/json, strings.EqualFold):
//     'ſ' (the long s) is 's', the Kelvin sign 'K' is 'k';
//   - upper-casing, then comparing or lower-casing: rune by rune (Java's
//     equalsIgnoreCase, .NET's ToUpperInvariant) 'ı' (dotless i) and 'İ'
//     are 'I'; with the full mapping (Python's str.upper, Java's
//     String.toUpperCase) 'ß' is "SS" and each ligature of U+FB00–FB06 its
//     letters ("ﬆ" is "ST", so "faﬆ" is FAST).
//
// Every name tiergate reads is ASCII, so all that matters of a non-ASCII
// rune is which ASCII letters, if any, a reader makes of it. Where both
// ways make ASCII of a rune they make the same letters, so one mapping
// (foldASCII) serves both.

// foldASCII returns the lower-case ASCII letters some upstream's case
// folding or upper-casing makes of the non-ASCII rune r, and "" when none
// makes ASCII of it (a key or value holding r then names nothing tiergate
// reads). Go's unicode package maps case one rune to one rune, so the
// mappings that expand (the full upper-case mapping's) are listed here.
func foldASCII(r rune) string {
	switch r {
	case 'ß':
		return "ss"
	case '\uFB00': // ﬀ
		return "ff"
	case '\uFB01': // ﬁ
		return "fi"
	case '\uFB02': // ﬂ
		return "fl"
	case '\uFB03': // ﬃ
		return "ffi"
	case '\uFB04': // ﬄ
		return "ffl"
	case '\uFB05', '\uFB06': // ﬅ, ﬆ
		return "st"
	}
	if l := unicode.ToLower(unicode.ToUpper(r)); l < utf8.RuneSelf { // ı, İ, ſ, K
		return asciiLetter(l)
	}
	if s := foldToSmallest(r); s < utf8.RuneSelf { // the simple folding orbit of an ASCII letter
		return asciiLetter(s)
	}
	return ""
}

// asciiLetter returns the ASCII rune r, lower-cased, as a string: a slice
// of lowerASCII, so that it is not allocated.
func asciiLetter(r rune) string {
	return lowerASCII[r : r+1]
}

// lowerASCII holds every ASCII byte, at its own index, lower-cased.
var lowerASCII = func() string {
	var b [utf8.RuneSelf]byte
	for i := range b {
		b[i] = byte(i)
		if 'A' <= i && i <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b[:])
}()

// foldValue lower-cases s as tiergate compares values: ASCII letters
// lower-cased, every other rune replaced by the letters of foldASCII, and a
// rune that folds to no ASCII kept as it is (the value then matches no name
// tiergate reads). Callers take it only for a value holding a byte of
// 0x80 or more, or an upper-case letter.
func foldValue(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r < utf8.RuneSelf:
			b.WriteString(asciiLetter(r))
		case foldASCII(r) != "":
			b.WriteString(foldASCII(r))
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// equalFoldValue reports whether b, read as foldValue reads it, is want (a
// lower-case ASCII name), without allocating.
func equalFoldValue(b []byte, want string) bool {
	for len(b) > 0 {
		r, size := rune(b[0]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(b)
		}
		b = b[size:]
		var f string
		if r < utf8.RuneSelf {
			f = asciiLetter(r)
		} else if f = foldASCII(r); f == "" {
			return false
		}
		if !strings.HasPrefix(want, f) {
			return false
		}
		want = want[len(f):]
	}
	return want == ""
}
