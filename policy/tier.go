package policy

import (
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Tier is a service tier as the policy sees it: canonical, with the alias
// fast folded into Priority and Anthropic fast mode counted as Priority.
type Tier uint8

// Tiers. TierNone means no tier was sent; TierUnrecognised means a value was
// sent that tiergate does not know (a non-string, or an unknown name): it is
// left for the upstream to reject and matches no rule.
const (
	TierNone Tier = iota
	TierPriority
	TierFlex
	TierAuto
	TierDefault
	TierScale
	TierUltrafast
	TierUnrecognised
)

var tierNames = [...]string{
	TierNone:         "none",
	TierPriority:     "priority",
	TierFlex:         "flex",
	TierAuto:         "auto",
	TierDefault:      "default",
	TierScale:        "scale",
	TierUltrafast:    "ultrafast",
	TierUnrecognised: "unrecognised",
}

// String returns the canonical name: the value written upstream for a
// concrete tier, "none" or "unrecognised" otherwise.
func (t Tier) String() string {
	if int(t) < len(tierNames) {
		return tierNames[t]
	}
	return "unrecognised"
}

// Concrete reports whether t is a tier that can be written upstream.
func (t Tier) Concrete() bool { return t >= TierPriority && t <= TierUltrafast }

// quoted returns the JSON string token of a concrete tier.
func (t Tier) quoted() string { return `"` + t.String() + `"` }

// ParseTier normalises a tier name as a client may write it: surrounding
// white space and control characters trimmed (trimmed), case folded, fast
// read as priority. Anything else is TierUnrecognised; the empty string
// (after trimming) too.
func ParseTier(s string) Tier {
	s = strings.TrimFunc(s, trimmed)
	if len(s) > 4*len("ultrafast") {
		// No folding shrinks a rune to less than a quarter of its bytes.
		return TierUnrecognised
	}
	return tierByName(asciiLower(s))
}

// trimmed reports whether an upstream's trim may remove r from the ends
// of a value, so that tiergate trims it too: Unicode white space (Go's and
// Python's trims), every control character (Java's String.trim drops all
// of C0, NUL included; a C reader stops at NUL) and the byte order mark
// (JavaScript's trim). "priority\u0000" is priority.
func trimmed(r rune) bool {
	return unicode.IsSpace(r) || unicode.IsControl(r) || r == '\uFEFF'
}

// tierByName maps a trimmed, lower-cased name to its tier.
func tierByName(lower string) Tier {
	switch lower {
	case "priority", "fast":
		return TierPriority
	case "flex":
		return TierFlex
	case "auto":
		return TierAuto
	case "default":
		return TierDefault
	case "scale":
		return TierScale
	case "ultrafast":
		return TierUltrafast
	}
	return TierUnrecognised
}

// asciiLower lower-cases s without allocating when it is already lower-case
// ASCII; other strings take Unicode folding, so that a look-alike spelling
// some upstream might fold (the Kelvin sign, the long s) is read the same way.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf || ('A' <= c && c <= 'Z') {
			return strings.ToLower(strings.Map(foldRune, s))
		}
	}
	return s
}

// foldRune maps the long s, whose case folding lands on an ASCII letter but
// which ToLower leaves alone, onto that letter. (ToLower already maps the
// Kelvin sign to k.)
func foldRune(r rune) rune {
	if r == 'ſ' {
		return 's'
	}
	return r
}

// Action is what the policy does with a request.
type Action uint8

// Actions, ordered by strictness: when several occurrences or candidate
// models are judged, the highest wins.
const (
	ActionPass Action = iota
	ActionFilter
	ActionBlock
)

var actionNames = [...]string{ActionPass: "pass", ActionFilter: "filter", ActionBlock: "block"}

// String returns the action as written in the policy file.
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "unknown"
}

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
)

var endpointNames = [...]string{
	EndpointUnknown:         "unknown",
	EndpointChatCompletions: "chat_completions",
	EndpointResponses:       "responses",
	EndpointMessages:        "messages",
	EndpointResponsesWS:     "responses_ws",
	EndpointRealtime:        "realtime",
}

// String returns the endpoint's name as written in the policy file and in
// metric labels.
func (e Endpoint) String() string {
	if int(e) < len(endpointNames) {
		return endpointNames[e]
	}
	return "unknown"
}

// Anthropic reports whether the endpoint speaks Anthropic's dialect, where
// fast mode (speed and the anthropic-beta header) stands for the tier.
func (e Endpoint) Anthropic() bool { return e == EndpointMessages }

// EndpointForPath recognises an HTTP endpoint by the suffix of its path
// (see ParsePath).
func EndpointForPath(path string) Endpoint {
	ep, _ := ParsePath(path)
	return ep
}

// ParsePath recognises an HTTP endpoint by the suffix of its path, so
// Azure-style (/openai/deployments/x/chat/completions) and gateway prefixes
// are policed too, and returns the deployment an Azure-style path names
// ("" for none). The query string is ignored. The path is first normalised
// as a lenient upstream would route it (DESIGN.md, "ext_proc server"): ';'
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

// TierLabel bounds a tier name an upstream reported (or tiergate sent) for
// use as a metric label: a recognised tier is spelled canonically, no tier
// is "none", and anything else an upstream might send is "other".
func TierLabel(t string) string {
	switch pt := ParseTier(t); {
	case pt.Concrete():
		return pt.String()
	case t == "none" || t == "":
		return "none"
	}
	return "other"
}
