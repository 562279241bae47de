package contentcoding

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/tiergate/tiergate/internal/compresstest"
)

// emptyMembers is n gzip members that each decode to nothing: a gzip
// stream whose size is n times a member's header and trailer.
func emptyMembers(n int) []byte {
	return bytes.Repeat(compresstest.Gzip(nil), n)
}

func TestDecode(t *testing.T) {
	t.Parallel()
	body := []byte(`{"model":"gpt-5.5","service_tier":"priority"}`)
	cases := []struct {
		name   string
		header string
		in     []byte
		limit  int64
		want   []byte
		err    error
	}{
		{"identity passes through", "", body, 1 << 20, body, nil},
		{"explicit identity passes through", "identity", body, 1 << 20, body, nil},
		{"gzip is decoded", "gzip", compresstest.Gzip(body), 1 << 20, body, nil},
		{"gzip is decoded whatever its case", " GZIP ", compresstest.Gzip(body), 1 << 20, body, nil},
		{"zlib deflate is decoded", "deflate", compresstest.Zlib(body), 1 << 20, body, nil},
		{"raw deflate is decoded", "deflate", compresstest.Deflate(body), 1 << 20, body, nil},
		{"stacked codings are undone in reverse", "deflate, gzip", compresstest.Gzip(compresstest.Zlib(body)), 1 << 20, body, nil},
		{"brotli is unsupported", "br", body, 1 << 20, nil, ErrUnsupported},
		{"a bomb is cut off at the limit", "gzip", compresstest.Gzip(bytes.Repeat([]byte("a"), 1<<20)), 1 << 16, nil, ErrTooLarge},
		{"a body of exactly the limit passes", "gzip", compresstest.Gzip(bytes.Repeat([]byte("a"), 1<<16)), 1 << 16, bytes.Repeat([]byte("a"), 1<<16), nil},
		{"a body one byte over the limit is cut off", "gzip", compresstest.Gzip(bytes.Repeat([]byte("a"), 1<<16+1)), 1 << 16, nil, ErrTooLarge},
		// The inner layer yields nothing, so only a bound on the outer one
		// stops the outer from inflating without end.
		{"a stacked bomb is cut off in its middle layer", "gzip, gzip", compresstest.Gzip(emptyMembers(20000)), 1 << 16, nil, ErrTooLarge},
		{"a stacked bomb under deflate is cut off too", "gzip, deflate", compresstest.Zlib(emptyMembers(20000)), 1 << 16, nil, ErrTooLarge},
		{"stacked codings within the limit pass", "gzip, gzip", compresstest.Gzip(compresstest.Gzip(body)), 1 << 16, body, nil},
		{"a stack of MaxCodings codings is undone", "deflate, gzip, x-gzip, deflate", compresstest.Zlib(compresstest.Gzip(compresstest.Gzip(compresstest.Deflate(body)))), 1 << 16, body, nil},
		{"identity does not count towards MaxCodings", "identity, gzip, gzip, identity, gzip, gzip, identity", compresstest.Gzip(compresstest.Gzip(compresstest.Gzip(compresstest.Gzip(body)))), 1 << 16, body, nil},
		{"one coding over MaxCodings is unsupported", "gzip, gzip, gzip, gzip, gzip", compresstest.Gzip(compresstest.Gzip(compresstest.Gzip(compresstest.Gzip(compresstest.Gzip(body))))), 1 << 16, nil, ErrTooManyCodings},
		{"too many codings are unsupported codings", "deflate, deflate, deflate, deflate, deflate", []byte(`{}`), 1 << 16, nil, ErrUnsupported},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode(tc.header, tc.in, tc.limit)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("Decode = %q, %v", got, err)
			}
		})
	}
	if _, err := Decode("gzip", []byte("not gzip"), 100); err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Fatalf("corrupt gzip: err = %v", err)
	}
	if !Supported("gzip, identity") || Supported("zstd") || !Identity(" identity ") || !Identity("") || !Identity("identity") || Identity("gzip") || Identity("identity, gzip") {
		t.Fatal("Supported/Identity disagree with the codings")
	}
}

// TestStackedCodingsAreRefusedBeforeAnyDecoderIsBuilt: each coding costs a
// decompressor before a byte is read, so a header that stacks thousands
// (about 60 KB, under Envoy's header limit) over a two-byte body must be
// refused for the price of reading the header, and its error must not echo
// the header back.
func TestStackedCodingsAreRefusedBeforeAnyDecoderIsBuilt(t *testing.T) {
	deflates := strings.TrimSuffix(strings.Repeat("deflate,", 7500), ",")
	cases := []struct {
		name, header string
		err          error
	}{
		{"thousands of deflate codings", deflates, ErrTooManyCodings},
		{"thousands of gzip codings, spaced and in upper case", strings.Repeat(" GZIP ,", 7500), ErrTooManyCodings},
		{"thousands of codings after identity", "identity," + deflates, ErrTooManyCodings},
		{"an unknown coding after thousands of known ones", deflates + ",br", ErrTooManyCodings},
		{"one unknown coding of 60 KB", strings.Repeat("x", 60000), ErrUnsupported},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the allocation count is the process's.
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := Decode(tc.header, []byte(`{}`), 64<<20)
			_, serr := NewDecoder(tc.header, bytes.NewReader([]byte(`{}`)), 0)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tc.err) || !errors.Is(serr, tc.err) {
				t.Fatalf("Decode err = %v, NewDecoder err = %v; want %v", err, serr, tc.err)
			}
			if Supported(tc.header) {
				t.Errorf("Supported = true, want false")
			}
			// The header itself is 60 KB; a decompressor per coding was
			// hundreds of MB.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
				t.Errorf("refusing a %d-byte header allocated %d KB", len(tc.header), alloc>>10)
			}
			if n := len(err.Error()); n > 256 {
				t.Errorf("the error message is %d bytes: %.100s…", n, err)
			}
		})
	}
}

func TestQuoteBoundsWhatItQuotes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in, want string
	}{
		{"a short value is quoted whole", "br", `"br"`},
		{"a value of maxQuoted bytes is quoted whole", strings.Repeat("a", maxQuoted), `"` + strings.Repeat("a", maxQuoted) + `"`},
		{"a longer value is cut with an ellipsis", strings.Repeat("a", 60000), `"` + strings.Repeat("a", maxQuoted) + `"…`},
		{"the cut falls at a rune boundary", strings.Repeat("a", maxQuoted-1) + "é" + "tail", `"` + strings.Repeat("a", maxQuoted-1) + `"…`},
		{"control characters are escaped", "gzip\x00\n", `"gzip\x00\n"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Quote(tc.in); got != tc.want {
				t.Errorf("Quote = %s, want %s", got, tc.want)
			}
		})
	}
}
