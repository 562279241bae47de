package wsbridge

import (
	"net/http"
	"net/textproto"
	"strings"
)

// headerRule is one entry of a forwarding table: a header name (or, with
// prefix set, every header whose name starts with it) and why it crosses.
type headerRule struct {
	name   string // lower case
	prefix bool
	reason string
}

// upstreamRequestHeaders are the upgrade request's headers that go to the
// upstream. It is an allowlist: a header not named here stays with tiergate,
// so nothing Envoy or a gateway added on the way in (x-forwarded-*,
// x-envoy-*, cookies for the gateway's own domain) leaks upstream by accident.
var upstreamRequestHeaders = []headerRule{
	{name: "authorization", reason: "the caller's API key or token; the upstream authenticates the session with it"},
	{name: "api-key", reason: "Azure OpenAI's key header, in place of authorization"},
	{name: "openai-beta", reason: "selects the protocol version (realtime=v1 beta events, responses_websockets=...); every value is kept"},
	{name: "openai-organization", reason: "the organization billed"},
	{name: "openai-project", reason: "the project billed"},
	{name: "originator", reason: "Codex's client identity, which the upstream routes and limits by"},
	{name: "user-agent", reason: "the client's identity, as a direct connection would carry it"},
	{name: "session-id", reason: "Codex conversation id (newer builds), used for prompt-cache routing"},
	{name: "session_id", reason: "Codex conversation id (older builds), used for prompt-cache routing"},
	{name: "thread-id", reason: "Codex thread id (newer builds)"},
	{name: "x-client-request-id", reason: "the client's own request id, for support look-ups"},
	{name: "x-codex-", prefix: true, reason: "Codex protocol state: x-codex-turn-state (sticky routing, replayed on reconnect), x-codex-turn-metadata, x-codex-beta-features; the set varies by Codex version"},
	{name: "x-openai-", prefix: true, reason: "OpenAI client hints such as x-openai-subagent"},
	{name: "chatgpt-account-id", reason: "selects the account when Codex uses ChatGPT sign-in"},
	{name: "x-request-id", reason: "correlates the upstream's logs with Envoy's access log and the usage record"},
	{name: "traceparent", reason: "W3C trace context, so a trace spans the hop"},
	{name: "tracestate", reason: "W3C trace context, so a trace spans the hop"},
}

// neverForwarded are headers no table entry may forward, whatever a prefix
// would match. The policy's group header is added per request.
var neverForwarded = []headerRule{
	// Hop-by-hop (RFC 9110 §7.6.1): they describe one connection, not the
	// message.
	{name: "connection", reason: "hop-by-hop"},
	{name: "keep-alive", reason: "hop-by-hop"},
	{name: "proxy-connection", reason: "hop-by-hop (non-standard)"},
	{name: "proxy-authenticate", reason: "hop-by-hop"},
	{name: "proxy-authorization", reason: "hop-by-hop: credentials for a proxy on the way in, not for the upstream"},
	{name: "te", reason: "hop-by-hop"},
	{name: "trailer", reason: "hop-by-hop"},
	{name: "transfer-encoding", reason: "hop-by-hop"},
	{name: "upgrade", reason: "hop-by-hop; the bridge makes its own upgrade"},
	// The handshake (RFC 6455 §4): each connection negotiates its own key,
	// version, extensions and subprotocol; the offered subprotocols are
	// passed on separately.
	{name: "sec-websocket-", prefix: true, reason: "per-connection handshake, negotiated by the bridge on each side"},
	{name: "host", reason: "the upstream's host is the upstream URL's"},
}

// clientResponseHeaders are the upstream's upgrade response headers that
// reach the client with the 101. Codex reads the first four
// (codex-rs responses_websocket.rs, connect_websocket).
var clientResponseHeaders = []headerRule{
	{name: "x-codex-turn-state", reason: "sticky-routing token Codex replays when it reconnects within a turn"},
	{name: "openai-model", reason: "the model the server chose; Codex shows and uses it"},
	{name: "x-models-etag", reason: "Codex refreshes its model list when it changes"},
	{name: "x-reasoning-included", reason: "tells Codex whether reasoning items come back"},
	{name: "x-codex-", prefix: true, reason: "other Codex protocol state the upstream returns"},
	{name: "x-request-id", reason: "the upstream's request id, for support look-ups"},
}

// refusalResponseHeaders are the headers of an upstream's refused handshake
// (4xx/5xx) that reach the client with its status and body.
var refusalResponseHeaders = []headerRule{
	{name: "content-type", reason: "the body is the upstream's; so is its type"},
	{name: "retry-after", reason: "when a 429 or 503 may be retried"},
	{name: "retry-after-ms", reason: "OpenAI's finer retry hint"},
	{name: "x-ratelimit-", prefix: true, reason: "the rate-limit state a client backs off by"},
	{name: "x-request-id", reason: "the upstream's request id, for support look-ups"},
	{name: "www-authenticate", reason: "what a 401 asks for"},
	{name: "location", reason: "where a 3xx points (redirects are not followed, as a direct client would decide)"},
}

func (r headerRule) matches(lower string) bool {
	if r.prefix {
		return strings.HasPrefix(lower, r.name)
	}
	return lower == r.name
}

func matchesAny(rules []headerRule, lower string) bool {
	for _, r := range rules {
		if r.matches(lower) {
			return true
		}
	}
	return false
}

// upstreamHeaders builds the upstream handshake's headers from the client's:
// the allowlist, minus what must never cross and the policy's group header
// (a statement Envoy makes to tiergate alone).
func upstreamHeaders(in http.Header, groupHeader string) http.Header {
	out := make(http.Header, 8)
	copyHeaders(out, in, upstreamRequestHeaders)
	if groupHeader != "" {
		out.Del(groupHeader) // canonical keys, as copyHeaders writes them
	}
	return out
}

// copyHeaders copies the headers a table allows from src into dst.
func copyHeaders(dst, src http.Header, rules []headerRule) {
	for k, vs := range src {
		lower := strings.ToLower(k)
		if matchesAny(neverForwarded, lower) || !matchesAny(rules, lower) {
			continue
		}
		dst[textproto.CanonicalMIMEHeaderKey(k)] = append([]string(nil), vs...)
	}
}

// headerTokens splits every value of a comma-separated header into trimmed,
// non-empty tokens.
func headerTokens(h http.Header, name string) []string {
	var out []string
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// hasToken reports whether a comma-separated header holds token (case
// insensitive), as Connection: keep-alive, Upgrade does.
func hasToken(h http.Header, name, token string) bool {
	for _, t := range headerTokens(h, name) {
		if strings.EqualFold(t, token) {
			return true
		}
	}
	return false
}

// insecureKeyPrefix marks the subprotocol browsers use to carry an API key,
// which they cannot put in a header.
const insecureKeyPrefix = "openai-insecure-api-key."

// subprotocolKeys returns the API keys carried in offered subprotocols.
func subprotocolKeys(offered []string) []string {
	var keys []string
	for _, p := range offered {
		if k, ok := strings.CutPrefix(p, insecureKeyPrefix); ok && k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// offersDeflate reports whether the client offered permessage-deflate.
func offersDeflate(h http.Header) bool {
	for _, ext := range headerTokens(h, "Sec-WebSocket-Extensions") {
		name, _, _ := strings.Cut(ext, ";")
		if strings.EqualFold(strings.TrimSpace(name), "permessage-deflate") {
			return true
		}
	}
	return false
}
