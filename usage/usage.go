package usage

import (
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"

	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// API is the wire dialect of an HTTP response body or SSE stream. Realtime and
// Responses WebSocket events are one JSON frame each and go to ParseEvent.
type API uint8

// The HTTP dialects. The zero API is none of them: parsing with it reports
// nothing, so a forgotten endpoint cannot be misread as another.
const (
	// ChatCompletions is POST /v1/chat/completions.
	ChatCompletions API = iota + 1
	// Responses is POST /v1/responses and /v1/responses/compact.
	Responses
	// Messages is Anthropic's POST /v1/messages.
	Messages
)

// String returns the endpoint name the policy and the usage record use for
// the dialect (chat_completions, responses, messages), or "" for the zero API.
func (a API) String() string {
	switch a {
	case ChatCompletions:
		return "chat_completions"
	case Responses:
		return "responses"
	case Messages:
		return "messages"
	}
	return ""
}

// Status values of a usage record (docs/contracts.md, "Usage records",
// lists them). The first four
// are the upstream's, read into Usage.Status; the Responses and Realtime
// APIs may report others, passed through as the upstream spelled them. The
// rest are what the ext_proc server and the bridge record for a request or
// turn that ended some other way.
const (
	// StatusCompleted: the upstream finished the response.
	StatusCompleted = "completed"
	// StatusIncomplete: the upstream stopped early, at a token limit or a
	// content filter, and still billed what it produced.
	StatusIncomplete = "incomplete"
	// StatusFailed: the upstream reported an error instead of, or in the
	// middle of, a response.
	StatusFailed = "failed"
	// StatusCancelled: the client cancelled the response (Realtime).
	StatusCancelled = "cancelled"

	// StatusBlocked: the policy refused the request or frame.
	StatusBlocked = "blocked"
	// StatusRefused: tiergate could not read the request or frame (not
	// JSON, an unsupported or oversized encoding).
	StatusRefused = "refused"
	// StatusClientClosed: the client (or tiergate's shutdown) ended it
	// before the response did.
	StatusClientClosed = "client_closed"
	// StatusUpstreamClosed: the upstream closed, was lost, or (on a
	// WebSocket) stopped answering until the idle timeout, before the
	// response ended.
	StatusUpstreamClosed = "upstream_closed"
	// StatusUpstreamError: the upstream answered with an error instead of
	// a response.
	StatusUpstreamError = "upstream_error"
)

// Usage is what one response reported. Each token count is -1 when the
// response did not say (a cut stream, a null usage, a missing member), because
// a record must tell "zero tokens" from "unknown".
type Usage struct {
	// InputTokens counts input tokens, cached ones included (Anthropic's
	// input_tokens excludes cache reads and writes, so they are added back).
	InputTokens int64
	// CachedInputTokens counts input tokens served from the prompt cache.
	CachedInputTokens int64
	// CacheWriteInputTokens counts input tokens written to the prompt cache
	// (Anthropic's cache_creation_input_tokens, OpenAI's cache_write_tokens).
	CacheWriteInputTokens int64
	// OutputTokens counts output tokens, reasoning tokens included.
	OutputTokens int64
	// ReasoningTokens counts reasoning (Anthropic: thinking) tokens.
	ReasoningTokens int64
	// AudioTokens counts the audio tokens of a Realtime turn, input and
	// output together. Audio rates are not priced, so a turn with any is
	// left unpriced; the record does not carry the count.
	AudioTokens int64

	// ResponseID is the upstream's id (chatcmpl-..., resp_..., msg_...).
	ResponseID string
	// Model is the model the upstream says served the response; it can be a
	// snapshot of the alias that was asked for. Compact and Realtime responses
	// carry none.
	Model string
	// ServiceTier is the tier the upstream reports billing. Anthropic reports
	// fast mode through usage.speed, which is mapped: "fast" is "priority",
	// "standard" is "default".
	ServiceTier string
	// Status is how the response ended: StatusCompleted, StatusIncomplete,
	// StatusFailed, or the Responses/Realtime status verbatim. It is empty when
	// the body or stream never said, for instance a stream cut before its
	// terminal event, so the caller can tell that apart.
	Status string
}

// Unknown returns a Usage in which nothing is known. It is the starting point
// of every parse: the zero Usage would claim zero tokens.
func Unknown() Usage {
	return Usage{InputTokens: -1, CachedInputTokens: -1, CacheWriteInputTokens: -1, OutputTokens: -1, ReasoningTokens: -1, AudioTokens: -1}
}

// BilledTier is the tier a response was billed at: the one the upstream
// reported, else sent (the tier tiergate let through).
func (u Usage) BilledTier(sent string) string {
	if u.ServiceTier != "" {
		return u.ServiceTier
	}
	return sent
}

// Known reports whether any token count is known.
func (u Usage) Known() bool {
	return u.InputTokens >= 0 || u.CachedInputTokens >= 0 || u.CacheWriteInputTokens >= 0 || u.OutputTokens >= 0 || u.ReasoningTokens >= 0
}

// Fill copies what u knows into r: each known token count, and the response
// id, response model and reported tier when non-empty. Status is set only when
// r has none yet, so that a verdict the caller already reached (client_closed,
// upstream_error) is not overwritten by a half-read stream.
func (u Usage) Fill(r *tiergatev1.UsageRecord) {
	if u.InputTokens >= 0 {
		r.InputTokens = ptr(uint64(u.InputTokens))
	}
	if u.CachedInputTokens >= 0 {
		r.CachedInputTokens = ptr(uint64(u.CachedInputTokens))
	}
	if u.CacheWriteInputTokens >= 0 {
		r.CacheWriteInputTokens = ptr(uint64(u.CacheWriteInputTokens))
	}
	if u.OutputTokens >= 0 {
		r.OutputTokens = ptr(uint64(u.OutputTokens))
	}
	if u.ReasoningTokens >= 0 {
		r.ReasoningTokens = ptr(uint64(u.ReasoningTokens))
	}
	if u.ResponseID != "" {
		r.ResponseId = u.ResponseID
	}
	if u.Model != "" {
		r.ResponseModel = u.Model
	}
	if u.ServiceTier != "" {
		r.ServiceTierReported = u.ServiceTier
	}
	if r.Status == "" {
		r.Status = u.Status
	}
}

func ptr[T any](v T) *T { return &v }

// ParseJSON reads the usage of a non-streamed response body. A body that is
// not whole, valid JSON (for instance one cut short) yields Unknown: a
// truncated body must not be half-counted. Body reads one that arrives in
// chunks, of any length, to the same result.
//
// An error body (OpenAI's {"error":{...}}, Anthropic's {"type":"error",...})
// yields StatusFailed.
func ParseJSON(api API, body []byte) Usage {
	u := Unknown()
	if !gjson.ValidBytes(body) {
		return u
	}
	root := gjson.Parse(view(body))
	switch api {
	case ChatCompletions:
		var st chatStatus
		readChat(&u, root, &st)
		if st != "" {
			u.Status = string(st)
		}
	case Responses:
		readResponse(&u, root)
	case Messages:
		var a anthropicCounts
		a.reset()
		readMessage(&u, &a, root)
		a.apply(&u)
	}
	return u
}

// view returns b as a string without copying, so gjson can read a body or an
// SSE record in place. The string is only valid while b is unchanged; every
// string this package keeps goes through keep or strings.Clone.
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// keep stores a JSON string value into *dst, copying it out of the borrowed
// buffer only when it differs from what is already there (a stream repeats
// its id and model on every chunk, and the copy would otherwise be a
// per-chunk allocation). Non-string values leave *dst alone.
func keep(dst *string, v gjson.Result) {
	if v.Type == gjson.String && *dst != v.Str {
		*dst = strings.Clone(v.Str)
	}
}

// count reads a token count: -1 unless v is a non-negative JSON number.
func count(v gjson.Result) int64 {
	if v.Type != gjson.Number {
		return -1
	}
	if n := v.Int(); n >= 0 {
		return n
	}
	return -1
}

// failed reports whether a top-level "error" member signals an error. The
// OpenAI SDK treats any object with a non-null error key as one.
func failed(v gjson.Result) bool {
	return v.Exists() && v.Type != gjson.Null && v.Type != gjson.False
}

// chatStatus folds Chat finish reasons: a response is as incomplete as its
// worst choice, and a failure outranks both.
type chatStatus string

func (s *chatStatus) merge(next chatStatus) {
	rank := func(c chatStatus) int {
		switch c {
		case StatusFailed:
			return 3
		case StatusIncomplete:
			return 2
		case StatusCompleted:
			return 1
		}
		return 0
	}
	if rank(next) > rank(*s) {
		*s = next
	}
}

// finishStatus maps a Chat finish_reason: "length" and "content_filter" cut
// the output short, the way Responses reports them as incomplete.
func finishStatus(v gjson.Result) chatStatus {
	if v.Type != gjson.String {
		return ""
	}
	switch v.Str {
	case "length", "content_filter":
		return StatusIncomplete
	case "":
		return ""
	}
	return StatusCompleted
}

// readChat reads a Chat Completions object: a whole response or one stream
// chunk. It reports whether the object is the usage-only final chunk
// (choices empty, usage non-null) and whether it carries output.
func readChat(u *Usage, obj gjson.Result, st *chatStatus) (usageOnly, output bool) {
	var usage, choices gjson.Result
	obj.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			keep(&u.ResponseID, v)
		case "model":
			keep(&u.Model, v)
		case "service_tier":
			keep(&u.ServiceTier, v)
		case "usage":
			usage = v
		case "choices":
			choices = v
		case "error":
			if failed(v) {
				st.merge(StatusFailed)
			}
		}
		return true
	})
	if usage.IsObject() {
		u.InputTokens = count(usage.Get("prompt_tokens"))
		u.CachedInputTokens = count(usage.Get("prompt_tokens_details.cached_tokens"))
		u.CacheWriteInputTokens = count(usage.Get("prompt_tokens_details.cache_write_tokens"))
		u.OutputTokens = count(usage.Get("completion_tokens"))
		u.ReasoningTokens = count(usage.Get("completion_tokens_details.reasoning_tokens"))
	}
	empty := true
	choices.ForEach(func(_, c gjson.Result) bool {
		empty = false
		st.merge(finishStatus(c.Get("finish_reason")))
		if !output && deltaOutput(c.Get("delta")) {
			output = true
		}
		return true
	})
	return choices.IsArray() && empty && usage.IsObject(), output
}

