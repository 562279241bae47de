package usage

import (
	"errors"

	"github.com/tiergate/tiergate/internal/jsonprune"
)

// Body reads the usage of a JSON response body that arrives in chunks, as
// ParseJSON reads a whole one. It holds the body up to max bytes; a longer
// body is read as it passes, keeping only the members usage is read from
// (at most 64 KiB of them), so that a body of any size is read in bounded
// memory and to the same result.
//
// A Body is not safe for concurrent use.
type Body struct {
	api   API
	max   int
	buf   []byte
	prune *jsonprune.Pruner // set once the body outgrew max
}

// NewBody returns a reader for one body of the given dialect. max bounds
// the bytes held whole; zero or less means DefaultMaxEvent.
func NewBody(api API, max int) *Body {
	if max <= 0 {
		max = DefaultMaxEvent
	}
	return &Body{api: api, max: max}
}

// Write reads the next chunk of the body. The chunk is not retained.
func (b *Body) Write(p []byte) {
	if b.prune == nil && len(b.buf)+len(p) <= b.max {
		b.buf = grow(b.buf, len(p), b.max)
		b.buf = append(b.buf, p...)
		return
	}
	if b.prune == nil {
		b.prune = jsonprune.New(bodySpec(b.api), prunedMax)
		b.prune.Write(b.buf)
		b.buf = nil
	}
	b.prune.Write(p)
}

// Usage returns the body's usage, once the body has ended: what ParseJSON
// returns for the whole body.
func (b *Body) Usage() Usage {
	if b.prune == nil {
		return ParseJSON(b.api, b.buf)
	}
	doc, err := b.prune.Close()
	if err != nil {
		return Unknown()
	}
	return ParseJSON(b.api, doc)
}

// Overflowed reports whether the body outgrew max and even the members
// usage is read from would not fit in bounded memory, so that its usage is
// unknown for its size rather than missing (a body that is not JSON is not
// an overflow, at any size).
func (b *Body) Overflowed() bool {
	if b.prune == nil {
		return false
	}
	_, err := b.prune.Close()
	return errors.Is(err, jsonprune.ErrTooLarge)
}
