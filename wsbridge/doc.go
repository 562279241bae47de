// Package wsbridge is tiergate's WebSocket bridge: Envoy routes WebSocket
// upgrades for /v1/responses (the Responses API's WebSocket mode, which
// Codex uses) and /v1/realtime (the Realtime API) to it, and it relays each
// session to the upstream with the policy applied to every client frame and
// the usage of every turn accounted.
//
// It owns the upgrade and the upstream dial (server.go, upstream.go), which
// headers cross and why (headers.go), the two pumps that relay frames and
// pass close codes (relay.go), the session's state and group (session.go),
// the models it may run under (models.go), what a client frame says beyond the
// policy's verdict (frames.go), turn accounting (turns.go) and refused frames
// (refusals.go: the error event and close code come from policy.Refusal).
// Policy decisions and frame rewriting are
// package policy's; usage parsing, records and token counters are package
// usage's; spend is package budget's (each response.create is judged with a
// view of it taken at the frame's arrival, and each turn's cost is added
// at its end, to the windows of that arrival). A frame's shadow matches are
// counted and logged at info, and the first goes into its turn's record. It
// must not buffer without bound: each direction holds at most
// one message, and a slow reader slows its sender; what a session keeps
// while frames wait on the upstream is bounded in count and in bytes
// (maxClaimed, maxWaiting, maxHeld), a frame past them refused. It knows
// nothing of ext_proc.
package wsbridge
