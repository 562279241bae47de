package wsbridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tiergate/tiergate/usage"
)

// TestCloseCodesPassThrough closes a session from one side and checks what
// the other side is told.
func TestCloseCodesPassThrough(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// by is who ends the session: "client" closes with code and reason
		// (code 0: drops the TCP connection), "upstream" likewise.
		by     string
		code   websocket.StatusCode
		reason string
		// what the other side must see (-1: no close frame)
		wantCode   websocket.StatusCode
		wantReason string
		label      string // tiergate_ws_sessions_total's close_code
	}{
		{name: "a normal closure from the client reaches the upstream", by: "client", code: 1000, reason: "done", wantCode: 1000, wantReason: "done", label: "1000"},
		{name: "going away from the client reaches the upstream", by: "client", code: 1001, reason: "tab closed", wantCode: 1001, wantReason: "tab closed", label: "1001"},
		{name: "an application code from the client reaches the upstream", by: "client", code: 4000, reason: "app says", wantCode: 4000, wantReason: "app says", label: "other"},
		{name: "a client close without a status becomes 1011", by: "client", code: websocket.StatusNoStatusRcvd, wantCode: 1011, label: "1005"},
		{name: "a client that drops gives the upstream 1011", by: "client", code: 0, wantCode: 1011, wantReason: "client connection lost", label: "1006"},
		{name: "a normal closure from the upstream reaches the client", by: "upstream", code: 1000, reason: "bye", wantCode: 1000, wantReason: "bye", label: "1000"},
		{name: "try-again-later from the upstream reaches the client", by: "upstream", code: 1013, reason: "overloaded", wantCode: 1013, wantReason: "overloaded", label: "1013"},
		{name: "an application code from the upstream reaches the client", by: "upstream", code: 4002, reason: "x", wantCode: 4002, wantReason: "x", label: "other"},
		{name: "an upstream close without a status becomes 1011", by: "upstream", code: websocket.StatusNoStatusRcvd, wantCode: 1011, label: "1011"},
		{name: "an upstream that drops gives the client 1011", by: "upstream", code: 0, wantCode: 1011, wantReason: "upstream connection lost", label: "1011"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, testPolicy)
			c, _ := h.dial(t, PathResponses, nil)
			fc := h.up.next(t)
			var got websocket.CloseError
			if tc.by == "client" {
				if tc.code == 0 {
					_ = c.CloseNow()
				} else {
					_ = c.Close(tc.code, tc.reason)
				}
				if !errors.As(fc.waitClosed(t), &got) {
					got.Code = -1
				}
			} else {
				if tc.code == 0 {
					send(t, c, `{"type":"test.drop"}`)
				} else {
					send(t, c, fmt.Sprintf(`{"type":"test.close","code":%d,"reason":%q}`, tc.code, tc.reason))
				}
				got, _ = closed(t, c)
			}
			if got.Code != tc.wantCode || got.Reason != tc.wantReason {
				t.Errorf("the other side saw %d %q, want %d %q", got.Code, got.Reason, tc.wantCode, tc.wantReason)
			}
			h.waitSessions(t)
			want := fmt.Sprintf(`tiergate_ws_sessions_total{close_code=%q,endpoint="responses_ws"} 1`, tc.label)
			checkSeries(t, gatherText(t, h), want)
		})
	}
}

