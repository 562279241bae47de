package usage

import (
	"bytes"
	"errors"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/jsonprune"
)

// DefaultMaxEvent is the record bound NewSSE uses when given 0 or less. A
// Responses stream repeats the whole response (instructions, tools and all
// output) in response.completed, so the bound has to hold a long answer.
const DefaultMaxEvent = 4 << 20

// SSE reads token usage from a server-sent event stream as it passes, one
// network chunk at a time. It is a byte-level state machine: a chunk may end
// anywhere, even between the \r and \n of one line ending, and nothing of a
// partial line is copied except the data of records that can carry usage.
// Memory is bounded by the maxEvent given to NewSSE, plus 64 KiB for the
// members usage is read from when a record is longer than that.
//
// Per dialect it reads (docs/contracts.md, "Wire facts"):
//   - ChatCompletions: every chunk; the last non-null usage wins; id, model
//     and service_tier from the chunks; finish_reason gives the status.
//   - Responses: response.completed, response.incomplete and response.failed
//     give response.usage (when non-null), id, model, service_tier and
//     status; response.created, .in_progress and .queued give id and model
//     early, in case the stream is cut; an error event means StatusFailed.
//     Other named events (deltas and the like) are never buffered.
//   - Messages: message_start's usage, then each non-null member of each
//     message_delta usage overwrites it (output_tokens is cumulative);
//     stop_reason gives the status; an error event means StatusFailed.
//
// An SSE is not safe for concurrent use; a stream is read by one goroutine.
type SSE struct {
	api API
	max int

	// Line state.
	state     uint8   // stName, stSpace or stValue
	fld       uint8   // the field whose value is being read
	name      [5]byte // the field name, as far as it can be one we use
	nameLen   int     // its full length, possibly past len(name)
	pendingCR bool    // the last chunk ended in \r: a leading \n is part of it

	// Record state.
	ev      [64]byte // the event name; longer names are none we read
	evLen   int
	kind    kind
	data    []byte            // the record's data lines, joined with \n
	lines   int               // data lines in data
	hasData bool              // the record had a data field, buffered or not
	over    bool              // data outgrew max: the rest of the record goes to prune
	skipped bool              // a data line was not buffered (the event was irrelevant then)
	prune   *jsonprune.Pruner // the data of a record longer than max; made once, reused

	// Results.
	u         Usage
	anth      anthropicCounts
	chatSt    chatStatus
	first     bool
	overflows int
	usageOnly bool // the record just dispatched was a Chat usage-only chunk

	// ChatStreamFilter state; see filter.go.
	filter  bool
	dropped int
	out     []byte // the caller's dst while a chunk is scanned
	fpos    int    // start of the current record's bytes in the chunk
	held    []byte // the current record's bytes from earlier chunks
	spanLen int    // length of the current record's bytes from earlier chunks
	crSpan  uint8  // a record ended in \r at a chunk's end: crKept or crDropped
}

var newline = []byte{'\n'}

const (
	stName  uint8 = iota // at a line's start, or in its field name
	stSpace              // just after the colon; one space may follow
	stValue              // in the field value
)

const (
	fldOther uint8 = iota // comments, id:, retry:, unknown fields: ignored
	fldData
	fldEvent
)

// kind is what a record is to the reader, decided by its event name.
type kind uint8

const (
	kindUnnamed kind = iota // no event name: buffer, then read data.type
	kindSkip                // named and irrelevant: not buffered
	kindOutput              // first-output marker: not buffered
	kindMeta                // ids and model only; an unreadable one is no loss
	kindUsage               // may carry usage or status: overflow is counted
)

// NewSSE returns a reader for one stream of the given dialect. maxEvent bounds
// the data of one record held whole; a longer record is read as it passes,
// keeping only the members usage is read from (at most 64 KiB of them), and
// reads the same. Zero or less means DefaultMaxEvent.
func NewSSE(api API, maxEvent int) *SSE {
	s := &SSE{}
	s.init(api, maxEvent)
	return s
}

func (s *SSE) init(api API, maxEvent int) {
	if maxEvent <= 0 {
		maxEvent = DefaultMaxEvent
	}
	s.api = api
	s.max = maxEvent
	s.u = Unknown()
	s.anth.reset()
}

// Write reads the next chunk of the stream. The chunk is not retained.
func (s *SSE) Write(chunk []byte) {
	s.scan(chunk)
}

// Finish tells the reader that the stream has ended. A last record that lacks
// its closing blank line is read if its data is whole JSON, since some
// servers end a stream without the blank line; a cut-off record is not.
func (s *SSE) Finish() {
	s.finish()
}

// Usage returns what the stream has reported so far: after Finish, the
// response's usage.
func (s *SSE) Usage() Usage {
	u := s.u
	switch s.api {
	case Messages:
		s.anth.apply(&u)
	case ChatCompletions:
		if s.chatSt != "" {
			u.Status = string(s.chatSt)
		}
	}
	return u
}

