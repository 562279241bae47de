package wsbridge

import (
	"bytes"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/tiergate/tiergate/policy"
)

// view returns b as a string without copying, for gjson. Nothing returned
// from it may outlive b's next reuse: keep only copies.
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// mayNameSessionUpdate reports whether a frame could hold a type that
// policy.TypeIs reads as session.update: it holds an escape, or the name
// spelled out in some letter case. Cheap where it matters: an audio
// append's base64 holds no '.', so one IndexByte pass answers for it.
func mayNameSessionUpdate(frame []byte) bool {
	if bytes.IndexByte(frame, '\\') >= 0 {
		return true
	}
	for i := 0; ; i++ {
		j := bytes.IndexByte(frame[i:], '.')
		if j < 0 {
			return false
		}
		i += j
		// No non-ASCII rune folds or upper-cases to a letter of "update";
		// "session" may be spelled with several (ſ, ı, İ, ß for "ss"),
		// so any non-ASCII byte where it would stand sends the frame to
		// the parser, which reads the type as policy.TypeIs does.
		if i+7 <= len(frame) && bytes.EqualFold(frame[i+1:i+7], []byte("update")) && maySpellSession(frame[:i]) {
			return true
		}
	}
}

// maySpellSession reports whether b could end with "session" as
// policy.TypeIs folds it: the ASCII spelling in any case, or a non-ASCII
// byte among the last bytes that a folded spelling can take (each of its
// seven letters is at most three bytes).
func maySpellSession(b []byte) bool {
	const name = "session"
	tail := b[max(0, len(b)-3*len(name)):]
	for _, c := range tail {
		if c >= utf8.RuneSelf {
			return true
		}
	}
	return len(b) >= len(name) && bytes.EqualFold(b[len(b)-len(name):], []byte(name))
}

// frameMeta is what the session needs from a client frame beyond the
// policy's verdict.
type frameMeta struct {
	// Of a response.create:
	streamID string // the Responses WebSocket lane
	eventID  string // the client's event id (Realtime)
	// named are the frame's top-level models (string values, every
	// occurrence): the fields a Responses upstream reads, so the ones that
	// may set the model later frames run under. A model under response is
	// a candidate for its own frame only, which the policy judges. They
	// are views into the frame: valid only until its buffer is reused.
	named []string
	// Of a session.update (any "type" occurrence counts, with duplicate
	// keys: a claim only adds candidates):
	update  bool
	claimed []string // every session.model, each occurrence
}

// readFrame reads a client frame the policy found to be valid JSON. A
// response.create (policed) is always read; any other frame only when it
// could be a session.update (mayNameSessionUpdate), so an audio append is
// never parsed. The type is read as policy.TypeIs reads it: an upstream
// that takes "Session.Update" for session.update changes the model too.
func readFrame(frame []byte, policed bool) frameMeta {
	var m frameMeta
	if !policed && !mayNameSessionUpdate(frame) {
		return m
	}
	// Keys are read as the policy reads them, folded (policy.KeyIs): an
	// upstream's reader may take "Type" or "SESSION" for type and session.
	var sessions []gjson.Result
	gjson.Parse(view(frame)).ForEach(func(k, v gjson.Result) bool {
		switch key := []byte(k.Raw); {
		case policy.KeyIs(key, "type"):
			m.update = m.update || v.Type == gjson.String && policy.TypeIs(v.Str, "session.update")
		case k.Str == "stream_id":
			if v.Type == gjson.String {
				m.streamID = v.Str
			}
		case k.Str == "event_id":
			if v.Type == gjson.String {
				m.eventID = v.Str
			}
		case policy.KeyIs(key, "model"):
			if policed && v.Type == gjson.String {
				// A view into frame: models.name copies the ones it keeps,
				// and most frames name the model the session already has.
				m.named = append(m.named, v.Str)
			}
		case policy.KeyIs(key, "session"):
			if v.IsObject() {
				sessions = append(sessions, v)
			}
		}
		return true
	})
	if m.update {
		for _, sess := range sessions {
			m.claimed = stringModels(m.claimed, sess)
		}
	}
	// Copies: the strings point into frame, whose buffer is reused.
	m.streamID = strings.Clone(m.streamID)
	m.eventID = strings.Clone(m.eventID)
	return m
}

// stringModels appends (as copies) the string values of obj's members
// that a reader may take for model.
func stringModels(dst []string, obj gjson.Result) []string {
	obj.ForEach(func(k, v gjson.Result) bool {
		if v.Type == gjson.String && policy.KeyIs([]byte(k.Raw), "model") {
			dst = append(dst, strings.Clone(v.Str))
		}
		return true
	})
	return dst
}

// clientTypes are the client event types of the Responses WebSocket and
// Realtime APIs (docs/contracts.md, "Wire facts"). A frame of any other
// type is one the upstream can only refuse.
var clientTypes = map[string]bool{
	"response.create": true, "response.processed": true, "response.append": true, "response.inject": true,
	"session.update": true, "transcription_session.update": true,
	"input_audio_buffer.append": true, "input_audio_buffer.commit": true, "input_audio_buffer.clear": true,
	"conversation.item.create": true, "conversation.item.retrieve": true,
	"conversation.item.truncate": true, "conversation.item.delete": true,
	"response.cancel": true, "output_audio_buffer.clear": true,
}

// strayFrame reports whether the upstream can answer a client frame only
// with an error that names no event: its type is none the APIs define (or
// it has none), and it carries no event_id for the error to name. Frames
// of a known type, nearly all of them, are told by their first bytes.
func strayFrame(frame []byte) bool {
	typ, ok := sniffType(frame)
	if !ok {
		typ = gjson.GetBytes(frame, "type").Str
	}
	if clientTypes[typ] {
		return false
	}
	return !gjson.GetBytes(frame, "event_id").Exists()
}
