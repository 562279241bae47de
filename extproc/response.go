package extproc

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/internal/contentcoding"
	"github.com/tiergate/tiergate/policy"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
	"github.com/tiergate/tiergate/usage"
)

// Reasons usage could not be read, the values of tiergate_usage_unknown_total's reason.
const (
	unknownTooLarge  = "too_large" // a JSON body or SSE event beyond MaxUsageBytes whose usage members did not fit either
	unknownEncoding  = "encoding"  // a content-encoding tiergate cannot decode
	unknownMissing   = "missing"   // the response carried no usage
	unknownTruncated = "truncated" // the stream ended before its usage
)

// statusFromEnd asks finish to take the record's status from the response.
const statusFromEnd = ""

// responseState reads one response for its usage. The response itself is
// never held back or changed, except for removing the usage-only chunk that
// tiergate added to a streamed Chat Completions request.
type responseState struct {
	httpStatus int
	api        usage.API
	stream     bool
	sse        *usage.SSE
	filter     *usage.ChatStreamFilter
	json       []byte      // a JSON body whole in one chunk, read where it lies
	body       *usage.Body // a JSON body that came in chunks
	maxJSON    int         // --max-usage-bytes: the most of a JSON body held whole
	decoder    *streamDecoder
	encoding   bool // undecodable content-encoding
	firstOut   time.Time
}

func apiFor(ep policy.Endpoint) usage.API {
	switch ep {
	case policy.EndpointChatCompletions:
		return usage.ChatCompletions
	case policy.EndpointResponses:
		return usage.Responses
	case policy.EndpointMessages:
		return usage.Messages
	}
	return 0
}

// plainResponseHeadersAnswer passes the response's headers unchanged.
// Shared, and so never modified: headers that end the response get an
// answer of their own, carrying the usage metadata (withMetadata).
var plainResponseHeadersAnswer = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
	ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}},
}}

func (x *exchange) responseHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if !x.decided {
		return plainResponseHeadersAnswer
	}
	get := headerGetter(h.GetHeaders())
	r := &responseState{api: apiFor(x.endpoint), maxJSON: x.srv.opts.MaxUsageBytes}
	r.httpStatus, _ = strconv.Atoi(get(":status"))
	ct := strings.ToLower(get("content-type"))
	r.stream = strings.HasPrefix(ct, "text/event-stream")
	enc := get("content-encoding")
	switch {
	case !contentcoding.Supported(enc):
		r.encoding = true
	case r.stream && x.out.UsageAdded && contentcoding.Identity(enc):
		r.filter = usage.NewChatStreamFilter(r.maxJSON)
	case r.stream:
		r.sse = usage.NewSSE(r.api, r.maxJSON)
	}
	if !r.encoding && !contentcoding.Identity(enc) {
		r.decoder = newStreamDecoder(enc, r.take)
	}
	x.resp = r
	if !h.GetEndOfStream() {
		return plainResponseHeadersAnswer
	}
	resp := withMetadata(plainResponseHeadersAnswer)
	x.finish(statusFromEnd, resp)
	return resp
}

// take reads response bytes (decoded, when they were compressed) for
// their usage.
func (r *responseState) take(p []byte) {
	if r.sse != nil {
		r.sse.Write(p)
		return
	}
	if r.body == nil {
		r.body = usage.NewBody(r.api, r.maxJSON)
	}
	r.body.Write(p)
}

// plainResponseBodyAnswer passes a response chunk unchanged. Shared, and so
// never modified: a chunk that is changed gets its own answer, and so does
// the last, which carries the usage metadata (withMetadata).
var plainResponseBodyAnswer = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
	ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}},
}}

func (x *exchange) responseBody(b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	r := x.resp
	if r == nil || x.recorded {
		return plainResponseBodyAnswer
	}
	var mutation *extprocv3.BodyMutation
	chunk := b.GetBody()
	if len(chunk) > 0 && r.firstOut.IsZero() && !r.stream {
		r.firstOut = time.Now()
	}
	switch {
	case r.encoding:
	case r.filter != nil:
		out := r.filter.Filter(nil, chunk)
		if b.GetEndOfStream() {
			out = r.filter.Flush(out)
		}
		if !bytes.Equal(out, chunk) {
			mutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: out}}
		}
		if r.firstOut.IsZero() && r.filter.FirstOutput() {
			r.firstOut = time.Now()
		}
	case r.decoder != nil:
		r.decoder.Write(chunk)
	case r.sse == nil && b.GetEndOfStream() && r.body == nil && len(chunk) <= r.maxJSON:
		// A JSON response whole in one chunk (most are) is read where it
		// lies: the message holding it is this exchange's own copy.
		r.json = chunk
	default:
		r.take(chunk)
		if r.sse != nil && r.firstOut.IsZero() && r.sse.FirstOutput() {
			r.firstOut = time.Now()
		}
	}
	if r.decoder != nil && r.firstOut.IsZero() && len(chunk) > 0 {
		r.firstOut = time.Now() // compressed: the first chunk is the best estimate
	}
	if mutation == nil && !b.GetEndOfStream() {
		return plainResponseBodyAnswer
	}
	var resp *extprocv3.ProcessingResponse
	if mutation == nil {
		resp = withMetadata(plainResponseBodyAnswer)
	} else {
		resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: mutation}},
		}}
	}
	if b.GetEndOfStream() {
		x.finish(statusFromEnd, resp)
	}
	return resp
}

