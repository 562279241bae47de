package usage_test

import (
	"fmt"
	"os"

	"github.com/tiergate/tiergate/usage"

	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// A response body read in chunks, as a proxy sees it: usage comes out at the
// end, and FirstOutput says when to timestamp the first token.
func ExampleSSE() {
	s := usage.NewSSE(usage.Messages, 0)
	firstAt := -1
	for i, chunk := range []string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"model\":\"claude-opus-4-6\",",
		"\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":1024,\"speed\":\"fast\"}}}\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
	} {
		s.Write([]byte(chunk))
		if firstAt < 0 && s.FirstOutput() {
			firstAt = i // a proxy takes time.Since(start) here
		}
	}
	s.Finish()
	u := s.Usage()
	fmt.Println("first output in chunk", firstAt)
	fmt.Println(u.InputTokens, u.CachedInputTokens, u.OutputTokens, u.ServiceTier, u.Status)
	// Output:
	// first output in chunk 2
	// 1049 1024 15 priority completed
}

// The usage-only chunk tiergate asked for is read and kept from the client.
func ExampleChatStreamFilter() {
	f := usage.NewChatStreamFilter(0)
	var out []byte
	out = f.Filter(out, []byte("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n"))
	out = f.Filter(out, []byte("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12}}\n\ndata: [DONE]\n\n"))
	out = f.Flush(out)
	fmt.Printf("%s", out)
	fmt.Println(f.Usage().InputTokens, f.Usage().OutputTokens)
	// Output:
	// data: {"choices":[{"delta":{"content":"Hi"}}],"usage":null}
	//
	// data: [DONE]
	//
	// 9 12
}

// A WebSocket turn ends at its terminal event; its usage fills the record.
func ExampleParseEvent() {
	e := usage.ParseEvent([]byte(`{"type":"response.completed","response":{"id":"resp_1","status":"completed","model":"gpt-5.5","service_tier":"priority","usage":{"input_tokens":37,"output_tokens":11}}}`))
	r := &tiergatev1.UsageRecord{Time: "2026-08-21T10:11:12.345Z", Endpoint: "responses_ws", Action: "pass", Stream: true}
	e.Usage.Fill(r)
	usage.NewRecordWriter(os.Stdout).Write(r)
	// Output:
	// {"time":"2026-08-21T10:11:12.345Z","response_id":"resp_1","endpoint":"responses_ws","response_model":"gpt-5.5","service_tier_reported":"priority","action":"pass","input_tokens":37,"output_tokens":11,"duration_ms":0,"stream":true,"status":"completed"}
}
