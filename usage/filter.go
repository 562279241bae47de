package usage

// ChatStreamFilter removes the usage-only final chunk from a streamed Chat
// Completions response while reading the stream's usage, in the same pass.
//
// tiergate sets stream_options.include_usage:true on streamed Chat requests
// that did not ask for it, so that their tokens can be counted. The upstream
// then sends one extra chunk, with "choices": [] and a non-null usage, which
// the client did not ask for and may not expect; this filter takes it out
// (its bytes and the blank line that ends it). Everything else, comments and
// data: [DONE] included, reaches the client byte for byte. Use it only for
// requests tiergate changed; a client that asked for usage keeps it, and its
// stream needs only an SSE.
//
// Complete records are forwarded as soon as they are read. The bytes of a
// record still open at the end of a chunk are held (at most maxEvent of them)
// until its blank line arrives or Flush is called: whether it is the one to
// remove is only known at its end. A record longer than maxEvent is forwarded
// as it comes and never removed, though its usage is still read.
//
// A ChatStreamFilter is not safe for concurrent use.
type ChatStreamFilter struct {
	s SSE
}

// NewChatStreamFilter returns a filter for one stream. maxEvent bounds both
// the record data read for usage and the bytes held back; zero or less means
// DefaultMaxEvent.
func NewChatStreamFilter(maxEvent int) *ChatStreamFilter {
	f := &ChatStreamFilter{}
	f.s.init(ChatCompletions, maxEvent)
	f.s.filter = true
	return f
}

// Filter reads the next chunk of the stream and appends to dst the bytes to
// forward for it, returning the extended slice. The chunk is not retained.
func (f *ChatStreamFilter) Filter(dst, chunk []byte) []byte {
	s := &f.s
	s.out = dst
	s.scan(chunk)
	dst = s.out
	s.out = nil
	return dst
}

// Flush ends the stream: it appends to dst the bytes still held (a last
// record without its blank line), unless they are the usage-only chunk, and
// reads that record's usage if it is whole.
func (f *ChatStreamFilter) Flush(dst []byte) []byte {
	s := &f.s
	s.finish()
	if s.usageOnly && s.spanLen <= s.max {
		s.dropped++
	} else {
		dst = append(dst, s.held...)
	}
	s.held = s.held[:0]
	s.spanLen = 0
	s.usageOnly = false
	return dst
}

// Usage returns the usage read so far, as SSE.Usage does.
func (f *ChatStreamFilter) Usage() Usage { return f.s.Usage() }

// FirstOutput reports whether a chunk with output has been read, as
// SSE.FirstOutput does.
func (f *ChatStreamFilter) FirstOutput() bool { return f.s.FirstOutput() }

// Overflowed reports whether a record too long to read was skipped, as
// SSE.Overflowed does.
func (f *ChatStreamFilter) Overflowed() bool { return f.s.Overflowed() }

// dropped reports whether a usage-only chunk was removed from the stream.
func (f *ChatStreamFilter) dropped() bool { return f.s.dropped > 0 }

// How the record that ended in a \r at the end of the last chunk was treated;
// a \n opening the next chunk belongs to that record's ending.
const (
	crKept uint8 = iota + 1
	crDropped
)

// endRecord forwards or drops the record whose blank line ends with the byte
// at p[i]; the next record starts at p[next]. Whether a record may be dropped
// is decided on its length through p[i], which does not depend on where the
// chunks were cut.
func (s *SSE) endRecord(p []byte, i, next int) {
	drop := s.usageOnly && s.spanLen+i+1-s.fpos <= s.max
	if drop {
		s.dropped++
	} else {
		s.out = append(s.out, s.held...)
		s.out = append(s.out, p[s.fpos:next]...)
	}
	if s.pendingCR {
		s.crSpan = crKept
		if drop {
			s.crSpan = crDropped
		}
	}
	s.held = s.held[:0]
	s.spanLen = 0
	s.fpos = next
	s.usageOnly = false
}

// crLF handles a \n that opens a chunk and completes the \r ending the last
// one. If that \r ended a record, the \n goes (or is dropped) with it; if it
// ended a line inside a record, the \n is part of the open record.
func (s *SSE) crLF() {
	switch s.crSpan {
	case crKept:
		s.out = append(s.out, '\n')
		s.fpos = 1
	case crDropped:
		s.fpos = 1
	}
}

// hold keeps the bytes of the record still open at the end of chunk p. Once
// the record is longer than max it can no longer be dropped, so its bytes are
// forwarded instead, which keeps what is held within the bound.
func (s *SSE) hold(p []byte) {
	rest := p[s.fpos:]
	s.fpos = 0
	if len(rest) == 0 {
		return
	}
	s.spanLen += len(rest)
	if s.spanLen > s.max {
		s.out = append(s.out, s.held...)
		s.out = append(s.out, rest...)
		s.held = s.held[:0]
		return
	}
	s.held = grow(s.held, len(rest), s.max)
	s.held = append(s.held, rest...)
}
