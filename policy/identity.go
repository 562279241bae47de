package policy

import "strings"

// Header names that carry a caller's API key, in the order they are read.
const (
	headerAuthorization = "authorization"
	headerXAPIKey       = "x-api-key" // Anthropic
	headerAPIKey        = "api-key"   // Azure OpenAI
)

// APIKeys returns the API keys a request carries: the bearer token of
// Authorization, x-api-key and api-key. get looks a header up by its
// lower-case name.
func APIKeys(get func(name string) string) []string {
	var keys []string
	if v := get(headerAuthorization); len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		keys = append(keys, strings.TrimSpace(v[7:]))
	}
	for _, h := range []string{headerXAPIKey, headerAPIKey} {
		if v := strings.TrimSpace(get(h)); v != "" {
			keys = append(keys, v)
		}
	}
	return keys
}

// GroupFromHeaders resolves the caller's group from request headers: the
// policy's group header, else the digest of an API key (see ResolveGroup).
// extraKeys are keys found elsewhere (a WebSocket subprotocol).
func (p *Policy) GroupFromHeaders(get func(name string) string, extraKeys ...string) string {
	var hv string
	if p.groupHeader != "" {
		hv = get(p.groupHeader)
	}
	if p.groupHeader != "" && strings.TrimSpace(hv) != "" {
		return strings.TrimSpace(hv)
	}
	if len(p.keyGroups) == 0 {
		return ""
	}
	return p.ResolveGroup("", append(APIKeys(get), extraKeys...)...)
}
