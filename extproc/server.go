package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// Options configure a Server. Store, Registerer, Decisions and Tokens are
// required.
type Options struct {
	// Store holds the policy; each request reads it once, at its headers.
	Store *policy.Store
	// Registerer receives the server's metrics (never the global registry).
	Registerer prometheus.Registerer
	// Decisions and Tokens are shared with the WebSocket bridge.
	Decisions *policy.DecisionMetrics
	Tokens    *usage.Metrics
	// Budgets keeps spend and gives decisions a view of it; nil: budgets
	// in the policy are not enforced (nor spend kept).
	Budgets *budget.Tracker
	// Usage receives one record per request; nil discards them.
	Usage *usage.RecordWriter
	Log   *slog.Logger
	// MaxBodyBytes bounds a decompressed request body (default 64 MiB).
	MaxBodyBytes int64
	// MaxUsageBytes bounds how much of a non-streamed response, or of one
	// SSE event, is held whole to read its usage (default 8 MiB). Beyond it
	// the rest is read as it passes, keeping only the members usage is read
	// from; the response itself is never affected.
	MaxUsageBytes int
}

// Server implements envoy.service.ext_proc.v3.ExternalProcessor.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	opts      Options
	metrics   *metrics
	log       *slog.Logger
	answers   sync.Pool // *bodyAnswer
	decisions *decisionCache
}

// Defaults, shared with tiergate serve's flags and the load tool.
const (
	// DefaultMaxBodyBytes bounds a decompressed request body
	// (Options.MaxBodyBytes): Envoy's buffer limit in envoy.yaml.
	DefaultMaxBodyBytes = 64 << 20
	// DefaultMaxUsageBytes bounds what is kept of a response to read its
	// usage (Options.MaxUsageBytes).
	DefaultMaxUsageBytes = 8 << 20
	// DefaultMaxMessageBytes is the largest gRPC message (ServerOptions):
	// a body at Envoy's 64 MiB buffer limit, plus 16 MiB of headroom for
	// the message around it and a rewrite that grows it.
	DefaultMaxMessageBytes = 80 << 20
)

// New returns a Server; Register it on a grpc.Server.
func New(opts Options) (*Server, error) {
	if opts.Store == nil || opts.Registerer == nil || opts.Decisions == nil || opts.Tokens == nil {
		return nil, errors.New("extproc: Store, Registerer, Decisions and Tokens are required")
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxUsageBytes <= 0 {
		opts.MaxUsageBytes = DefaultMaxUsageBytes
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := newMetrics(opts.Registerer, opts.Tokens)
	if err != nil {
		return nil, err
	}
	return &Server{opts: opts, metrics: m, log: opts.Log, decisions: newDecisionCache()}, nil
}

// Register adds the server to g.
func (s *Server) Register(g *grpc.Server) {
	extprocv3.RegisterExternalProcessorServer(g, s)
}

// Process handles one HTTP request's stream: it answers every message in
// order and writes the request's usage record when the stream ends, however
// it ends.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) (err error) {
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()
	// grpc-go does not recover a handler's panic: one bad input would take
	// the process, and with it every request in the pod, down. The stream
	// fails instead, and Envoy fails that one request closed.
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("ext_proc stream panicked; the request fails closed", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "tiergate: internal error")
		}
	}()
	x := &exchange{srv: s, start: time.Now()}
	defer x.close()
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		began := time.Now()
		if pc := req.GetProtocolConfig(); pc != nil {
			// Sent on the stream's first message only.
			x.buffered = pc.GetRequestBodyMode() == filterv3.ProcessingMode_BUFFERED
			x.noBody = pc.GetRequestBodyMode() == filterv3.ProcessingMode_NONE
		}
		resp, phase, err := x.handle(req)
		if err != nil {
			s.log.Error("ext_proc message failed", "phase", phase, "err", err, "request_id", x.requestID)
			return status.Error(codes.Internal, err.Error())
		}
		if err := x.send(stream, resp); err != nil {
			return err
		}
		x.sent()
		s.metrics.phases[phase].Observe(time.Since(began).Seconds())
		if x.done {
			return nil
		}
	}
}

