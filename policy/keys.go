package policy

import (
	"bytes"
	"unicode"
	"unicode/utf8"

	"github.com/tiergate/tiergate/internal/jsonscan"
)

// This file decides which member keys tiergate reads. An upstream's reader
// may fill a service_tier field from a key that is not spelled
// service_tier: Go's encoding/json matches struct fields with Unicode
// simple case folding (SERVICE_TIER, ſervice_tier), a reader that compares
// upper-cased names takes servıce_tıer (dotless i) for it (fold.go), and
// encoding/json/v2's case-insensitive matching also ignores '_' and '-'
// (serviceTier, service-tier). So every key is compared after JSON
// unescaping, that folding and removal of '_' and '-' (docs/contracts.md,
// "Evaluation", step 1), and every key that matches is an occurrence.

// keyKind names a key tiergate reads.
type keyKind uint8

// Keys tiergate reads; keyOther is every other key.
const (
	keyOther keyKind = iota
	kindServiceTier
	kindModel
	kindStream
	kindStreamOptions
	kindIncludeUsage
	kindSpeed
	kindFallbacks
	kindType
	kindResponse
	kindSession
	kindRequests
	kindParams
)

// kindNames holds each kind's canonical spelling, the one tiergate writes.
var kindNames = [...]string{
	kindServiceTier:   keyServiceTier,
	kindModel:         keyModel,
	kindStream:        keyStream,
	kindStreamOptions: keyStreamOptions,
	kindIncludeUsage:  keyIncludeUsage,
	kindSpeed:         keySpeed,
	kindFallbacks:     keyFallbacks,
	kindType:          keyType,
	kindResponse:      keyResponse,
	kindSession:       keySession,
	kindRequests:      keyRequests,
	kindParams:        keyParams,
}

// maxFoldedKey is the longest folded name tiergate reads ("streamoptions"
// is 13 bytes): a key that folds to more is none of them.
const maxFoldedKey = 16

// classifyKey returns the kind of the key token tok (quotes included).
// Plain ASCII keys, nearly all of them, are folded byte by byte without
// allocating; escapes and non-ASCII runes take the slower path. Anything
// that is not a quoted token is no key tiergate reads: gjson, which the
// bridge reads frames with, hands an empty key for a frame that is not an
// object.
func classifyKey(tok []byte) keyKind {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		return keyOther
	}
	raw := tok[1 : len(tok)-1]
	var buf [maxFoldedKey]byte
	n := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '\\' || c >= utf8.RuneSelf {
			return classifySlow(raw)
		}
		if c == '_' || c == '-' {
			continue
		}
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if n == len(buf) {
			return keyOther
		}
		buf[n] = c
		n++
	}
	return kindOfFolded(buf[:n])
}

// classifySlow classifies a key that holds escapes or non-ASCII runes. A
// non-ASCII rune counts as the ASCII letters foldASCII makes of it.
func classifySlow(raw []byte) keyKind {
	var ubuf [64]byte
	s, ok := jsonscan.Unescape(ubuf[:0], raw)
	if !ok {
		return keyOther
	}
	// A reader that keeps keys as C strings (cJSON) reads up to the NUL:
	// "service_tier\u0000x" is service_tier to it. (A NUL can only come
	// escaped, so only this path sees one.)
	s = cString(s)
	var buf [maxFoldedKey]byte
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRune(s[i:])
		i += size
		if r == '_' || r == '-' {
			continue
		}
		var f string
		if r < utf8.RuneSelf {
			f = asciiLetter(r)
		} else if f = foldASCII(r); f == "" {
			return keyOther // no name tiergate reads holds such a rune
		}
		if n+len(f) > len(buf) {
			return keyOther
		}
		for j := 0; j < len(f); j++ {
			c := f[j]
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			buf[n] = c
			n++
		}
	}
	return kindOfFolded(buf[:n])
}

// foldToSmallest maps r to the smallest rune of its simple folding orbit,
// as encoding/json does: 's', 'S' and 'ſ' all become 'S'.
func foldToSmallest(r rune) rune {
	if r < utf8.RuneSelf {
		if 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		return r
	}
	smallest := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		smallest = min(smallest, f)
	}
	return smallest
}

// kindOfFolded maps a folded key (upper case, no '_' or '-') to its kind.
func kindOfFolded(f []byte) keyKind {
	switch string(f) {
	case "SERVICETIER":
		return kindServiceTier
	case "MODEL":
		return kindModel
	case "STREAM":
		return kindStream
	case "STREAMOPTIONS":
		return kindStreamOptions
	case "INCLUDEUSAGE":
		return kindIncludeUsage
	case "SPEED":
		return kindSpeed
	case "FALLBACKS":
		return kindFallbacks
	case "TYPE":
		return kindType
	case "RESPONSE":
		return kindResponse
	case "SESSION":
		return kindSession
	case "REQUESTS":
		return kindRequests
	case "PARAMS":
		return kindParams
	}
	return keyOther
}

// KeyIs reports whether the JSON key token tok (quotes included) is one an
// upstream's reader may take for name, one of the keys tiergate reads
// ("service_tier", "model", "type", "response", "session", "speed",
// "fallbacks", "stream", "stream_options", "include_usage"). The WebSocket
// bridge reads session frames with it.
func KeyIs(tok []byte, name string) bool {
	k := classifyKey(tok)
	return k != keyOther && kindNames[k] == name
}

// canonicalKey reports whether the key token is spelled exactly as kind k,
// so that a kept member needs no renaming.
func canonicalKey(tok []byte, k keyKind) bool {
	return len(tok) == len(kindNames[k])+2 && string(tok[1:len(tok)-1]) == kindNames[k]
}

// TypeIs reports whether a frame's type value (unescaped) names the event
// type want, read as tier values are: trimmed (white space and control
// characters) and case folded. An upstream that reads " Response.Create" as
// response.create must not find an unpoliced one; one that refuses it
// loses nothing when tiergate polices it. The WebSocket bridge reads
// session.update frames with it.
func TypeIs(value, want string) bool {
	return typeIs([]byte(value), want)
}

func typeIs(v []byte, want string) bool {
	// Read whole and up to a NUL, as tiers are (tierOfValue), and folded
	// as values are (equalFoldValue): an upper-casing reader takes
	// "seßıon.update" for session.update.
	for _, s := range [2][]byte{bytes.TrimFunc(v, trimmed), bytes.TrimFunc(cString(v), trimmed)} {
		if bytes.EqualFold(s, []byte(want)) || equalFoldValue(s, want) {
			return true
		}
	}
	return false
}

// cString cuts an unescaped key or value at its first NUL, where a reader
// that keeps strings as C strings stops reading it.
func cString(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// scanKeys has a scan record each key tiergate reads, up to
// maxOccurrences of each kind in one object.
var scanKeys = jsonscan.Keys{
	Kind: func(tok []byte) int { return int(classifyKey(tok)) },
	Max:  maxOccurrences,
}

// Every kind must fit a scan's count of kinds: this fails to compile
// when one more kind would not.
var _ [jsonscan.MaxKinds - 1 - int(kindParams)]struct{}
