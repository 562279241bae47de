package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/testcert"
)

// faultUpstream is the fake provider of the fault tests: the ordinary fake
// (upstream, wsUpstream) for ordinary requests, and providers that fail in
// the ways real ones do when a request asks for it: over HTTP the reply
// query parameter, over WebSocket the fault one.
type faultUpstream struct {
	*upstream
	ws     *wsUpstream
	addr   string // HTTPS (h2 by ALPN, as the providers)
	wsAddr string // ws://, which the bridge dials
	// floodBytes counts what the flooding WebSocket upstream managed to
	// write, so a test can tell that backpressure held it back.
	floodBytes atomic.Int64
	// loadSeen counts the load's requests that reached the provider;
	// unpoliced those among them that carried a tier the policy refuses.
	loadSeen, unpoliced atomic.Int64
	// arrivals holds when each request (by its e2e id) arrived.
	arrivals sync.Map
}

// HTTP faults (the reply query parameter).
const (
	// replyReset sends the headers and the first event of a stream, then
	// resets the stream.
	replyReset = "reset"
	// replySlow sends nothing at all until the request is given up.
	replySlow = "slow"
	// replyServerError answers 500 with an OpenAI error body.
	replyServerError = "500"
)

// WebSocket faults (the fault query parameter of the upgrade).
const (
	// wsVanish: at the first response.create the upstream answers
	// response.created and then drops the TCP connection, no close frame.
	wsVanish = "vanish"
	// wsStall: it answers response.created and then never another frame.
	wsStall = "stall"
	// wsFlood: it answers response.created and then writes deltas of
	// floodFrame bytes as fast as the bridge takes them, up to floodLimit.
	wsFlood = "flood"
)

const (
	floodFrame = 64 << 10
	floodLimit = 256 << 20
	// slowCap bounds how long the slow provider holds a request.
	slowCap = 30 * time.Second
)

func startFaultUpstream(t *testing.T, certs testcert.Set) *faultUpstream {
	t.Helper()
	f := &faultUpstream{
		upstream: &upstream{seen: map[string][]*seenRequest{}, ch: make(chan struct{}, 1)},
		ws:       &wsUpstream{},
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serveHTTP))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{certs.Cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.addr = srv.Listener.Addr().String()
	wsSrv := httptest.NewServer(http.HandlerFunc(f.serveWS))
	t.Cleanup(wsSrv.Close)
	f.wsAddr = wsSrv.Listener.Addr().String()
	return f
}

func (f *faultUpstream) serveHTTP(w http.ResponseWriter, r *http.Request) {
	f.arrivals.Store(r.URL.Query().Get("e2e"), time.Now())
	mode := r.URL.Query().Get("reply")
	switch mode {
	case replyReset, replySlow, replyServerError:
	default:
		if r.URL.Query().Get("e2e") == loadID {
			f.serveLoad(w, r)
			return
		}
		f.upstream.serve(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.file(r, body)
	switch mode {
	case replyReset:
		w.Header().Set("content-type", "text/event-stream")
		first, _, _ := strings.Cut(responsesStream, "\n\n")
		_, _ = io.WriteString(w, first+"\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(100 * time.Millisecond)
		panic(http.ErrAbortHandler) // an RST_STREAM (HTTP/2), the connection cut (HTTP/1.1)
	case replySlow:
		select {
		case <-r.Context().Done():
		case <-time.After(slowCap):
		}
	case replyServerError:
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`)
	}
}

// loadID marks the requests of mixedLoad: they are not filed (a soak sends
// hundreds of thousands), only checked.
const loadID = "load"

// serveLoad answers a load request and counts it as unpoliced if it
// carries a tier the test policy never approves for the load's callers.
func (f *faultUpstream) serveLoad(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.loadSeen.Add(1)
	if bytes.Contains(body, []byte("priority")) || bytes.Contains(body, []byte(`"fast"`)) ||
		strings.Contains(r.Header.Get("anthropic-beta"), "fast-mode") {
		f.unpoliced.Add(1)
	}
	reply(w, r, body)
}

// file records a request the way upstream.serve does.
func (f *faultUpstream) file(r *http.Request, body []byte) {
	sr := &seenRequest{method: r.Method, path: r.URL.RequestURI(), host: r.Host, proto: r.Proto,
		header: r.Header.Clone(), body: body}
	f.mu.Lock()
	f.seen[r.URL.Query().Get("e2e")] = append(f.seen[r.URL.Query().Get("e2e")], sr)
	f.mu.Unlock()
}

func (f *faultUpstream) serveWS(w http.ResponseWriter, r *http.Request) {
	fault := r.URL.Query().Get("fault")
	if fault == "" {
		f.ws.serve(w, r)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		if gjson.GetBytes(data, "type").Str != "response.create" {
			continue
		}
		created := `{"type":"response.created","sequence_number":0,"response":{"id":"resp_` + fault + `","object":"response","status":"in_progress","model":"gpt-5.4"}}`
		if err := c.Write(ctx, websocket.MessageText, []byte(created)); err != nil {
			return
		}
		switch fault {
		case wsVanish:
			time.Sleep(50 * time.Millisecond)
			return // CloseNow: the TCP connection goes, no close frame
		case wsStall:
			// Keep the connection, read on (so that a close is seen), answer nothing.
			for {
				if _, _, err := c.Read(ctx); err != nil {
					return
				}
			}
		case wsFlood:
			go func() { // keep reading so that a close from the bridge ends the writes
				for {
					if _, _, err := c.Read(ctx); err != nil {
						cancel()
						return
					}
				}
			}()
			delta := []byte(`{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"` +
				strings.Repeat("x", floodFrame) + `"}`)
			for f.floodBytes.Load() < floodLimit {
				if err := c.Write(ctx, websocket.MessageText, delta); err != nil {
					return
				}
				f.floodBytes.Add(int64(len(delta)))
			}
			return
		}
	}
}
