package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tiergate/tiergate/extproc"
)

// nullServer answers every ext_proc message with CONTINUE for its phase and
// never looks inside it (with echo, it hands the body back unread). It is
// the floor for any ext_proc server on this gRPC stack: what remains of a
// server's cost once the policy costs nothing. gRPC still decodes each
// message, as it must for any real server built on go-control-plane's
// generated service.
type nullServer struct {
	extprocv3.UnimplementedExternalProcessorServer
	// echo answers a request body with a mutation carrying the same bytes
	// (and content-length): the floor for a server that rewrites bodies,
	// which must send the whole body back whatever it changed.
	echo bool
	// metadata adds, to the body answer and to the response's last answer,
	// dynamic metadata of the shape and size tiergate sends there (its
	// decision, then the usage): with echo, the floor for any server that
	// keeps tiergate's contract with Envoy, whatever its policy costs.
	metadata bool
	// duration, when set, times each message as tiergate times its own
	// (from the message received to its answer sent), so that both
	// servers' time per message is read with the same ruler.
	duration *prometheus.HistogramVec
}

// The answers are built once and shared by every stream: they are never
// mutated, and protobuf-go marshals a shared message safely from many
// goroutines.
var (
	nullRequestHeaders = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
	nullRequestBody = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}}
	nullRequestTrailers = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
		RequestTrailers: &extprocv3.TrailersResponse{}}}
	nullResponseHeaders = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
	nullResponseBody = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}}
	nullResponseTrailers = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
		ResponseTrailers: &extprocv3.TrailersResponse{}}}
)

// Process answers each message in order until the client ends the stream.
func (n *nullServer) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var began time.Time
		if n.duration != nil {
			began = time.Now()
		}
		var resp *extprocv3.ProcessingResponse
		phase := phaseOther
		switch r := req.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp, phase = nullRequestHeaders, phaseHeaders
		case *extprocv3.ProcessingRequest_RequestBody:
			resp, phase = nullRequestBody, phaseBody
			if n.echo {
				resp = echoBody(r.RequestBody.GetBody())
			}
			if n.metadata {
				if resp == nullRequestBody {
					resp = &extprocv3.ProcessingResponse{Response: nullRequestBody.Response}
				}
				resp.ProtoReflect().SetUnknown(decisionMetadata)
			}
		case *extprocv3.ProcessingRequest_RequestTrailers:
			resp = nullRequestTrailers
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp, phase = nullResponseHeaders, phaseResponseHeaders
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp, phase = nullResponseBody, phaseResponseBody
			if n.metadata && r.ResponseBody.GetEndOfStream() {
				resp = nullUsageAnswer
			}
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			resp = nullResponseTrailers
		default:
			return fmt.Errorf("unexpected ext_proc message %T", req.Request)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		if n.duration != nil {
			n.duration.WithLabelValues(phase).Observe(time.Since(began).Seconds())
		}
	}
}

// The null server's metadata (--metadata): tiergate's fields for a filtered
// Responses request and its usage, as the ProcessingResponse.dynamic_metadata
// field's wire form, encoded once and carried as an unknown field, so that
// sending it costs the null server a copy and Envoy what tiergate's costs it.
var (
	decisionMetadata = metadataWire(map[string]*structpb.Value{
		"endpoint": structpb.NewStringValue("responses"), "action": structpb.NewStringValue("filter"),
		"service_tier_requested": structpb.NewStringValue("priority"), "service_tier_sent": structpb.NewStringValue("default"),
		"rule": structpb.NewStringValue("#1"), "group": structpb.NewStringValue("default"),
		"model": structpb.NewStringValue("gpt-5.5"), "budget": structpb.NewStringValue(""),
	})
	nullUsageAnswer = func() *extprocv3.ProcessingResponse {
		a := &extprocv3.ProcessingResponse{Response: nullResponseBody.Response}
		a.ProtoReflect().SetUnknown(metadataWire(map[string]*structpb.Value{
			"status": structpb.NewStringValue("completed"), "service_tier_reported": structpb.NewStringValue("default"),
			"input_tokens": structpb.NewNumberValue(812), "cached_input_tokens": structpb.NewNumberValue(512),
			"cache_write_input_tokens": structpb.NewNumberValue(0), "output_tokens": structpb.NewNumberValue(38),
			"reasoning_tokens": structpb.NewNumberValue(12),
		}))
		return a
	}()
)

