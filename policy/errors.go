package policy

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
)

// Refusal is why tiergate itself answers a request instead of forwarding it.
type Refusal uint8

// Refusals, each with its HTTP status and error code.
const (
	RefusalPolicy              Refusal = iota // 403: the policy blocks the tier
	RefusalInvalidJSON                        // 400: the body is not valid JSON
	RefusalUnsupportedEncoding                // 415: a content-encoding tiergate cannot decode
	RefusalMisconfigured                      // 500: Envoy's filter is not set up as tiergate needs
	RefusalBudget                             // 429: a budget is exhausted
	RefusalTooManyOccurrences                 // 400: more than 64 occurrences of a key judged
)

// refusalOf returns why a blocked decision refuses: its budget, else the
// policy.
func refusalOf(d *Decision) Refusal {
	if d.Budget != "" {
		return RefusalBudget
	}
	return RefusalPolicy
}

// Status returns the HTTP status of a refusal.
func (r Refusal) Status() int {
	switch r {
	case RefusalInvalidJSON, RefusalTooManyOccurrences:
		return http.StatusBadRequest
	case RefusalUnsupportedEncoding:
		return http.StatusUnsupportedMediaType
	case RefusalMisconfigured:
		return http.StatusInternalServerError
	case RefusalBudget:
		return http.StatusTooManyRequests
	}
	return http.StatusForbidden
}

// Code returns the OpenAI-style error code of a refusal.
func (r Refusal) Code() string {
	switch r {
	case RefusalInvalidJSON:
		return "invalid_json"
	case RefusalUnsupportedEncoding:
		return "unsupported_content_encoding"
	case RefusalMisconfigured:
		return "tiergate_misconfigured"
	case RefusalBudget:
		return "budget_exhausted"
	case RefusalTooManyOccurrences:
		return "too_many_occurrences"
	}
	return "policy_violation"
}

func (r Refusal) openAIType() string {
	switch r {
	case RefusalPolicy:
		return "forbidden_error"
	case RefusalMisconfigured:
		return "server_error"
	case RefusalBudget:
		return "rate_limit_error"
	}
	return "invalid_request_error"
}

func (r Refusal) anthropicType() string {
	switch r {
	case RefusalPolicy:
		return "permission_error"
	case RefusalMisconfigured:
		return "api_error" // Anthropic's type for its own 500s
	case RefusalBudget:
		return "rate_limit_error"
	}
	return "invalid_request_error"
}

// ErrorBody renders the JSON error body tiergate answers with, in the
// endpoint's own dialect (docs/contracts.md, "Error shapes").
func ErrorBody(ep Endpoint, r Refusal, message string) []byte {
	var v any
	if ep.Anthropic() {
		v = anthropicError{Type: "error", Error: anthropicErrorDetail{Type: r.anthropicType(), Message: message}}
	} else {
		var param *string
		if r == RefusalPolicy || r == RefusalBudget {
			p := "service_tier"
			param = &p
		}
		v = openAIError{Error: openAIErrorDetail{Message: message, Type: r.openAIType(), Param: param, Code: r.Code()}}
	}
	b, _ := json.Marshal(v) // plain structs of strings: cannot fail
	return b
}

// ErrorEvent renders the WebSocket error event tiergate sends before it
// closes a session: the Responses WebSocket error form, whose status makes
// Codex treat it as an HTTP error of that status rather than retry.
func ErrorEvent(r Refusal, message string) []byte {
	var id [16]byte
	_, _ = rand.Read(id[:])
	b, _ := json.Marshal(wsErrorEvent{
		EventID: "evt_" + hex.EncodeToString(id[:]),
		Type:    "error",
		Status:  r.Status(),
		Error:   wsErrorDetail{Type: r.openAIType(), Code: r.Code(), Message: message},
	})
	return b
}

// BudgetErrorEvent renders the WebSocket error event for a turn a budget
// refuses: the 429 form of ErrorEvent, with the retry-after a client would
// have read from the HTTP response's headers.
func BudgetErrorEvent(message string, retryAfter int64) []byte {
	var id [16]byte
	_, _ = rand.Read(id[:])
	r := RefusalBudget
	b, _ := json.Marshal(wsErrorEvent{
		EventID: "evt_" + hex.EncodeToString(id[:]),
		Type:    "error",
		Status:  r.Status(),
		Error:   wsErrorDetail{Type: r.openAIType(), Code: r.Code(), Message: message},
		Headers: map[string]string{"retry-after": strconv.FormatInt(retryAfter, 10)},
	})
	return b
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
