// Package usage reads what an LLM upstream reports having used, and turns it
// into usage records and token metrics.
//
// It owns:
//   - parsing token usage out of response bodies (ParseJSON, or Body for
//     one that arrives in chunks), SSE streams read incrementally chunk by
//     chunk (SSE), and WebSocket server events (ParseEvent), for Chat
//     Completions, Responses, Anthropic Messages and Realtime, with the wire
//     shapes docs/contracts.md ("Wire facts") sets out;
//   - removing the usage-only final chunk that tiergate itself asked a Chat
//     Completions stream for (ChatStreamFilter);
//   - the usage record's JSON line (AppendRecord) and reading one back
//     (ParseRecord), the cost written as an exact decimal;
//   - the usage log (RecordWriter): written in place, or through a bounded queue
//     (NewQueuedRecordWriter) so that a writer that fails or blocks costs records,
//     counted in tiergate_usage_records_dropped_total, never request time;
//   - the token and cost counters (Metrics).
//
// It must know nothing of gRPC, Envoy or WebSockets: callers hand it bytes (a
// body, a network chunk, one text frame) and get values back. What a body or
// stream reader holds is bounded by a size the caller chooses; a body or
// record longer than that is still read, pruned as it passes to the members
// usage is read from (prune.go), since a client chooses how long a response
// is. JSON is read at the byte level with gjson rather than unmarshalled,
// because responses run to megabytes and usage is a few fields of them.
//
// A count the upstream did not report is -1 in a Usage and absent from a
// record, never 0: zero tokens and "not said" bill differently.
package usage