// metadataWire is fields as namespace tiergate of a ProcessingResponse's
// dynamic_metadata, in wire form.
func metadataWire(fields map[string]*structpb.Value) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&extprocv3.ProcessingResponse{
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"tiergate": structpb.NewStructValue(&structpb.Struct{Fields: fields}),
		}},
	})
	if err != nil {
		panic(fmt.Sprintf("null-extproc: encoding metadata: %v", err))
	}
	return b
}

// echoBody answers a request body with itself as a body mutation, with
// content-length set as tiergate sets it.
func echoBody(body []byte) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "content-length", RawValue: strconv.AppendInt(nil, int64(len(body)), 10)},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}}},
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}},
		}},
	}}
}

// nullDurationBuckets are the bounds (le) of tiergate's histogram of time
// per message, as its /metrics lists them; 100 µs, the target for a body
// message, is one (TestNullHistogramHasTiergatesShape holds them equal).
var nullDurationBuckets = []float64{5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1}

// newNullDuration is tiergate's histogram of time per message, with its
// name, label and buckets, so that the load tool's --admin reads either
// server.
func newNullDuration(reg prometheus.Registerer) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    serverHistogram,
		Help:    "Null server: time to answer one ext_proc message, by phase, measured as tiergate measures its own.",
		Buckets: nullDurationBuckets,
	}, []string{"phase"})
	reg.MustRegister(h)
	for _, p := range []string{phaseHeaders, phaseBody, phaseResponseHeaders, phaseResponseBody} {
		h.WithLabelValues(p)
	}
	return h
}

// newNullGRPCServer is the null server on a gRPC server built as tiergate
// builds its own (tiergate's gRPC stack: a fair baseline).
func newNullGRPCServer(maxMsg int, n *nullServer) *grpc.Server {
	g, _ := extproc.NewGRPCServer(maxMsg)
	extprocv3.RegisterExternalProcessorServer(g, n)
	return g
}

// runNull serves the null server until ctx ends. Its log lines, one per
// listener, have tiergate serve's shape ({"msg":"listening","address":...}
// on stderr), so scripts wait for both the same way.
func runNull(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("null-extproc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:50061", "address to serve on (port 0 picks a free one; the log line names it)")
	echo := fs.Bool("echo", false, "answer each request body with a mutation carrying the same bytes: the floor for a server that rewrites bodies")
	metadata := fs.Bool("metadata", false, "add dynamic metadata of the shape and size tiergate sends (its decision on the body answer, the usage on the response's last): with --echo, the floor for a server that keeps tiergate's contract with Envoy")
	admin := fs.String("admin-listen", "", "if set, serve /metrics here with the time per message in tiergate's histogram, measured as tiergate measures it")
	maxMsg := fs.Int("grpc-max-message-bytes", defaultMaxMsg, "largest message accepted or sent, as tiergate serve's flag of the same name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("null-extproc: unexpected argument %q", fs.Arg(0))
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	n := &nullServer{echo: *echo, metadata: *metadata}
	errc := make(chan error, 2)
	if *admin != "" {
		reg := prometheus.NewRegistry()
		n.duration = newNullDuration(reg)
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
	g := newNullGRPCServer(*maxMsg, n)
	log.Info("listening", "listener", "null-extproc", "address", ln.Addr().String())
	go func() { errc <- g.Serve(ln) }()
	select {
	case err := <-errc:
		g.Stop()
		return err
	case <-ctx.Done():
	}
	// Let streams in flight end; a client that never ends one is cut.
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		g.Stop()
		<-stopped
	}
	return nil
}
