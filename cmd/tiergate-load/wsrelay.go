package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tiergate/tiergate/wsbridge"
)

// minimalRelay is the floor for any WebSocket bridge on this machine: dial
// the upstream, accept the client, and copy messages both ways on two
// goroutines with the library tiergate uses, with the bridge's read limit
// and no compression. No policy, no accounting, no timeouts, no metrics;
// a close from one side is passed to the other with its code. Like the
// bridge, it dials before accepting and lets the handler return once the
// pumps run, so the two differ only in what the bridge does on top.
type minimalRelay struct {
	upstream string // ws://host:port, the client's path and query appended
	client   *http.Client
}

func newMinimalRelay(upstream string) *minimalRelay {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ForceAttemptHTTP2 = false // an upgrade cannot ride HTTP/2
	return &minimalRelay{upstream: strings.TrimSuffix(upstream, "/"), client: &http.Client{Transport: t}}
}

func (m *minimalRelay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up, _, err := websocket.Dial(r.Context(), m.upstream+r.URL.RequestURI(), &websocket.DialOptions{HTTPClient: m.client})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		_ = up.CloseNow()
		return
	}
	up.SetReadLimit(wsbridge.DefaultReadLimit)
	c.SetReadLimit(wsbridge.DefaultReadLimit)
	go pipe(up, c)
	go pipe(c, up)
}

// pipe copies messages from src to dst until either fails. Background
// contexts, as in the bridge: a cancellable one costs a timer per call.
func pipe(dst, src *websocket.Conn) {
	ctx := context.Background()
	for {
		typ, p, err := src.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				code := ce.Code
				if code == websocket.StatusNoStatusRcvd || code == websocket.StatusAbnormalClosure {
					code = websocket.StatusInternalError // cannot be sent
				}
				_ = dst.Close(code, ce.Reason)
			}
			_ = dst.CloseNow()
			_ = src.CloseNow()
			return
		}
		if err := dst.Write(ctx, typ, p); err != nil {
			_ = dst.CloseNow()
			_ = src.CloseNow()
			return
		}
	}
}

// runWSRelay serves the minimal relay until ctx ends. With --admin-listen
// it serves /metrics from a registry holding the Go and process collectors,
// registered as tiergate serve registers them, so that the load tool reads
// both processes' heap (go_memstats_heap_inuse_bytes) the same way.
func runWSRelay(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("ws-relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8091", "address to serve on (port 0 picks a free one; the log line names it)")
	upstream := fs.String("upstream", "ws://127.0.0.1:8090", "base URL dialled for each session (ws://); the client's path and query are appended")
	admin := fs.String("admin-listen", "", "if set, serve /metrics here (Go and process collectors, as tiergate's admin listener)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("ws-relay: unexpected argument %q", fs.Arg(0))
	}
	if !strings.HasPrefix(*upstream, "ws://") {
		return fmt.Errorf("--upstream %q: want ws://host:port", *upstream)
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	errc := make(chan error, 2)
	if *admin != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		closeAdmin, err := serveMetrics(*admin, reg, log, errc)
		if err != nil {
			return err
		}
		defer closeAdmin()
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("listening", "listener", "ws-relay", "address", ln.Addr().String(), "upstream", *upstream)
	go func() { errc <- serveUntil(ctx, ln, newMinimalRelay(*upstream)) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	return <-errc
}