// send sends resp.
func (x *exchange) send(stream extprocv3.ExternalProcessor_ProcessServer, resp *extprocv3.ProcessingResponse) error {
	return stream.SendMsg(x.outgoing(resp))
}

// outgoing is what goes to gRPC for resp: the body answer goes as itself,
// so that answerCodec can write it.
func (x *exchange) outgoing(resp *extprocv3.ProcessingResponse) any {
	if a := x.answer; a != nil && resp == &a.resp {
		return a
	}
	return resp
}

// handle dispatches one message to its phase.
func (x *exchange) handle(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, string, error) {
	switch r := req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return x.requestHeaders(r.RequestHeaders), phaseRequestHeaders, nil
	case *extprocv3.ProcessingRequest_RequestBody:
		return x.requestBody(r.RequestBody), phaseRequestBody, nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return x.responseHeaders(r.ResponseHeaders), phaseResponseHeaders, nil
	case *extprocv3.ProcessingRequest_ResponseBody:
		return x.responseBody(r.ResponseBody), phaseResponseBody, nil
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{}}}, phaseOther, nil
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
		x.finish(statusFromEnd, resp)
		return resp, phaseOther, nil
	}
	return nil, phaseOther, fmt.Errorf("unexpected ext_proc message %T", req.Request)
}

// getAnswer returns an empty body answer, with buffers kept from its last
// use.
func (s *Server) getAnswer() *bodyAnswer {
	if a, ok := s.answers.Get().(*bodyAnswer); ok {
		return a
	}
	return &bodyAnswer{}
}

// putAnswer recycles a once gRPC has encoded it (Send has returned) or it
// will never be sent.
func (s *Server) putAnswer(a *bodyAnswer) {
	a.reset()
	s.answers.Put(a)
}

// ServerOptions are the grpc.NewServer options tiergate's ext_proc server
// runs with: message limits that fit Envoy's buffered bodies (maxMsg at
// least Envoy's per_connection_buffer_limit_bytes), keepalive enforcement
// that Envoy's HTTP/2 pings (envoy.yaml: every 30s) satisfy, and the codec
// that writes body answers itself (any other message is left to gRPC's
// proto codec). The load tool's null server uses them too, so it is
// measured on the same stack.
func ServerOptions(maxMsg int) []grpc.ServerOption {
	return []grpc.ServerOption{
		answerCodecOption(),
		grpc.MaxRecvMsgSize(maxMsg),
		// Stop waits for the handlers too, so that a stream cut at the end
		// of the shutdown grace has written its usage record before serve
		// flushes the log.
		grpc.WaitForHandlers(true),
		grpc.MaxSendMsgSize(maxMsg),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    2 * time.Minute,
			Timeout: 20 * time.Second,
		}),
		grpc.NumStreamWorkers(streamWorkers),
	}
}

// streamWorkers is how many goroutines are kept to run streams. A stream's
// handler parses bodies and usage on its own stack, which grows past the
// starting size on every stream when each runs on a new goroutine: under
// Envoy, copying stacks was a tenth of tiergate's CPU per request. A
// worker keeps its grown stack from one stream to the next; a stream that
// finds every worker busy (each holds one request for its whole life) runs
// on a new goroutine, as without workers.
const streamWorkers = 64

// NewGRPCServer is the gRPC server tiergate serves ext_proc on, built with
// ServerOptions: it carries the standard health service (SERVING, for the
// whole server and for ExternalProcessor, until the caller says otherwise
// at shutdown) and reflection (so grpcurl needs no proto files). Register
// the processor on it. The load tool's null server is built by it too.
func NewGRPCServer(maxMsg int) (*grpc.Server, *health.Server) {
	g := grpc.NewServer(ServerOptions(maxMsg)...)
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, h)
	reflection.Register(g)
	return g, h
}
