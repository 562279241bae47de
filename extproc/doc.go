// Package extproc is tiergate's Envoy external processor: the gRPC server
// behind Envoy's ext_proc HTTP filter.
//
// Per HTTP request, Envoy opens one stream and sends the request headers,
// the buffered request body, then the response headers and each response
// body chunk. The stream loop (server.go) only dispatches; the request
// phases (request.go) apply the policy and answer with the body rewritten
// or an immediate response, and the response phases (response.go) read
// token usage and write one usage record per request. With budgets, the
// request headers' arrival is the decision time: the body is judged with a
// view of spend as of then, and the request's cost is added at its end to
// the windows of that time (package budget keeps the spend). Shadow rules
// and budgets decide nothing: their matches are counted, logged at info and
// carried in the record and the dynamic metadata (shadow_rule,
// shadow_action).
//
// It knows nothing of WebSockets, and the policy's semantics live in
// package policy: this package translates between ext_proc messages and
// policy decisions.
package extproc
