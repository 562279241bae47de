// Package foldedjson models, for the fuzz tests, how encoding/json/v2 reads
// an object's member names when matching them case-insensitively
// (MatchCaseInsensitiveNames, duplicate names allowed): a name matches a
// field when the two are equal under Unicode simple case folding once every
// '_' and '-' is removed, and the last matching member wins. Go 1.26 ships
// encoding/json/v2 only under GOEXPERIMENT=jsonv2, so the rule is written
// out here, once, for every test that plays that reader.
package foldedjson

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode"
)

// Members reads a JSON object's members, keyed by Key of their names, the
// last of each kept. It returns nil when doc is not an object.
func Members(doc []byte) map[string]json.RawMessage { return MembersKeyed(doc, Key) }

// MembersKeyed is Members with the reader's own key function: a reader
// that matches names by upper-casing them keys them by their upper case.
func MembersKeyed(doc []byte, key func(name string) string) map[string]json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(doc))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil
		}
		m[key(tok.(string))] = val
	}
	return m
}

// Key removes '_' and '-' from name and folds each rune to the smallest of
// its simple folding orbit, so that names equal under strings.EqualFold
// (once those are removed) have one key: Key("Service-Tier") is
// "servicetier".
func Key(name string) string {
	var b strings.Builder
	for _, r := range name {
		if r == '_' || r == '-' {
			continue
		}
		smallest := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			smallest = min(smallest, f)
		}
		b.WriteRune(unicode.ToLower(smallest))
	}
	return b.String()
}
