package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
