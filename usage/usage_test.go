package usage

import (
	"testing"

	"google.golang.org/protobuf/proto"

	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

func TestParseJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		api  API
		body string // inline body, or
		file string // a fixture under testdata
		want Usage
	}{
		{
			name: "chat response reports prompt, cached, completion and reasoning tokens",
			api:  ChatCompletions, file: "chat.json",
			want: known(1117, 1024, 46, 32, "chatcmpl-B9MH", "gpt-4o-2024-08-06", "priority", StatusCompleted),
		},
		{
			name: "chat usage reads cache writes from prompt_tokens_details",
			api:  ChatCompletions,
			body: `{"id":"c1","model":"m","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":50,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":10,"cache_write_tokens":30}}}`,
			want: withWrites(known(50, 10, 2, -1, "c1", "m", "", StatusCompleted), 30),
		},
		{
			name: "chat usage without details leaves cached and reasoning unknown",
			api:  ChatCompletions,
			body: `{"id":"c1","model":"m","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`,
			want: known(5, -1, 2, -1, "c1", "m", "", StatusCompleted),
		},
		{
			name: "chat response cut by max tokens is incomplete",
			api:  ChatCompletions,
			body: `{"choices":[{"finish_reason":"stop"},{"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`,
			want: known(1, -1, 2, -1, "", "", "", StatusIncomplete),
		},
		{
			name: "chat error body is failed with nothing known",
			api:  ChatCompletions,
			body: `{"error":{"message":"Invalid value","type":"invalid_request_error","param":"service_tier","code":"invalid_value"}}`,
			want: known(-1, -1, -1, -1, "", "", "", StatusFailed),
		},
		{
			name: "chat usage null leaves every count unknown",
			api:  ChatCompletions,
			body: `{"id":"c2","choices":[],"usage":null}`,
			want: known(-1, -1, -1, -1, "c2", "", "", ""),
		},
		{
			name: "counts that are not non-negative numbers are unknown",
			api:  ChatCompletions,
			body: `{"usage":{"prompt_tokens":"5","completion_tokens":-2,"prompt_tokens_details":{"cached_tokens":null},"completion_tokens_details":{"reasoning_tokens":true}}}`,
			want: known(-1, -1, -1, -1, "", "", "", ""),
		},
		{
			name: "an escaped member name is read as the name it spells",
			api:  ChatCompletions,
			body: `{"\u0075sage":{"prompt_tokens":3,"completion_tokens":4},"service\u005ftier":"flex"}`,
			want: known(3, -1, 4, -1, "", "", "flex", ""),
		},
		{
			name: "responses body reports usage, tier and status",
			api:  Responses, file: "responses.json",
			want: withWrites(known(8438, 8192, 398, 256, "resp_67cc", "gpt-4o-2024-08-06", "priority", StatusCompleted), 0),
		},
		{
			name: "compact response has usage but no model, tier or status",
			api:  Responses, file: "responses_compact.json",
			want: withWrites(known(139, 0, 438, 64, "resp_001", "", "", ""), 0),
		},
		{
			name: "responses usage without input details leaves cached unknown",
			api:  Responses,
			body: `{"id":"r","status":"incomplete","usage":{"input_tokens":10,"output_tokens":3,"output_tokens_details":{"reasoning_tokens":1}}}`,
			want: known(10, -1, 3, 1, "r", "", "", StatusIncomplete),
		},
		{
			name: "responses failed with null usage keeps counts unknown",
			api:  Responses,
			body: `{"id":"r","status":"failed","error":{"code":"server_error","message":"x"},"usage":null}`,
			want: known(-1, -1, -1, -1, "r", "", "", StatusFailed),
		},
		{
			name: "responses cancelled status is passed through",
			api:  Responses,
			body: `{"id":"r","status":"cancelled","usage":null}`,
			want: known(-1, -1, -1, -1, "r", "", "", "cancelled"),
		},
		{
			name: "responses error body is failed",
			api:  Responses,
			body: `{"error":{"message":"x","type":"invalid_request_error","param":null,"code":null}}`,
			want: known(-1, -1, -1, -1, "", "", "", StatusFailed),
		},
		{
			name: "anthropic input adds cache reads and writes, and fast speed is priority",
			api:  Messages, file: "messages.json",
			want: withWrites(known(1049, 1024, 15, 0, "msg_01", "claude-opus-4-6", "priority", StatusCompleted), 0),
		},
		{
			name: "anthropic without cache members counts input tokens alone",
			api:  Messages,
			body: `{"id":"m","model":"claude","stop_reason":"tool_use","usage":{"input_tokens":7,"output_tokens":3,"speed":"standard"}}`,
			want: known(7, -1, 3, -1, "m", "claude", "default", StatusCompleted),
		},
		{
			name: "anthropic max_tokens stop is incomplete and unknown speed reports no tier",
			api:  Messages,
			body: `{"id":"m","stop_reason":"max_tokens","usage":{"input_tokens":7,"cache_creation_input_tokens":5,"output_tokens":3,"speed":null,"service_tier":"priority"}}`,
			want: withWrites(known(12, -1, 3, -1, "m", "", "", StatusIncomplete), 5),
		},
		{
			name: "anthropic context window stop is incomplete",
			api:  Messages,
			body: `{"stop_reason":"model_context_window_exceeded","usage":{"input_tokens":1,"output_tokens":1}}`,
			want: known(1, -1, 1, -1, "", "", "", StatusIncomplete),
		},
		{
			name: "anthropic cache counts without input tokens leave input unknown",
			api:  Messages,
			body: `{"usage":{"cache_read_input_tokens":9,"output_tokens":1}}`,
			want: known(-1, 9, 1, -1, "", "", "", ""),
		},
		{
			name: "anthropic error body is failed",
			api:  Messages,
			body: `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}`,
			want: known(-1, -1, -1, -1, "", "", "", StatusFailed),
		},
		{
			name: "a body cut short is not counted at all",
			api:  Responses,
			body: `{"id":"r","status":"completed","usage":{"input_tokens":10,"output_tokens":3`,
			want: Unknown(),
		},
		{
			name: "an empty body is unknown",
			api:  ChatCompletions,
			want: Unknown(),
		},
		{
			name: "the zero API reads nothing",
			body: `{"usage":{"prompt_tokens":5}}`,
			want: Unknown(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := []byte(tt.body)
			if tt.file != "" {
				body = fixture(t, tt.file)
			}
			if got := ParseJSON(tt.api, body); got != tt.want {
				t.Errorf("ParseJSON =\n  %+v\nwant\n  %+v", got, tt.want)
			}
		})
	}
}

