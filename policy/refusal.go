package policy

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/coder/websocket"
)

// Refusal is why tiergate itself answers a request or a WebSocket frame
// instead of forwarding it. The zero value, RefusalNone, is no refusal.
// Everything a server says with a refusal comes from its kind, through one
// table: the HTTP status (also the status of the WebSocket error event),
// the close code that ends the session, the error code and the error type
// of each dialect (docs/contracts.md, "Error shapes").
type Refusal uint8

// Refusals. Blocked ones (Blocked) are decisions; the others are input
// tiergate will not judge.
const (
	RefusalNone                Refusal = iota // not refused: the request goes on
	RefusalPolicy                             // 403: the policy blocks the tier
	RefusalInvalidJSON                        // 400: the body is not valid JSON
	RefusalUnsupportedEncoding                // 415: a content-encoding tiergate cannot decode
	RefusalMisconfigured                      // 500: Envoy's filter is not set up as tiergate needs
	RefusalBudget                             // 429: a budget is exhausted
	RefusalTooManyOccurrences                 // 400: more than 64 occurrences of a key judged
)

// refusalKind is what a server says with one kind of refusal.
type refusalKind struct {
	status int
	// closeCode ends a WebSocket session refused with this kind.
	closeCode websocket.StatusCode
	// code is error.code in OpenAI bodies and WebSocket error events.
	code string
	// openAIType and anthropicType are error.type in each dialect.
	openAIType, anthropicType string
	// param names the parameter at fault in an OpenAI body ("": null).
	param string
	// blocked: a decision refused it (usage status blocked), not its
	// input (refused).
	blocked bool
}

// refusals is the one table of what each refusal says; RefusalNone's row
// is zero.
var refusals = [...]refusalKind{
	RefusalNone: {},
	RefusalPolicy: {
		status: http.StatusForbidden, closeCode: websocket.StatusPolicyViolation, code: "policy_violation",
		openAIType: "forbidden_error", anthropicType: "permission_error", param: keyServiceTier, blocked: true,
	},
	RefusalInvalidJSON: {
		status: http.StatusBadRequest, closeCode: websocket.StatusInvalidFramePayloadData, code: "invalid_json",
		openAIType: "invalid_request_error", anthropicType: "invalid_request_error",
	},
	RefusalUnsupportedEncoding: {
		status: http.StatusUnsupportedMediaType, closeCode: websocket.StatusUnsupportedData, code: "unsupported_content_encoding",
		openAIType: "invalid_request_error", anthropicType: "invalid_request_error",
	},
	RefusalMisconfigured: {
		// api_error is Anthropic's type for its own 500s.
		status: http.StatusInternalServerError, closeCode: websocket.StatusInternalError, code: "tiergate_misconfigured",
		openAIType: "server_error", anthropicType: "api_error",
	},
	RefusalBudget: {
		status: http.StatusTooManyRequests, closeCode: websocket.StatusPolicyViolation, code: "budget_exhausted",
		openAIType: "rate_limit_error", anthropicType: "rate_limit_error", param: keyServiceTier, blocked: true,
	},
	RefusalTooManyOccurrences: {
		status: http.StatusBadRequest, closeCode: websocket.StatusPolicyViolation, code: "too_many_occurrences",
		openAIType: "invalid_request_error", anthropicType: "invalid_request_error",
	},
}

func (r Refusal) kind() *refusalKind {
	if int(r) >= len(refusals) {
		return &refusals[RefusalPolicy] // unreachable: refuse rather than pass
	}
	return &refusals[r]
}

// Status returns the HTTP status of a refusal, which is also the status
// of its WebSocket error event; 0 for RefusalNone.
func (r Refusal) Status() int { return r.kind().status }

// CloseCode returns the close code that ends a WebSocket session refused
// with r: 1007 for a frame that is not JSON, 1008 for the others a session
// can meet.
func (r Refusal) CloseCode() websocket.StatusCode { return r.kind().closeCode }

// Code returns the error code of a refusal (error.code of an OpenAI body).
func (r Refusal) Code() string { return r.kind().code }

// Blocked reports that a decision refused (the policy or a budget), as
// opposed to input tiergate will not judge: the usage record of a blocked
// request says blocked, the other refused.
func (r Refusal) Blocked() bool { return r.kind().blocked }

// Body renders the JSON error body tiergate answers an HTTP request with,
// in the endpoint's own dialect (docs/contracts.md, "Error shapes").
func (r Refusal) Body(ep Endpoint, message string) []byte {
	k := r.kind()
	var v any
	if ep.anthropic() {
		v = anthropicError{Type: "error", Error: anthropicErrorDetail{Type: k.anthropicType, Message: message}}
	} else {
		var param *string
		if k.param != "" {
			param = &k.param
		}
		v = openAIError{Error: openAIErrorDetail{Message: message, Type: k.openAIType, Param: param, Code: k.code}}
	}
	b, _ := json.Marshal(v) // plain structs of strings: cannot fail
	return b
}

// Event renders the WebSocket error event tiergate sends before it closes
// a session: the Responses WebSocket error form, whose status makes Codex
// treat it as an HTTP error of that status rather than retry. A budget
// refusal carries retryAfter, the seconds a client would have read from
// the HTTP response's retry-after header.
func (r Refusal) Event(message string, retryAfter int64) []byte {
	k := r.kind()
	var id [16]byte
	_, _ = rand.Read(id[:])
	ev := wsErrorEvent{
		EventID: "evt_" + hex.EncodeToString(id[:]),
		Type:    "error",
		Status:  k.status,
		Error:   wsErrorDetail{Type: k.openAIType, Code: k.code, Message: message},
	}
	if r == RefusalBudget {
		ev.Headers = map[string]string{"retry-after": strconv.FormatInt(retryAfter, 10)}
	}
	b, _ := json.Marshal(ev)
	return b
}

// refusalOf returns why a blocked decision refuses: its budget, else the
// policy.
func refusalOf(d *Decision) Refusal {
	if d.Budget != "" {
		return RefusalBudget
	}
	return RefusalPolicy
}

type openAIError struct {
	Error openAIErrorDetail `json:"error"`
}

type openAIErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

type anthropicError struct {
	Type  string               `json:"type"`
	Error anthropicErrorDetail `json:"error"`
}

type anthropicErrorDetail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

type wsErrorEvent struct {
	EventID string        `json:"event_id"`
	Type    string        `json:"type"`
	Status  int           `json:"status"`
	Error   wsErrorDetail `json:"error"`
	// Headers carries what an HTTP refusal would have said in its headers
	// (retry-after for a budget); absent otherwise.
	Headers map[string]string `json:"headers,omitempty"`
}

type wsErrorDetail struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}
