// Command tiergate-load is tiergate's load tool. It plays Envoy's side of
// ext_proc at a chosen concurrency and reports throughput, latency, the
// server's own per-message histogram and its resident memory; it can also
// serve a null ext_proc server, the baseline tiergate is measured against.
// For the WebSocket bridge it serves a fake Responses WebSocket upstream and
// a minimal relay (the bridge's baseline), and drives sessions for latency,
// throughput, idle memory and concurrency (ws*.go).
//
// It drives only 127.0.0.1 targets in practice (benchmarks run the server,
// the baseline and this tool as three processes on one machine); see
// scripts/bench-extproc.sh, scripts/bench-ws.sh and BENCHMARKS.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var code exitCode
		if errors.As(err, &code) {
			os.Exit(int(code))
		}
		fmt.Fprintln(os.Stderr, "tiergate-load:", err)
		os.Exit(1)
	}
}
