package extproc

import (
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tiergate/tiergate/budget"
)

// Answers that never change are built once and shared by every stream:
// nothing mutates them, and protobuf-go marshals a shared message safely
// from many goroutines.
var (
	// policedHeadersAnswer lets a policed request's body come, as the
	// filter's processing_mode says.
	policedHeadersAnswer = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}},
	}}
	// unpolicedHeadersAnswer turns the rest of an unpoliced request's
	// stream off.
	unpolicedHeadersAnswer = &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}},
		},
		ModeOverride: unpolicedMode,
	}
	// plainBodyAnswer continues a body tiergate did not judge.
	plainBodyAnswer = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}},
	}}
)

// withMetadata returns a copy of the shared answer base to carry dynamic
// metadata: the copy shares base's (immutable) oneof, so that answerCodec
// writes its known fields from base's canned wire form.
func withMetadata(base *extprocv3.ProcessingResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: base.Response}
}

// Most headers a body answer sets (anthropic-beta, accept-encoding,
// content-length) and removes (anthropic-beta, content-encoding).
const (
	maxSetHeaders    = 3
	maxRemoveHeaders = 2
)

// bodyAnswer is every message of one request_body answer in a single
// allocation, recycled through the server's pool once the answer is sent:
// this answer goes out for every policed request, and a dozen small
// messages per request were a measurable share of the server's garbage.
type bodyAnswer struct {
	resp     extprocv3.ProcessingResponse
	oneof    extprocv3.ProcessingResponse_RequestBody
	body     extprocv3.BodyResponse
	common   extprocv3.CommonResponse
	mutation extprocv3.HeaderMutation
	set      [maxSetHeaders]*corev3.HeaderValueOption
	options  [maxSetHeaders]corev3.HeaderValueOption
	values   [maxSetHeaders]corev3.HeaderValue
	remove   [maxRemoveHeaders]string
	bodyMut  extprocv3.BodyMutation
	newBody  extprocv3.BodyMutation_Body
	length   [20]byte // content-length's digits
	// spend is the budgets' view for the decision: kept here, in the
	// recycled answer, so that handing the policy its address allocates
	// nothing (a field of the exchange would move the exchange to the heap).
	spend budget.View

	// out is the rewritten body's buffer (policy.HTTPRequest.Buf), whose
	// storage is kept from one use to the next.
	out []byte
}

// maxPooledBuf keeps one huge body from pinning its buffer in the pool.
const maxPooledBuf = 4 << 20

// reset empties a for reuse, keeping out's storage (which becomes the
// storage of the body just sent, if the policy grew it or decoded it).
func (a *bodyAnswer) reset() {
	out := a.out[:0]
	if b := a.newBody.Body; b != nil {
		out = b[:0]
	}
	if cap(out) > maxPooledBuf {
		out = nil
	}
	*a = bodyAnswer{}
	a.out = out
}

// setHeader adds a header mutation that replaces name. Only raw_value is
// set: Envoy reads only raw_value from a mutation.
func (a *bodyAnswer) setHeader(name string, value []byte) {
	i := len(a.mutation.SetHeaders)
	a.values[i] = corev3.HeaderValue{Key: name, RawValue: value}
	a.options[i] = corev3.HeaderValueOption{Header: &a.values[i], AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
	a.set[i] = &a.options[i]
	a.mutation.SetHeaders = a.set[:i+1]
}

// removeHeader adds a header mutation that removes name.
func (a *bodyAnswer) removeHeader(name string) {
	i := len(a.mutation.RemoveHeaders)
	a.remove[i] = name
	a.mutation.RemoveHeaders = a.remove[:i+1]
}

// replaceBody makes the answer replace the body with b and set
// content-length to match: Envoy rejects a mutation whose content-length
// is stale.
func (a *bodyAnswer) replaceBody(b []byte) {
	a.newBody.Body = b
	a.bodyMut.Mutation = &a.newBody
	a.common.BodyMutation = &a.bodyMut
	a.setHeader("content-length", strconv.AppendInt(a.length[:0], int64(len(b)), 10))
}

// message links the parts into the ProcessingResponse to send.
func (a *bodyAnswer) message() *extprocv3.ProcessingResponse {
	if len(a.mutation.SetHeaders) > 0 || len(a.mutation.RemoveHeaders) > 0 {
		a.common.HeaderMutation = &a.mutation
	}
	a.body.Response = &a.common
	a.oneof.RequestBody = &a.body
	a.resp.Response = &a.oneof
	return &a.resp
}

// rewrites reports whether the answer changes the request.
func (a *bodyAnswer) rewrites() bool {
	return a.common.BodyMutation != nil || len(a.mutation.SetHeaders) > 0 || len(a.mutation.RemoveHeaders) > 0
}
