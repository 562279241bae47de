// Command tiergate enforces a service-tier policy on LLM API traffic beside
// Envoy: an ext_proc server for HTTP, a WebSocket bridge for Realtime and
// Responses-over-WebSocket sessions, and the tools to check a policy.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if code, ok := err.(exitCode); ok {
			os.Exit(int(code))
		}
		fmt.Fprintln(os.Stderr, "tiergate:", err)
		os.Exit(1)
	}
}
