// Command tiergate-load is tiergate's load tool. It plays Envoy's side of
// ext_proc at a chosen concurrency and reports throughput, latency, the
// server's own per-message histogram and its resident memory; it can also
// serve a null ext_proc server, the baseline tiergate is measured against.
//
// It drives only 127.0.0.1 targets in practice (benchmarks run the server,
// the baseline and this tool as three processes on one machine); see
// scripts/bench-extproc.sh and BENCHMARKS.md.
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
