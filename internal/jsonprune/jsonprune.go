package jsonprune

import (
	"errors"
	"fmt"
)

// Errors Close reports.
var (
	// ErrInvalid: the document is not valid JSON, or was cut short.
	ErrInvalid = errors.New("jsonprune: not valid JSON")
	// ErrTooLarge: what the Spec keeps outgrew the Pruner's limit, or the
	// document nests deeper than MaxDepth.
	ErrTooLarge = errors.New("jsonprune: the pruned copy outgrows its bound")
)

// MaxDepth is the deepest nesting a Pruner follows. Each level costs one
// bit, so the bound keeps a document of nothing but '[' from costing memory
// in proportion to its size; real API responses nest a few dozen levels.
const MaxDepth = 1 << 16

// MaxName is the longest member name a Spec may hold. A key is decoded only
// as far as it could still be one of the names, so a long key costs nothing.
const MaxName = 64

// Spec says what of a value the pruned copy keeps. A value no Spec names is
// dropped, its member name with it.
type Spec struct {
	keep    keep
	members map[string]*Spec // Members
	each    *Spec            // Each
}

type keep uint8

const (
	keepWhole keep = iota + 1
	keepShape
	keepMembers
	keepEach
)

// Whole keeps a value as it is, byte for byte.
var Whole = &Spec{keep: keepWhole}

// Shape keeps only a value's JSON type and whether it is empty, as a
// stand-in: "" or "x", 0, {} or {"":0}, [] or [0], and true, false and
// null as they are. It is for values a reader only tests (is it an
// object, is the string non-empty) and that may be long.
var Shape = &Spec{keep: keepShape}

// Members keeps the named members of an object, each as its Spec says, and
// drops the others. Of an array it keeps every element, each pruned by the
// same Spec, so that Members reaches into an array of objects; a string,
// number or literal, which has no members, is kept as Shape keeps it.
//
// A name must be ASCII, at most MaxName bytes, and need no escaping in
// JSON; Members panics otherwise, since the Specs are fixed in the code.
func Members(m map[string]*Spec) *Spec {
	for name, s := range m {
		if len(name) > MaxName || s == nil {
			panic(fmt.Sprintf("jsonprune: member %q: name too long or nil Spec", name))
		}
		for i := range len(name) {
			if c := name[i]; c < ' ' || c >= 0x80 || c == '"' || c == '\\' {
				panic(fmt.Sprintf("jsonprune: member %q: name needs escaping", name))
			}
		}
	}
	return &Spec{keep: keepMembers, members: m}
}

// Each keeps every element of an array and every member of an object, each
// pruned by spec, for a reader that iterates over them without looking at
// member names (gjson's ForEach over what should be an array, which visits
// an object's values too): the names are all written as "". A string,
// number or literal is kept as Shape keeps it.
func Each(spec *Spec) *Spec {
	if spec == nil {
		panic("jsonprune: Each of a nil Spec")
	}
	return &Spec{keep: keepEach, each: spec}
}

// A Pruner reads one document at a time, fed in chunks through Write, and
// keeps the pruned copy its Spec describes, at most limit bytes of it.
// Chunks may be cut anywhere, even inside an escape or a number, and are
// not retained. A Pruner is not safe for concurrent use.
type Pruner struct {
	root  *Spec
	limit int

	out []byte // the pruned copy so far
	err error

	st    state
	depth int
	kinds []uint64 // one bit per open container, 1 for an object

	// frames are the containers open whose members or elements are being
	// pruned (by Members or Each, not kept whole, as a shape, or dropped):
	// frames[i] is the one at depth i+1. They are as deep as the Spec, not
	// as the document.
	frames []frame
	member *Spec // what to keep of the value after the key just read; nil drops it

	// The value being kept whole, as a shape, or dropped, from depth
	// capDepth: nothing inside it needs a decision.
	capture  capture
	capDepth int
	capKind  byte // shape: the value's first byte
	capFull  bool // shape: the value is not empty
	rawFrom  int  // whole: where the value's bytes in this chunk start

	// String state.
	inKey  bool
	key    [MaxName]byte // the key being read, decoded, while it can still be a name
	keyLen int
	keyBad bool // the key is longer than any name, or holds a non-ASCII escape
	hex    int  // hex digits still to come in a \u escape
	uval   rune

	lit    string // the literal being read: true, false or null
	litPos int
}

type frame struct {
	spec *Spec
	obj  bool
	n    int // members or elements written
}

type capture uint8

const (
	capNone capture = iota
	capDrop
	capWhole
	capShape
)

// state is where the reader is in the grammar.
type state uint8

