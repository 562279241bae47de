package wsbridge

import (
	"errors"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// TestAPumpPanicEndsOnlyItsSession: a panic in a session's pump ends that
// session with 1011 on both sides and is logged with its stack; the
// process, and the bridge's other sessions, go on.
func TestAPumpPanicEndsOnlyItsSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy)
	c, _ := h.dial(t, PathResponses, nil)
	fc := h.up.next(t)
	other, _ := h.dial(t, PathResponses, nil)
	h.up.next(t)

	h.bridge.mu.Lock()
	var victim *session
	for s := range h.bridge.sessions {
		if victim == nil || s.start.Before(victim.start) {
			victim = s
		}
	}
	h.bridge.mu.Unlock()
	// What a pump's deferred survivePanic sees when the pump panics.
	func() {
		defer victim.survivePanic("client_to_upstream")
		panic("boom")
	}()

	ce, _ := closed(t, c)
	if ce.Code != websocket.StatusInternalError || ce.Reason != reasonInternal {
		t.Errorf("the client saw %v, want 1011 %q", ce, reasonInternal)
	}
	var up websocket.CloseError
	if !errors.As(fc.waitClosed(t), &up) || up.Code != websocket.StatusInternalError {
		t.Errorf("the upstream saw %v, want 1011", up)
	}
	for _, want := range []string{"WebSocket pump panicked; the session ends with 1011", "boom", "goroutine"} {
		if !strings.Contains(h.logs.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, h.logs.String())
		}
	}
	send(t, other, `{"type":"response.create","model":"gpt-5.4"}`)
	until(t, other, "response.completed")
}
