package policy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// This file holds the single pass that both validates a body as JSON
// (RFC 8259) and records the members of its top-level object. Doing both at
// once is what keeps a decision within a small factor of one validating read
// of the body: the members are where service_tier, model and the rest live,
// and every one of them is recorded, duplicates included, because JSON
// readers disagree on which duplicate wins.

// maxDepth bounds nesting, as encoding/json does, so a body of ten million
// '[' cannot exhaust the stack.
const maxDepth = 10000

// member is one "key": value pair of an object, as offsets into the document.
type member struct {
	keyStart, keyEnd int // the key token, quotes included
	valStart, valEnd int // the value token
}

// object is a scanned JSON object: its span and its own members.
//
// Members whose keys tiergate does not read are recorded as runs: one
// member spans from the run's first key to its last value, which every
// reader of members treats as one member it does not read, and which a
// rebuild copies as it is. So what is recorded is bounded by the keys
// tiergate reads, not by the body: a body of millions of "":0 members
// would otherwise cost several times its size in members and edits.
type object struct {
	start, end int // the '{' and one past the '}'
	members    []member
	// tooMany is set when a key tiergate reads occurs more than
	// maxOccurrences times in the object; recording stopped there, so
	// members is incomplete and the body must be refused.
	tooMany bool
}

// SyntaxError says where a body stops being valid JSON.
type SyntaxError struct {
	Offset int // byte offset of the first byte that cannot be accepted
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d", e.Offset)
}

// scanDocument validates data as one JSON text. When the text is an object,
// obj receives its span and members and isObject is true.
func scanDocument(data []byte, obj *object) (isObject bool, err error) {
	i := skipWS(data, 0)
	if i == len(data) {
		return false, &SyntaxError{Offset: i}
	}
	var ok bool
	if data[i] == '{' {
		isObject = true
		i, ok = scanObject(data, i, obj, 1)
	} else {
		i, ok = validValue(data, i, 1)
	}
	if !ok {
		return false, &SyntaxError{Offset: i}
	}
	if i = skipWS(data, i); i != len(data) {
		return false, &SyntaxError{Offset: i}
	}
	return isObject, nil
}

// scanNested records the members of an object value that the document scan
// has already validated (a nested object such as a WebSocket frame's
// "response"). It reports false if the value is not an object.
func scanNested(data []byte, start, end int, obj *object) bool {
	if start >= end || data[start] != '{' {
		return false
	}
	_, ok := scanObject(data[:end], start, obj, 1)
	return ok
}