// FirstOutput reports whether an output-bearing event has been read: a Chat
// chunk with delta content, refusal or tool calls, a Responses
// response.*.delta event, an Anthropic content_block_delta. The caller checks
// it after each Write to timestamp the first token.
func (s *SSE) FirstOutput() bool { return s.first }

// Overflowed reports whether a record that could have carried usage was
// longer than maxEvent and could not be read even so: the members usage is
// read from would not fit in 64 KiB, or the record was not JSON. It tells a
// missing usage apart from one the upstream never sent.
func (s *SSE) Overflowed() bool { return s.overflows > 0 }

// scan runs the state machine over one chunk. In filter mode it also forwards
// the chunk's bytes to s.out record by record (see filter.go).
func (s *SSE) scan(p []byte) {
	if len(p) == 0 {
		return
	}
	i := 0
	if s.pendingCR {
		s.pendingCR = false
		if p[0] == '\n' {
			i = 1
			if s.filter {
				s.crLF()
			}
		}
		s.crSpan = 0
	}
	for i < len(p) {
		switch s.state {
		case stName:
			c := p[i]
			switch c {
			case '\n', '\r':
				i = s.eol(p, i)
				continue
			case ':':
				s.beginValue()
			default:
				if s.nameLen < len(s.name) {
					s.name[s.nameLen] = c
				}
				s.nameLen++
			}
			i++
		case stSpace:
			s.state = stValue
			if p[i] == ' ' {
				i++
			}
		default:
			rest := p[i:]
			n := bytes.IndexByte(rest, '\n')
			if n < 0 {
				n = len(rest)
			}
			if r := bytes.IndexByte(rest[:n], '\r'); r >= 0 {
				n = r
			}
			if n > 0 && s.fld != fldOther {
				s.value(rest[:n])
			}
			i += n
			if i < len(p) {
				i = s.eol(p, i)
			}
		}
	}
	if s.filter {
		s.hold(p)
	}
}

// eol handles the line ending at p[i] and returns where the next line starts.
// A \r\n is one ending; a \r at the chunk's end leaves pendingCR so that a \n
// opening the next chunk is not read as a second, blank line.
func (s *SSE) eol(p []byte, i int) int {
	blank := s.state == stName && s.nameLen == 0
	s.endLine()
	next := i + 1
	if p[i] == '\r' {
		if next < len(p) {
			if p[next] == '\n' {
				next++
			}
		} else {
			s.pendingCR = true
		}
	}
	if blank && s.filter {
		s.endRecord(p, i, next)
	}
	return next
}

// fieldIs reports whether the field name read so far is exactly f.
func (s *SSE) fieldIs(f string) bool {
	return s.nameLen == len(f) && string(s.name[:len(f)]) == f
}

func (s *SSE) beginValue() {
	s.state = stSpace
	s.fld = fldOther
	switch {
	case s.fieldIs("data"):
		s.beginData()
	case s.fieldIs("event"):
		s.fld = fldEvent
		s.evLen = 0
	}
}

// beginData starts a data line. Data of an event already named irrelevant is
// not buffered at all.
func (s *SSE) beginData() {
	s.hasData = true
	if s.kind == kindSkip || s.kind == kindOutput {
		s.skipped = true
		return
	}
	s.fld = fldData
	if s.lines > 0 {
		s.appendData(newline)
	}
	s.lines++
}

func (s *SSE) value(b []byte) {
	switch s.fld {
	case fldData:
		s.appendData(b)
	case fldEvent:
		if s.evLen+len(b) <= len(s.ev) {
			copy(s.ev[s.evLen:], b)
		}
		s.evLen += len(b)
	}
}

// appendData adds to the record's data unless that would pass the bound, in
// which case what is buffered and the rest of the record go to the pruner,
// and the buffer is kept for the next record.
func (s *SSE) appendData(b []byte) {
	if s.over {
		s.prune.Write(b)
		return
	}
	if len(s.data)+len(b) > s.max {
		s.over = true
		if s.prune == nil {
			s.prune = jsonprune.New(eventSpec(s.api), prunedMax)
		} else {
			s.prune.Reset()
		}
		s.prune.Write(s.data)
		s.prune.Write(b)
		s.data = s.data[:0]
		return
	}
	s.data = grow(s.data, len(b), s.max)
	s.data = append(s.data, b...)
}

// grow makes room for n more bytes without letting the capacity pass limit
// (append alone could double it past the bound).
func grow(b []byte, n, limit int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	c := max(2*cap(b), len(b)+n, 512)
	if c > limit {
		c = max(limit, len(b)+n)
	}
	nb := make([]byte, len(b), c)
	copy(nb, b)
	return nb
}

// endLine finishes the current line: a blank line dispatches the record, a
// line without a colon is a field with an empty value.
func (s *SSE) endLine() {
	switch s.state {
	case stName:
		switch {
		case s.nameLen == 0:
			s.dispatch(false)
		case s.fieldIs("data"):
			s.beginData()
		case s.fieldIs("event"):
			s.evLen = 0
			s.classify()
		}
	default:
		if s.fld == fldEvent {
			s.classify()
		}
	}
	s.state = stName
	s.fld = fldOther
	s.nameLen = 0
}

