package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/testcert"
)

// seenRequest is one request as the fake provider received it.
type seenRequest struct {
	method, path, host, proto string
	header                    http.Header
	body                      []byte
	trailer                   http.Header
}

// upstream is the fake api.openai.com and api.anthropic.com: one HTTPS
// server (HTTP/2 by ALPN, as Envoy's auto_config prefers) with a
// certificate for both names from the test CA. Requests are filed by the
// e2e query parameter each test request carries, so that a test finds its
// own; the reply query parameter picks the answer.
type upstream struct {
	addr string
	mu   sync.Mutex
	seen map[string][]*seenRequest
	ch   chan struct{}
}

func startUpstream(t *testing.T, certs testcert.Set) *upstream {
	t.Helper()
	u := &upstream{seen: map[string][]*seenRequest{}, ch: make(chan struct{}, 1)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(u.serve))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{certs.Cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u.addr = srv.Listener.Addr().String()
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sr := &seenRequest{method: r.Method, path: r.URL.RequestURI(), host: r.Host, proto: r.Proto,
		header: r.Header.Clone(), body: body, trailer: r.Trailer.Clone()}
	id := r.URL.Query().Get("e2e")
	u.mu.Lock()
	u.seen[id] = append(u.seen[id], sr)
	u.mu.Unlock()
	select {
	case u.ch <- struct{}{}:
	default:
	}
	reply(w, r, body)
}

// take returns the one request filed under id, waiting for it a while.
func (u *upstream) take(t *testing.T, id string) *seenRequest {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		u.mu.Lock()
		got := u.seen[id]
		u.mu.Unlock()
		if len(got) > 1 {
			t.Fatalf("the upstream received %d requests for %s, want 1", len(got), id)
		}
		if len(got) == 1 {
			return got[0]
		}
		select {
		case <-u.ch:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("the upstream received no request for %s", id)
		}
	}
}

// none checks that nothing reached the upstream for id.
func (u *upstream) none(t *testing.T, id string) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if n := len(u.seen[id]); n > 0 {
		t.Errorf("the upstream received %d requests for %s, want none: %q", n, id, u.seen[id][0].body)
	}
}

// The providers' answers. Each carries usage that the tests find again in
// the usage records and in Envoy's access log.
const (
	chatJSON      = `{"id":"chatcmpl-e2e","object":"chat.completion","model":"gpt-5.4-2026","service_tier":"default","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}`
	responsesJSON = `{"id":"resp_e2e","object":"response","status":"completed","model":"gpt-5.4-2026","service_tier":"default","usage":{"input_tokens":21,"input_tokens_details":{"cached_tokens":3},"output_tokens":8,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":29}}`
	messagesJSON  = `{"id":"msg_e2e","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":31,"output_tokens":9}}`

	chatChunks = "data: {\"id\":\"chatcmpl-s\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-5.4-2026\",\"service_tier\":\"default\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n" +
		"data: {\"id\":\"chatcmpl-s\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-5.4-2026\",\"service_tier\":\"default\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n"
	chatUsageChunk = "data: {\"id\":\"chatcmpl-s\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-5.4-2026\",\"service_tier\":\"default\",\"choices\":[],\"usage\":{\"prompt_tokens\":13,\"completion_tokens\":5,\"total_tokens\":18}}\n\n"
	chatDone       = "data: [DONE]\n\n"

	responsesStream = "event: response.created\n" +
		"data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_s\",\"status\":\"in_progress\",\"model\":\"gpt-5.4-2026\",\"usage\":null}}\n\n" +
		"event: response.output_text.delta\n" +
		"data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n" +
		"event: response.completed\n" +
		"data: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_s\",\"status\":\"completed\",\"model\":\"gpt-5.4-2026\",\"service_tier\":\"flex\",\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":30},\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":5},\"total_tokens\":48}}}\n\n"

	messagesStream = "event: message_start\n" +
		"data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":1024}}}\n\n" +
		"event: content_block_delta\n" +
		"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
		"event: message_delta\n" +
		"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)