// TestSessionLimits checks the idle timeout (data frames count, pings do
// not) and the maximum session length.
func TestSessionLimits(t *testing.T) {
	t.Parallel()
	const limit, keepLimit = 400 * time.Millisecond, 1500 * time.Millisecond
	cases := []struct {
		name string
		opts func(*Options)
		// keep runs against the open session until it returns.
		keep       func(t *testing.T, c *websocket.Conn)
		code       websocket.StatusCode
		reason     string
		minElapsed time.Duration
	}{
		{
			name: "a session with no data frame for the idle timeout is closed 1008 on both sides",
			opts: func(o *Options) { o.IdleTimeout = limit },
			code: websocket.StatusPolicyViolation, reason: "idle timeout", minElapsed: limit,
		},
		{
			name: "pings do not keep a session from idling out",
			opts: func(o *Options) { o.IdleTimeout = limit },
			keep: func(t *testing.T, c *websocket.Conn) {
				for range 12 {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					err := c.Ping(ctx)
					cancel()
					if err != nil {
						return // closed, as it should be
					}
					time.Sleep(50 * time.Millisecond)
				}
			},
			code: websocket.StatusPolicyViolation, reason: "idle timeout", minElapsed: limit,
		},
		{
			// A longer timeout: a frame sent late on a loaded machine must
			// not count as the session idling.
			name: "data frames keep a session open past the idle timeout",
			opts: func(o *Options) { o.IdleTimeout = keepLimit },
			keep: func(t *testing.T, c *websocket.Conn) {
				for range 8 {
					send(t, c, `{"type":"response.processed","response_id":"resp_0"}`)
					time.Sleep(keepLimit / 4)
				}
			},
			code: websocket.StatusPolicyViolation, reason: "idle timeout", minElapsed: 2 * keepLimit,
		},
		{
			name: "a session is closed 1001 at the maximum session length",
			opts: func(o *Options) { o.MaxSession = limit },
			keep: func(t *testing.T, c *websocket.Conn) {
				for range 20 {
					if c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"response.processed"}`)) != nil {
						return
					}
					time.Sleep(limit / 8)
				}
			},
			code: websocket.StatusGoingAway, reason: "maximum session length reached", minElapsed: limit,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, testPolicy, tc.opts)
			start := time.Now()
			c, _ := h.dial(t, PathResponses, nil)
			fc := h.up.next(t)
			done := make(chan websocket.CloseError, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for {
					if _, _, err := c.Read(ctx); err != nil {
						var ce websocket.CloseError
						errors.As(err, &ce)
						done <- ce
						return
					}
				}
			}()
			if tc.keep != nil {
				tc.keep(t, c)
			}
			ce := <-done
			elapsed := time.Since(start)
			if ce.Code != tc.code || ce.Reason != tc.reason {
				t.Errorf("the client saw %d %q, want %d %q", ce.Code, ce.Reason, tc.code, tc.reason)
			}
			if elapsed < tc.minElapsed {
				t.Errorf("closed after %v, want at least %v", elapsed, tc.minElapsed)
			}
			var up websocket.CloseError
			if !errors.As(fc.waitClosed(t), &up) || up.Code != tc.code || up.Reason != tc.reason {
				t.Errorf("the upstream saw %v, want %d %q", up, tc.code, tc.reason)
			}
		})
	}
}

// TestLargeFrames relays 10 MiB frames both ways intact, and ends a session
// whose client exceeds the read limit.
func TestLargeFrames(t *testing.T) {
	t.Parallel()
	pad := strings.Repeat("abcdefghij", 1<<20) // 10 MiB
	t.Run("a 10 MiB response.create is policed and relayed intact", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, testPolicy)
		c, _ := h.dial(t, PathResponses, nil)
		fc := h.up.next(t)
		send(t, c, `{"type":"response.create","model":"gpt-5.4","service_tier":"priority","input":"`+pad+`"}`)
		until(t, c, "response.completed")
		got := waitFrames(t, fc, 1)[0]
		if want := `{"type":"response.create","model":"gpt-5.4","input":"` + pad + `"}`; string(got.data) != want {
			t.Errorf("the upstream received %d bytes, want the %d of the filtered frame", len(got.data), len(want))
		}
	})
	t.Run("a 10 MiB event comes back intact", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, testPolicy)
		c, _ := h.dial(t, PathRealtime+"?model=gpt-realtime", nil)
		fc := h.up.next(t)
		until(t, c, "session.created")
		frame := []byte(`{"type":"test.echo","audio":"` + pad + `"}`)
		if err := c.Write(context.Background(), websocket.MessageBinary, frame); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		typ, back, err := c.Read(ctx)
		if err != nil || typ != websocket.MessageBinary || !bytes.Equal(back, frame) {
			t.Fatalf("echo: %v %v, %d bytes, equal %v", err, typ, len(back), bytes.Equal(back, frame))
		}
		if got := waitFrames(t, fc, 1)[0]; !bytes.Equal(got.data, frame) {
			t.Error("the upstream received the frame altered")
		}
	})
	t.Run("a frame beyond the read limit ends the session with 1009", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, testPolicy, func(o *Options) { o.ReadLimit = 1 << 20 })
		c, _ := h.dial(t, PathResponses, nil)
		fc := h.up.next(t)
		_ = c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"response.create","input":"`+pad[:2<<20]+`"}`))
		ce, _ := closed(t, c)
		if ce.Code != websocket.StatusMessageTooBig {
			t.Errorf("the client saw %v, want 1009", ce)
		}
		var up websocket.CloseError
		if !errors.As(fc.waitClosed(t), &up) || up.Code != websocket.StatusGoingAway || len(fc.received()) != 0 {
			t.Errorf("the upstream saw %v after %d frames, want 1001 and none", up, len(fc.received()))
		}
	})
	t.Run("an upstream event beyond the read limit ends the session with 1011", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, testPolicy, func(o *Options) { o.ReadLimit = 1 << 20 })
		c, _ := h.dial(t, PathResponses, nil)
		fc := h.up.next(t)
		send(t, c, `{"type":"response.create","model":"gpt-5.4","metadata":{"fake":"flood:1:2097152"}}`)
		var ce websocket.CloseError
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _, err := c.Read(ctx)
			cancel()
			if err != nil {
				if !errors.As(err, &ce) {
					t.Fatalf("the session ended without a close frame: %v", err)
				}
				break
			}
		}
		if ce.Code != websocket.StatusInternalError || ce.Reason != reasonUpBig {
			t.Errorf("the client saw %v, want 1011 %q", ce, reasonUpBig)
		}
		fc.waitClosed(t)
		h.waitSessions(t)
		if recs := h.records(); len(recs) != 1 || recs[0]["status"] != usage.StatusUpstreamClosed {
			t.Errorf("records %v; want the turn recorded %s", recs, usage.StatusUpstreamClosed)
		}
	})
}

