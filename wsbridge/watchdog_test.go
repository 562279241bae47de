package wsbridge

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tiergate/tiergate/internal/wsfake"
	"github.com/tiergate/tiergate/usage"
)

// TestWriteWatchdog: a side that stops reading is cut off after
// WriteTimeout, and the other side is told which one it was.
func TestWriteWatchdog(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond

	t.Run("an upstream that stops reading: the client gets 1011", func(t *testing.T) {
		t.Parallel()
		// An upstream that accepts and then reads nothing.
		stop := make(chan struct{})
		deaf := wsfake.Serve(t, func(_ context.Context, c *websocket.Conn) {
			<-stop
			_ = c.CloseNow()
		})
		t.Cleanup(func() { close(stop) })
		h := newHarness(t, testPolicy, func(o *Options) {
			o.Upstream = "ws://" + deaf.Listener.Addr().String()
			o.WriteTimeout = timeout
		})
		c, _ := h.dial(t, PathResponses, nil)
		// Valid JSON frames of another type pass through unjudged; enough
		// of them fill the socket buffers between bridge and upstream.
		frame := []byte(`{"type":"test.bulk","data":"` + strings.Repeat("A", 1<<20) + `"}`)
		go func() {
			for range 64 {
				if c.Write(context.Background(), websocket.MessageText, frame) != nil {
					return
				}
			}
		}()
		ce, _ := closed(t, c)
		if ce.Code != websocket.StatusInternalError || ce.Reason != reasonUpSlow {
			t.Errorf("the client saw %v, want 1011 %q", ce, reasonUpSlow)
		}
		h.waitSessions(t)
		if text := gatherText(t, h); !strings.Contains(text, `tiergate_ws_sessions_total{close_code="1011",endpoint="responses_ws"} 1`) {
			t.Errorf("the session was not counted as ended 1011:\n%s", text)
		}
	})

	t.Run("a client that stops reading: the upstream gets 1001 and the turn is cut short", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, testPolicy, func(o *Options) { o.WriteTimeout = timeout })
		c, _ := h.dial(t, PathResponses, nil)
		fc := h.up.next(t)
		send(t, c, `{"type":"response.create","model":"gpt-5.4","metadata":{"fake":"flood:40:1048576"}}`)
		// Read nothing: the bridge's writes to the client stall.
		var ce websocket.CloseError
		if err := fc.waitClosed(t); !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != reasonClientSlow {
			t.Errorf("the upstream saw %v, want 1001 %q", err, reasonClientSlow)
		}
		_ = c.CloseNow()
		h.waitSessions(t)
		recs := h.records()
		if len(recs) != 1 || recs[0]["status"] != usage.StatusClientClosed {
			t.Errorf("records %v, want the flooding turn recorded as %s", recs, usage.StatusClientClosed)
		}
	})
}

// TestShutdownAbandonsDialsInProgress: an upgrade still waiting on the
// upstream's handshake when the grace ends gets 503 at once, not the dial
// timeout.
func TestShutdownAbandonsDialsInProgress(t *testing.T) {
	t.Parallel()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := silent.Accept()
		if err == nil {
			accepted <- c // held open, never answered
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		select {
		case c := <-accepted:
			c.Close()
		default:
		}
	})
	h := newHarness(t, testPolicy, func(o *Options) {
		o.Upstream = "ws://" + silent.Addr().String()
		o.DialTimeout = 30 * time.Second
	})
	type dialed struct {
		resp *http.Response
		err  error
	}
	got := make(chan dialed, 1)
	go func() {
		_, resp, err := websocket.Dial(context.Background(), h.wsURL(PathResponses), nil)
		got <- dialed{resp, err}
	}()
	var held net.Conn
	select {
	case held = <-accepted: // the bridge's dial is in progress
		accepted <- held
	case <-time.After(10 * time.Second):
		t.Fatal("the bridge never dialled the upstream")
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel() // no grace at all
	_ = h.bridge.Shutdown(ended)
	select {
	case d := <-got:
		if d.err == nil || d.resp == nil || d.resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("the upgrade got %v, %v; want 503", d.resp, d.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upgrade waited on its dial through the shutdown")
	}
	if text := gatherText(t, h); !strings.Contains(text, `tiergate_ws_upgrades_total{endpoint="responses_ws",result="draining"} 1`) {
		t.Errorf("the abandoned dial was not counted as draining:\n%s", text)
	}
}
