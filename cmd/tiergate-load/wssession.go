package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/wsbridge"
)

// createFrame is one turn's request: a ~200-byte response.create asking for
// priority, as Codex sends it (wsbridge's BenchmarkTurn uses the same). The
// default policy filters it, so through tiergate every frame is rewritten.
var createFrame = []byte(`{"type":"response.create","model":"gpt-5.4","service_tier":"priority","store":false,` +
	`"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"Say hello to the benchmark, briefly."}]}]}`)

// wsSession is one client connection of the load.
type wsSession struct {
	c   *websocket.Conn
	buf []byte // the last event read, reused for every event
	// began is when the turn in progress started (UnixNano), 0 between
	// turns; the guard cuts a session whose turn outlives the timeout.
	began atomic.Int64
}

// dialWS opens one session on target. Compression is off, as in every
// part of the benchmark.
func dialWS(ctx context.Context, client *http.Client, target string, timeout time.Duration) (*wsSession, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, _, err := websocket.Dial(ctx, target, &websocket.DialOptions{HTTPClient: client, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(wsbridge.DefaultReadLimit)
	return &wsSession{c: c, buf: make([]byte, 0, 1024)}, nil
}

// turn sends one response.create and reads the turn's events, checking each:
// response.created, one response.output_text.delta, then response.completed
// with usage and service_tier. kind names the failure in a bounded set (the
// report counts by it); broken says the session is in an unknown state and
// must not be reused. An upstream error event ends the turn but not the
// session.
//
// Reads and writes take context.Background: a cancellable context costs
// coder/websocket a timer per call, which the load tool would pay thousands
// of times a second on the cores it shares with the target. The guard
// enforces the timeout instead.
func (s *wsSession) turn() (kind string, broken bool, err error) {
	ctx := context.Background()
	s.began.Store(time.Now().UnixNano())
	defer s.began.Store(0)
	if err := s.c.Write(ctx, websocket.MessageText, createFrame); err != nil {
		return "write: " + closeKind(err), true, err
	}
	want := [...]string{"response.created", "response.output_text.delta", "response.completed"}
	for i := range want {
		_, r, err := s.c.Reader(ctx)
		if err != nil {
			return "read: " + closeKind(err), true, err
		}
		if s.buf, err = readAll(r, s.buf); err != nil {
			return "read: " + closeKind(err), true, err
		}
		typ := gjson.GetBytes(s.buf, "type").Str
		switch {
		case typ == "error":
			return "upstream error event", false, fmt.Errorf("error event: %.300s", s.buf)
		case typ != want[i]:
			return "unexpected event", true, fmt.Errorf("event %d of the turn is %q, want %q: %.300s", i+1, typ, want[i], s.buf)
		}
	}
	got := gjson.GetManyBytes(s.buf, "response.usage.total_tokens", "response.service_tier")
	if !got[0].Exists() || got[1].Str == "" {
		return "response.completed without usage or service_tier", false, fmt.Errorf("%.400s", s.buf)
	}
	return "", false, nil
}

// closeKind is the bounded part of a read or write error: the close code
// when the peer closed, else that the connection failed.
func closeKind(err error) string {
	if code := websocket.CloseStatus(err); code != -1 {
		return fmt.Sprintf("closed with %d", int(code))
	}
	return "connection failed"
}

// guard cuts sessions whose turn has run past the timeout, and every
// session when the run is interrupted, so that no read blocks forever (the
// turns themselves run without deadlines; see turn). One goroutine and one
// ticker for all sessions.
type guard struct {
	mu       sync.Mutex
	sessions map[*wsSession]struct{}
	stop     chan struct{}
	done     chan struct{}
}

func newGuard(ctx context.Context, timeout time.Duration) *guard {
	g := &guard{sessions: map[*wsSession]struct{}{}, stop: make(chan struct{}), done: make(chan struct{})}
	tick := min(max(timeout/4, 10*time.Millisecond), time.Second)
	go func() {
		defer close(g.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-ctx.Done():
				g.cut(func(*wsSession) bool { return true })
				return
			case <-t.C:
			}
			now := time.Now().UnixNano()
			g.cut(func(s *wsSession) bool {
				b := s.began.Load()
				return b != 0 && now-b > int64(timeout)
			})
		}
	}()
	return g
}

// cut closes, without a handshake, the sessions for which which is true:
// their blocked reads and writes return at once.
func (g *guard) cut(which func(*wsSession) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for s := range g.sessions {
		if which(s) {
			_ = s.c.CloseNow()
		}
	}
}

func (g *guard) add(s *wsSession) {
	g.mu.Lock()
	g.sessions[s] = struct{}{}
	g.mu.Unlock()
}

// finish stops the guard without cutting anything.
func (g *guard) finish() {
	close(g.stop)
	<-g.done
}
