package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/nodeclients"
)

// wsDial opens a WebSocket through Envoy (wss, HTTP/1.1 upgrade).
func (s *stack) wsDial(t *testing.T, ctx context.Context, path string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.certs.Pool},
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	t.Cleanup(tr.CloseIdleConnections)
	return websocket.Dial(ctx, "wss"+strings.TrimPrefix(s.url, "https")+path,
		&websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, HTTPHeader: header})
}

func readEvent(t *testing.T, ctx context.Context, c *websocket.Conn) gjson.Result {
	t.Helper()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return gjson.ParseBytes(data)
}

// waitConn waits for the n-th upstream WebSocket connection.
func (s *stack) waitConn(t *testing.T, n int) *wsConn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c := s.ws.since(n); len(c) > 0 {
			return c[0]
		}
		if time.Now().After(deadline) {
			t.Fatal("the bridge opened no upstream connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testWebSocket: upgrades on /v1/responses and /v1/realtime go through
// Envoy to the bridge, which polices every frame; a plain POST on the same
// path still goes through ext_proc; an upgrade elsewhere is refused.
func testWebSocket(t *testing.T, s *stack) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("a Responses session is bridged and each frame judged", func(t *testing.T) {
		before := s.ws.count()
		c, _, err := s.wsDial(t, ctx, "/v1/responses", http.Header{"Authorization": {"Bearer " + keyPlain}, "X-Tiergate-Group": {"codex-fast"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5.4","service_tier":"priority","input":"hi"}`)); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"response.created", "response.output_text.delta", "response.completed"} {
			if ev := readEvent(t, ctx, c); ev.Get("type").Str != want {
				t.Fatalf("event %s, want %s", ev.Raw, want)
			}
		}
		up := s.waitConn(t, before)
		if up.path != "/v1/responses" {
			t.Errorf("the bridge dialled %s", up.path)
		}
		if up.header.Get("x-tiergate-group") != "" {
			t.Error("the group header reached the upstream")
		}
		frames := up.received()
		if len(frames) != 1 || gjson.Get(frames[0], "service_tier").Exists() || gjson.Get(frames[0], "model").Str != "gpt-5.4" {
			t.Errorf("the upstream received %q, want the frame without its tier", frames)
		}
		// The client's group header was stripped: priority on gpt-5.5 is blocked.
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5.5","service_tier":"priority","input":"hi"}`)); err != nil {
			t.Fatal(err)
		}
		ev := readEvent(t, ctx, c)
		if ev.Get("type").Str != "error" || ev.Get("status").Int() != http.StatusForbidden || ev.Get("error.code").Str != "policy_violation" {
			t.Errorf("want the 403 error event, got %s", ev.Raw)
		}
		_, _, err = c.Read(ctx)
		if st := websocket.CloseStatus(err); st != websocket.StatusPolicyViolation {
			t.Errorf("close %v (%v), want 1008", st, err)
		}
		if n := len(up.received()); n != 1 {
			t.Errorf("the upstream received %d frames, want the blocked one never sent", n)
		}
	})

	t.Run("a Realtime session gets the identity's forced tier", func(t *testing.T) {
		before := s.ws.count()
		c, _, err := s.wsDial(t, ctx, "/v1/realtime?model=gpt-realtime", http.Header{"Authorization": {"Bearer " + keyPlain}, identityHeaderCanonical(): {"flex-group"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if ev := readEvent(t, ctx, c); ev.Get("type").Str != "session.created" {
			t.Fatalf("first event %s", ev.Raw)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","response":{"service_tier":"priority"}}`)); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"response.created", "response.output_text.delta", "response.done"} {
			if ev := readEvent(t, ctx, c); ev.Get("type").Str != want {
				t.Fatalf("event %s, want %s", ev.Raw, want)
			}
		}
		up := s.waitConn(t, before)
		if !strings.HasPrefix(up.path, "/v1/realtime") {
			t.Errorf("the bridge dialled %s", up.path)
		}
		frames := up.received()
		if len(frames) != 1 || strings.Contains(frames[0], "priority") || !strings.Contains(frames[0], `"flex"`) {
			t.Errorf("the upstream received %q, want the frame with flex instead of priority", frames)
		}
		_ = c.Close(websocket.StatusNormalClosure, "done")
	})

	t.Run("a plain POST on /v1/responses still goes through ext_proc", func(t *testing.T) {
		before := s.ws.count()
		id := newID(t)
		got := s.send(t, s.h1, http.MethodPost, withID("/v1/responses", id, ""), nil, []byte(`{"model":"gpt-5.4","service_tier":"priority","input":"hi"}`))
		if got.status != http.StatusOK {
			t.Fatalf("status %d", got.status)
		}
		if up := s.up.take(t, id); string(up.body) != `{"model":"gpt-5.4","input":"hi"}` {
			t.Errorf("the provider received %s", up.body)
		}
		if s.ws.count() != before {
			t.Error("the POST went to the bridge")
		}
	})

	t.Run("an upgrade on a provider route is refused by Envoy", func(t *testing.T) {
		before := s.ws.count()
		id := newID(t)
		_, resp, err := s.wsDial(t, ctx, withID("/v1/chat/completions", id, ""), nil)
		if err == nil {
			t.Fatal("the upgrade succeeded")
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("want Envoy's 403 (upgrade disabled on the route), got %v (%v)", resp, err)
		}
		s.up.none(t, id)
		if s.ws.count() != before {
			t.Error("the upgrade reached the bridge")
		}
	})
}

func identityHeaderCanonical() string { return http.CanonicalHeaderKey(identityHeader) }

// testNodeClients runs the openai npm package's ResponsesWS and Realtime
// clients (wsbridge/testdata/node) through Envoy over wss.
func testNodeClients(t *testing.T, s *stack) {
	before := s.ws.count()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	saw, _ := nodeclients.Run(t, ctx, filepath.Join("..", "..", "wsbridge", "testdata", "node"),
		"NODE_EXTRA_CA_CERTS="+s.caFile,
		"TIERGATE_BASE_URL="+s.url+"/v1",
		"OPENAI_API_KEY="+keyPlain,
	)
	for _, tc := range []struct {
		client string
		events []string
		close  websocket.StatusCode
	}{
		{"responses", []string{"response.created", "response.output_text.delta", "response.completed", "response.created", "response.output_text.delta", "response.completed", "error"}, websocket.StatusPolicyViolation},
		{"realtime", []string{"session.created", "session.updated", "response.created", "response.output_text.delta", "response.done"}, websocket.StatusNormalClosure},
		{"realtime_beta", []string{"session.created", "error"}, websocket.StatusPolicyViolation},
	} {
		var events []string
		var closed int64 = -1
		for _, l := range saw[tc.client] {
			if e := l.Get("event"); e.Exists() {
				events = append(events, e.Get("type").Str)
			}
			if c := l.Get("close"); c.Exists() {
				closed = c.Get("code").Int()
			}
		}
		if strings.Join(events, " ") != strings.Join(tc.events, " ") {
			t.Errorf("%s saw events %v, want %v", tc.client, events, tc.events)
		}
		if closed != int64(tc.close) {
			t.Errorf("%s closed with %d, want %d", tc.client, closed, tc.close)
		}
	}
	conns := s.ws.since(before)
	if len(conns) != 3 {
		t.Fatalf("the bridge opened %d upstream sessions, want 3", len(conns))
	}
	for _, c := range conns {
		select {
		case <-c.closed:
		case <-ctx.Done():
			t.Fatal(errors.New("an upstream session stayed open"))
		}
		for _, f := range c.received() {
			if strings.Contains(f, "priority") || strings.Contains(f, `"fast"`) {
				t.Errorf("%s: a frame reached the upstream with an unapproved tier: %s", c.path, f)
			}
		}
	}
	if n := len(conns[0].received()); n != 2 {
		t.Errorf("the Responses upstream received %d frames, want 2 (the blocked third never sent)", n)
	}
}
