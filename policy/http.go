package policy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tiergate/tiergate/internal/contentcoding"
)

// HTTPRequest is an HTTP request to a policed endpoint, as the policy needs
// it. The ext_proc server and `tiergate eval` both decide through it, so the
// CLI shows exactly what the server does.
type HTTPRequest struct {
	Endpoint Endpoint
	// Deployment is the deployment an Azure-style path names (ParsePath),
	// "" for none: it selects the model, so it is a candidate too.
	Deployment string
	// Header looks a header up by lower-case name ("" when absent); nil
	// for a request without headers.
	Header func(name string) string
	// Group, when not empty, is the caller's group already resolved
	// (tiergate replay reads it from a usage record); empty resolves it
	// from the headers (Policy.GroupFromHeaders).
	Group string
	// Beta holds every anthropic-beta header line.
	Beta []string
	// ContentEncoding holds every content-encoding header line. An
	// upstream undoes the codings of all of them (RFC 9110 combines
	// repeated lines into one list), so a body is decoded by the whole
	// list, not by its first line. Nil: Header("content-encoding").
	ContentEncoding []string
	Body            []byte
	// Spend is the view of budget spend as of the request's headers (nil:
	// budgets do not act).
	Spend SpendView
	// MaxDecoded bounds a decompressed body.
	MaxDecoded int64
	// Buf: see Request.Buf.
	Buf []byte
}

// HTTPOutcome is what becomes of an HTTP request. When Refusal is not
// RefusalNone, tiergate answers the request itself with Refusal.Status()
// and Refusal.Body(endpoint, Message).
type HTTPOutcome struct {
	Result
	// Decoded reports that a compressed body was decoded: what goes upstream
	// is the decoded body without content-encoding.
	Decoded bool
}

// DecideHTTP decides an HTTP request: resolves the caller's group, decodes
// a compressed body and applies the policy. A streamed Chat Completions request is made to
// ask for its usage (Request.EnsureUsage), which the server needs to account
// it. A request without a body passes untouched (docs/contracts.md,
// "Evaluation").
func (p *Policy) DecideHTTP(r *HTTPRequest) HTTPOutcome {
	group := r.Group
	if group == "" {
		group = p.GroupFromHeaders(r.header)
	}
	body := r.Body
	var out HTTPOutcome
	if len(body) == 0 {
		out.Action, out.Group, out.Body = ActionPass, group, body
		return out
	}
	if enc := r.contentEncoding(); !contentcoding.Identity(enc) {
		decoded, err := contentcoding.Decode(enc, body, r.MaxDecoded)
		// The header is the client's and may be tens of KB: messages quote
		// a bounded prefix of it (contentcoding.Quote).
		switch {
		case errors.Is(err, contentcoding.ErrTooManyCodings):
			return refuse(group, RefusalUnsupportedEncoding,
				fmt.Sprintf("content-encoding %s stacks more than %d codings; send the body uncompressed, gzip or deflate",
					contentcoding.Quote(enc), contentcoding.MaxCodings))
		case errors.Is(err, contentcoding.ErrUnsupported):
			return refuse(group, RefusalUnsupportedEncoding,
				fmt.Sprintf("content-encoding %s is not supported; send the body uncompressed, gzip or deflate", contentcoding.Quote(enc)))
		case errors.Is(err, contentcoding.ErrTooLarge):
			return refuse(group, RefusalInvalidJSON, "the decompressed body is too large")
		case err != nil:
			return refuse(group, RefusalInvalidJSON, "the body could not be decompressed: "+err.Error())
		}
		body, out.Decoded = decoded, true
	}
	var pathModels []string
	if r.Deployment != "" {
		pathModels = []string{r.Deployment}
	}
	out.Result = p.apply(&Request{
		Endpoint: r.Endpoint, Group: group, Beta: r.Beta, EnsureUsage: true, Buf: r.Buf, PathModels: pathModels,
		Spend: r.Spend,
	}, body)
	if out.Decoded {
		out.BodyChanged = true // the decoded body replaces the compressed one
	}
	return out
}

// header looks a header up, "" when absent or the request has none.
func (r *HTTPRequest) header(name string) string {
	if r.Header == nil {
		return ""
	}
	return r.Header(name)
}

// contentEncoding returns the request's codings as one list.
func (r *HTTPRequest) contentEncoding() string {
	switch len(r.ContentEncoding) {
	case 0:
		return r.header("content-encoding")
	case 1:
		return r.ContentEncoding[0]
	}
	return strings.Join(r.ContentEncoding, ",")
}

// HeaderEdit is one change to the request's headers that goes with an
// outcome: set Name to Value, or remove it.
type HeaderEdit struct {
	Name, Value string
	Remove      bool
}

// HeaderEdits appends to dst the header changes that go with o (besides
// content-length, which follows the body): the anthropic-beta header
// rewritten or removed, content-encoding removed from a decoded body, and
// accept-encoding: identity when the usage-only chunk tiergate asked for
// must be taken out of an uncompressed stream.
func (o *HTTPOutcome) HeaderEdits(dst []HeaderEdit) []HeaderEdit {
	if o.BetaChanged {
		dst = append(dst, HeaderEdit{Name: "anthropic-beta", Value: o.Beta, Remove: o.Beta == ""})
	}
	if o.Decoded {
		dst = append(dst, HeaderEdit{Name: "content-encoding", Remove: true})
	}
	if o.UsageAdded {
		dst = append(dst, HeaderEdit{Name: "accept-encoding", Value: "identity"})
	}
	return dst
}

// refuse is the outcome of a request refused before the policy read it.
func refuse(group string, r Refusal, msg string) HTTPOutcome {
	return HTTPOutcome{Result: Result{
		Decision: Decision{Action: ActionBlock, Group: group, Message: msg},
		Refusal:  r,
	}}
}
