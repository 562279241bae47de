package jsonscan

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// valid is what the scanner must accept: JSON as encoding/json reads it,
// in UTF-8 throughout (RFC 8259 §8.1; encoding/json lets invalid bytes in
// strings through as U+FFFD).
func valid(doc []byte) bool { return json.Valid(doc) && utf8.Valid(doc) }

// testKeys reads "a" (kind 1) and "b" (kind 2), at most twice each.
var testKeys = Keys{
	Kind: func(tok []byte) int {
		switch string(tok) {
		case `"a"`:
			return 1
		case `"b"`:
			return 2
		}
		return 0
	},
	Max: 2,
}

func TestDocumentValidates(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		doc    string
		offset int // of the SyntaxError; -1 for a valid document
	}{
		{"an object with every kind of value is valid", `{"a":[1,-2.5e+3,true,false,null,"x\u00e9\n"],"o":{}}`, -1},
		{"a bare value is valid", ` "s" `, -1},
		{"white space alone is not", "  ", 2},
		{"a trailing comma is not", `{"a":1,}`, 7},
		{"a second value after the first is not", `{} {}`, 3},
		{"a leading zero is not", `[01]`, 2},
		{"a bad escape is not", `["\x"]`, 3},
		{"a raw control character in a string is not", "[\"\x01\"]", 2},
		{"invalid UTF-8 in a string is not", "[\"\xff\"]", 2},
		{"a truncated literal is not", `[tru]`, 1},
		{"a single quote is not", `{'a':1}`, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var obj Object
			_, err := Document([]byte(tc.doc), &obj, &testKeys)
			if want := valid([]byte(tc.doc)); want != (err == nil) {
				t.Fatalf("err %v, but encoding/json and UTF-8 say valid=%v", err, want)
			}
			var se *SyntaxError
			switch {
			case tc.offset < 0 && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.offset >= 0 && (!errors.As(err, &se) || se.Offset != tc.offset):
				t.Fatalf("error %v, want a SyntaxError at byte %d", err, tc.offset)
			}
		})
	}
}

func TestDocumentBoundsDepth(t *testing.T) {
	t.Parallel()
	deep := func(n int) []byte { return []byte(strings.Repeat("[", n) + strings.Repeat("]", n)) }
	if _, err := Document(deep(MaxDepth), nil, &testKeys); err != nil {
		t.Errorf("depth %d refused: %v", MaxDepth, err)
	}
	if _, err := Document(deep(MaxDepth+1), nil, &testKeys); err == nil {
		t.Errorf("depth %d accepted", MaxDepth+1)
	}
}

// keys renders what a scan recorded: each member as its key token, and a
// run of unread members as its keys joined by '+'.
func keys(doc []byte, obj *Object) []string {
	var out []string
	for _, m := range obj.Members {
		var sub Object
		span := `{` + string(doc[m.KeyStart:m.ValEnd]) + `}`
		if _, err := Document([]byte(span), &sub, &Keys{Kind: func([]byte) int { return 1 }, Max: 1 << 20}); err != nil {
			out = append(out, "unparsable:"+span)
			continue
		}
		var names []string
		for _, sm := range sub.Members {
			names = append(names, span[sm.KeyStart:sm.KeyEnd])
		}
		out = append(out, strings.Join(names, "+"))
	}
	return out
}

func TestDocumentRecordsMembers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		doc     string
		want    string // the recorded members, as keys renders them, joined by " "
		tooMany bool
	}{
		{"every member read is recorded, duplicates included", `{"a":1,"b":2,"a":3}`, `"a" "b" "a"`, false},
		{"unread members between read ones are runs", `{"x":1, "y":{"a":1},"a":2,"z":[],"b":3}`, `"x"+"y" "a" "z" "b"`, false},
		{"nested members are not recorded", `{"o":{"a":1,"b":2}}`, `"o"`, false},
		{"one occurrence over Max stops recording", `{"a":1,"a":2,"b":0,"a":3,"b":4}`, `"a" "a" "b"`, true},
		{"an empty object has no members", ` { } `, ``, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var obj Object
			isObj, err := Document([]byte(tc.doc), &obj, &testKeys)
			if err != nil || !isObj {
				t.Fatalf("isObject %v, err %v", isObj, err)
			}
			if got := strings.Join(keys([]byte(tc.doc), &obj), " "); got != tc.want || obj.TooMany != tc.tooMany {
				t.Errorf("members %s (too many %v), want %s (%v)", got, obj.TooMany, tc.want, tc.tooMany)
			}
			if tc.doc[obj.Start] != '{' || tc.doc[obj.End-1] != '}' {
				t.Errorf("span [%d,%d) is not the object", obj.Start, obj.End)
			}
		})
	}
}

func TestNested(t *testing.T) {
	t.Parallel()
	doc := []byte(`{"r":{"b":1,"q":2},"s":"x"}`)
	var top Object
	if _, err := Document(doc, &top, &testKeys); err != nil {
		t.Fatal(err)
	}
	// "r" and "s" are unread: one run, whose ValStart is r's value.
	run := top.Members[0]
	end, ok := Value(doc, run.ValStart)
	if !ok || string(doc[run.ValStart:end]) != `{"b":1,"q":2}` {
		t.Fatalf("Value read %q", doc[run.ValStart:end])
	}
	var obj Object
	if !Nested(doc, run.ValStart, end, &obj, &testKeys) {
		t.Fatal("the nested object was not scanned")
	}
	if got := strings.Join(keys(doc, &obj), " "); got != `"b" "q"` {
		t.Errorf("nested members %s", got)
	}
	str := strings.Index(string(doc), `"x"`)
	if Nested(doc, str, str+3, &obj, &testKeys) {
		t.Error("a string was scanned as an object")
	}
}

func TestStringValue(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, tok, want string
		ok              bool
	}{
		{"a plain string is its content", `"flex"`, "flex", true},
		{"escapes are undone", `"a\"\\\/\b\f\n\r\t"`, "a\"\\/\b\f\n\r\t", true},
		{"a surrogate pair is one rune", `"\ud83d\ude00"`, "😀", true},
		{"a lone surrogate is U+FFFD, as encoding/json reads it", `"\ud83dx"`, "\uFFFDx", true},
		{"a number is not a string", `12`, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := StringValue(nil, []byte(tc.tok))
			if string(got) != tc.want || ok != tc.ok {
				t.Errorf("got %q %v, want %q %v", got, ok, tc.want, tc.ok)
			}
			if ok {
				var std string
				if err := json.Unmarshal([]byte(tc.tok), &std); err != nil || std != tc.want {
					t.Errorf("encoding/json reads %q (%v)", std, err)
				}
			}
		})
	}
}

func FuzzDocument(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":[2,{"a":3}]}`, `[1,2`, `"\ud800"`, `{"a":1,"a":2,"a":3}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		var obj Object
		_, err := Document(doc, &obj, &testKeys)
		if want := valid(doc); want != (err == nil) {
			t.Fatalf("err %v, want valid=%v: %q", err, want, doc)
		}
	})
}