func TestParseJSONDoesNotKeepTheBody(t *testing.T) {
	t.Parallel()
	body := fixture(t, "responses.json")
	u := ParseJSON(Responses, body)
	for i := range body {
		body[i] = 'x'
	}
	if u.ResponseID != "resp_67cc" || u.Model != "gpt-4o-2024-08-06" || u.ServiceTier != "priority" {
		t.Errorf("strings changed with the body: %+v", u)
	}
}

func TestKnown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		u    Usage
		want bool
	}{
		{"nothing is known in Unknown", Unknown(), false},
		{"a single known count is enough", Usage{InputTokens: -1, CachedInputTokens: -1, OutputTokens: 0, ReasoningTokens: -1}, true},
		{"the zero Usage claims zero tokens, which is known", Usage{}, true},
		{"strings alone are not counts", Usage{InputTokens: -1, CachedInputTokens: -1, CacheWriteInputTokens: -1, OutputTokens: -1, ReasoningTokens: -1, Model: "m"}, false},
		{"a cache-write count alone is known", Usage{InputTokens: -1, CachedInputTokens: -1, CacheWriteInputTokens: 3, OutputTokens: -1, ReasoningTokens: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.u.Known(); got != tt.want {
				t.Errorf("Known() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFill(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		u    Usage
		in   *tiergatev1.UsageRecord
		want *tiergatev1.UsageRecord
	}{
		{
			name: "known counts are set, zero included, and unknown ones stay absent",
			u:    known(10, 0, -1, -1, "resp_1", "gpt-5.5", "priority", StatusCompleted),
			in:   &tiergatev1.UsageRecord{Endpoint: "responses"},
			want: &tiergatev1.UsageRecord{
				Endpoint: "responses", InputTokens: proto.Uint64(10), CachedInputTokens: proto.Uint64(0),
				ResponseId: "resp_1", ResponseModel: "gpt-5.5", ServiceTierReported: "priority", Status: StatusCompleted,
			},
		},
		{
			name: "a status the caller already set is kept",
			u:    known(1, -1, 2, 1, "", "", "", StatusCompleted),
			in:   &tiergatev1.UsageRecord{Status: "client_closed", ResponseModel: "asked"},
			want: &tiergatev1.UsageRecord{
				Status: "client_closed", ResponseModel: "asked",
				InputTokens: proto.Uint64(1), OutputTokens: proto.Uint64(2), ReasoningTokens: proto.Uint64(1),
			},
		},
		{
			name: "an unknown usage changes nothing",
			u:    Unknown(),
			in:   &tiergatev1.UsageRecord{Time: "t"},
			want: &tiergatev1.UsageRecord{Time: "t"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.u.Fill(tt.in)
			if !proto.Equal(tt.in, tt.want) {
				t.Errorf("Fill gave %v, want %v", tt.in, tt.want)
			}
		})
	}
}

func TestAPIString(t *testing.T) {
	t.Parallel()
	for api, want := range map[API]string{ChatCompletions: "chat_completions", Responses: "responses", Messages: "messages", 0: ""} {
		if got := api.String(); got != want {
			t.Errorf("API(%d).String() = %q, want %q", api, got, want)
		}
	}
}
