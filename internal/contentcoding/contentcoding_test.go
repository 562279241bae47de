package contentcoding

import (
	"bytes"
	"errors"
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
