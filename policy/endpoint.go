package policy

import (
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Endpoint is an API surface that tiergate polices.
type Endpoint uint8

// Endpoints. EndpointUnknown is any path tiergate does not police.
const (
	EndpointUnknown Endpoint = iota
	EndpointChatCompletions
	EndpointResponses
	EndpointMessages
	EndpointResponsesWS
	EndpointRealtime
	// EndpointMessageBatches is Anthropic's Message Batches create
	// (POST /v1/messages/batches). Each requests[].params is a Messages
	// request: policy rules for messages judge it; policy files cannot
	// name this endpoint.
	EndpointMessageBatches
)

var endpointNames = [...]string{
	EndpointUnknown:         "unknown",
	EndpointChatCompletions: "chat_completions",
	EndpointResponses:       "responses",
	EndpointMessages:        "messages",
	EndpointResponsesWS:     "responses_ws",
	EndpointRealtime:        "realtime",
	EndpointMessageBatches:  "message_batches",
}

// String returns the endpoint's name as written in the policy file and in
// metric labels.
func (e Endpoint) String() string {
	if int(e) < len(endpointNames) {
		return endpointNames[e]
	}
	return "unknown"
}

// anthropic reports whether the endpoint speaks Anthropic's dialect, where
// fast mode (speed and the anthropic-beta header) stands for the tier.
func (e Endpoint) anthropic() bool { return e == EndpointMessages || e == EndpointMessageBatches }

// endpointForPath recognises an HTTP endpoint by the suffix of its path
// (see ParsePath).
func endpointForPath(path string) Endpoint {
	ep, _ := ParsePath(path)
	return ep
}

// ParsePath recognises an HTTP endpoint by the suffix of its path, so
// Azure-style (/openai/deployments/x/chat/completions) and gateway prefixes
// are policed too, and returns the deployment an Azure-style path names
// ("" for none). The query string is ignored. The path is first normalised
// as a lenient upstream would route it (README, "The ext_proc server"): ';'
// parameters dropped, percent-encoding decoded once, '.' and '..' segments
// resolved, empty segments and trailing slashes removed, and the endpoint
// matched without regard to case. So /v1/responses/, /V1/Responses and
// /v1/respons%65s are all the Responses endpoint.
func ParsePath(rawPath string) (ep Endpoint, deployment string) {
	if i := strings.IndexAny(rawPath, "?#"); i >= 0 {
		rawPath = rawPath[:i]
	}
	if isPlainPath(rawPath) {
		// The common case: nothing to normalise, nothing to allocate.
		return endpointOfClean(rawPath, rawPath)
	}
	clean := normalisePath(rawPath)
	return endpointOfClean(clean, strings.ToLower(clean))
}

// isPlainPath reports whether a path is already in normal form and lower
// case: no escapes, parameters, dot or empty segments, or trailing slash.
func isPlainPath(p string) bool {
	if p == "" || p[0] != '/' || strings.HasSuffix(p, "/") || strings.Contains(p, "//") ||
		strings.Contains(p, "/.") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c == '%' || c == ';' || ('A' <= c && c <= 'Z') || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// normalisePath decodes percent-escapes once, then drops each segment's ';'
// parameters and resolves the segments.
func normalisePath(p string) string {
	if dec, err := url.PathUnescape(p); err == nil {
		p = dec
	} else {
		p = unescapeLenient(p)
	}
	var segs []string
	for seg := range strings.SplitSeq(p, "/") {
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		switch seg {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, seg)
		}
	}
	return "/" + strings.Join(segs, "/")
}

// unescapeLenient decodes the valid percent-escapes of p and keeps the
// rest as they are, as a lenient router does.
func unescapeLenient(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
			v, _ := strconv.ParseUint(p[i+1:i+3], 16, 8)
			b.WriteByte(byte(v))
			i += 2
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// endpointOfClean matches a normalised path (lower is it in lower case).
func endpointOfClean(clean, lower string) (Endpoint, string) {
	ep := EndpointUnknown
	switch {
	case strings.HasSuffix(lower, "/chat/completions"):
		ep = EndpointChatCompletions
	case strings.HasSuffix(lower, "/responses"), strings.HasSuffix(lower, "/responses/compact"):
		ep = EndpointResponses
	case strings.HasSuffix(lower, "/v1/messages"):
		ep = EndpointMessages
	case strings.HasSuffix(lower, "/v1/messages/batches"):
		ep = EndpointMessageBatches
	}
	if ep == EndpointUnknown {
		return ep, ""
	}
	const marker = "/openai/deployments/"
	if i := strings.Index(lower, marker); i >= 0 {
		rest := clean[i+len(marker):]
		if j := strings.IndexByte(rest, '/'); j > 0 {
			return ep, rest[:j]
		}
	}
	return ep, ""
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}
