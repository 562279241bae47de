package wsbridge

import (
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestNoGoroutineOutlivesItsSession ends sessions every way they can end
// and checks, while the bridge is still up, that nothing of the session is
// left running: its pumps, its closers, its timers' callbacks, and the
// WebSocket library's goroutines for both connections.
//
// It is not parallel, so no other test's sessions are about.
func TestNoGoroutineOutlivesItsSession(t *testing.T) {
	cases := []struct {
		name string
		opts func(*Options)
		run  func(t *testing.T, h *harness, c *websocket.Conn)
	}{
		{"a session the client closes", nil, func(t *testing.T, h *harness, c *websocket.Conn) {
			send(t, c, `{"type":"response.create","model":"gpt-5.4"}`)
			until(t, c, "response.completed")
			_ = c.Close(websocket.StatusNormalClosure, "")
		}},
		{"a session the client drops mid-turn", nil, func(t *testing.T, h *harness, c *websocket.Conn) {
			send(t, c, `{"type":"response.create","model":"gpt-5.4","metadata":{"fake":"hang"}}`)
			until(t, c, "response.output_text.delta")
			_ = c.CloseNow()
		}},
		{"a session the upstream drops", nil, func(t *testing.T, h *harness, c *websocket.Conn) {
			send(t, c, `{"type":"response.create","model":"gpt-5.4","metadata":{"fake":"drop"}}`)
			closed(t, c)
		}},
		{"a session ended by a block", nil, func(t *testing.T, h *harness, c *websocket.Conn) {
			send(t, c, `{"type":"response.create","model":"gpt-5.5","service_tier":"priority"}`)
			closed(t, c)
		}},
		{"a session that idles out", func(o *Options) { o.IdleTimeout = time.Second }, func(t *testing.T, h *harness, c *websocket.Conn) {
			closed(t, c)
		}},
		{"a session whose client stops reading", func(o *Options) { o.WriteTimeout = 300 * time.Millisecond }, func(t *testing.T, h *harness, c *websocket.Conn) {
			send(t, c, `{"type":"response.create","model":"gpt-5.4","metadata":{"fake":"flood:40:1048576"}}`)
			// Read nothing: the bridge's write to the client times out.
			h.waitSessions(t)
			_ = c.CloseNow()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mods []func(*Options)
			if tc.opts != nil {
				mods = append(mods, tc.opts)
			}
			h := newHarness(t, testPolicy, mods...)
			c, _ := h.dial(t, PathResponses, nil)
			fc := h.up.next(t)
			// The check must see a live session's goroutines, or it proves
			// nothing (the session starts just after the client's dial).
			for deadline := time.Now().Add(5 * time.Second); waitGoroutines(0, "tiergate/wsbridge.(*session)") == ""; {
				if time.Now().After(deadline) {
					t.Fatal("the check cannot see a live session's goroutines")
				}
				time.Sleep(time.Millisecond)
			}
			tc.run(t, h, c)
			h.waitSessions(t)
			fc.waitClosed(t)
			if left := waitGoroutines(5*time.Second, "tiergate/wsbridge.(*session)", "github.com/coder/websocket."); left != "" {
				t.Fatalf("goroutines left after the session ended:\n%s", left)
			}
		})
	}
}
