package extproc

import (
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// Envoy's request_headers message (a dozen headers or more, the
// protocol_config, an empty metadata_context) costs protobuf-go about fifty
// allocations to decode: a message, a key and a value per header, each
// nested message. Under a realistic load that was a third of tiergate's
// extra CPU over a null server. decodeRequest reads the shapes Envoy sends
// with a handful: the message's bytes are copied once, header values and
// bodies are slices of that copy, well-known header names are shared
// constants, and the nested messages come in one allocation. Anything
// outside those shapes (trailers, attributes, a non-empty metadata_context,
// an unknown or repeated field, a wire type or a string protobuf-go would
// refuse) is left to proto.Unmarshal, so the result is always what
// proto.Unmarshal gives (TestDecodeRequestMatchesProto, FuzzDecodeRequest).

// Field numbers of the request messages (envoy.service.ext_proc.v3 and
// envoy.config.core.v3).
const (
	fieldRequestRequestHeaders  = 2  // ProcessingRequest.request_headers
	fieldRequestResponseHeaders = 3  // ProcessingRequest.response_headers
	fieldRequestRequestBody     = 4  // ProcessingRequest.request_body
	fieldRequestResponseBody    = 5  // ProcessingRequest.response_body
	fieldRequestMetadata        = 8  // ProcessingRequest.metadata_context
	fieldRequestObservability   = 10 // ProcessingRequest.observability_mode
	fieldRequestProtocolConfig  = 11 // ProcessingRequest.protocol_config
	fieldHeadersHeaders         = 1  // HttpHeaders.headers
	fieldHeadersEndOfStream     = 3  // HttpHeaders.end_of_stream
	fieldHeaderMapHeaders       = 1  // HeaderMap.headers
	fieldHeaderValue            = 2  // HeaderValue.value
	fieldBodyBody               = 1  // HttpBody.body
	fieldBodyEndOfStream        = 2  // HttpBody.end_of_stream
	fieldConfigRequestBodyMode  = 1  // ProtocolConfiguration.request_body_mode
	fieldConfigResponseBodyMode = 2  // ProtocolConfiguration.response_body_mode
	fieldConfigSendBodyEarly    = 3  // ProtocolConfiguration.send_body_without_waiting_for_header_response
)

// decodedHeaders holds a headers message's nested messages: one allocation.
type decodedHeaders struct {
	requestHeaders  extprocv3.ProcessingRequest_RequestHeaders
	responseHeaders extprocv3.ProcessingRequest_ResponseHeaders
	headers         extprocv3.HttpHeaders
	headerMap       corev3.HeaderMap
	metadata        corev3.Metadata
	config          extprocv3.ProtocolConfiguration
}

// decodedBody holds a body message's nested messages: one allocation.
type decodedBody struct {
	requestBody  extprocv3.ProcessingRequest_RequestBody
	responseBody extprocv3.ProcessingRequest_ResponseBody
	body         extprocv3.HttpBody
	metadata     corev3.Metadata
	config       extprocv3.ProtocolConfiguration
}

// requestShape is what one pass over a ProcessingRequest found.
type requestShape struct {
	kind          protowire.Number // which oneof member; 0 if none
	payload       []byte
	hasMetadata   bool
	observability bool
	config        []byte
	hasConfig     bool
}

// decodeRequest fills the empty req from its wire form b, which it may keep
// (the caller hands over a private copy). It reports false, having changed
// nothing, when b is outside the shapes it reads.
func decodeRequest(b []byte, req *extprocv3.ProcessingRequest) bool {
	var s requestShape
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && num >= fieldRequestRequestHeaders && num <= fieldRequestResponseBody:
			if s.kind != 0 {
				return false // a second member: proto.Unmarshal merges or replaces
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			s.kind, s.payload, b = num, v, b[n:]
		case typ == protowire.BytesType && num == fieldRequestMetadata:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || len(v) > 0 {
				return false
			}
			s.hasMetadata, b = true, b[n:]
		case typ == protowire.VarintType && num == fieldRequestObservability:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			s.observability, b = v != 0, b[n:]
		case typ == protowire.BytesType && num == fieldRequestProtocolConfig:
			if s.hasConfig {
				return false
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			s.config, s.hasConfig, b = v, true, b[n:]
		default:
			return false
		}
	}
	switch s.kind {
	case fieldRequestRequestHeaders, fieldRequestResponseHeaders:
		d := &decodedHeaders{}
		if !decodeHeaders(s.payload, &d.headers, &d.headerMap) || s.hasConfig && !decodeConfig(s.config, &d.config) {
			return false
		}
		if s.kind == fieldRequestRequestHeaders {
			d.requestHeaders.RequestHeaders = &d.headers
			req.Request = &d.requestHeaders
		} else {
			d.responseHeaders.ResponseHeaders = &d.headers
			req.Request = &d.responseHeaders
		}
		if s.hasMetadata {
			req.MetadataContext = &d.metadata
		}
		if s.hasConfig {
			req.ProtocolConfig = &d.config
		}
	case fieldRequestRequestBody, fieldRequestResponseBody:
		d := &decodedBody{}
		if !decodeBody(s.payload, &d.body) || s.hasConfig && !decodeConfig(s.config, &d.config) {
			return false
		}
		if s.kind == fieldRequestRequestBody {
			d.requestBody.RequestBody = &d.body
			req.Request = &d.requestBody
		} else {
			d.responseBody.ResponseBody = &d.body
			req.Request = &d.responseBody
		}
		if s.hasMetadata {
			req.MetadataContext = &d.metadata
		}
		if s.hasConfig {
			req.ProtocolConfig = &d.config
		}
	default:
		return false // no member, which Envoy never sends: proto.Unmarshal's
	}
	req.ObservabilityMode = s.observability
	return true
}

// decodeConfig reads a ProtocolConfiguration.
func decodeConfig(b []byte, c *extprocv3.ProtocolConfiguration) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.VarintType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case fieldConfigRequestBodyMode:
			c.RequestBodyMode = filterv3.ProcessingMode_BodySendMode(int32(v))
		case fieldConfigResponseBodyMode:
			c.ResponseBodyMode = filterv3.ProcessingMode_BodySendMode(int32(v))
		case fieldConfigSendBodyEarly:
			c.SendBodyWithoutWaitingForHeaderResponse = v != 0
		default:
			return false
		}
	}
	return true
}

