package main

import (
	"fmt"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// Responses API body around the filler text: shaped like what Codex sends
// (model, instructions, one input message, reasoning, streaming), asking for
// priority so that the default policy (filter priority) rewrites it.
const (
	bodyPrefix = `{"model":"gpt-5.5","service_tier":"priority","instructions":"You are a coding agent running in the user's terminal.",` +
		`"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"`
	bodySuffix = `"}]}],"reasoning":{"effort":"medium","summary":"auto"},"store":false,"stream":true}`
	// fillerText is escape-heavy, as source code pasted into a prompt is.
	fillerText = `Refactor parse() so that \"quoted\" keys survive;\n\tkeep the tests green (see ./parser_test.go).\n`
)

// minBodySize is the smallest body responsesBody can build.
const minBodySize = len(bodyPrefix) + len(bodySuffix)

// responsesBody builds a valid Responses API request of exactly size bytes
// carrying "service_tier":"priority".
func responsesBody(size int) ([]byte, error) {
	if size < minBodySize {
		return nil, fmt.Errorf("body size %d is below the smallest Responses body, %d bytes", size, minBodySize)
	}
	b := make([]byte, 0, size)
	b = append(b, bodyPrefix...)
	fill := size - minBodySize
	for fill > 0 {
		n := min(fill, len(fillerText))
		b = append(b, fillerText[:n]...)
		fill -= n
	}
	// A cut through an escape (\" or \n) leaves a lone backslash that would
	// escape the closing quote: blank it.
	slashes := 0
	for i := len(b) - 1; i >= len(bodyPrefix) && b[i] == '\\'; i-- {
		slashes++
	}
	if slashes%2 == 1 {
		b[len(b)-1] = ' '
	}
	return append(b, bodySuffix...), nil
}

// requestMessages are one stream's two messages, reused from transaction to
// transaction (a Send has encoded a message by the time it returns, so the
// next transaction may change it).
type requestMessages struct {
	headers *extprocv3.ProcessingRequest
	body    *extprocv3.ProcessingRequest
	// respHeaders and respBody are the response half (--response).
	respHeaders, respBody *extprocv3.ProcessingRequest
	requestID             *corev3.HeaderValue
	worker                int
}

// requestPath is the path of every driven request: the Responses API.
const requestPath = "/v1/responses"

// A header is one request header by name and value.
type header struct{ name, value string }

// clientHeaders are what Codex sends with a Responses request, beyond the
// pseudo-headers and content-length. TestDriverSendsWhatEnvoySends sends
// them through real Envoy and checks that Envoy's request_headers carry
// exactly the names the driver sends.
var clientHeaders = []header{
	{"user-agent", "codex_cli_rs/0.98.0 (Linux 6.8; x86_64) xterm-256color"},
	{"authorization", "Bearer sk-proj-tiergateLoadTestKey0123456789abcdefghijklmnopqrstuv"},
	{"content-type", "application/json"},
	{"originator", "codex_cli_rs"},
	{"session_id", "0199a213-81c0-7800-8aa1-bbab2a035a53"},
}

// clientAddress stands for the client's address in the headers Envoy adds
// from it (use_remote_address is on): a documentation address.
const clientAddress = "203.0.113.7"

// newRequestMessages builds request_headers and request_body as the pinned
// Envoy running envoy/envoy.yaml sends them for POST /v1/responses
// (TestDriverSendsWhatEnvoySends compares them with a capture): lower-case
// names, pseudo-headers first, then the client's headers in the order it
// sent them, then those Envoy's connection manager adds; every value in
// raw_value (Envoy's default send_header_raw_value); protocol_config on
// the first message only; an empty metadata_context on each; the BUFFERED body in one message with
// end_of_stream set.
func newRequestMessages(worker int, authority string, body []byte) *requestMessages {
	m := &requestMessages{worker: worker, requestID: &corev3.HeaderValue{Key: "x-request-id"}}
	hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	headers := []*corev3.HeaderValue{
		hv(":authority", authority),
		hv(":path", requestPath),
		hv(":method", "POST"),
		hv(":scheme", "http"),
	}
	for _, h := range clientHeaders {
		headers = append(headers, hv(h.name, h.value))
	}
	headers = append(headers,
		hv("content-length", strconv.Itoa(len(body))),
		hv("x-forwarded-for", clientAddress),
		hv("x-forwarded-proto", "http"),
		hv("x-envoy-external-address", clientAddress),
		m.requestID,
	)
	m.headers = &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: headers}},
		},
		// Envoy sends an empty metadata_context on every message, even
		// with no forwarding namespaces configured.
		MetadataContext: &corev3.Metadata{},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{
			RequestBodyMode:  filterv3.ProcessingMode_BUFFERED,
			ResponseBodyMode: filterv3.ProcessingMode_STREAMED,
		},
	}
	m.body = &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true},
		},
		MetadataContext: &corev3.Metadata{},
	}
	m.respHeaders = &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				hv(":status", "200"),
				hv("content-type", "application/json"),
				hv("date", "Mon, 07 Dec 2026 04:17:47 GMT"),
				hv("content-length", strconv.Itoa(len(upstreamResponse))),
			}},
		}},
		MetadataContext: &corev3.Metadata{},
	}
	m.respBody = &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: []byte(upstreamResponse), EndOfStream: true},
		},
		MetadataContext: &corev3.Metadata{},
	}
	m.setRequestID(0)
	return m
}

// setRequestID gives transaction n its own x-request-id, UUID-shaped as
// Envoy's are: worker and sequence number in hex.
func (m *requestMessages) setRequestID(n uint64) {
	m.requestID.RawValue = fmt.Appendf(m.requestID.RawValue[:0], "%08x-0000-4000-8000-%012x", m.worker, n)
}
