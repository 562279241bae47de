package extproc

import (
	"context"
	"log/slog"
	"net/http"
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

	pol        *policy.Policy // read once, at the request headers
	endpoint   policy.Endpoint
	deployment string // the deployment an Azure-style path names
	// buffered is set when the stream's first message says the filter
	// sends the request body BUFFERED (protocol_config): only then is a
	// body without end_of_stream whole, its trailers to follow.
	buffered bool
	// noBody is set when the stream's first message says the filter sends
	// no request body at all (request_body_mode NONE): a policed request
	// with a body would then go upstream unjudged.
	noBody bool
	// sawHeaders is set once the request headers have arrived.
	sawHeaders bool
	headers    *corev3.HeaderMap
	header     func(string) string // looks a request header up in headers
	requestID  string

	// decidedAt is the decision time, the request headers' arrival: the
	// request's cost goes to the budget windows that contain it. Zero when
	// the policy has no budgets.
	decidedAt time.Time

	out     policy.HTTPOutcome // the request's decision
	decided bool
	answer  *bodyAnswer // the body answer, to recycle once it is sent

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

func (x *exchange) requestHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	x.headers, x.sawHeaders = h.GetHeaders(), true
	x.header = headerGetter(x.headers)
	get := x.header
	x.requestID = get("x-request-id")
	x.endpoint, x.deployment = policy.ParsePath(get(":path"))
	// Only a GET upgrade without a declared body is an upgrade: a POST
	// (or a GET with a length) that claims one still carries a body for
	// the endpoint, and is judged.
	upgrade := strings.EqualFold(get("upgrade"), "websocket") && get(":method") == http.MethodGet &&
		(get("content-length") == "" || get("content-length") == "0") && get("transfer-encoding") == ""
	if x.endpoint == policy.EndpointUnknown || upgrade || h.GetEndOfStream() {
		// Not policed: another path, a WebSocket upgrade (the bridge's), or
		// a request without a body (a GET listing stored completions).
		x.srv.metrics.countRequest(x.endpoint, outcomeUnpoliced)
		x.endpoint = policy.EndpointUnknown
		return unpolicedHeadersAnswer
	}
	if x.noBody {
		// The body will never be sent to be judged: answering these
		// headers would let it through.
		return x.misconfigured("request body mode is NONE on a policed path; refusing the request (set processing_mode.request_body_mode: BUFFERED)",
			"tiergate is misconfigured: the request body must be BUFFERED")
	}
	x.pol = x.srv.opts.Store.Load()
	if t := x.srv.opts.Budgets; t != nil && len(x.pol.Budgets()) > 0 {
		x.decidedAt = t.Now()
	}
	return policedHeadersAnswer
}

func (x *exchange) requestBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	if !x.sawHeaders {
		// The filter sends no request headers (request_header_mode: SKIP):
		// without the path there is no telling whether this body is
		// policed, so it is refused rather than waved through.
		return x.misconfigured("request body arrived without request headers; refusing the request (set processing_mode.request_header_mode: SEND)",
			"tiergate is misconfigured: the request headers must be sent")
	}
	if x.endpoint == policy.EndpointUnknown || x.pol == nil {
		return plainBodyAnswer
	}
	if x.decided || (!b.GetEndOfStream() && !x.buffered) {
		// Only a BUFFERED body can be judged whole before any of it goes
		// upstream; a chunk answered now would be forwarded unjudged. A
		// BUFFERED body followed by trailers comes without end_of_stream,
		// and whole.
		return x.misconfigured("request body is not BUFFERED; refusing the request (set processing_mode.request_body_mode: BUFFERED)",
			"tiergate is misconfigured: the request body must be BUFFERED")
	}
	a := x.srv.getAnswer()
	x.answer = a
	var spend policy.SpendView
	if !x.decidedAt.IsZero() {
		a.spend = x.srv.opts.Budgets.View(x.decidedAt)
		spend = &a.spend
	}
	x.out = x.pol.DecideHTTP(&policy.HTTPRequest{
		Endpoint:   x.endpoint,
		Deployment: x.deployment,
		Header:     x.header,
		Beta:       headerValues(x.headers, "anthropic-beta"),
		// Every line: the upstream undoes the codings of all of them.
		ContentEncoding: headerValues(x.headers, "content-encoding"),
		Body:            b.GetBody(),
		MaxDecoded:      x.srv.opts.MaxBodyBytes,
		Buf:             a.out,
		Spend:           spend,
	})
	x.decided = true
	x.srv.opts.Budgets.Acted(&x.out.Decision)
	d := x.srv.decisions.get(x.srv, x.pol, x.endpoint, &x.out)
	d.counter.Inc()
	if len(x.out.Shadows) > 0 {
		x.srv.opts.Decisions.ObserveShadows(&x.out.Decision)
		x.logShadows()
	}
	if x.out.Refused() {
		return x.refuse(d)
	}
	x.logDecision()

	var edits [maxSetHeaders + maxRemoveHeaders]policy.HeaderEdit
	for _, e := range x.out.HeaderEdits(edits[:0]) {
		if e.Remove {
			a.removeHeader(e.Name)
		} else {
			a.setHeader(e.Name, []byte(e.Value))
		}
	}
	if x.out.BodyChanged {
		a.replaceBody(x.out.Body)
	}
	outcome := outcomeForwarded
	if a.rewrites() {
		outcome = outcomeRewritten
	}
	x.srv.metrics.countRequest(x.endpoint, outcome)
	resp := a.message()
	// The decision goes to Envoy as dynamic metadata in namespace
	// tiergate, for access logs and rate limits.
	resp.ProtoReflect().SetUnknown(d.metadata)
	return resp
}

