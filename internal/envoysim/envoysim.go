// Package envoysim plays Envoy's side of ext_proc for the tests: an HTTP
// proxy that sends each request through an ext_proc server
// the way Envoy's ext_proc filter does (headers, mode override, a BUFFERED
// request body, a STREAMED response), applies what the server answers, and
// forwards to an upstream. It is the quick stand-in for the package tests;
// internal/e2e runs the same promises through real Envoy (the pinned
// release), and this simulator is kept faithful to what that showed.
//
// Where real Envoy 1.40 was found to differ from this simulator (and what
// was done about it):
//   - A failure Envoy answers itself (ext_proc unreachable, an answer out of
//     protocol, a rejected mutation) is a 500 (504 on a message timeout) with
//     an empty body and server: envoy; the simulator wrote the reason as the
//     body. It now answers as Envoy does.
//   - A request body followed by trailers (HTTP/2) reaches ext_proc in
//     BUFFERED mode as the whole body with end_of_stream false: the trailers
//     end the stream, and with request_trailer_mode SKIP they are never sent
//     to ext_proc. The simulator sent end_of_stream true. It now sends false
//     when the client's request carried trailers, and forwards them. (Envoy's
//     HTTP/1.1 codec drops request trailers unless enable_trailers is set,
//     so an HTTP/1.1 client's body arrives with end_of_stream true.)
//   - Over HTTP/2, a request's buffer is bounded by the stream's
//     flow-control window (16 MiB by default), not by the listener's
//     per_connection_buffer_limit_bytes: HTTP/2 clients got 413 from 16 MiB
//     on. The bootstraps now set the windows to the limit. Above the limit an
//     HTTP/1.1 client gets 413 before ext_proc sees the body; an HTTP/2
//     client's complete body may reach ext_proc first, and the client still
//     gets 413 (details request_payload_too_large). The simulator has no
//     buffer limit at all; the e2e tests cover it.
package envoysim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Proxy is an http.Handler that behaves as Envoy with the ext_proc filter
// configured as envoy/envoy.yaml configures it.
type Proxy struct {
	// Client is the ext_proc client (a gRPC connection to tiergate).
	Client extprocv3.ExternalProcessorClient
	// Upstream is the base URL requests are forwarded to.
	Upstream string
	// HTTP sends upstream requests (default http.DefaultClient's transport
	// with compression left alone).
	HTTP *http.Client
	// MessageTimeout bounds each ext_proc exchange (envoy.yaml: 10s).
	MessageTimeout time.Duration
	// StripHeaders are removed from what goes upstream, as the route's
	// request_headers_to_remove does (envoy.yaml: x-tiergate-group).
	StripHeaders []string
	// SkipRequestHeaders plays a filter set to request_header_mode: SKIP:
	// the stream opens with the request body.
	SkipRequestHeaders bool

	mu       sync.Mutex
	metadata []*structpb.Struct
}

// Metadata returns the dynamic metadata ext_proc has set, in order.
func (p *Proxy) Metadata() []*structpb.Struct {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*structpb.Struct(nil), p.metadata...)
}

// errLocal is a failure Envoy answers itself (as it would with 500 when the
// ext_proc stream breaks with failure_mode_allow: false).
type errLocal struct {
	status int
	msg    string
}

func (e *errLocal) Error() string { return fmt.Sprintf("%d: %s", e.status, e.msg) }

func local(status int, format string, args ...any) error {
	return &errLocal{status: status, msg: fmt.Sprintf(format, args...)}
}

// stream wraps one ext_proc stream with Envoy's per-message timeout.
type stream struct {
	s       extprocv3.ExternalProcessor_ProcessClient
	timeout time.Duration
}

