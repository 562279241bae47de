package policy

import (
	"encoding/json"
	"testing"

	"github.com/coder/websocket"
)

// TestRefusalTable holds each refusal to what every server says with it.
func TestRefusalTable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		r         Refusal
		status    int
		closeCode websocket.StatusCode
		code      string
		blocked   bool
		openAI    string // error.type of an OpenAI body
		anthropic string // error.type of an Anthropic body
		param     any    // error.param of an OpenAI body
	}{
		{"no refusal says nothing", RefusalNone, 0, 0, "", false, "", "", nil},
		{"the policy forbids and blames service_tier", RefusalPolicy, 403, websocket.StatusPolicyViolation,
			"policy_violation", true, "forbidden_error", "permission_error", "service_tier"},
		{"a body that is not JSON is a bad request closed as invalid payload", RefusalInvalidJSON, 400, websocket.StatusInvalidFramePayloadData,
			"invalid_json", false, "invalid_request_error", "invalid_request_error", nil},
		{"an unknown content-encoding is an unsupported media type", RefusalUnsupportedEncoding, 415, websocket.StatusUnsupportedData,
			"unsupported_content_encoding", false, "invalid_request_error", "invalid_request_error", nil},
		{"a misconfigured filter is tiergate's own error", RefusalMisconfigured, 500, websocket.StatusInternalError,
			"tiergate_misconfigured", false, "server_error", "api_error", nil},
		{"an exhausted budget is a rate limit that blames service_tier", RefusalBudget, 429, websocket.StatusPolicyViolation,
			"budget_exhausted", true, "rate_limit_error", "rate_limit_error", "service_tier"},
		{"too many occurrences is a bad request closed as a policy violation", RefusalTooManyOccurrences, 400, websocket.StatusPolicyViolation,
			"too_many_occurrences", false, "invalid_request_error", "invalid_request_error", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tc.r
			if r.Status() != tc.status || r.CloseCode() != tc.closeCode || r.Code() != tc.code || r.Blocked() != tc.blocked {
				t.Fatalf("status %d close %d code %q blocked %v; want %d %d %q %v",
					r.Status(), r.CloseCode(), r.Code(), r.Blocked(), tc.status, tc.closeCode, tc.code, tc.blocked)
			}
			if r == RefusalNone {
				return
			}
			var oa struct {
				Error struct {
					Message, Type, Code string
					Param               any
				}
			}
			if err := json.Unmarshal(r.Body(EndpointChatCompletions, "why"), &oa); err != nil {
				t.Fatal(err)
			}
			if oa.Error.Message != "why" || oa.Error.Type != tc.openAI || oa.Error.Code != tc.code || oa.Error.Param != tc.param {
				t.Errorf("OpenAI body %+v", oa.Error)
			}
			var an struct {
				Type  string
				Error struct{ Type, Message string }
			}
			if err := json.Unmarshal(r.Body(EndpointMessages, "why"), &an); err != nil {
				t.Fatal(err)
			}
			if an.Type != "error" || an.Error.Type != tc.anthropic || an.Error.Message != "why" {
				t.Errorf("Anthropic body %+v", an)
			}
			var ev struct {
				Type    string
				Status  int
				Error   struct{ Type, Code, Message string }
				Headers map[string]string
			}
			if err := json.Unmarshal(r.Event("why", 7), &ev); err != nil {
				t.Fatal(err)
			}
			wantHeaders := 0
			if r == RefusalBudget {
				wantHeaders = 1 // retry-after, checked in TestBudgetRefusalShapes
			}
			if ev.Type != "error" || ev.Status != tc.status || ev.Error.Type != tc.openAI || ev.Error.Code != tc.code ||
				ev.Error.Message != "why" || len(ev.Headers) != wantHeaders {
				t.Errorf("event %+v", ev)
			}
		})
	}
}
