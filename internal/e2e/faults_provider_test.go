package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"
)

// The short timeouts the provider fault tests set, and how soon after a
// fault (or a timeout) the client must learn of it.
const (
	faultIdleTimeout = 2 * time.Second
	promptly         = time.Second
)

// TestFaultProvider: a provider that resets a stream mid-way, answers
// nothing, answers 5xx, or (over WebSocket) vanishes mid-turn or stalls.
// The client learns promptly, within a second of the fault or of the
// configured timeout (here 2 s: Envoy's stream_idle_timeout and the
// bridge's --ws-idle-timeout), and the usage record says what happened.
func TestFaultProvider(t *testing.T) {
	t.Parallel()
	s := startFaultStack(t, testPolicy, faultOptions{
		streamIdleTimeout: faultIdleTimeout,
		tiergateFlags:     []string{"--ws-idle-timeout", faultIdleTimeout.String()},
	})
	for _, tc := range []struct {
		name, reply, body string
		// within bounds the time from the request to the client's knowing.
		within time.Duration
		// status is the status the client must get (0: the stream breaks).
		status int
		// record is the usage record's status (and http_status when set).
		record     string
		httpStatus int64
		// flags are the response_flags of Envoy's access log line, where the
		// record alone cannot say what happened.
		flags string
	}{
		// ext_proc tells tiergate nothing of why a stream ended: an upstream
		// reset after the response began and a client gone away both close
		// tiergate's stream plainly, so the record says client_closed and
		// Envoy's access log line (same request_id) says UR, upstream reset.
		// HTTP/1.1 clients learn when Envoy closes the connection, after its
		// delayed_close_timeout (1 s).
		{name: "a stream reset mid-way breaks the client's stream", reply: replyReset,
			body:   `{"model":"gpt-5.4","stream":true,"service_tier":"priority","input":"hi"}`,
			within: 100*time.Millisecond + sessionEndWithin, record: "client_closed", flags: "UR"},
		{name: "a provider silent past the idle timeout gets the client Envoy's 504", reply: replySlow,
			body:   `{"model":"gpt-5.4","service_tier":"priority","input":"hi"}`,
			within: faultIdleTimeout + promptly, status: http.StatusGatewayTimeout, record: "upstream_error", httpStatus: http.StatusGatewayTimeout},
		{name: "a 500 reaches the client and is recorded as an upstream error", reply: replyServerError,
			body:   `{"model":"gpt-5.4","service_tier":"priority","input":"hi"}`,
			within: promptly, status: http.StatusInternalServerError, record: "upstream_error", httpStatus: http.StatusInternalServerError},
	} {
		for _, cl := range s.clients() {
			t.Run(tc.name+" over "+cl.name, func(t *testing.T) {
				id := newID(t)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+withID("/v1/responses", id, tc.reply), strings.NewReader(tc.body))
				start := time.Now()
				resp, err := cl.c.Do(req)
				status := 0
				if err == nil {
					status = resp.StatusCode
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				took := time.Since(start)
				switch {
				case tc.status == 0 && err == nil:
					t.Errorf("the client read the whole answer (%d): it did not learn of the reset", status)
				case tc.status != 0 && status != tc.status:
					t.Errorf("status %d (%v), want %d", status, err, tc.status)
				}
				if took > tc.within {
					t.Errorf("the client learned after %v, want within %v", took, tc.within)
				}
				up := s.up.take(t, id)
				if gjson.GetBytes(up.body, "service_tier").Exists() {
					t.Errorf("the provider received a tier: %s", up.body)
				}
				rec := s.usageRecord(t, up.header.Get("x-request-id"))
				if got := rec.Get("status").Str; got != tc.record {
					t.Errorf("the usage record's status %q, want %q: %s", got, tc.record, rec.Raw)
				}
				if tc.httpStatus != 0 && rec.Get("http_status").Int() != tc.httpStatus {
					t.Errorf("the usage record's http_status %s, want %d", rec.Get("http_status").Raw, tc.httpStatus)
				}
				log := s.accessLine(t, id)
				if tc.flags != "" && !strings.Contains(log.Get("response_flags").Str, tc.flags) {
					t.Errorf("Envoy's access log response_flags %q, want %s: %s", log.Get("response_flags").Str, tc.flags, log.Raw)
				}
				t.Logf("the client learned after %v (status %d, %v); record %s, Envoy's flags %s", took.Round(time.Millisecond), status, err,
					rec.Get("status").Str, log.Get("response_flags").Str)
			})
		}
	}

	for _, tc := range []struct {
		name, fault string
		within      time.Duration
		close       websocket.StatusCode
		record      string
	}{
		{"a provider that vanishes mid-turn ends the client's session with 1011", wsVanish,
			50*time.Millisecond + promptly, websocket.StatusInternalError, "upstream_closed"},
		{"a provider that stalls mid-turn is closed at the idle timeout with 1008 and recorded as upstream_closed", wsStall,
			faultIdleTimeout + promptly, websocket.StatusPolicyViolation, "upstream_closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, resp, err := wsDialURL(ctx, s.stack, "/v1/responses?fault="+tc.fault, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			_ = resp
			if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5.4","service_tier":"priority","input":"hi"}`)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if ev := readEvent(t, ctx, c); ev.Get("type").Str != "response.created" {
				t.Fatalf("first event %s", ev.Raw)
			}
			_, _, err = c.Read(ctx)
			took := time.Since(start)
			if st := websocket.CloseStatus(err); st != tc.close {
				t.Errorf("the session ended with %v (%v), want close %d", st, err, tc.close)
			}
			if took > tc.within {
				t.Errorf("the client learned after %v, want within %v", took, tc.within)
			}
			rec := s.turnRecord(t, "resp_"+tc.fault)
			if got := rec.Get("status").Str; got != tc.record {
				t.Errorf("the turn's usage record status %q, want %q: %s", got, tc.record, rec.Raw)
			}
			t.Logf("the client learned after %v (%v); record %s", took.Round(time.Millisecond), err, rec.Get("status").Str)
		})
	}
}

// turnRecord waits for the usage record of the WebSocket turn whose
// response is responseID; a second one would be a double count.
func (s *stack) turnRecord(t *testing.T, responseID string) gjson.Result {
	t.Helper()
	return waitForLine(t, "usage record for the turn "+responseID, s.usageLines, func(r gjson.Result) bool {
		return r.Get("response_id").Str == responseID
	})
}