// close ends the exchange when the stream does: a request that was
// forwarded but whose response never finished is recorded as cut short.
func (x *exchange) close() {
	x.sent()                                // an answer built but never sent (the stream broke)
	x.finish(usage.StatusClientClosed, nil) // unless nothing was policed or it is recorded
	if x.resp != nil && x.resp.decoder != nil {
		x.resp.decoder.Close()
	}
}

// finish reads the response's usage and writes the record and token counts.
// status overrides the record's status when non-empty. When resp is not
// nil (the answer to the last message), the usage goes on it as Envoy
// dynamic metadata.
func (x *exchange) finish(status string, resp *extprocv3.ProcessingResponse) {
	if !x.decided || x.recorded {
		return // nothing was policed, or the record is written
	}
	u, reason := x.readUsage()
	httpStatus := 0
	if r := x.resp; r != nil {
		httpStatus = r.httpStatus
	}
	if status == statusFromEnd {
		switch {
		case httpStatus >= http.StatusBadRequest:
			status = usage.StatusUpstreamError
		case u.Status != "":
			status = u.Status
		case x.resp != nil && x.resp.stream:
			status, reason = usage.StatusUpstreamClosed, unknownTruncated
		default:
			status = usage.StatusCompleted
		}
	}
	if reason != "" && httpStatus < http.StatusBadRequest {
		x.srv.metrics.usageUnknown.WithLabelValues(x.endpoint.String(), reason).Inc()
	}
	x.recorded = true
	var cost policy.Cost
	var priced bool
	// The record is built when it is written or priced: pricing happens
	// here, once per request, at the response's end.
	if x.srv.opts.Usage != nil || x.pol.Priced() {
		rec := x.record(status, httpStatus, u)
		if cost, priced = x.pol.PriceRecord(rec, false); priced {
			x.countCost(&cost)
		}
		x.writeRecord(rec)
	}
	x.account(cost, priced)
	x.srv.opts.Tokens.Add(x.endpoint.String(), x.pol.ModelLabel(x.out.RequestModel),
		policy.TierLabel(u.BilledTier(x.out.Sent.String())), x.pol.GroupLabel(x.out.Group), u)
	if resp != nil {
		attachUsage(resp, status, u, &cost, priced)
	}
}

// countCost counts a priced request's cost, or why it has none.
func (x *exchange) countCost(c *policy.Cost) {
	if c.Unpriced != "" {
		x.srv.opts.Tokens.Unpriced(x.endpoint.String(), c.Unpriced)
		return
	}
	x.srv.opts.Tokens.AddCost(x.endpoint.String(), x.pol.ModelLabel(c.Model), c.Tier.String(), x.pol.GroupLabel(x.out.Group), c.Pico)
}

// attachUsage adds the response's usage, and its cost when priced, to resp
// as dynamic metadata in namespace tiergate; Envoy merges it with the
// decision sent earlier, so access logs can carry tokens, the tier billed
// and the cost. Unknown counts are left out.
func attachUsage(resp *extprocv3.ProcessingResponse, status string, u usage.Usage, c *policy.Cost, priced bool) {
	var m metadataFields
	m.str("status", status)
	if u.ServiceTier != "" {
		m.str("service_tier_reported", u.ServiceTier)
	}
	for _, f := range []struct {
		name string
		n    int64
	}{
		{"input_tokens", u.InputTokens}, {"cached_input_tokens", u.CachedInputTokens},
		{"cache_write_input_tokens", u.CacheWriteInputTokens},
		{"output_tokens", u.OutputTokens}, {"reasoning_tokens", u.ReasoningTokens},
	} {
		if f.n >= 0 {
			m.num(f.name, float64(f.n))
		}
	}
	switch {
	case !priced:
	case c.Unpriced != "":
		m.str("cost_unpriced_reason", c.Unpriced)
	default:
		// A Struct number is a double: the nearest one to the exact cost,
		// which the usage record carries to the last digit.
		m.num("cost", float64(c.Pico)/1e12)
		m.str("currency", c.Currency)
		m.str("price_tier", c.Tier.String())
	}
	m.attach(resp)
}

