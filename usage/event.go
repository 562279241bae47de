package usage

import (
	"strings"

	"github.com/tidwall/gjson"
)

// Event is what accounting needs from one WebSocket server event of the
// Responses API (WebSocket mode) or the Realtime API.
type Event struct {
	// Type is the event's type, for example "response.completed" or "error".
	Type string
	// ResponseID is response.id, or the top-level response_id that delta
	// events carry; turns are keyed by it.
	ResponseID string
	// StreamID is the Responses WebSocket lane (stream_id), when the request
	// named one; turns wait per lane.
	StreamID string
	// SessionModel is session.model of a session.created or session.updated
	// event: the model the upstream confirms for the session.
	SessionModel string
	// Terminal is true for the events that end a turn: response.completed,
	// response.failed and response.incomplete (Responses), response.done
	// (Realtime).
	Terminal bool
	// IsDelta is true for a response's output delta events
	// (response.*.delta), so the caller can time the first token.
	IsDelta bool
	// Usage is the terminal event's usage, with ResponseID, Model (Responses
	// only; Realtime responses name none), ServiceTier (Responses only) and
	// Status (response.status) filled in. For other events it is Unknown.
	Usage Usage
}

// ParseEvent reads one WebSocket server event (one JSON text frame). It reads
// only the few members it needs, in one pass over the top level, and copies
// out what it returns: the frame may be reused once it returns. A frame that
// is not a JSON object yields an Event with an empty Type.
func ParseEvent(frame []byte) Event {
	e := Event{Usage: Unknown()}
	var typ, resp, session gjson.Result
	gjson.Parse(view(frame)).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
			typ = v
		case "response_id":
			keep(&e.ResponseID, v)
		case "stream_id":
			keep(&e.StreamID, v)
		case "response":
			resp = v
		case "session":
			session = v
		}
		return true
	})
	if typ.Type != gjson.String {
		return e
	}
	e.Type = internType(typ.Str)
	if resp.IsObject() {
		keep(&e.ResponseID, resp.Get("id"))
	}
	e.Terminal = IsTerminal(e.Type)
	switch e.Type {
	case "response.completed", "response.failed", "response.incomplete":
		readTerminal(&e.Usage, e.Type, resp)
	case "response.done":
		readRealtime(&e.Usage, resp)
	case "session.created", "session.updated":
		keep(&e.SessionModel, session.Get("model"))
	default:
		e.IsDelta = IsOutputDelta(e.Type)
	}
	if e.Terminal && e.Usage.ResponseID == "" {
		e.Usage.ResponseID = e.ResponseID
	}
	return e
}

// eventTypes are the event types seen on every turn, returned as constants so
// that the frequent ones (deltas above all) cost no copy.
var eventTypes = func() map[string]string {
	m := map[string]string{}
	for _, t := range []string{
		"error",
		"session.created", "session.updated",
		"response.created", "response.in_progress", "response.queued",
		"response.completed", "response.failed", "response.incomplete", "response.done",
		"response.output_item.added", "response.output_item.done",
		"response.content_part.added", "response.content_part.done",
		"response.output_text.delta", "response.output_text.done",
		"response.output_audio.delta", "response.output_audio.done",
		"response.output_audio_transcript.delta", "response.output_audio_transcript.done",
		"response.text.delta", "response.text.done",
		"response.audio.delta", "response.audio.done",
		"response.audio_transcript.delta", "response.audio_transcript.done",
		"response.reasoning_text.delta", "response.reasoning_text.done",
		"response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
		"response.function_call_arguments.delta", "response.function_call_arguments.done",
		"rate_limits.updated",
	} {
		m[t] = t
	}
	return m
}()

// IsTerminal reports whether an event type ends a turn: response.completed,
// response.failed and response.incomplete (Responses), response.done
// (Realtime). The WebSocket bridge parses only the events it needs; this is
// the one definition of which end a turn.
func IsTerminal(t string) bool {
	switch t {
	case "response.completed", "response.failed", "response.incomplete", "response.done":
		return true
	}
	return false
}

func internType(t string) string {
	if c, ok := eventTypes[t]; ok {
		return c
	}
	return strings.Clone(t)
}
