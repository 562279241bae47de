package extproc

import (
	"context"
	"log/slog"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// exchange is the state of one HTTP request's stream.
type exchange struct {
	srv   *Server
	start time.Time
	done  bool // the stream has nothing more to say (immediate response)

	pol       *policy.Policy // read once, at the request headers
	endpoint  policy.Endpoint
	headers   *corev3.HeaderMap
	requestID string

	out     policy.HTTPOutcome // the request's decision
	decided bool
	pending []byte // pooled buffer to recycle once the answer is sent

	resp *responseState // nil until the response headers arrive
	// recorded is set once the usage record is written.
	recorded bool
}

// unpolicedMode turns off the request body and both response phases: a
// path tiergate does not police costs Envoy nothing further. It rides on
// the request_headers answer; Envoy treats a standalone mode_override as
// spurious.
var unpolicedMode = &filterv3.ProcessingMode{
	RequestBodyMode:    filterv3.ProcessingMode_NONE,
	ResponseHeaderMode: filterv3.ProcessingMode_SKIP,
	ResponseBodyMode:   filterv3.ProcessingMode_NONE,
}

func continueHeaders() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}},
	}}
}

func (x *exchange) requestHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	x.headers = h.GetHeaders()
	get := headerGetter(x.headers)
	x.requestID = get("x-request-id")
	x.endpoint = policy.EndpointForPath(get(":path"))
	resp := continueHeaders()
	upgrade := strings.EqualFold(get("upgrade"), "websocket")
	if x.endpoint == policy.EndpointUnknown || upgrade || h.GetEndOfStream() {
		// Not policed: another path, a WebSocket upgrade (the bridge's), or
		// a request without a body (a GET listing stored completions).
		resp.ModeOverride = unpolicedMode
		x.srv.metrics.requests.WithLabelValues(x.endpoint.String(), outcomeUnpoliced).Inc()
		x.endpoint = policy.EndpointUnknown
		return resp
	}
	x.pol = x.srv.opts.Store.Load()
	return resp
}

func (x *exchange) requestBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	if x.endpoint == policy.EndpointUnknown || x.pol == nil {
		return bodyContinue(nil)
	}
	if !b.GetEndOfStream() {
		// Only a BUFFERED body can be judged whole before any of it goes
		// upstream; a chunk answered now would be forwarded unjudged.
		x.srv.log.Error("request body is not BUFFERED; refusing the request (set processing_mode.request_body_mode: BUFFERED)",
			"request_id", x.requestID)
		x.srv.metrics.requests.WithLabelValues(x.endpoint.String(), outcomeError).Inc()
		x.done = true
		return immediate(500, policy.ErrorBody(x.endpoint, policy.RefusalPolicy, "tiergate is misconfigured: the request body must be BUFFERED"), "tiergate_misconfigured")
	}
	get := headerGetter(x.headers)
	buf := x.srv.getBuf()
	x.out = x.pol.DecideHTTP(&policy.HTTPRequest{
		Endpoint:    x.endpoint,
		Header:      get,
		Beta:        headerValues(x.headers, "anthropic-beta"),
		Body:        b.GetBody(),
		MaxDecoded:  x.srv.opts.MaxBodyBytes,
		EnsureUsage: true,
		Buf:         buf,
	})
	x.decided = true
	x.srv.opts.Decisions.Observe(x.pol, x.endpoint, &x.out.Decision)
	if x.out.Refused {
		x.srv.putBuf(buf)
		return x.refuse()
	}
	if x.out.BodyChanged {
		x.pending = x.out.Body
	} else {
		x.srv.putBuf(buf)
	}
	x.logDecision()

	var mutation *extprocv3.HeaderMutation
	addSet := func(o *corev3.HeaderValueOption) {
		if mutation == nil {
			mutation = &extprocv3.HeaderMutation{}
		}
		mutation.SetHeaders = append(mutation.SetHeaders, o)
	}
	addRemove := func(name string) {
		if mutation == nil {
			mutation = &extprocv3.HeaderMutation{}
		}
		mutation.RemoveHeaders = append(mutation.RemoveHeaders, name)
	}
	if x.out.BetaChanged {
		if x.out.Beta == "" {
			addRemove("anthropic-beta")
		} else {
			addSet(setHeader("anthropic-beta", x.out.Beta))
		}
	}
	if x.out.Decoded {
		addRemove("content-encoding")
	}
	if x.out.UsageAdded {
		// The usage-only chunk tiergate asked for is removed from the
		// stream; that needs the stream uncompressed.
		addSet(setHeader("accept-encoding", "identity"))
	}
	var body *extprocv3.BodyMutation
	if x.out.BodyChanged {
		body = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: x.out.Body}}
		// A stale content-length makes Envoy reject the mutation.
		addSet(setContentLength(len(x.out.Body)))
	}
	outcome := outcomeForwarded
	if mutation != nil || body != nil {
		outcome = outcomeRewritten
	}
	x.srv.metrics.requests.WithLabelValues(x.endpoint.String(), outcome).Inc()
	resp := bodyContinue(&extprocv3.CommonResponse{HeaderMutation: mutation, BodyMutation: body})
	x.attachDecision(resp)
	return resp
}

func bodyContinue(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	if c == nil {
		c = &extprocv3.CommonResponse{}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: c},
	}}
}

// refuse answers a refused request itself and records it.
func (x *exchange) refuse() *extprocv3.ProcessingResponse {
	status := x.out.Refusal.Status()
	outcome, recStatus := outcomeBlocked, "blocked"
	switch x.out.Refusal {
	case policy.RefusalInvalidJSON:
		outcome, recStatus = outcomeInvalid, "refused"
	case policy.RefusalUnsupportedEncoding:
		outcome, recStatus = outcomeUnsupported, "refused"
	}
	x.srv.metrics.requests.WithLabelValues(x.endpoint.String(), outcome).Inc()
	x.srv.log.Info("request refused", "request_id", x.requestID, "endpoint", x.endpoint.String(),
		"status", status, "group", x.out.Group, "model", x.out.RequestModel,
		"service_tier", x.out.Tier.String(), "rule", x.out.Rule, "message", x.out.Message)
	x.done = true
	x.writeRecord(recStatus, status, usage.Unknown())
	resp := immediate(status, x.out.ErrorBody, "tiergate_"+x.out.Refusal.Code())
	x.attachDecision(resp)
	return resp
}

func (x *exchange) logDecision() {
	if !x.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	x.srv.log.Debug("decision", "request_id", x.requestID, "endpoint", x.endpoint.String(),
		"group", x.out.Group, "model", x.out.RequestModel, "action", x.out.Action.String(),
		"service_tier_requested", x.out.Requested.String(), "service_tier_sent", x.out.Sent.String(),
		"rule", x.out.Rule)
}

// attachDecision adds the decision to resp as Envoy dynamic metadata in
// namespace tiergate, for access logs and rate limits.
func (x *exchange) attachDecision(resp *extprocv3.ProcessingResponse) {
	var m metadataFields
	m.str("endpoint", x.endpoint.String())
	m.str("action", x.out.Action.String())
	m.str("service_tier_requested", x.out.Requested.String())
	m.str("service_tier_sent", x.out.Sent.String())
	m.str("rule", x.out.Rule)
	m.str("group", x.out.Group)
	m.str("model", x.out.RequestModel)
	m.attach(resp)
}

// sent recycles the rewritten body's buffer: gRPC has encoded the message
// by the time Send returns.
func (x *exchange) sent() {
	if x.pending != nil {
		x.srv.putBuf(x.pending)
		x.pending = nil
		x.out.Body = nil
	}
}
