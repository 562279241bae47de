package wsbridge

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"
)

// TestPlainHTTPRequests checks what the listener answers to requests that
// are not WebSocket upgrades, or not on its paths.
func TestPlainHTTPRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy)
	cases := []struct {
		name, method, path string
		header             map[string]string
		status             int
		code               string
	}{
		{name: "a plain POST to /v1/responses gets 426 with a clear message", method: "POST", path: PathResponses, status: 426, code: "upgrade_required"},
		{name: "a plain GET to /v1/realtime gets 426", method: "GET", path: PathRealtime + "?model=gpt-realtime", status: 426, code: "upgrade_required"},
		{name: "another path gets 404", method: "GET", path: "/v1/chat/completions", status: 404, code: "not_found"},
		{name: "a path with a trailing slash gets 404", method: "GET", path: PathResponses + "/", status: 404, code: "not_found"},
		{name: "an upgrade without a key is refused before any dial", method: "GET", path: PathResponses,
			header: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"},
			status: 400, code: "invalid_websocket_handshake"},
		{name: "an upgrade of the wrong version is refused before any dial", method: "GET", path: PathResponses,
			header: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "8", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
			status: 400, code: "invalid_websocket_handshake"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, h.srv.URL+tc.path, strings.NewReader(`{"model":"gpt-5.5"}`))
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			e := gjson.ParseBytes(body).Get("error")
			if e.Get("code").Str != tc.code || e.Get("message").Str == "" || !e.Get("param").Exists() {
				t.Errorf("body %s, want the OpenAI error shape with code %s", body, tc.code)
			}
			if tc.status == 426 && resp.Header.Get("Upgrade") != "websocket" {
				t.Errorf("426 without Upgrade: websocket")
			}
		})
	}
	select {
	case fc := <-h.up.connected:
		t.Errorf("the upstream was dialled for %s", fc.path)
	default:
	}
}

