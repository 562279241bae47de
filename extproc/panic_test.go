package extproc

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tiergate/tiergate/policy"
)

// panickingStream is a stream whose Recv panics, standing in for any bug
// that input could reach in a handler.
type panickingStream struct {
	grpc.ServerStream
}

func (panickingStream) Recv() (*extprocv3.ProcessingRequest, error) { panic("boom") }
func (panickingStream) Send(*extprocv3.ProcessingResponse) error    { return nil }

// TestAPanicFailsOneStreamClosed: a panic in a stream's handler ends that
// stream with codes.Internal (Envoy then fails the request closed) and is
// logged with its stack, instead of taking the process down.
func TestAPanicFailsOneStreamClosed(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	srv := newTestServer(t, prometheus.NewRegistry(), Options{Store: policy.NewStore(policy.Default()), Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	err := srv.Process(panickingStream{})
	if status.Code(err) != codes.Internal {
		t.Fatalf("Process returned %v, want a codes.Internal error", err)
	}
	for _, want := range []string{`"msg":"ext_proc stream panicked; the request fails closed"`, `"panic":"boom"`, `"stack":"goroutine`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %s:\n%s", want, logs.String())
		}
	}
}