// reply answers as the provider would: JSON by default, an SSE stream
// (gzip'd with reply=sse-gzip) when asked.
func reply(w http.ResponseWriter, r *http.Request, body []byte) {
	mode := r.URL.Query().Get("reply")
	anthropic := strings.HasSuffix(r.URL.Path, "/messages")
	chat := strings.HasSuffix(r.URL.Path, "/chat/completions")
	if mode == "" {
		w.Header().Set("content-type", "application/json")
		switch {
		case anthropic:
			_, _ = io.WriteString(w, messagesJSON)
		case chat:
			_, _ = io.WriteString(w, chatJSON)
		default:
			_, _ = io.WriteString(w, responsesJSON)
		}
		return
	}
	var stream string
	switch {
	case anthropic:
		stream = messagesStream
	case chat:
		// As OpenAI does: the usage chunk only for a request that asked for it.
		stream = chatChunks
		if gjson.GetBytes(body, "stream_options.include_usage").Bool() {
			stream += chatUsageChunk
		}
		stream += chatDone
	default:
		stream = responsesStream
	}
	w.Header().Set("content-type", "text/event-stream")
	data := []byte(stream)
	if mode == "sse-gzip" {
		w.Header().Set("content-encoding", "gzip")
		data = gzipBytes(data)
	}
	// In pieces, flushed, so that Envoy's STREAMED path sees several chunks.
	f, _ := w.(http.Flusher)
	for len(data) > 0 {
		n := min(len(data), 97)
		_, _ = w.Write(data[:n])
		if f != nil {
			f.Flush()
		}
		data = data[n:]
	}
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// wsUpstream is the fake provider's WebSocket side (ws://, which the
// bridge dials): it answers Responses and Realtime frames the way the
// openai npm clients expect, and keeps every frame it receives.
type wsUpstream struct {
	addr string
	mu   sync.Mutex
	// conns holds, per connection in order, its path and the frames received.
	conns []*wsConn
}

type wsConn struct {
	path   string
	header http.Header
	mu     sync.Mutex
	frames []string
	closed chan struct{}
}

func (c *wsConn) received() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.frames...)
}

func startWSUpstream(t *testing.T) *wsUpstream {
	t.Helper()
	u := &wsUpstream{}
	srv := httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(srv.Close)
	u.addr = srv.Listener.Addr().String()
	return u
}

func (u *wsUpstream) serve(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	conn := &wsConn{path: r.URL.RequestURI(), header: r.Header.Clone(), closed: make(chan struct{})}
	u.mu.Lock()
	u.conns = append(u.conns, conn)
	u.mu.Unlock()
	defer close(conn.closed)
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	realtime := strings.HasPrefix(r.URL.Path, "/v1/realtime")
	send := func(s string) { _ = c.Write(ctx, websocket.MessageText, []byte(s)) }
	model := r.URL.Query().Get("model")
	if realtime {
		send(`{"type":"session.created","event_id":"evt_1","session":{"id":"sess_1","object":"realtime.session","type":"realtime","model":"` + model + `"}}`)
	}
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		conn.mu.Lock()
		conn.frames = append(conn.frames, string(data))
		conn.mu.Unlock()
		switch typ := gjson.GetBytes(data, "type").Str; {
		case typ == "session.update":
			send(`{"type":"session.updated","event_id":"evt_2","session":{"id":"sess_1","object":"realtime.session","type":"realtime","model":"` + model + `"}}`)
		case typ == "response.create" && realtime:
			send(`{"type":"response.created","event_id":"evt_3","response":{"id":"resp_rt","object":"realtime.response","status":"in_progress"}}`)
			send(`{"type":"response.output_text.delta","event_id":"evt_4","response_id":"resp_rt","item_id":"item_1","output_index":0,"content_index":0,"delta":"Hi"}`)
			send(`{"type":"response.done","event_id":"evt_5","response":{"id":"resp_rt","object":"realtime.response","status":"completed","usage":{"total_tokens":30,"input_tokens":20,"output_tokens":10,"input_token_details":{"cached_tokens":0,"text_tokens":20,"audio_tokens":0},"output_token_details":{"text_tokens":10,"audio_tokens":0}}}}`)
		case typ == "response.create":
			model = gjson.GetBytes(data, "model").Str
			send(`{"type":"response.created","sequence_number":0,"response":{"id":"resp_ws","object":"response","status":"in_progress","model":"` + model + `"}}`)
			send(`{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}`)
			send(`{"type":"response.completed","sequence_number":2,"response":{"id":"resp_ws","object":"response","status":"completed","model":"` + model + `","usage":{"input_tokens":5,"output_tokens":3,"total_tokens":8}}}`)
		}
	}
}

// since returns the connections opened after the first n.
func (u *wsUpstream) since(n int) []*wsConn {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*wsConn(nil), u.conns[n:]...)
}

func (u *wsUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns)
}