// TestSlowClientSlowsTheUpstream floods a client that does not read: the
// upstream's writes must block once the sockets' buffers are full (the
// bridge holds one message, not the flood), and everything must arrive,
// in order, once the client reads.
func TestSlowClientSlowsTheUpstream(t *testing.T) {
	t.Parallel()
	const (
		frames = 48
		size   = 1 << 20
	)
	h := newHarness(t, testPolicy, func(o *Options) { o.WriteTimeout = time.Minute })
	h.up.floodWrites = make(chan floodWrite, frames)
	c, _ := h.dial(t, PathResponses, nil)
	send(t, c, fmt.Sprintf(`{"type":"response.create","model":"gpt-5.4","metadata":{"fake":"flood:%d:%d"}}`, frames, size))
	var blockedAt int
	deadline := time.After(30 * time.Second)
	for blockedAt == 0 {
		select {
		case w := <-h.up.floodWrites:
			if w.blocked {
				blockedAt = w.n
			}
			if w.n == frames && !w.blocked {
				t.Fatalf("the upstream wrote all %d MiB to a client that reads nothing: something buffers without bound", frames)
			}
		case <-deadline:
			t.Fatal("the flood neither blocked nor finished")
		}
	}
	// Loopback sockets hold some megabytes each way; the bridge, one frame.
	if blockedAt > 40 {
		t.Errorf("the upstream's writes blocked only after %d MiB", blockedAt)
	}
	t.Logf("the upstream blocked at write %d of %d (1 MiB each)", blockedAt, frames)
	var deltas int
	for {
		ev := next(t, c)
		if ev.Get("type").Str == "response.output_text.delta" {
			if n := len(ev.Get("delta").Str); n != size {
				t.Fatalf("delta %d has %d bytes", deltas, n)
			}
			deltas++
		}
		if ev.Get("type").Str == "response.completed" {
			break
		}
	}
	if deltas != frames {
		t.Errorf("the client received %d deltas, want %d", deltas, frames)
	}
}