func (s *stream) exchange(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	if err := s.s.Send(req); err != nil {
		return nil, local(http.StatusInternalServerError, "ext_proc send: %v", err)
	}
	type result struct {
		r   *extprocv3.ProcessingResponse
		err error
	}
	ch := make(chan result, 1)
	go func() { r, err := s.s.Recv(); ch <- result{r, err} }()
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, local(http.StatusInternalServerError, "ext_proc recv: %v", res.err)
		}
		return res.r, nil
	case <-time.After(s.timeout):
		return nil, local(http.StatusGatewayTimeout, "ext_proc message timeout")
	}
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	err := p.serve(w, r)
	var le *errLocal
	switch {
	case err == nil:
	case errors.As(err, &le):
		// As Envoy: the status alone, the reason only in its logs.
		w.Header().Set("server", "envoy")
		w.Header().Set("content-length", "0")
		w.WriteHeader(le.status)
	default:
		http.Error(w, err.Error(), http.StatusBadGateway)
	}
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	cs, err := p.Client.Process(ctx)
	if err != nil {
		return local(http.StatusInternalServerError, "ext_proc open: %v", err)
	}
	defer func() { _ = cs.CloseSend() }()
	timeout := p.MessageTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	st := &stream{s: cs, timeout: timeout}

	body, err := io.ReadAll(r.Body)
	if err != nil {
		return local(http.StatusBadRequest, "read body: %v", err)
	}
	hdr := requestHeaderMap(r)
	// Envoy encodes the filter's protocol configuration in the stream's
	// first message only.
	config := &extprocv3.ProtocolConfiguration{
		RequestBodyMode:  filterv3.ProcessingMode_BUFFERED,
		ResponseBodyMode: filterv3.ProcessingMode_STREAMED,
	}
	bodyMode, respHeaders, respBody := filterv3.ProcessingMode_BUFFERED, true, true
	if !p.SkipRequestHeaders {
		resp, err := st.exchange(&extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_RequestHeaders{
				RequestHeaders: &extprocv3.HttpHeaders{Headers: hdr, EndOfStream: len(body) == 0},
			},
			ProtocolConfig: config,
		})
		if err != nil {
			return err
		}
		config = nil
		if ir := resp.GetImmediateResponse(); ir != nil {
			return p.writeImmediate(w, ir, resp)
		}
		hr, ok := resp.Response.(*extprocv3.ProcessingResponse_RequestHeaders)
		if !ok {
			return local(http.StatusInternalServerError, "ext_proc answered request headers with %T", resp.Response)
		}
		if err := applyHeaderMutation(hdr, hr.RequestHeaders.GetResponse().GetHeaderMutation()); err != nil {
			return err
		}
		p.keepMetadata(resp)
		if mo := resp.GetModeOverride(); mo != nil {
			// allow_mode_override: true in envoy.yaml.
			bodyMode = mo.RequestBodyMode
			respHeaders = mo.ResponseHeaderMode != filterv3.ProcessingMode_SKIP
			respBody = mo.ResponseBodyMode != filterv3.ProcessingMode_NONE
		}
	}

	if len(body) > 0 && bodyMode == filterv3.ProcessingMode_BUFFERED {
		// A request with trailers: Envoy sends the buffered body when the
		// trailers arrive, without end_of_stream, and (request_trailer_mode:
		// SKIP in envoy.yaml) sends the trailers no further.
		trailers := len(r.Trailer) > 0
		resp, err := st.exchange(&extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_RequestBody{
				RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: !trailers},
			},
			ProtocolConfig: config,
		})
		if err != nil {
			return err
		}
		if ir := resp.GetImmediateResponse(); ir != nil {
			return p.writeImmediate(w, ir, resp)
		}
		br, ok := resp.Response.(*extprocv3.ProcessingResponse_RequestBody)
		if !ok {
			return local(http.StatusInternalServerError, "ext_proc answered the request body with %T", resp.Response)
		}
		common := br.RequestBody.GetResponse()
		if common.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
			return local(http.StatusInternalServerError, "CONTINUE_AND_REPLACE on a buffered body")
		}
		if err := applyHeaderMutation(hdr, common.GetHeaderMutation()); err != nil {
			return err
		}
		if bm := common.GetBodyMutation(); bm != nil {
			switch m := bm.Mutation.(type) {
			case *extprocv3.BodyMutation_Body:
				body = m.Body
			case *extprocv3.BodyMutation_ClearBody:
				body = nil
			}
			// Envoy keeps content-length in BUFFERED mode and rejects a
			// mutation whose length does not match it.
			if cl := get(hdr, "content-length"); cl != "" && cl != strconv.Itoa(len(body)) {
				return local(http.StatusInternalServerError, "body mutation of %d bytes with content-length %s", len(body), cl)
			}
		}
		p.keepMetadata(resp)
	}

	up, err := p.forward(ctx, r, hdr, body)
	if err != nil {
		return local(http.StatusServiceUnavailable, "upstream: %v", err)
	}
	defer up.Body.Close()
	return p.relayResponse(w, st, up, respHeaders, respBody)
}