// misconfigured refuses a request that Envoy's filter settings keep
// tiergate from judging: 500 tiergate_misconfigured, in the endpoint's
// dialect (OpenAI's when the endpoint is not known).
func (x *exchange) misconfigured(logMsg, msg string) *extprocv3.ProcessingResponse {
	x.srv.log.Error(logMsg, "request_id", x.requestID)
	x.srv.metrics.countRequest(x.endpoint, outcomeError)
	x.done = true
	r := policy.RefusalMisconfigured
	return immediate(r.Status(), policy.ErrorBody(x.endpoint, r, msg), r.Code())
}

// refuse answers a refused request itself and records it.
func (x *exchange) refuse(d *decision) *extprocv3.ProcessingResponse {
	status := x.out.Refusal.Status()
	outcome, recStatus := outcomeBlocked, usage.StatusBlocked
	switch x.out.Refusal {
	case policy.RefusalInvalidJSON, policy.RefusalTooManyOccurrences:
		outcome, recStatus = outcomeInvalid, usage.StatusRefused
	case policy.RefusalUnsupportedEncoding:
		outcome, recStatus = outcomeUnsupported, usage.StatusRefused
	}
	x.srv.metrics.countRequest(x.endpoint, outcome)
	x.srv.log.Info("request refused", "request_id", x.requestID, "endpoint", x.endpoint.String(),
		"status", status, "group", x.out.Group, "model", x.out.RequestModel,
		"service_tier", x.out.Tier.String(), "rule", x.out.Rule, "budget", x.out.Budget, "message", x.out.Message)
	x.done = true
	x.recorded = true
	if x.srv.opts.Usage != nil { // blocked and refused records carry no cost
		x.writeRecord(x.record(recStatus, status, usage.Unknown()))
	}
	resp := immediate(status, x.out.ErrorBody, "tiergate_"+x.out.Refusal.Code())
	if x.out.Refusal == policy.RefusalBudget {
		addBudgetHeaders(resp, x.out.Budget, x.out.RetryAfter)
	}
	resp.ProtoReflect().SetUnknown(d.metadata)
	return resp
}

// logShadows logs each shadow match at info, with what was decided
// instead: the log line an operator rolling out a rule looks for.
func (x *exchange) logShadows() {
	for _, s := range x.out.Shadows {
		x.srv.log.Info("shadow match", "request_id", x.requestID, "endpoint", x.endpoint.String(),
			"shadow_rule", s.Rule, "shadow_action", s.Action.String(), "shadow_budget", s.Budget,
			"group", x.out.Group, "model", x.out.RequestModel, "service_tier", x.out.Tier.String(),
			"action", x.out.Action.String(), "rule", x.out.Rule)
	}
}

func (x *exchange) logDecision() {
	if !x.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	x.srv.log.Debug("decision", "request_id", x.requestID, "endpoint", x.endpoint.String(),
		"group", x.out.Group, "model", x.out.RequestModel, "action", x.out.Action.String(),
		"service_tier_requested", x.out.Requested.String(), "service_tier_sent", x.out.Sent.String(),
		"rule", x.out.Rule, "budget", x.out.Budget)
}

// sent recycles the body answer: gRPC has encoded the message by the time
// Send returns.
func (x *exchange) sent() {
	if x.answer != nil {
		x.srv.putAnswer(x.answer)
		x.answer = nil
		x.out.Body = nil
	}
}
