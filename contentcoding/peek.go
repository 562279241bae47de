package contentcoding

import (
	"bufio"
	"io"
)

// bufioPeeker wraps r so its first bytes can be looked at without being
// consumed.
func bufioPeeker(r io.Reader) *bufio.Reader {
	if br, ok := r.(*bufio.Reader); ok {
		return br
	}
	return bufio.NewReader(r)
}