// deltaOutput reports whether a Chat stream delta carries output: text, a
// refusal or a tool call. The first chunk's {"role":"assistant","content":""}
// does not.
func deltaOutput(d gjson.Result) bool {
	if !d.IsObject() {
		return false
	}
	for _, k := range [...]string{"content", "refusal"} {
		if v := d.Get(k); v.Type == gjson.String && len(v.Raw) > 2 {
			return true
		}
	}
	if v := d.Get("tool_calls"); v.IsArray() && v.Get("0").Exists() {
		return true
	}
	return d.Get("function_call").IsObject()
}

// readTerminal reads the response of a terminal Responses event (typ is
// response.completed, response.incomplete or response.failed); a response
// that names no status ends as its event says.
func readTerminal(u *Usage, typ string, resp gjson.Result) {
	readResponse(u, resp)
	if u.Status == "" {
		setStatus(u, strings.TrimPrefix(typ, "response."))
	}
}

// readResponse reads a Responses API response object: a non-streamed body,
// the compact response, or the "response" member of an SSE or WebSocket
// event (callers read only the terminal events, whose status is an outcome).
func readResponse(u *Usage, resp gjson.Result) {
	var usage gjson.Result
	var status string
	var errored bool
	resp.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			keep(&u.ResponseID, v)
		case "model":
			keep(&u.Model, v)
		case "service_tier":
			keep(&u.ServiceTier, v)
		case "status":
			if v.Type == gjson.String {
				status = v.Str
			}
		case "usage":
			usage = v
		case "error":
			errored = failed(v)
		}
		return true
	})
	if usage.IsObject() {
		u.InputTokens = count(usage.Get("input_tokens"))
		u.CachedInputTokens = count(usage.Get("input_tokens_details.cached_tokens"))
		u.CacheWriteInputTokens = count(usage.Get("input_tokens_details.cache_write_tokens"))
		u.OutputTokens = count(usage.Get("output_tokens"))
		u.ReasoningTokens = count(usage.Get("output_tokens_details.reasoning_tokens"))
	}
	switch {
	case status != "":
		setStatus(u, status)
	case errored:
		setStatus(u, StatusFailed)
	}
}