func (p *Proxy) relayResponse(w http.ResponseWriter, st *stream, up *http.Response, sendHeaders, sendBody bool) error {
	rh := responseHeaderMap(up)
	if sendHeaders {
		resp, err := st.exchange(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &extprocv3.HttpHeaders{Headers: rh},
		}})
		if err != nil {
			return err
		}
		if ir := resp.GetImmediateResponse(); ir != nil {
			return p.writeImmediate(w, ir, resp)
		}
		hr, ok := resp.Response.(*extprocv3.ProcessingResponse_ResponseHeaders)
		if !ok {
			return local(http.StatusInternalServerError, "ext_proc answered response headers with %T", resp.Response)
		}
		if err := applyHeaderMutation(rh, hr.ResponseHeaders.GetResponse().GetHeaderMutation()); err != nil {
			return err
		}
		p.keepMetadata(resp)
	}
	for _, h := range rh.Headers {
		if strings.HasPrefix(h.Key, ":") || (sendBody && h.Key == "content-length") {
			// In STREAMED mode Envoy drops content-length: a chunk may change.
			continue
		}
		w.Header().Add(h.Key, string(h.RawValue))
	}
	w.WriteHeader(up.StatusCode)
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, 16<<10)
	for {
		n, rerr := up.Body.Read(buf)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			// The upstream or the client went away mid-response: Envoy
			// resets the ext_proc stream; it sends no end_of_stream.
			return nil
		}
		end := rerr != nil
		if n == 0 && !end {
			continue
		}
		chunk := append([]byte(nil), buf[:n]...)
		if sendBody {
			resp, err := st.exchange(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{Body: chunk, EndOfStream: end},
			}})
			if err != nil {
				return nil // headers are out; Envoy resets the stream
			}
			br, ok := resp.Response.(*extprocv3.ProcessingResponse_ResponseBody)
			if !ok {
				return nil
			}
			p.keepMetadata(resp)
			if bm := br.ResponseBody.GetResponse().GetBodyMutation(); bm != nil {
				if m, ok := bm.Mutation.(*extprocv3.BodyMutation_Body); ok {
					chunk = m.Body
				}
			}
		}
		if len(chunk) > 0 {
			_, _ = w.Write(chunk)
			if flusher != nil {
				flusher.Flush()
			}
		}
		if end {
			return nil
		}
	}
}

func (p *Proxy) forward(ctx context.Context, r *http.Request, hdr *corev3.HeaderMap, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, get(hdr, ":method"), strings.TrimSuffix(p.Upstream, "/")+get(hdr, ":path"), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for _, h := range hdr.Headers {
		if strings.HasPrefix(h.Key, ":") || h.Key == "content-length" || h.Key == "host" {
			continue
		}
		skip := false
		for _, s := range p.StripHeaders {
			skip = skip || h.Key == s
		}
		if !skip {
			req.Header.Add(h.Key, string(h.RawValue))
		}
	}
	req.ContentLength = int64(len(body))
	if len(r.Trailer) > 0 {
		req.Trailer = r.Trailer.Clone()
		req.ContentLength = -1 // trailers need chunked encoding over HTTP/1.1
	}
	client := p.HTTP
	if client == nil {
		client = &http.Client{Transport: &http.Transport{DisableCompression: true}}
	}
	return client.Do(req)
}