// classify sets the record's kind from its event name, so that the data
// lines that follow are buffered only when they matter.
func (s *SSE) classify() {
	switch {
	case s.evLen == 0:
		s.kind = kindUnnamed // "event:" with no value is the default type
	case s.evLen > len(s.ev):
		s.kind = kindSkip // longer than any name we read
	default:
		s.kind = classify(s.api, view(s.ev[:s.evLen]))
	}
}

// classify says what an event type is to the reader of the given dialect.
func classify(api API, name string) kind {
	switch api {
	case Responses:
		switch name {
		case "response.completed", "response.incomplete", "response.failed", "error":
			return kindUsage
		case "response.created", "response.in_progress", "response.queued":
			return kindMeta
		}
		if IsOutputDelta(name) {
			return kindOutput
		}
		return kindSkip
	case Messages:
		switch name {
		case "message_start", "message_delta", "error":
			return kindUsage
		case "content_block_delta":
			return kindOutput
		}
		return kindSkip
	}
	// Chat chunks are unnamed; a named one is read like the rest, since an
	// in-stream error may come in any form.
	return kindUnnamed
}

// IsOutputDelta reports whether an event type is a response's output delta
// (response.*.delta: text, audio, reasoning, tool-call arguments). Input
// transcription deltas are not output. The WebSocket bridge skips parsing
// the events this says no to, so this is the one definition.
func IsOutputDelta(t string) bool {
	return len(t) > len("response.")+len(".delta") &&
		strings.HasPrefix(t, "response.") && strings.HasSuffix(t, ".delta")
}

// dispatch ends a record. final is true for a record closed by Finish rather
// than by a blank line; its data must be whole JSON to be read.
func (s *SSE) dispatch(final bool) {
	s.usageOnly = false
	if s.hasData {
		k := s.kind
		switch {
		case k == kindOutput:
			s.first = true
		case k == kindSkip, s.skipped:
		case s.over:
			s.readPruned(k, final)
		default:
			s.read(k, s.data, final)
		}
	}
	s.data = s.data[:0]
	s.lines = 0
	s.hasData = false
	s.over = false
	s.skipped = false
	s.kind = kindUnnamed
	s.evLen = 0
}

// readPruned reads a record longer than max from its pruned copy. One whose
// copy would not fit is an overflow, unless it could only have given ids
// (kindMeta). So is one that is not JSON: a short one is read leniently,
// and that reading cannot be replayed from a copy; but a cut-off last record
// is not read at any length, so it is no overflow either.
func (s *SSE) readPruned(k kind, final bool) {
	d, err := s.prune.Close()
	switch {
	case err == nil:
		s.read(k, d, final)
	case final && errors.Is(err, jsonprune.ErrInvalid):
	case k != kindMeta:
		s.overflows++
	}
}

// read handles the data d of one record.
func (s *SSE) read(k kind, d []byte, final bool) {
	if string(bytes.TrimSpace(d)) == "[DONE]" {
		return
	}
	if final && !gjson.ValidBytes(d) {
		return
	}
	root := gjson.Parse(view(d))
	if s.api == ChatCompletions {
		usageOnly, output := readChat(&s.u, root, &s.chatSt)
		s.usageOnly = usageOnly
		if output {
			s.first = true
		}
		return
	}
	var name string
	if k == kindUnnamed {
		t := root.Get("type")
		if t.Type != gjson.String {
			// The SDKs treat any data object with an error member as a
			// failure, typed or not.
			if failed(root.Get("error")) {
				setStatus(&s.u, StatusFailed)
			}
			return
		}
		name = t.Str
		switch classify(s.api, name) {
		case kindSkip:
			return
		case kindOutput:
			s.first = true
			return
		}
	} else {
		name = view(s.ev[:s.evLen])
	}
	switch s.api {
	case Responses:
		s.readResponses(name, root)
	case Messages:
		s.readMessages(name, root)
	}
}

func (s *SSE) readResponses(name string, root gjson.Result) {
	switch name {
	case "error":
		setStatus(&s.u, StatusFailed)
	case "response.created", "response.in_progress", "response.queued":
		resp := root.Get("response")
		keep(&s.u.ResponseID, resp.Get("id"))
		keep(&s.u.Model, resp.Get("model"))
	case "response.completed", "response.incomplete", "response.failed":
		readTerminal(&s.u, name, root.Get("response"))
	}
}

func (s *SSE) readMessages(name string, root gjson.Result) {
	switch name {
	case "error":
		setStatus(&s.u, StatusFailed)
	case "message_start":
		readMessage(&s.u, &s.anth, root.Get("message"))
	case "message_delta":
		s.anth.overwrite(&s.u, root.Get("usage"))
		if st := stopStatus(root.Get("delta.stop_reason")); st != "" {
			setStatus(&s.u, st)
		}
	}
}

// finish ends the stream: an unterminated last line ends, and the record it
// belongs to is dispatched as final.
func (s *SSE) finish() {
	if s.state != stName || s.nameLen > 0 {
		s.endLine()
	}
	s.pendingCR = false
	s.crSpan = 0
	s.dispatch(true)
}