// readRealtime reads a Realtime response object (response.done). It has no
// model, no tier and no reasoning count; its audio tokens (input and output)
// are summed, so the turn can be left unpriced.
func readRealtime(u *Usage, resp gjson.Result) {
	var usage gjson.Result
	resp.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			keep(&u.ResponseID, v)
		case "status":
			if v.Type == gjson.String {
				setStatus(u, v.Str)
			}
		case "usage":
			usage = v
		}
		return true
	})
	if usage.IsObject() {
		u.InputTokens = count(usage.Get("input_tokens"))
		u.CachedInputTokens = count(usage.Get("input_token_details.cached_tokens"))
		u.OutputTokens = count(usage.Get("output_tokens"))
		in, out := count(usage.Get("input_token_details.audio_tokens")), count(usage.Get("output_token_details.audio_tokens"))
		if in >= 0 || out >= 0 {
			u.AudioTokens = max(in, 0) + max(out, 0)
		}
	}
}

// setStatus records how a response ended. A failure is final: an error event
// is what the client saw, whatever a later event claims.
func setStatus(u *Usage, s string) {
	if u.Status == StatusFailed || u.Status == s {
		return
	}
	u.Status = internStatus(s)
}

// internStatus returns s as a constant string when it is a status the APIs
// name, else a copy: s may borrow a buffer that is reused.
func internStatus(s string) string {
	switch s {
	case StatusCompleted:
		return StatusCompleted
	case StatusIncomplete:
		return StatusIncomplete
	case StatusFailed:
		return StatusFailed
	case StatusCancelled:
		return StatusCancelled
	case "in_progress":
		return "in_progress"
	case "queued":
		return "queued"
	}
	return strings.Clone(s)
}

