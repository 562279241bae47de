package jsonprune

import (
	"errors"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// testSpec has every kind of Spec at more than one level.
var testSpec = Members(map[string]*Spec{
	"id":    Whole,
	"usage": Whole,
	"error": Shape,
	"choices": Each(Members(map[string]*Spec{
		"finish_reason": Whole,
		"delta":         Members(map[string]*Spec{"content": Shape, "tool_calls": Shape}),
	})),
	"list": Members(map[string]*Spec{"id": Whole}),
})

// prune runs a new Pruner over chunks.
func prune(limit int, chunks ...[]byte) (string, error) {
	p := New(testSpec, limit)
	for _, c := range chunks {
		p.Write(c)
	}
	out, err := p.Close()
	return string(out), err
}

func TestPrune(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, doc, want string
		err             error
	}{
		{"members not named are dropped, named ones kept as they are",
			`{"id":"a","output":[1,{"usage":2}],"usage":{ "input_tokens" : 3 }}`,
			`{"id":"a","usage":{ "input_tokens" : 3 }}`, nil},
		{"duplicates are kept, in order",
			`{"usage":1,"x":0,"usage":null,"id":"b","usage":{"a":[]}}`,
			`{"usage":1,"usage":null,"id":"b","usage":{"a":[]}}`, nil},
		{"an escaped name is a name, written plainly",
			`{"us\u0061ge":5,"i\u0064":"c","\u0069\u0064\u00e9":1}`,
			`{"usage":5,"id":"c"}`, nil},
		{"a name with a non-ASCII escape is none of ours",
			`{"id\ud800\u0064":1,"usag\u00e9":2}`, `{}`, nil},
		{"each element of an array is pruned",
			`{"choices":[{"index":0,"finish_reason":"stop","delta":{"content":"hello","role":"x"}},{"delta":{"content":"","tool_calls":[]}},7,"s",[{"finish_reason":"length"}]]}`,
			`{"choices":[{"finish_reason":"stop","delta":{"content":"x"}},{"delta":{"content":"","tool_calls":[]}},0,"x",[{"finish_reason":"length"}]]}`, nil},
		{"each member of an object is pruned, its name written as none",
			`{"choices":{"a":{"finish_reason":"stop","x":1},"b\u0000":"s"}}`,
			`{"choices":{"":{"finish_reason":"stop"},"":"x"}}`, nil},
		{"members reach into each object of an array",
			`{"list":[{"id":1,"x":2},[{"id":3}],"s"]}`, `{"list":[{"id":1},[{"id":3}],"x"]}`, nil},
		{"a shape keeps the type and whether it is empty",
			`{"error":{"message":"m"},"error":{ },"error":[ ],"error":[null],"error":"","error":"\n","error":-1.5e3,"error":true,"error":false,"error":null}`,
			`{"error":{"":0},"error":{},"error":[],"error":[0],"error":"","error":"x","error":0,"error":true,"error":false,"error":null}`, nil},
		{"a scalar where members were expected is kept as a shape",
			`{"choices":"long text","id":1}`, `{"choices":"x","id":1}`, nil},
		{"a document that is not an object keeps its shape", ` [ {"id":1} , 2 ] `, `[{"id":1},0]`, nil},
		{"a top-level number", `-0.5e+7`, `0`, nil},
		{"whitespace around the document", " \t\r\n{}\n ", `{}`, nil},
		{"numbers kept whole keep every digit", `{"id":-12.50E-3}`, `{"id":-12.50E-3}`, nil},
		{"an empty document is invalid", ``, "", ErrInvalid},
		{"a cut document is invalid", `{"id":"a"`, "", ErrInvalid},
		{"a cut number inside an object is invalid", `{"id":1`, "", ErrInvalid},
		{"a trailing comma is invalid", `{"id":1,}`, "", ErrInvalid},
		{"a leading zero is invalid", `{"id":01}`, "", ErrInvalid},
		{"two documents are invalid", `{} {}`, "", ErrInvalid},
		{"a control character in a string is invalid", "{\"x\":\"a\tb\"}", "", ErrInvalid},
		{"a bad escape is invalid", `{"x":"\x"}`, "", ErrInvalid},
		{"a short \\u escape is invalid", `{"x":"\u12"}`, "", ErrInvalid},
		{"a mismatched bracket is invalid", `{"x":[}`, "", ErrInvalid},
		{"a misspelt literal is invalid", `{"x":nul}`, "", ErrInvalid},
		{"bytes that are not UTF-8 are valid in strings", "{\"id\":\"\xff\xfe\"}", "{\"id\":\"\xff\xfe\"}", nil},
		{"a kept member longer than the limit is too large",
			`{"usage":"` + strings.Repeat("u", 300) + `"}`, "", ErrTooLarge},
		{"dropped members may be of any length",
			`{"output":"` + strings.Repeat("o", 1000) + `","error":"` + strings.Repeat("e", 1000) + `"}`, `{"error":"x"}`, nil},
		{"nesting deeper than MaxDepth is too large",
			strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), "", ErrTooLarge},
		{"nesting as deep as MaxDepth is followed",
			`{"x":` + strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1) + `}`, `{}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, chunks := range [][][]byte{{[]byte(tc.doc)}, split([]byte(tc.doc), 3), split([]byte(tc.doc), 1)} {
				got, err := prune(256, chunks...)
				if !errors.Is(err, tc.err) || got != tc.want {
					t.Fatalf("in %d chunks: %q, %v; want %q, %v", len(chunks), got, err, tc.want, tc.err)
				}
			}
		})
	}
}

func TestPrunerHoldsAtMostItsLimit(t *testing.T) {
	t.Parallel()
	const limit = 1000
	p := New(testSpec, limit)
	doc := `{"output":"` + strings.Repeat("x", 1<<20) + `","usage":{"n":"` + strings.Repeat("y", 900) + `"}}`
	for _, c := range split([]byte(doc), 4093) {
		p.Write(c)
		if p.Held() > limit+8 { // the copy, and one word of nesting bits
			t.Fatalf("holds %d bytes, limit %d", p.Held(), limit)
		}
	}
	if out, err := p.Close(); err != nil || len(out) != len(`{"usage":{"n":""}}`)+900 {
		t.Fatalf("Close = %d bytes, %v", len(out), err)
	}
	p.Reset()
	p.Write([]byte(`{"id":1}`))
	if out, err := p.Close(); err != nil || string(out) != `{"id":1}` {
		t.Fatalf("after Reset: %q, %v", out, err)
	}
}

// FuzzPrune checks, for any bytes, that the Pruner refuses exactly what
// gjson.Valid refuses, that where the document is cut changes nothing, that
// the copy is valid JSON, and that the members kept whole read the same in
// the copy as in the document, duplicates and their order included.
func FuzzPrune(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","usage":{"x":1},"choices":[{"delta":{"content":"c"}}]}`,
		`{"us\u0061ge":1,"usage":2}`, `[1,2,{"id":3}]`, `-0.1e-2`, `"\ud83d\ude00"`,
		`{"error":[],"error":{"a":1}}`, `{"id":tru}`, `{"a":"\u00"}`,
	} {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, doc []byte, cut uint16) {
		whole, err := prune(1<<20, doc)
		if valid := gjson.ValidBytes(doc); valid != (err == nil) {
			t.Fatalf("gjson.Valid = %v, Pruner error %v", valid, err)
		}
		i := int(cut) % (len(doc) + 1)
		if got, gotErr := prune(1<<20, doc[:i], doc[i:]); got != whole || gotErr != err {
			t.Fatalf("cut at %d: %q, %v; whole %q, %v", i, got, gotErr, whole, err)
		}
		if got, gotErr := prune(1<<20, split(doc, 1)...); got != whole || gotErr != err {
			t.Fatalf("byte by byte: %q, %v; whole %q, %v", got, gotErr, whole, err)
		}
		if err != nil {
			return
		}
		if !gjson.Valid(whole) {
			t.Fatalf("the copy %q is not valid JSON", whole)
		}
		if want, got := wholeMembers(gjson.ParseBytes(doc)), wholeMembers(gjson.Parse(whole)); want != got {
			t.Fatalf("members kept whole: %q in the copy, %q in the document", got, want)
		}
	})
}

// wholeMembers lists the top-level members testSpec keeps whole, as gjson
// reads them.
func wholeMembers(doc gjson.Result) string {
	var b strings.Builder
	doc.ForEach(func(k, v gjson.Result) bool {
		if k.Str == "id" || k.Str == "usage" {
			b.WriteString(k.Str + "=" + v.Raw + ";")
		}
		return true
	})
	return b.String()
}

// split cuts b into chunks of n bytes.
func split(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}
