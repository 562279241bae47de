package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// checkBody checks the body a decision sends on: out, or in itself when
// out is "" (the case expects it unchanged).
func checkBody(t *testing.T, got []byte, in, out string) {
	t.Helper()
	want := out
	if want == "" {
		want = in
	}
	if string(got) != want {
		t.Errorf("body = %s\n want %s", got, want)
	}
}
