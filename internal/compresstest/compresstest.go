// Package compresstest compresses request and response bodies for the
// tests of the code that decodes them, each coding at its default level.
package compresstest

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
)

// Gzip returns b gzip'd (Content-Encoding: gzip).
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	return compress(&buf, gzip.NewWriter(&buf), b)
}

// Zlib returns b in a zlib stream, which is what HTTP's Content-Encoding:
// deflate names.
func Zlib(b []byte) []byte {
	var buf bytes.Buffer
	return compress(&buf, zlib.NewWriter(&buf), b)
}

// Deflate returns b as raw DEFLATE, with no zlib wrapper: what some
// servers send as Content-Encoding: deflate.
func Deflate(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.DefaultCompression) // only a bad level fails
	return compress(&buf, w, b)
}

// compress writes b through w into buf; writes to a bytes.Buffer do not
// fail.
func compress(buf *bytes.Buffer, w io.WriteCloser, b []byte) []byte {
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}
