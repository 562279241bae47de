package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
)

// upstreamResponse is the stand-in provider's answer to every request: a
// completed Responses API response with usage and the tier that served it,
// so that tiergate's response path (headers, the streamed body, usage
// accounting) runs for every request through Envoy.
const upstreamResponse = `{"id":"resp_bench","object":"response","created_at":1765000000,"status":"completed",` +
	`"model":"gpt-5.5-2026-03-05","service_tier":"default","output":[{"type":"message","id":"msg_bench",` +
	`"status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],` +
	`"text":"Done: parse() keeps quoted keys and the tests pass."}]}],` +
	`"usage":{"input_tokens":812,"input_tokens_details":{"cached_tokens":512,"cache_write_tokens":0},` +
	`"output_tokens":38,"output_tokens_details":{"reasoning_tokens":12},"total_tokens":850}}`

// priorityMark is what a request body carries when it asks for priority.
var priorityMark = []byte(`"service_tier":"priority"`)

// httpUpstream is the stand-in for the provider behind Envoy. It counts the
// requests and those that still asked for priority on arrival, so that a
// benchmark can check what went through: all of them through the null
// ext_proc server, none through tiergate's filter policy.
type httpUpstream struct {
	requests, priority atomic.Int64
}

// upstreamCounts is GET /counts's answer.
type upstreamCounts struct {
	Requests int64 `json:"requests"`
	Priority int64 `json:"priority"`
}

func (u *httpUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/counts" {
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(upstreamCounts{Requests: u.requests.Load(), Priority: u.priority.Load()})
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	u.requests.Add(1)
	if bytes.Contains(body, priorityMark) {
		u.priority.Add(1)
	}
	w.Header().Set("content-type", "application/json")
	w.Header().Set("content-length", strconv.Itoa(len(upstreamResponse)))
	_, _ = io.WriteString(w, upstreamResponse)
}

// runHTTPUpstream serves the stand-in provider over plain HTTP/1.1 until
// ctx ends (Envoy reaches it with envoyrig's PlainUpstreams).
func runHTTPUpstream(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("http-upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:18443", "address to serve on (port 0 picks a free one; the log line names it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("http-upstream: unexpected argument %q", fs.Arg(0))
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("listening", "listener", "http-upstream", "address", ln.Addr().String())
	return serveUntil(ctx, ln, &httpUpstream{})
}

// runBody prints the Responses body the extproc driver sends, for an HTTP
// load generator to post through Envoy (scripts/bench-envoy.sh).
func runBody(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("body", flag.ContinueOnError)
	fs.SetOutput(stderr)
	size := fs.Int("size", 2048, "body size in bytes (a Responses request asking for priority)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := responsesBody(*size)
	if err != nil {
		return err
	}
	_, err = stdout.Write(b)
	return err
}
