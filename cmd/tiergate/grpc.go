package main

import (
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/tiergate/tiergate/extproc"
)

// newGRPCServer builds the ext_proc gRPC server with extproc.ServerOptions,
// the standard health service and reflection (so grpcurl works without
// proto files).
func newGRPCServer(maxMsg int) (*grpc.Server, *health.Server) {
	g := grpc.NewServer(extproc.ServerOptions(maxMsg)...)
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus("envoy.service.ext_proc.v3.ExternalProcessor", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, h)
	reflection.Register(g)
	return g, h
}

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