// anthropicCounts holds Anthropic's own usage members, because a stream's
// message_delta overwrites them one by one and the sum that makes our input
// count can only be taken at the end.
type anthropicCounts struct {
	input, cacheWrite, cacheRead, output, thinking int64
}

func (a *anthropicCounts) reset() {
	*a = anthropicCounts{-1, -1, -1, -1, -1}
}

// overwrite takes every member of an Anthropic usage object that is present
// and not null; message_delta sends null for what it does not update.
func (a *anthropicCounts) overwrite(u *Usage, usage gjson.Result) {
	usage.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "input_tokens":
			set(&a.input, v)
		case "cache_creation_input_tokens":
			set(&a.cacheWrite, v)
		case "cache_read_input_tokens":
			set(&a.cacheRead, v)
		case "output_tokens":
			set(&a.output, v)
		case "output_tokens_details":
			set(&a.thinking, v.Get("thinking_tokens"))
		case "speed":
			if v.Type == gjson.String {
				switch v.Str {
				case "fast":
					u.ServiceTier = "priority"
				case "standard":
					u.ServiceTier = "default"
				default:
					u.ServiceTier = ""
				}
			}
		}
		return true
	})
}

func set(dst *int64, v gjson.Result) {
	if n := count(v); n >= 0 {
		*dst = n
	}
}

// apply writes the counts into u. Anthropic's input_tokens leaves out cache
// reads and writes, and our input count includes them; without input_tokens
// the sum is unknown.
func (a *anthropicCounts) apply(u *Usage) {
	u.InputTokens = -1
	if a.input >= 0 {
		u.InputTokens = a.input + max(a.cacheWrite, 0) + max(a.cacheRead, 0)
	}
	u.CachedInputTokens = a.cacheRead
	u.CacheWriteInputTokens = a.cacheWrite
	u.OutputTokens = a.output
	u.ReasoningTokens = a.thinking
}

// stopStatus maps an Anthropic stop_reason: running out of tokens or context
// is an incomplete response; every other reason is a completed one.
func stopStatus(v gjson.Result) string {
	if v.Type != gjson.String || v.Str == "" {
		return ""
	}
	switch v.Str {
	case "max_tokens", "model_context_window_exceeded":
		return StatusIncomplete
	}
	return StatusCompleted
}

// readMessage reads an Anthropic message object: a non-streamed body or
// message_start's "message".
func readMessage(u *Usage, a *anthropicCounts, msg gjson.Result) {
	msg.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			keep(&u.ResponseID, v)
		case "model":
			keep(&u.Model, v)
		case "type":
			if v.Type == gjson.String && v.Str == "error" {
				setStatus(u, StatusFailed)
			}
		case "usage":
			a.overwrite(u, v)
		case "stop_reason":
			if s := stopStatus(v); s != "" {
				setStatus(u, s)
			}
		}
		return true
	})
}