// TestUpstreamHandshakeFailures checks how a failed upstream handshake
// reaches the client: the upstream's own refusal as it was, 504 for a dial
// timeout, 502 for an unreachable upstream.
func TestUpstreamHandshakeFailures(t *testing.T) {
	t.Parallel()
	// A listener that accepts TCP and never answers: the handshake times out.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	// An address nothing listens on.
	closedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := "ws://" + closedLn.Addr().String()
	closedLn.Close()

	cases := []struct {
		name     string
		refuse   func(*http.Request) (int, http.Header, string)
		upstream string
		status   int
		body     string // exact, or the error code for tiergate's own
		header   map[string]string
	}{
		{
			name: "a 401 from the upstream reaches the client with its body",
			refuse: func(*http.Request) (int, http.Header, string) {
				return 401, http.Header{"Content-Type": {"application/json"}, "Www-Authenticate": {"Bearer"}, "Set-Cookie": {"x=1"}},
					`{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`
			},
			status: 401, body: `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`,
			header: map[string]string{"Content-Type": "application/json", "Www-Authenticate": "Bearer", "Set-Cookie": ""},
		},
		{
			name: "a 429 from the upstream keeps its body and retry headers",
			refuse: func(*http.Request) (int, http.Header, string) {
				return 429, http.Header{"Content-Type": {"application/json"}, "Retry-After": {"7"}, "X-Ratelimit-Remaining-Requests": {"0"}},
					`{"error":{"message":"Rate limit reached.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
			},
			status: 429, body: `{"error":{"message":"Rate limit reached.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`,
			header: map[string]string{"Retry-After": "7", "X-Ratelimit-Remaining-Requests": "0"},
		},
		{
			name: "a redirect is not followed: the client gets it, and decides",
			refuse: func(*http.Request) (int, http.Header, string) {
				return 302, http.Header{"Location": {"wss://elsewhere.example/v1/responses"}}, ""
			},
			status: 302, body: "",
			header: map[string]string{"Location": "wss://elsewhere.example/v1/responses"},
		},
		{name: "a dial timeout is 504", upstream: "ws://" + silent.Addr().String(), status: 504, body: "upstream_timeout"},
		{name: "an unreachable upstream is 502", upstream: unreachable, status: 502, body: "upstream_unreachable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, testPolicy, func(o *Options) {
				if tc.status == 504 {
					// Short only where it is the point: the timeout
					// covers the whole handshake, and a loaded machine
					// must not turn a 401 into a 504.
					o.DialTimeout = 300 * time.Millisecond
				}
				if tc.upstream != "" {
					o.Upstream = tc.upstream
				}
			})
			h.up.refuse = tc.refuse
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			// The test's client does not follow a redirect either: it is to
			// see what the bridge answered.
			noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			_, resp, err := websocket.Dial(ctx, h.wsURL(PathResponses), &websocket.DialOptions{HTTPClient: noRedirect})
			if err == nil || resp == nil {
				t.Fatalf("dial: %v, %v", resp, err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.status)
			}
			if tc.refuse != nil {
				if string(body) != tc.body {
					t.Errorf("body %s, want the upstream's %s", body, tc.body)
				}
			} else if code := gjson.GetBytes(body, "error.code").Str; code != tc.body {
				t.Errorf("body %s, want code %s", body, tc.body)
			}
			for k, v := range tc.header {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tc.status == 504 && time.Since(start) > 3*time.Second {
				t.Errorf("the 504 took %v", time.Since(start))
			}
		})
	}
}

// TestHandshakePassesHeadersAndSubprotocols checks what crosses the bridge
// in each handshake: the forwarding table's headers and the offered
// subprotocols up, the upstream's chosen subprotocol and Codex's headers
// down, and nothing else.
func TestHandshakePassesHeadersAndSubprotocols(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy)
	h.up.headers = http.Header{
		"X-Codex-Turn-State":   {"ts-123"},
		"Openai-Model":         {"gpt-5.5"},
		"X-Models-Etag":        {"etag-9"},
		"X-Reasoning-Included": {"true"},
		"X-Internal-Shard":     {"s7"},
		"Set-Cookie":           {"up=1"},
	}
	sent := map[string]string{
		"Authorization":         "Bearer sk-test",
		"OpenAI-Beta":           "responses_websockets=2026-02-06",
		"OpenAI-Organization":   "org-1",
		"OpenAI-Project":        "proj-1",
		"Originator":            "codex_cli_rs",
		"User-Agent":            "codex_cli_rs/0.99 (Linux; x86_64)",
		"Session-Id":            "sess-1",
		"Session_id":            "sess-old",
		"Thread-Id":             "thr-1",
		"X-Client-Request-Id":   "cr-1",
		"X-Codex-Turn-State":    "ts-0",
		"X-Codex-Turn-Metadata": `{"turn":1}`,
		"X-Codex-Beta-Features": "a,b",
		"X-Openai-Subagent":     "review",
		"Chatgpt-Account-Id":    "acct-1",
		"Api-Key":               "azure-key",
		"X-Request-Id":          "req-7",
		"Traceparent":           "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	notSent := map[string]string{
		"X-Tiergate-Group":    "codex-fast",
		"Cookie":              "gateway=1",
		"X-Forwarded-For":     "10.0.0.1",
		"X-Envoy-Internal":    "true",
		"Proxy-Authorization": "Basic eA==",
		"Origin":              "https://example.com",
	}
	hdr := http.Header{}
	for k, v := range sent {
		hdr.Set(k, v)
	}
	for k, v := range notSent {
		hdr.Set(k, v)
	}
	c, resp := h.dial(t, PathRealtime+"?model=gpt-realtime", &websocket.DialOptions{
		HTTPHeader:      hdr,
		Subprotocols:    []string{"openai-insecure-api-key.sk-fast", "realtime", "openai-beta.realtime-v1"},
		CompressionMode: websocket.CompressionNoContextTakeover,
	})
	fc := h.up.next(t)
	for k, v := range sent {
		if got := fc.header.Get(k); got != v {
			t.Errorf("upstream header %s = %q, want %q", k, got, v)
		}
	}
	for k := range notSent {
		if got := fc.header.Get(k); got != "" {
			t.Errorf("upstream header %s = %q, want it kept back", k, got)
		}
	}
	if got := strings.Join(fc.offered, ","); got != "openai-insecure-api-key.sk-fast,realtime,openai-beta.realtime-v1" {
		t.Errorf("upstream offered %q", got)
	}
	if fc.query != "model=gpt-realtime" {
		t.Errorf("upstream query %q", fc.query)
	}
	if !strings.Contains(fc.extensions, "permessage-deflate") || !strings.Contains(fc.extensions, "client_no_context_takeover") {
		t.Errorf("upstream extensions %q, want permessage-deflate without context takeover", fc.extensions)
	}
	if c.Subprotocol() != "realtime" {
		t.Errorf("client subprotocol %q, want the upstream's realtime", c.Subprotocol())
	}
	for k, v := range map[string]string{
		"X-Codex-Turn-State": "ts-123", "Openai-Model": "gpt-5.5", "X-Models-Etag": "etag-9", "X-Reasoning-Included": "true",
		"X-Internal-Shard": "", "Set-Cookie": "",
	} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("client got header %s = %q, want %q", k, got, v)
		}
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "permessage-deflate; client_no_context_takeover; server_no_context_takeover" {
		t.Errorf("client extensions %q", ext)
	}
	// A compressed session relays like any other.
	until(t, c, "session.created")
	send(t, c, `{"type":"response.create","response":{"instructions":"`+strings.Repeat("compress me ", 200)+`"}}`)
	until(t, c, "response.done")
	_ = c.Close(websocket.StatusNormalClosure, "")
	h.waitSessions(t)
	if recs := h.records(); len(recs) != 1 || recs[0]["group"] != "codex-fast" {
		t.Errorf("the group header must not be read for the upstream but still names the group: %v", recs)
	}
}

