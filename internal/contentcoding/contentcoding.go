// Package contentcoding decodes HTTP content codings (gzip, deflate) so
// that compressed request bodies can be policed and compressed responses
// read for usage. It bounds what it inflates, so a small body cannot expand
// into an unbounded one (a decompression bomb).
package contentcoding

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// ErrUnsupported is returned for a coding this package cannot decode.
var ErrUnsupported = errors.New("unsupported content-encoding")

// ErrTooLarge is returned when the decoded body would exceed the limit.
var ErrTooLarge = errors.New("decoded body exceeds the limit")

// MaxCodings is the most codings a Content-Encoding value may stack. Real
// clients send one, and a proxy that compresses again makes two; past that
// a stack only serves to make the reader build a decompressor (with its
// window and buffers, tens of KB) per layer before a byte of the body is
// judged: thousands of "deflate," fit under Envoy's header limit, and cost
// hundreds of MB per request. So the count is checked before any decoder is
// built, and a deeper stack is not supported.
const MaxCodings = 4

// ErrTooManyCodings is returned for a Content-Encoding value that stacks
// more than MaxCodings codings. It is an ErrUnsupported, so callers that
// refuse an unknown coding refuse it the same way.
var ErrTooManyCodings = fmt.Errorf("%w: more than %d codings", ErrUnsupported, MaxCodings)

// maxQuoted is the most bytes of a header value an error message quotes:
// enough to show what was sent, where a whole value (up to Envoy's header
// limit, 60 KB and more) would be echoed into refusals and logs.
const maxQuoted = 64

// Supported reports whether every coding in a Content-Encoding value can be
// decoded, at most MaxCodings of them. An empty value and identity are
// supported.
func Supported(header string) bool {
	if Identity(header) {
		return true // and, for the usual empty header, without allocating
	}
	_, err := codings(header)
	return err == nil
}

// Identity reports whether a Content-Encoding value means no coding. Almost
// every request has none, so that answer costs no allocation.
func Identity(header string) bool {
	if header == "" || header == "identity" {
		return true
	}
	for c := range strings.SplitSeq(header, ",") {
		if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
			return false
		}
	}
	return true
}

func known(c string) bool { return c == "gzip" || c == "x-gzip" || c == "deflate" }

// codings splits a Content-Encoding value, dropping identity. It fails on a
// coding this package cannot decode, and on more than MaxCodings codings
// before it has gathered more than that.
func codings(header string) ([]string, error) {
	var out []string
	for c := range strings.SplitSeq(header, ",") {
		c = strings.ToLower(strings.TrimSpace(c))
		if c == "" || c == "identity" {
			continue
		}
		if !known(c) {
			return nil, fmt.Errorf("%w: %s", ErrUnsupported, Quote(c))
		}
		if len(out) == MaxCodings {
			return nil, fmt.Errorf("%w: %s", ErrTooManyCodings, Quote(header))
		}
		out = append(out, c)
	}
	return out, nil
}

// Quote returns s as a Go-quoted string for an error message, cut to its
// first maxQuoted bytes (at a rune boundary) with an ellipsis when it is
// longer: a header value is the client's, and can be tens of KB.
func Quote(s string) string {
	if len(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q…", s[:cut])
}

// Decode undoes the codings of a Content-Encoding value (applied in the
// order listed, so undone in reverse). The result, and every layer on the
// way to it, is at most limit bytes.
func Decode(header string, body []byte, limit int64) ([]byte, error) {
	if Identity(header) {
		return body, nil
	}
	r, err := NewDecoder(header, bytes.NewReader(body), limit)
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(r)
	switch {
	case errors.Is(err, ErrTooLarge):
		return nil, fmt.Errorf("%w (%d bytes)", ErrTooLarge, limit)
	case err != nil:
		return nil, fmt.Errorf("decode %s body: %w", Quote(header), err)
	}
	return out, nil
}

// NewDecoder returns a reader of r with every coding of a Content-Encoding
// value undone, the last listed first; layers stream into each other, so
// only what the caller reads is held. Readers that need a header (gzip,
// deflate's zlib check) read it from r at once.
//
// With limit > 0, a layer that decodes to more than limit bytes fails the
// read with ErrTooLarge. Every layer is bounded, not only the last: in
// "gzip, gzip" the outer layer can inflate without end into an inner one
// that yields nothing (a stream of empty members), which costs CPU with no
// output to stop it. limit <= 0 bounds nothing, for a stream whose size is
// not this package's to judge.
//
// A value with a coding this package cannot decode, or with more than
// MaxCodings codings, fails with ErrUnsupported (ErrTooManyCodings for the
// latter) before any decoder is built.
func NewDecoder(header string, r io.Reader, limit int64) (io.Reader, error) {
	cs, err := codings(header)
	if err != nil {
		return nil, err
	}
	for i := len(cs) - 1; i >= 0; i-- {
		var err error
		if r, err = newReader(cs[i], r); err != nil {
			return nil, err
		}
		if limit > 0 {
			r = &bounded{r: r, left: limit}
		}
	}
	return r, nil
}

// bounded reads at most left bytes from r, and fails with ErrTooLarge when
// r has more.
type bounded struct {
	r    io.Reader
	left int64
}

func (b *bounded) Read(p []byte) (int, error) {
	if b.left == 0 {
		var probe [1]byte
		n, err := b.r.Read(probe[:])
		if n > 0 {
			return 0, ErrTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// newReader returns a reader that decodes one coding from r. deflate is
// zlib-wrapped per RFC 9110, but some servers send raw deflate; both are
// read.
func newReader(coding string, r io.Reader) (io.Reader, error) {
	switch coding {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("decode gzip body: %w", err)
		}
		return zr, nil
	case "deflate":
		br := bufio.NewReader(r) // r itself when it is one already
		head, _ := br.Peek(2)
		if len(head) == 2 && (uint16(head[0])<<8|uint16(head[1]))%31 == 0 && head[0]&0x0f == 8 {
			zr, err := zlib.NewReader(br)
			if err != nil {
				return nil, fmt.Errorf("decode deflate body: %w", err)
			}
			return zr, nil
		}
		return flate.NewReader(br), nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnsupported, Quote(coding))
}