// TestShutdownDrains starts two sessions, then drains: new upgrades are
// refused with 503 at once, a session that finishes within the grace ends
// on its own terms, and the one still mid-turn when the grace runs out is
// closed with 1001 on both sides and its turn recorded as cut short.
func TestShutdownDrains(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy)
	quick, _ := h.dial(t, PathResponses, nil)
	quickUp := h.up.next(t)
	slow, _ := h.dial(t, PathResponses, nil)
	slowUp := h.up.next(t)
	send(t, slow, `{"type":"response.create","model":"gpt-5.4","metadata":{"fake":"hang"}}`)
	until(t, slow, "response.output_text.delta")

	// The grace ends when the test ends it, not on a timer, so a slow
	// machine cannot run the quick session out of time.
	grace, endGrace := context.WithCancel(context.Background())
	defer endGrace()
	var wg sync.WaitGroup
	var shutdownErr error
	var returned atomic.Bool
	wg.Add(1)
	go func() {
		defer wg.Done()
		shutdownErr = h.bridge.Shutdown(grace)
		returned.Store(true)
	}()
	for h.bridge.Ready() {
		time.Sleep(time.Millisecond)
	}
	// A new session is refused while draining.
	_, resp, err := websocket.Dial(context.Background(), h.wsURL(PathResponses), nil)
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Errorf("an upgrade while draining: %v %v, want 503", resp, err)
	}
	// The quick session still works within the grace, then ends itself.
	send(t, quick, `{"type":"response.create","model":"gpt-5.4"}`)
	until(t, quick, "response.completed")
	_ = quick.Close(websocket.StatusNormalClosure, "finished")
	if err := quickUp.waitClosed(t); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("the quick session's upstream saw %v", err)
	}
	if returned.Load() {
		t.Error("Shutdown returned within the grace with a session still open")
	}
	// The slow one is closed at the end of the grace.
	endGrace()
	ce, _ := closed(t, slow)
	if ce.Code != websocket.StatusGoingAway || ce.Reason != "tiergate is shutting down" {
		t.Errorf("the slow client saw %v, want 1001", ce)
	}
	var up websocket.CloseError
	if !errors.As(slowUp.waitClosed(t), &up) || up.Code != websocket.StatusGoingAway {
		t.Errorf("the slow session's upstream saw %v, want 1001", up)
	}
	wg.Wait()
	if !errors.Is(shutdownErr, context.Canceled) {
		t.Errorf("Shutdown returned %v, want the grace's end (context canceled)", shutdownErr)
	}
	if n := h.bridge.Sessions(); n != 0 {
		t.Errorf("%d sessions open after Shutdown returned", n)
	}
	var statuses []string
	for _, r := range h.records() {
		statuses = append(statuses, r["status"].(string))
	}
	if strings.Join(statuses, ",") != "completed,client_closed" {
		t.Errorf("records %v, want the quick turn completed and the slow one client_closed", statuses)
	}
}

// TestShutdownWithNothingOpenReturnsAtOnce checks the easy drain.
func TestShutdownWithNothingOpenReturnsAtOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy)
	c, _ := h.dial(t, PathResponses, nil)
	_ = c.Close(websocket.StatusNormalClosure, "")
	h.waitSessions(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if err := h.bridge.Shutdown(ctx); err != nil || time.Since(start) > time.Second {
		t.Errorf("Shutdown: %v after %v", err, time.Since(start))
	}
}
