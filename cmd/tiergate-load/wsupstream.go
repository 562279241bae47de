package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/tiergate/tiergate/wsbridge"
)

// fakeUpstream plays the Responses API's WebSocket mode (docs/contracts.md,
// "Wire facts") as cheaply as it can: each response.create is answered with
// response.created, one response.output_text.delta and response.completed
// carrying usage and the service_tier billed. It is the far end of every
// benchmark session, and with the clients it is the "direct" baseline, so
// it parses nothing beyond the frame's type and allocates nothing per turn.
type fakeUpstream struct {
	// failEvery > 0 answers every failEvery-th turn (counted over all
	// connections) with a broken reply, a response.completed without usage
	// or service_tier, so tests can check that the driver counts it.
	failEvery uint64
	turns     atomic.Uint64
	ids       atomic.Uint64
}

func (f *fakeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// No compression: the benchmark measures relaying, not deflate.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(wsbridge.DefaultReadLimit)
	// Background, not the request's context: a cancellable context costs
	// coder/websocket a timer per call, and the session ends when the peer
	// closes anyway.
	ctx := context.Background()
	in := make([]byte, 0, 1024)
	out := make([]byte, 0, 1024)
	for {
		typ, rd, err := c.Reader(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				_ = c.Close(websocket.StatusNormalClosure, "")
			}
			return
		}
		if in, err = readAll(rd, in); err != nil {
			return
		}
		if typ != websocket.MessageText || !bytes.Contains(in, []byte(`"type":"response.create"`)) {
			out = append(out[:0], `{"type":"error","status":400,"error":{"type":"invalid_request_error","code":"unknown_event","message":"the fake upstream answers response.create only","param":null}}`...)
			if c.Write(ctx, websocket.MessageText, out) != nil {
				return
			}
			continue
		}
		n := f.turns.Add(1)
		id := f.ids.Add(1)
		broken := f.failEvery > 0 && n%f.failEvery == 0
		for _, ev := range []func([]byte, uint64, bool) []byte{appendCreated, appendDelta, appendCompleted} {
			out = ev(out[:0], id, broken)
			if c.Write(ctx, websocket.MessageText, out) != nil {
				return
			}
		}
	}
}

// The three events of a turn, in the shapes the Responses API sends over SSE
// and WebSocket alike (docs/contracts.md, "Wire facts"), type first, as the
// API sends it.
func appendCreated(b []byte, id uint64, _ bool) []byte {
	b = append(b, `{"type":"response.created","sequence_number":0,"response":{"id":"resp_`...)
	b = strconv.AppendUint(b, id, 10)
	return append(b, `","object":"response","created_at":1767225600,"status":"in_progress","model":"gpt-5.4-2026-01-01","output":[],"usage":null}}`...)
}

func appendDelta(b []byte, id uint64, _ bool) []byte {
	b = append(b, `{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_`...)
	b = strconv.AppendUint(b, id, 10)
	return append(b, `","output_index":0,"content_index":0,"delta":"Hello, benchmark."}`...)
}

func appendCompleted(b []byte, id uint64, broken bool) []byte {
	b = append(b, `{"type":"response.completed","sequence_number":2,"response":{"id":"resp_`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `","object":"response","created_at":1767225600,"status":"completed","model":"gpt-5.4-2026-01-01",`...)
	b = append(b, `"output":[{"type":"message","id":"msg_`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello, benchmark.","annotations":[]}]}]`...)
	if broken {
		return append(b, `}}`...)
	}
	return append(b, `,"service_tier":"default","usage":{"input_tokens":42,"input_tokens_details":{"cached_tokens":0},"output_tokens":4,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":46}}}`...)
}

// readAll reads a whole message into buf[:0], growing it as needed, so that
// a session reuses one buffer for all its messages.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// serveUntil serves h on ln over HTTP/1.1 until ctx ends, for the stand-in
// providers and the relay. WebSocket sessions are hijacked connections,
// which http.Server.Close does not end: each handler ends when its peer
// closes.
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	err := srv.Close()
	<-errc
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runWSUpstream serves the fake upstream on its own until ctx ends (the ws
// command can also run it in process with --upstream-listen). Its log line
// has the shape of tiergate serve's, so scripts and tests find the port.
func runWSUpstream(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("ws-upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8090", "address to serve on (port 0 picks a free one; the log line names it)")
	failEvery := fs.Uint64("fail-every", 0, "answer every Nth turn with a broken response.completed (no usage), to test the driver's checks")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("ws-upstream: unexpected argument %q", fs.Arg(0))
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	slog.New(slog.NewJSONHandler(stderr, nil)).Info("listening", "listener", "ws-upstream", "address", ln.Addr().String())
	return serveUntil(ctx, ln, &fakeUpstream{failEvery: *failEvery})
}
