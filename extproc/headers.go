package extproc

import (
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// headerValue reads a header's value. Envoy sends it in raw_value (with its
// default send_header_raw_value runtime flag); value is read only when
// raw_value is empty, for older Envoys.
func headerValue(h *corev3.HeaderValue) string {
	if len(h.RawValue) > 0 {
		return string(h.RawValue)
	}
	return h.Value
}

// headerGetter looks headers up by lower-case name in Envoy's header map
// (whose names are already lower case). A linear scan of a few dozen
// headers is cheaper than building a map for the handful of lookups a
// request needs.
func headerGetter(m *corev3.HeaderMap) func(string) string {
	return func(name string) string {
		for _, h := range m.GetHeaders() {
			if h.Key == name {
				return headerValue(h)
			}
		}
		return ""
	}
}

// headerValues returns every value of a repeated header.
func headerValues(m *corev3.HeaderMap, name string) []string {
	var out []string
	for _, h := range m.GetHeaders() {
		if h.Key == name {
			out = append(out, headerValue(h))
		}
	}
	return out
}

// setHeader is a mutation that replaces a header. Only raw_value is set:
// Envoy reads only raw_value from a mutation (a mutation with value set
// becomes an empty header; one with both fails the request).
func setHeader(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, RawValue: []byte(value)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// addBudgetHeaders adds to a budget's 429 what a client needs to stop and
// come back (docs/contracts.md, "Error shapes"): when the window ends,
// that an automatic retry will not help (OpenAI's SDKs read
// x-should-retry), and which budget refused.
func addBudgetHeaders(resp *extprocv3.ProcessingResponse, name string, retryAfter int64) {
	h := resp.GetImmediateResponse().Headers
	h.SetHeaders = append(h.SetHeaders,
		setHeader("retry-after", strconv.FormatInt(retryAfter, 10)),
		setHeader("x-should-retry", "false"),
		setHeader("x-tiergate-budget", name))
}

// immediate builds an ImmediateResponse: tiergate answers the client itself
// and nothing reaches the upstream.
func immediate(status int, body []byte, details string) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				setHeader("content-type", "application/json"),
			}},
			Body:    body,
			Details: details,
		},
	}}
}