// readUsage returns the response's usage and, when it is unknown, why.
func (x *exchange) readUsage() (usage.Usage, string) {
	r := x.resp
	if r == nil || x.endpoint == policy.EndpointMessageBatches {
		// A batch's answer carries no usage: its requests run later, and
		// their usage comes with results tiergate does not see. Not
		// knowing it is no fault of the response's.
		return usage.Unknown(), ""
	}
	if r.decoder != nil {
		r.decoder.Close()
	}
	var u usage.Usage
	switch {
	case r.encoding:
		return usage.Unknown(), unknownEncoding
	case r.filter != nil:
		u = r.filter.Usage()
		if r.filter.Overflowed() && !u.Known() {
			return u, unknownTooLarge
		}
	case r.sse != nil:
		r.sse.Finish()
		u = r.sse.Usage()
		if r.sse.Overflowed() && !u.Known() {
			return u, unknownTooLarge
		}
	case r.body != nil:
		u = r.body.Usage()
		if r.body.Overflowed() {
			return u, unknownTooLarge
		}
	default:
		u = usage.ParseJSON(r.api, r.json)
	}
	if !u.Known() {
		return u, unknownMissing
	}
	return u, ""
}

// record builds the request's usage record.
func (x *exchange) record(status string, httpStatus int, u usage.Usage) *tiergatev1.UsageRecord {
	now := time.Now()
	rec := &tiergatev1.UsageRecord{
		RequestId:            x.requestID,
		Endpoint:             x.endpoint.String(),
		Group:                x.out.Group,
		Model:                x.out.RequestModel,
		ServiceTierRequested: x.out.Requested.String(),
		ServiceTierSent:      x.out.Sent.String(),
		Action:               x.out.Action.String(),
		Rule:                 x.out.Rule,
		Budget:               policy.BudgetLabel(x.out.Budget),
		PolicySha256:         x.pol.SHA256(),
		ShadowRule:           x.out.ShadowRule,
		Status:               status,
	}
	if x.out.ShadowRule != "" {
		rec.ShadowAction = x.out.ShadowAction.String()
	}
	var firstOut time.Time
	if r := x.resp; r != nil {
		rec.Stream, firstOut = r.stream, r.firstOut
	}
	usage.Stamp(rec, x.start, firstOut, now, httpStatus)
	u.Fill(rec)
	return rec
}

// writeRecord writes the request's usage record, unless the log is off.
func (x *exchange) writeRecord(rec *tiergatev1.UsageRecord) {
	if x.srv.opts.Usage == nil {
		return // --usage-log off
	}
	if err := x.srv.opts.Usage.Write(rec); err != nil {
		x.srv.log.Error("usage record lost", "request_id", x.requestID, "err", err)
	}
}

// streamDecoder decodes a compressed response as it streams, keeping the
// decompressor's state across chunks (never re-inflating what came before).
// Go's decompressors pull from a reader, so one runs on its own goroutine
// fed through a pipe; Close always ends that goroutine.
type streamDecoder struct {
	pw   *io.PipeWriter
	done chan struct{}
}

func newStreamDecoder(contentEncoding string, sink func([]byte)) *streamDecoder {
	pr, pw := io.Pipe()
	d := &streamDecoder{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		zr, err := contentcoding.NewDecoder(contentEncoding, pr, 0) // the response's size is the upstream's
		if err != nil {
			pr.CloseWithError(err)
			return
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := zr.Read(buf)
			if n > 0 {
				sink(buf[:n])
			}
			if err != nil {
				pr.CloseWithError(err)
				return
			}
		}
	}()
	return d
}

// Write hands a chunk to the decoder; it returns once the decoder has
// taken it. After a decoding error it discards.
func (d *streamDecoder) Write(p []byte) {
	_, _ = d.pw.Write(p)
}

// Close ends the input and waits for the decoder to finish.
func (d *streamDecoder) Close() {
	_ = d.pw.Close()
	<-d.done
}

// account adds the request's cost (priced once, at the response's end) to
// the budgets it falls under, in the windows of its decision time. Only a
// request that budgets were enforced on is accounted.
func (x *exchange) account(c policy.Cost, priced bool) {
	if x.decidedAt.IsZero() || x.out.Refusal != policy.RefusalNone || !priced {
		return
	}
	x.srv.opts.Budgets.Account(x.pol, budget.Charge{Group: x.out.Group, At: x.decidedAt, Cost: c})
}
