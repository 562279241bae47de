package extproc

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// goroutineRecorder is an ext_proc server that notes which goroutine ran
// each stream.
type goroutineRecorder struct {
	extprocv3.UnimplementedExternalProcessorServer
	mu  sync.Mutex
	ids map[uint64]bool
}

func (g *goroutineRecorder) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	// "goroutine 123 [running]:..."
	field := bytes.Fields(buf)[1]
	id, _ := strconv.ParseUint(string(field), 10, 64)
	g.mu.Lock()
	g.ids[id] = true
	g.mu.Unlock()
	_, _ = stream.Recv() // the client's end of the stream
	return nil
}

// TestStreamsRunOnKeptWorkers: streams run on the server's kept workers,
// whose grown stacks serve the next stream, not on a new goroutine each
// (whose stack would grow again on every request).
func TestStreamsRunOnKeptWorkers(t *testing.T) {
	t.Parallel()
	rec := &goroutineRecorder{ids: map[uint64]bool{}}
	g := grpc.NewServer(ServerOptions(1 << 20)...)
	extprocv3.RegisterExternalProcessorServer(g, rec)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := extprocv3.NewExternalProcessorClient(conn)
	const streams = 3 * streamWorkers
	for range streams {
		s, err := client.Process(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err == nil {
			t.Fatal("the recorder answered")
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if n := len(rec.ids); n > streamWorkers {
		t.Errorf("%d sequential streams ran on %d goroutines, want at most the %d workers", streams, n, streamWorkers)
	}
}
