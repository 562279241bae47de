package main

import (
	"log/slog"
	"time"

	"google.golang.org/grpc"
)

// stopGRPC lets open streams (requests in flight through Envoy) finish
// within grace, then cuts the rest.
func stopGRPC(g *grpc.Server, grace time.Duration, log *slog.Logger) {
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		log.Warn("shutdown grace over; closing open ext_proc streams")
		g.Stop()
		<-done
	}
}
