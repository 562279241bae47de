package usage

import "github.com/tiergate/tiergate/internal/jsonprune"

// A body or SSE record longer than the caller's bound is still read for its
// usage: the rest of it is read as it passes and only the members the
// readers look at are kept (package jsonprune), then read by the same code
// as a whole one. A client chooses how long its response is, with
// logprobs or generated images, and must not be able to choose to go
// unmetered by it.
//
// Each Spec below names every member its reader reads, at every path:
// whole when the reader reads the value, as a shape when it only tests its
// type or emptiness (an error member, a Chat delta's content, which can be
// long). A member left out would be read as missing from an oversized
// response only; TestPrunedReadsAsWhole and FuzzOversizedMatchesWhole
// compare the two readings.

// prunedMax bounds the pruned copy of one oversized body or record. A usage
// object is a few hundred bytes, an id, a model, a tier or a status a few
// dozen; a copy longer than this is no response the readers know, and its
// usage counts as too large to read.
const prunedMax = 64 << 10

var (
	whole = jsonprune.Whole
	shape = jsonprune.Shape
)

// members is jsonprune.Members, shortened for the tables below.
func members(m map[string]*jsonprune.Spec) *jsonprune.Spec { return jsonprune.Members(m) }

// chatSpec is what readChat reads of a Chat body or stream chunk, with
// finishStatus and deltaOutput.
var chatSpec = members(map[string]*jsonprune.Spec{
	"id": whole, "model": whole, "service_tier": whole, "usage": whole, "error": shape,
	"choices": jsonprune.Each(members(map[string]*jsonprune.Spec{
		"finish_reason": whole,
		"delta":         members(map[string]*jsonprune.Spec{"content": shape, "refusal": shape, "tool_calls": shape, "function_call": shape}),
	})),
})

// responseSpec is what readResponse reads of a Responses response object.
var responseSpec = members(map[string]*jsonprune.Spec{
	"id": whole, "model": whole, "service_tier": whole, "status": whole, "usage": whole, "error": shape,
})

// responsesEventSpec is what SSE.read and readResponses read of a
// Responses stream record.
var responsesEventSpec = members(map[string]*jsonprune.Spec{
	"type": whole, "error": shape, "response": responseSpec,
})

// messageSpec is what readMessage reads of an Anthropic message, with
// anthropicCounts.overwrite reading its usage whole.
var messageSpec = members(map[string]*jsonprune.Spec{
	"id": whole, "model": whole, "type": whole, "usage": whole, "stop_reason": whole,
})

// messagesEventSpec is what SSE.read and readMessages read of a Messages
// stream record.
var messagesEventSpec = members(map[string]*jsonprune.Spec{
	"type": whole, "error": shape, "message": messageSpec, "usage": whole,
	"delta": members(map[string]*jsonprune.Spec{"stop_reason": whole}),
})

// nothing keeps no member: ParseJSON reads nothing of a body of the zero
// API, but the body must still be valid JSON to read as it does.
var nothing = members(nil)

// typedEventSpec is what SSE.read reads of an unnamed record of any dialect
// but Chat, the zero API included: its type, or else whether it is an error.
var typedEventSpec = members(map[string]*jsonprune.Spec{"type": whole, "error": shape})

// bodySpec is what ParseJSON reads of a body of the given dialect.
func bodySpec(api API) *jsonprune.Spec {
	switch api {
	case ChatCompletions:
		return chatSpec
	case Responses:
		return responseSpec
	case Messages:
		return messageSpec
	}
	return nothing
}

// eventSpec is what SSE reads of one record of the given dialect.
func eventSpec(api API) *jsonprune.Spec {
	switch api {
	case ChatCompletions:
		return chatSpec
	case Responses:
		return responsesEventSpec
	case Messages:
		return messagesEventSpec
	}
	return typedEventSpec
}