// TestHandshakeWithoutSubprotocolsOrCompression checks a Codex-like client:
// no subprotocol and no compression offered, none negotiated either side.
func TestHandshakeWithoutSubprotocolsOrCompression(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy)
	c, resp := h.dial(t, PathResponses, nil)
	fc := h.up.next(t)
	if c.Subprotocol() != "" || fc.subprotocol != "" || len(fc.offered) != 0 {
		t.Errorf("subprotocols: client %q, upstream %q offered %v", c.Subprotocol(), fc.subprotocol, fc.offered)
	}
	if fc.extensions != "" || resp.Header.Get("Sec-WebSocket-Extensions") != "" {
		t.Errorf("extensions: upstream %q, client %q", fc.extensions, resp.Header.Get("Sec-WebSocket-Extensions"))
	}
}

// TestAllowedOrigins checks the optional Origin restriction.
func TestAllowedOrigins(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy, func(o *Options) { o.AllowedOrigins = []string{"*.example.com", "https://*.secure.example"} })
	u, err := url.Parse(h.wsURL(PathResponses))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"https://app.example.com", true},
		{"https://evil.example.org", false},
		// A page served from the bridge's own host is always allowed.
		{"http://" + u.Host, true},
		// A pattern with a scheme is matched against scheme://host.
		{"https://app.secure.example", true},
		{"http://app.secure.example", false},
	}
	for _, tc := range cases {
		hdr := http.Header{}
		if tc.origin != "" {
			hdr.Set("Origin", tc.origin)
		}
		c, resp, err := websocket.Dial(context.Background(), h.wsURL(PathResponses), &websocket.DialOptions{HTTPHeader: hdr})
		if tc.ok != (err == nil) {
			t.Errorf("origin %q: %v", tc.origin, err)
		}
		if c != nil {
			_ = c.Close(websocket.StatusNormalClosure, "")
		}
		if !tc.ok && (resp == nil || resp.StatusCode != 403) {
			t.Errorf("origin %q: %v, want 403", tc.origin, resp)
		}
	}
}

// TestNewChecksOptions checks New's refusals.
func TestNewChecksOptions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy)
	base := h.bridge.opts
	fresh := func() Options {
		o := base
		o.Registerer = prometheus.NewRegistry()
		return o
	}
	if _, err := New(fresh()); err != nil {
		t.Fatalf("New refused good options: %v", err)
	}
	for name, mod := range map[string]func(*Options){
		"no store":             func(o *Options) { o.Store = nil },
		"an ftp upstream":      func(o *Options) { o.Upstream = "ftp://example.com" },
		"an upstream query":    func(o *Options) { o.Upstream = "wss://example.com?x=1" },
		"a bad origin pattern": func(o *Options) { o.AllowedOrigins = []string{"["} },
	} {
		o := fresh()
		mod(&o)
		if _, err := New(o); err == nil {
			t.Errorf("New accepted %s", name)
		}
	}
}