func skipWS(d []byte, i int) int {
	for i < len(d) {
		switch d[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanObject reads the object at d[i] == '{'. With obj non-nil it records
// the object's own members; nested values are validated, not recorded.
func scanObject(d []byte, i int, obj *object, depth int) (int, bool) {
	if depth > maxDepth {
		return i, false
	}
	if obj != nil {
		obj.start = i
	}
	i = skipWS(d, i+1)
	if i < len(d) && d[i] == '}' {
		if obj != nil {
			obj.end = i + 1
		}
		return i + 1, true
	}
	var kinds [kindSession + 1]int // occurrences of each key read
	run := false                   // the last member recorded is a run of unread keys
	for {
		if i >= len(d) || d[i] != '"' {
			return i, false
		}
		ks := i
		var ok bool
		if i, ok = validString(d, i+1); !ok {
			return i, false
		}
		ke := i
		if i = skipWS(d, i); i >= len(d) || d[i] != ':' {
			return i, false
		}
		vs := skipWS(d, i+1)
		if i, ok = validValue(d, vs, depth+1); !ok {
			return i, false
		}
		if obj != nil && !obj.tooMany {
			switch k := classifyKey(d[ks:ke]); {
			case k == keyOther && run:
				obj.members[len(obj.members)-1].valEnd = i
			case k == keyOther:
				obj.members = append(obj.members, member{keyStart: ks, keyEnd: ke, valStart: vs, valEnd: i})
				run = true
			case kinds[k] == maxOccurrences:
				obj.tooMany = true
			default:
				kinds[k]++
				obj.members = append(obj.members, member{keyStart: ks, keyEnd: ke, valStart: vs, valEnd: i})
				run = false
			}
		}
		if i = skipWS(d, i); i >= len(d) {
			return i, false
		}
		switch d[i] {
		case ',':
			i = skipWS(d, i+1)
		case '}':
			if obj != nil {
				obj.end = i + 1
			}
			return i + 1, true
		default:
			return i, false
		}
	}
}

func scanArray(d []byte, i int, depth int) (int, bool) {
	if depth > maxDepth {
		return i, false
	}
	i = skipWS(d, i+1)
	if i < len(d) && d[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = validValue(d, i, depth+1); !ok {
			return i, false
		}
		if i = skipWS(d, i); i >= len(d) {
			return i, false
		}
		switch d[i] {
		case ',':
			i = skipWS(d, i+1)
		case ']':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// validValue reads one value starting exactly at d[i] (no leading space).
func validValue(d []byte, i int, depth int) (int, bool) {
	if i >= len(d) {
		return i, false
	}
	switch c := d[i]; {
	case c == '"':
		return validString(d, i+1)
	case c == '{':
		return scanObject(d, i, nil, depth)
	case c == '[':
		return scanArray(d, i, depth)
	case c == 't':
		return literal(d, i, "true")
	case c == 'f':
		return literal(d, i, "false")
	case c == 'n':
		return literal(d, i, "null")
	case c == '-' || ('0' <= c && c <= '9'):
		return validNumber(d, i)
	}
	return i, false
}

func literal(d []byte, i int, lit string) (int, bool) {
	if len(d)-i < len(lit) || string(d[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

func validNumber(d []byte, i int) (int, bool) {
	if d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && '1' <= d[i] && d[i] <= '9':
		i = digits(d, i+1)
	default:
		return i, false
	}
	if i < len(d) && d[i] == '.' {
		j := digits(d, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := digits(d, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func digits(d []byte, i int) int {
	for i < len(d) && '0' <= d[i] && d[i] <= '9' {
		i++
	}
	return i
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// special reports whether any of the eight bytes in v needs a closer look
// inside a string: a quote, a backslash, a control character, or a non-ASCII
// byte (which starts a UTF-8 sequence to check).
func special(v uint64) uint64 {
	q := v ^ (lsb * '"')
	b := v ^ (lsb * '\\')
	return ((q - lsb) & ^q) | ((b - lsb) & ^b) | ((v - lsb*0x20) & ^v) | v&msb
}

// validString reads a string whose opening quote is at d[i-1] and returns
// the offset just past its closing quote. It checks escapes and UTF-8.
func validString(d []byte, i int) (int, bool) {
	for {
		// Skip eight plain bytes at a time, then jump straight to the first
		// byte that needs a look: the lowest flagged byte is exact (borrows
		// only ever flag bytes above a true match).
		for i+8 <= len(d) {
			if m := special(binary.LittleEndian.Uint64(d[i:])) & msb; m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(d) {
			return i, false
		}
		switch c := d[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			if i+1 >= len(d) {
				return i + 1, false
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(d)-i < 6 || !isHex(d[i+2]) || !isHex(d[i+3]) || !isHex(d[i+4]) || !isHex(d[i+5]) {
					return i, false
				}
				i += 6
			default:
				return i + 1, false
			}
		case c < 0x20:
			return i, false
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && size == 1 {
				return i, false
			}
			i += size
		}
	}
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// stringValue returns the content of the string token tok, unescaped, into
// buf's storage when it fits. ok is false when tok is not a string.
func stringValue(buf []byte, tok []byte) (s []byte, ok bool) {
	if len(tok) < 2 || tok[0] != '"' {
		return nil, false
	}
	raw := tok[1 : len(tok)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw, true
	}
	return unescape(buf[:0], raw)
}

// unescape appends the unescaped form of a validated string body to dst.
// Lone surrogates become U+FFFD, as encoding/json reads them.
func unescape(dst, raw []byte) ([]byte, bool) {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		if i+1 >= len(raw) {
			return dst, false
		}
		switch raw[i+1] {
		case '"', '\\', '/':
			dst = append(dst, raw[i+1])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(raw, i+2)
			if !ok {
				return dst, false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if r2, ok := hex4(raw, i+2); ok && i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						dst = utf8.AppendRune(dst, dec)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default:
			return dst, false
		}
		i += 2
	}
	return dst, true
}

func hex4(b []byte, i int) (rune, bool) {
	if len(b)-i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