func (p *Proxy) writeImmediate(w http.ResponseWriter, ir *extprocv3.ImmediateResponse, resp *extprocv3.ProcessingResponse) error {
	p.keepMetadata(resp)
	h := &corev3.HeaderMap{}
	if err := applyHeaderMutation(h, ir.GetHeaders()); err != nil {
		return err
	}
	for _, hv := range h.Headers {
		w.Header().Set(hv.Key, string(hv.RawValue))
	}
	status := int(ir.GetStatus().GetCode())
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write(ir.GetBody())
	return nil
}

func (p *Proxy) keepMetadata(resp *extprocv3.ProcessingResponse) {
	if md := resp.GetDynamicMetadata(); md != nil {
		p.mu.Lock()
		p.metadata = append(p.metadata, md)
		p.mu.Unlock()
	}
}

// requestHeaderMap builds the header map Envoy sends: lower-case names,
// pseudo-headers first, values in raw_value.
func requestHeaderMap(r *http.Request) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	add := func(k, v string) {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	add(":method", r.Method)
	add(":path", r.URL.RequestURI())
	add(":authority", r.Host)
	add(":scheme", "http")
	for k, vs := range r.Header {
		for _, v := range vs {
			add(strings.ToLower(k), v)
		}
	}
	if r.ContentLength > 0 && get(m, "content-length") == "" {
		add("content-length", strconv.FormatInt(r.ContentLength, 10))
	}
	return m
}

func responseHeaderMap(r *http.Response) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	m.Headers = append(m.Headers, &corev3.HeaderValue{Key: ":status", RawValue: []byte(strconv.Itoa(r.StatusCode))})
	for k, vs := range r.Header {
		for _, v := range vs {
			m.Headers = append(m.Headers, &corev3.HeaderValue{Key: strings.ToLower(k), RawValue: []byte(v)})
		}
	}
	return m
}

func get(m *corev3.HeaderMap, name string) string {
	for _, h := range m.Headers {
		if h.Key == name {
			return string(h.RawValue)
		}
	}
	return ""
}

// CheckHeaderMutation refuses the header edits for which Envoy, with its
// default send_header_raw_value flag, fails the request: a header that sets
// both value and raw_value, or a name not in lower case. tiergate-load
// checks answers under load with it.
func CheckHeaderMutation(mu *extprocv3.HeaderMutation) error {
	for _, o := range mu.GetSetHeaders() {
		h := o.GetHeader()
		if h.GetValue() != "" && len(h.GetRawValue()) > 0 {
			return fmt.Errorf("header mutation %q sets both value and raw_value", h.GetKey())
		}
		if strings.ToLower(h.GetKey()) != h.GetKey() {
			return fmt.Errorf("header mutation %q is not lower case", h.GetKey())
		}
	}
	return nil
}

// applyHeaderMutation applies a mutation as Envoy does with its default
// send_header_raw_value flag: only raw_value is read, so a mutation that
// sets value alone yields an empty header; CheckHeaderMutation's refusals
// fail the request.
func applyHeaderMutation(m *corev3.HeaderMap, mu *extprocv3.HeaderMutation) error {
	if mu == nil {
		return nil
	}
	if err := CheckHeaderMutation(mu); err != nil {
		return local(http.StatusInternalServerError, "%v", err)
	}
	for _, name := range mu.RemoveHeaders {
		kept := m.Headers[:0]
		for _, h := range m.Headers {
			if h.Key != name {
				kept = append(kept, h)
			}
		}
		m.Headers = kept
	}
	for _, o := range mu.SetHeaders {
		h := o.GetHeader()
		nv := &corev3.HeaderValue{Key: h.GetKey(), RawValue: h.GetRawValue()}
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			replaced := false
			kept := m.Headers[:0]
			for _, x := range m.Headers {
				if x.Key == h.GetKey() {
					if !replaced {
						kept = append(kept, nv)
						replaced = true
					}
					continue
				}
				kept = append(kept, x)
			}
			m.Headers = kept
			if !replaced && o.GetAppendAction() == corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				m.Headers = append(m.Headers, nv)
			}
		default:
			m.Headers = append(m.Headers, nv)
		}
	}
	return nil
}