const (
	stValue    state = iota // a value is next
	stObjOpen               // after '{': a key or '}'
	stObjKey                // after ',' in an object: a key
	stColon                 // after a key
	stObjNext               // after a member: ',' or '}'
	stArrOpen               // after '[': a value or ']'
	stArrNext               // after an element: ',' or ']'
	stStr                   // in a string (a key when inKey)
	stStrEsc                // after '\' in a string
	stStrHex                // in the hex digits of \u
	stNumSign               // after '-': a digit
	stNumZero               // after a leading 0: '.', 'e' or the end
	stNumInt                // in the integer digits
	stNumDot                // after '.': a digit
	stNumFrac               // in the fraction digits
	stNumE                  // after 'e': a sign or a digit
	stNumESign              // after the exponent's sign: a digit
	stNumExp                // in the exponent digits
	stLit                   // in true, false or null
	stEnd                   // after the document: whitespace only
)

// New returns a Pruner that keeps what spec describes of each document, at
// most limit bytes of it.
func New(spec *Spec, limit int) *Pruner {
	return &Pruner{root: spec, limit: limit}
}

// Reset makes the Pruner ready for a new document, keeping its buffers.
func (p *Pruner) Reset() {
	*p = Pruner{root: p.root, limit: p.limit, out: p.out[:0], kinds: p.kinds[:0], frames: p.frames[:0]}
}

// Held reports the bytes the Pruner keeps between documents: its copy's
// buffer (never more than limit) and its record of the nesting (one bit a
// level, up to MaxDepth).
func (p *Pruner) Held() int {
	return cap(p.out) + 8*cap(p.kinds)
}

// Close ends the document and returns its pruned copy, which is valid JSON
// and stays valid until the next Reset or Write. The error is ErrInvalid
// when the document is not whole, valid JSON, ErrTooLarge when its copy
// would not fit.
func (p *Pruner) Close() ([]byte, error) {
	if p.err == nil && p.depth == 0 {
		switch p.st {
		case stNumZero, stNumInt, stNumFrac, stNumExp:
			// A top-level number ends with the document; Write has kept
			// its bytes so far.
			p.rawFrom = 0
			p.endValue(nil, 0)
		}
	}
	if p.err == nil && p.st != stEnd {
		p.err = ErrInvalid
	}
	if p.err != nil {
		return nil, p.err
	}
	return p.out, nil
}

// Write reads the next chunk of the document.
func (p *Pruner) Write(b []byte) {
	if p.err != nil {
		return
	}
	p.rawFrom = 0
	for i := 0; i < len(b) && p.err == nil; {
		c := b[i]
		switch p.st {
		case stValue:
			if !space(c) {
				p.beginValue(b, i)
			}
			i++
		case stObjOpen:
			switch {
			case space(c):
			case c == '}':
				p.end(b, i, true)
			case c == '"':
				p.notEmpty()
				p.beginKey()
			default:
				p.err = ErrInvalid
			}
			i++
		case stObjKey:
			switch {
			case space(c):
			case c == '"':
				p.beginKey()
			default:
				p.err = ErrInvalid
			}
			i++
		case stColon:
			switch {
			case space(c):
			case c == ':':
				p.st = stValue
			default:
				p.err = ErrInvalid
			}
			i++
		case stObjNext:
			switch {
			case space(c):
			case c == ',':
				p.st = stObjKey
			case c == '}':
				p.end(b, i, true)
			default:
				p.err = ErrInvalid
			}
			i++
		case stArrOpen:
			switch {
			case space(c):
			case c == ']':
				p.end(b, i, false)
			default:
				p.notEmpty()
				p.beginValue(b, i)
			}
			i++
		case stArrNext:
			switch {
			case space(c):
			case c == ',':
				p.st = stValue
			case c == ']':
				p.end(b, i, false)
			default:
				p.err = ErrInvalid
			}
			i++
		case stStr:
			i = p.str(b, i)
		case stStrEsc:
			p.escape(c)
			i++
		case stStrHex:
			p.hexDigit(c)
			i++
		case stLit:
			if c != p.lit[p.litPos] {
				p.err = ErrInvalid
				break
			}
			i++
			if p.litPos++; p.litPos == len(p.lit) {
				p.endValue(b, i)
			}
		case stEnd:
			if !space(c) {
				p.err = ErrInvalid
			}
			i++
		default:
			i = p.number(b, i)
		}
	}
	if p.err == nil && p.capture == capWhole {
		p.emit(b[p.rawFrom:])
	}
}

