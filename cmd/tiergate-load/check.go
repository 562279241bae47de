package main

import (
	"bytes"
	"fmt"
	"strconv"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tiergate/tiergate/internal/envoysim"
)

// expectation is what a correct answer to the request body looks like,
// which depends on the server under load.
type expectation string

const (
	// expectFilter: tiergate with its default policy (filter priority). The
	// body comes back rewritten without service_tier, with content-length
	// set to the new length (Envoy rejects a mutation whose length is stale).
	expectFilter expectation = "filter"
	// expectContinue: the null server, or a policy that passes the request.
	// The body goes on unchanged: CONTINUE and no mutation.
	expectContinue expectation = "continue"
	// expectRewrite: the null server with --echo. The body comes back as a
	// mutation of the same length, with content-length matching it.
	expectRewrite expectation = "rewrite"
)

func parseExpectation(s string) (expectation, error) {
	switch e := expectation(s); e {
	case expectFilter, expectContinue, expectRewrite:
		return e, nil
	}
	return "", fmt.Errorf("--expect: unknown %q (want filter, continue or rewrite)", s)
}

// answerKind names the phase an answer is for. Error messages use it, and
// must stay few and fixed: they are the keys errors are counted under.
func answerKind(r *extprocv3.ProcessingResponse) string {
	switch r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingResponse_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingResponse_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return "response_trailers"
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return "immediate_response"
	case nil:
		return "nothing"
	}
	return "unknown"
}

// checkHeadersAnswer accepts a request_headers answer that lets the body
// come: CONTINUE, and no mode_override turning the body off (that would
// mean the server did not recognise /v1/responses as policed).
func checkHeadersAnswer(r *extprocv3.ProcessingResponse) error {
	hr, ok := r.GetResponse().(*extprocv3.ProcessingResponse_RequestHeaders)
	if !ok {
		return fmt.Errorf("request_headers answered with %s", answerKind(r))
	}
	if s := hr.RequestHeaders.GetResponse().GetStatus(); s != extprocv3.CommonResponse_CONTINUE {
		return fmt.Errorf("request_headers answered with status %s", s)
	}
	if r.GetModeOverride() != nil {
		return fmt.Errorf("request_headers answer has a mode_override (the body would not be sent)")
	}
	return nil
}

// checkBodyAnswer accepts a request_body answer that meets e, and that
// Envoy would apply (the rules internal/envoysim applies in the tests: no
// CONTINUE_AND_REPLACE, header mutations Envoy accepts, a content-length
// that matches the mutation).
func (e expectation) checkBodyAnswer(r *extprocv3.ProcessingResponse) error {
	br, ok := r.GetResponse().(*extprocv3.ProcessingResponse_RequestBody)
	if !ok {
		return fmt.Errorf("request_body answered with %s", answerKind(r))
	}
	c := br.RequestBody.GetResponse()
	if s := c.GetStatus(); s != extprocv3.CommonResponse_CONTINUE {
		// CONTINUE_AND_REPLACE on a buffered body is a protocol error to Envoy.
		return fmt.Errorf("request_body answered with status %s", s)
	}
	if err := envoysim.CheckHeaderMutation(c.GetHeaderMutation()); err != nil {
		return err
	}
	switch e {
	case expectContinue:
		if c.GetBodyMutation() != nil {
			return fmt.Errorf("request_body answer mutates the body (want it unchanged)")
		}
	case expectFilter, expectRewrite:
		m, ok := c.GetBodyMutation().GetMutation().(*extprocv3.BodyMutation_Body)
		if !ok {
			return fmt.Errorf("request_body answer has no body mutation (service_tier not filtered)")
		}
		if e == expectFilter && bytes.Contains(m.Body, []byte("service_tier")) {
			return fmt.Errorf("rewritten body still carries service_tier")
		}
		if cl, ok := setHeaderValue(c.GetHeaderMutation(), "content-length"); !ok || cl != strconv.Itoa(len(m.Body)) {
			return fmt.Errorf("rewritten body without a matching content-length")
		}
	}
	return nil
}

// setHeaderValue is the value a header mutation sets for name, read from
// raw_value as Envoy reads it.
func setHeaderValue(m *extprocv3.HeaderMutation, name string) (string, bool) {
	for _, o := range m.GetSetHeaders() {
		if o.GetHeader().GetKey() == name {
			return string(o.GetHeader().GetRawValue()), true
		}
	}
	return "", false
}

// checkResponseHeadersAnswer accepts a response_headers answer Envoy would
// apply that lets the response body come (no mode_override turning it off:
// the usage in it would go uncounted).
func checkResponseHeadersAnswer(r *extprocv3.ProcessingResponse) error {
	hr, ok := r.GetResponse().(*extprocv3.ProcessingResponse_ResponseHeaders)
	if !ok {
		return fmt.Errorf("response_headers answered with %s", answerKind(r))
	}
	c := hr.ResponseHeaders.GetResponse()
	if s := c.GetStatus(); s != extprocv3.CommonResponse_CONTINUE {
		return fmt.Errorf("response_headers answered with status %s", s)
	}
	if err := envoysim.CheckHeaderMutation(c.GetHeaderMutation()); err != nil {
		return err
	}
	if mo := r.GetModeOverride(); mo != nil && mo.GetResponseBodyMode() == filterv3.ProcessingMode_NONE {
		return fmt.Errorf("response_headers answer turns the response body off")
	}
	return nil
}

// checkResponseBodyAnswer accepts a response_body answer that lets the
// chunk through unchanged (the upstream's usage is not the client's to
// lose).
func checkResponseBodyAnswer(r *extprocv3.ProcessingResponse) error {
	br, ok := r.GetResponse().(*extprocv3.ProcessingResponse_ResponseBody)
	if !ok {
		return fmt.Errorf("response_body answered with %s", answerKind(r))
	}
	c := br.ResponseBody.GetResponse()
	if s := c.GetStatus(); s != extprocv3.CommonResponse_CONTINUE {
		return fmt.Errorf("response_body answered with status %s", s)
	}
	if c.GetBodyMutation() != nil {
		return fmt.Errorf("response_body answer mutates the body")
	}
	return nil
}
