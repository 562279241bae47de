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
)

// ErrUnsupported is returned for a coding this package cannot decode.
var ErrUnsupported = errors.New("unsupported content-encoding")

// ErrTooLarge is returned when the decoded body would exceed the limit.
var ErrTooLarge = errors.New("decoded body exceeds the limit")

// Supported reports whether every coding in a Content-Encoding value can be
// decoded. An empty value and identity are supported.
func Supported(header string) bool {
	if Identity(header) {
		return true // and, for the usual empty header, without allocating
	}
	for _, c := range codings(header) {
		if !known(c) {
			return false
		}
	}
	return true
}

// Identity reports whether a Content-Encoding value means no coding. Almost
// every request has none, so that answer costs no allocation.
func Identity(header string) bool {
	if header == "" || header == "identity" {
		return true
	}
	return len(codings(header)) == 0
}

func known(c string) bool { return c == "gzip" || c == "x-gzip" || c == "deflate" }

// codings splits a Content-Encoding value, dropping identity.
func codings(header string) []string {
	var out []string
	for _, c := range strings.Split(header, ",") {
		c = strings.ToLower(strings.TrimSpace(c))
		if c != "" && c != "identity" {
			out = append(out, c)
		}
	}
	return out
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
		return nil, fmt.Errorf("decode %s body: %w", header, err)
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
func NewDecoder(header string, r io.Reader, limit int64) (io.Reader, error) {
	cs := codings(header)
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
	return nil, fmt.Errorf("%w: %q", ErrUnsupported, coding)
}