// space reports whether c is JSON whitespace.
func space(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// beginValue starts the value whose first byte is b[i], deciding first
// what to keep of it.
func (p *Pruner) beginValue(b []byte, i int) {
	c := b[i]
	p.decide(c, i)
	switch c {
	case '{', '[':
		p.push(c == '{')
	case '"':
		p.inKey = false
		p.st = stStr
	case '-':
		p.st = stNumSign
	case '0':
		p.st = stNumZero
	case '1', '2', '3', '4', '5', '6', '7', '8', '9':
		p.st = stNumInt
	case 't':
		p.lit, p.litPos, p.st = "true", 1, stLit
	case 'f':
		p.lit, p.litPos, p.st = "false", 1, stLit
	case 'n':
		p.lit, p.litPos, p.st = "null", 1, stLit
	default:
		p.err = ErrInvalid
	}
}

// decide chooses what to keep of a value starting with c at index i of the
// chunk. Inside a value kept whole, as a shape or dropped there is nothing
// to decide; otherwise every open container is a frame, and the value is
// the document, a member of the innermost frame or one of its elements.
func (p *Pruner) decide(c byte, i int) {
	if p.capture != capNone {
		return
	}
	spec := p.root
	if n := len(p.frames); n > 0 {
		switch f := &p.frames[n-1]; {
		case f.spec.keep == keepEach:
			spec = f.spec.each
		case f.obj:
			spec = p.member
		default:
			spec = f.spec // Members reaches into each element of an array
		}
	}
	if spec == nil {
		p.capture, p.capDepth = capDrop, p.depth
		return
	}
	p.lead()
	switch {
	case spec.keep == keepWhole:
		p.capture, p.capDepth, p.rawFrom = capWhole, p.depth, i
	case (spec.keep == keepMembers || spec.keep == keepEach) && (c == '{' || c == '['):
		p.emit([]byte{c})
		p.frames = append(p.frames, frame{spec: spec, obj: c == '{'})
	default:
		p.capture, p.capDepth, p.capKind, p.capFull = capShape, p.depth, c, false
	}
}

// lead writes what comes before a kept value in its frame: a comma after
// an earlier one, and in an object the member's name.
func (p *Pruner) lead() {
	n := len(p.frames)
	if n == 0 {
		return
	}
	f := &p.frames[n-1]
	if f.n > 0 {
		p.emit([]byte{','})
	}
	f.n++
	switch {
	case f.obj && f.spec.keep == keepEach:
		p.emit([]byte(`"":`))
	case f.obj:
		p.emit([]byte{'"'})
		p.emit(p.key[:p.keyLen])
		p.emit([]byte{'"', ':'})
	}
}

// notEmpty notes that the container kept as a shape has a member or
// element.
func (p *Pruner) notEmpty() {
	if p.capture == capShape && p.depth == p.capDepth+1 {
		p.capFull = true
	}
}

func (p *Pruner) push(obj bool) {
	if p.depth >= MaxDepth {
		p.err = ErrTooLarge
		return
	}
	w, bit := p.depth/64, uint64(1)<<(p.depth%64)
	for len(p.kinds) <= w {
		p.kinds = append(p.kinds, 0)
	}
	if obj {
		p.kinds[w] |= bit
		p.st = stObjOpen
	} else {
		p.kinds[w] &^= bit
		p.st = stArrOpen
	}
	p.depth++
}

// end closes the innermost container with the bracket at b[i].
func (p *Pruner) end(b []byte, i int, obj bool) {
	p.depth--
	if p.capture == capNone {
		// A frame: its kept members or elements are written.
		p.frames = p.frames[:len(p.frames)-1]
		if obj {
			p.emit([]byte{'}'})
		} else {
			p.emit([]byte{']'})
		}
	}
	p.endValue(b, i+1)
}

// endValue ends a value whose last byte is before b[end], and moves to what
// may follow it.
func (p *Pruner) endValue(b []byte, end int) {
	if p.capture != capNone && p.depth == p.capDepth {
		switch p.capture {
		case capWhole:
			p.emit(b[p.rawFrom:end])
		case capShape:
			p.emit(standIn(p.capKind, p.capFull))
		}
		p.capture = capNone
	}
	switch {
	case p.depth == 0:
		p.st = stEnd
	case p.kinds[(p.depth-1)/64]&(1<<((p.depth-1)%64)) != 0:
		p.st = stObjNext
	default:
		p.st = stArrNext
	}
}

// standIn is what Shape keeps of a value that starts with c.
func standIn(c byte, full bool) []byte {
	switch c {
	case '"':
		if full {
			return []byte(`"x"`)
		}
		return []byte(`""`)
	case '{':
		if full {
			return []byte(`{"":0}`)
		}
		return []byte(`{}`)
	case '[':
		if full {
			return []byte(`[0]`)
		}
		return []byte(`[]`)
	case 't':
		return []byte(`true`)
	case 'f':
		return []byte(`false`)
	case 'n':
		return []byte(`null`)
	}
	return []byte(`0`)
}

func (p *Pruner) beginKey() {
	p.inKey, p.keyLen, p.keyBad = true, 0, false
	p.st = stStr
}

// str reads string bytes from b[i] and returns where it stopped. Plain
// bytes are skipped in a tight loop; only a key that can still be a name
// is copied.
func (p *Pruner) str(b []byte, i int) int {
	j := i
	for j < len(b) {
		if c := b[j]; c == '"' || c == '\\' || c < ' ' {
			break
		}
		j++
	}
	if j > i {
		p.strBytes(b[i:j])
	}
	if j == len(b) {
		return j
	}
	switch b[j] {
	case '"':
		if p.inKey {
			p.inKey = false
			p.st = stColon
			if p.capture == capNone {
				p.member = nil
				if !p.keyBad {
					p.member = p.frames[len(p.frames)-1].spec.members[string(p.key[:p.keyLen])]
				}
			}
		} else {
			p.endValue(b, j+1)
		}
	case '\\':
		p.st = stStrEsc
	default:
		p.err = ErrInvalid // a control character
	}
	return j + 1
}

// strBytes takes decoded string content: into the key, or as the sign that
// a string kept as a shape is not empty.
func (p *Pruner) strBytes(s []byte) {
	switch {
	case p.inKey:
		if p.capture != capNone || p.keyBad {
			return
		}
		if p.keyLen+len(s) > len(p.key) {
			p.keyBad = true
			return
		}
		p.keyLen += copy(p.key[p.keyLen:], s)
	case p.capture == capShape && p.depth == p.capDepth:
		p.capFull = true
	}
}

// escape reads the byte after a backslash.
func (p *Pruner) escape(c byte) {
	var d byte
	switch c {
	case '"', '\\', '/':
		d = c
	case 'b':
		d = '\b'
	case 'f':
		d = '\f'
	case 'n':
		d = '\n'
	case 'r':
		d = '\r'
	case 't':
		d = '\t'
	case 'u':
		p.hex, p.uval, p.st = 4, 0, stStrHex
		return
	default:
		p.err = ErrInvalid
		return
	}
	p.strBytes([]byte{d})
	p.st = stStr
}

// hexDigit reads one digit of a \u escape. A non-ASCII code point cannot be
// part of any name, so a key holding one is no longer matched; gjson, which
// decodes it (and may pair it with the next escape), cannot match it to an
// ASCII name either.
func (p *Pruner) hexDigit(c byte) {
	var v rune
	switch {
	case c >= '0' && c <= '9':
		v = rune(c - '0')
	case c >= 'a' && c <= 'f':
		v = rune(c-'a') + 10
	case c >= 'A' && c <= 'F':
		v = rune(c-'A') + 10
	default:
		p.err = ErrInvalid
		return
	}
	p.uval = p.uval<<4 | v
	if p.hex--; p.hex > 0 {
		return
	}
	p.st = stStr
	if p.uval < 0x80 {
		p.strBytes([]byte{byte(p.uval)})
		return
	}
	if p.inKey {
		p.keyBad = true
		return
	}
	p.strBytes(nil)
}

// number reads a number byte at b[i] and returns the next index. The byte
// that ends a number is not part of it and is read again in the state that
// follows.
func (p *Pruner) number(b []byte, i int) int {
	c := b[i]
	digit := c >= '0' && c <= '9'
	switch p.st {
	case stNumSign:
		switch {
		case c == '0':
			p.st = stNumZero
		case digit:
			p.st = stNumInt
		default:
			p.err = ErrInvalid
		}
	case stNumZero, stNumInt, stNumFrac:
		switch {
		case digit && p.st != stNumZero:
		case c == '.' && p.st != stNumFrac:
			p.st = stNumDot
		case c == 'e' || c == 'E':
			p.st = stNumE
		default:
			p.endValue(b, i)
			return i
		}
	case stNumDot:
		if !digit {
			p.err = ErrInvalid
		}
		p.st = stNumFrac
	case stNumE:
		switch {
		case c == '+' || c == '-':
			p.st = stNumESign
		case digit:
			p.st = stNumExp
		default:
			p.err = ErrInvalid
		}
	case stNumESign:
		if !digit {
			p.err = ErrInvalid
		}
		p.st = stNumExp
	case stNumExp:
		if !digit {
			p.endValue(b, i)
			return i
		}
	}
	return i + 1
}

// emit adds s to the copy, or fails once the copy would pass the limit. The
// buffer grows to at most the limit, whatever append would double it to.
func (p *Pruner) emit(s []byte) {
	if p.err != nil || len(s) == 0 {
		return
	}
	n := len(p.out) + len(s)
	if n > p.limit {
		p.err = ErrTooLarge
		return
	}
	if n > cap(p.out) {
		nb := make([]byte, len(p.out), min(max(2*cap(p.out), n, 256), p.limit))
		copy(nb, p.out)
		p.out = nb
	}
	p.out = append(p.out, s...)
}
