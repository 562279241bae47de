package policy

import "strings"

// Header names that carry a caller's API key, in the order they are read.
const (
	headerAuthorization = "authorization"
	headerXAPIKey       = "x-api-key" // Anthropic
	headerAPIKey        = "api-key"   // Azure OpenAI
)

// apiKeys returns the API keys a request carries: the bearer token of
// Authorization, x-api-key and api-key. get looks a header up by its
// lower-case name.
func apiKeys(get func(name string) string) []string {
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
// value of the policy's group header when the request carries one, else
// the group whose api_key_sha256 lists the SHA-256 of one of its API keys
// (apiKeys, then extraKeys: keys found elsewhere, such as a WebSocket
// subprotocol), else "". get looks a header up by its lower-case name.
func (p *Policy) GroupFromHeaders(get func(name string) string, extraKeys ...string) string {
	if p.groupHeader != "" {
		if v := strings.TrimSpace(get(p.groupHeader)); v != "" {
			return v
		}
	}
	if len(p.keyGroups) == 0 {
		return "" // no key is hashed when no group names one
	}
	return p.groupForKeys(append(apiKeys(get), extraKeys...))
}