// decodeHeaders reads an HttpHeaders whose header map comes at most once.
func decodeHeaders(b []byte, h *extprocv3.HttpHeaders, m *corev3.HeaderMap) bool {
	var mapBytes []byte
	hasMap := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && num == fieldHeadersHeaders && !hasMap:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			mapBytes, hasMap, b = v, true, b[n:]
		case typ == protowire.VarintType && num == fieldHeadersEndOfStream:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			h.EndOfStream, b = v != 0, b[n:]
		default:
			return false
		}
	}
	if !hasMap {
		return true
	}
	count := 0
	for rest := mapBytes; len(rest) > 0; count++ {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 || num != fieldHeaderMapHeaders || typ != protowire.BytesType {
			return false
		}
		rest = rest[n:]
		_, n = protowire.ConsumeBytes(rest)
		if n < 0 {
			return false
		}
		rest = rest[n:]
	}
	values := make([]corev3.HeaderValue, count)
	ptrs := make([]*corev3.HeaderValue, count)
	for i := range values {
		_, _, n := protowire.ConsumeTag(mapBytes)
		mapBytes = mapBytes[n:]
		v, n := protowire.ConsumeBytes(mapBytes)
		mapBytes = mapBytes[n:]
		if !decodeHeaderValue(v, &values[i]) {
			return false
		}
		ptrs[i] = &values[i]
	}
	m.Headers = ptrs
	h.Headers = m
	return true
}

// decodeHeaderValue reads one HeaderValue; raw_value is a slice of b,
// capped so that an append cannot write past it.
func decodeHeaderValue(b []byte, hv *corev3.HeaderValue) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case fieldHeaderKey:
			name, known := knownHeaderName(v)
			switch {
			case known: // valid UTF-8, as every constant is
				hv.Key = name
			case utf8.Valid(v):
				hv.Key = string(v)
			default:
				return false // proto.Unmarshal refuses it, with its own error
			}
		case fieldHeaderValue:
			if !utf8.Valid(v) {
				return false
			}
			hv.Value = string(v)
		case fieldHeaderRawValue:
			hv.RawValue = v[:len(v):len(v)]
		default:
			return false
		}
	}
	return true
}

// decodeBody reads an HttpBody; the body is a slice of b.
func decodeBody(b []byte, h *extprocv3.HttpBody) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && num == fieldBodyBody:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			h.Body, b = v[:len(v):len(v)], b[n:]
		case typ == protowire.VarintType && num == fieldBodyEndOfStream:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			h.EndOfStream, b = v != 0, b[n:]
		default:
			return false
		}
	}
	return true
}

// knownHeaderName returns the header name b as a shared constant, if it is
// one of the names Envoy sends on every request to an LLM provider or its
// answer.
func knownHeaderName(b []byte) (string, bool) {
	// The compiler turns these comparisons into ones on b's bytes.
	switch string(b) {
	case ":authority":
		return ":authority", true
	case ":path":
		return ":path", true
	case ":method":
		return ":method", true
	case ":scheme":
		return ":scheme", true
	case ":status":
		return ":status", true
	case "user-agent":
		return "user-agent", true
	case "content-type":
		return "content-type", true
	case "content-length":
		return "content-length", true
	case "content-encoding":
		return "content-encoding", true
	case "accept":
		return "accept", true
	case "accept-encoding":
		return "accept-encoding", true
	case "authorization":
		return "authorization", true
	case "x-api-key":
		return "x-api-key", true
	case "anthropic-version":
		return "anthropic-version", true
	case "anthropic-beta":
		return "anthropic-beta", true
	case "openai-beta":
		return "openai-beta", true
	case "originator":
		return "originator", true
	case "session_id":
		return "session_id", true
	case "x-forwarded-for":
		return "x-forwarded-for", true
	case "x-forwarded-proto":
		return "x-forwarded-proto", true
	case "x-envoy-external-address":
		return "x-envoy-external-address", true
	case "x-envoy-internal":
		return "x-envoy-internal", true
	case "x-request-id":
		return "x-request-id", true
	case "x-tiergate-group":
		return "x-tiergate-group", true
	case "date":
		return "date", true
	case "server":
		return "server", true
	case "transfer-encoding":
		return "transfer-encoding", true
	}
	return "", false
}
