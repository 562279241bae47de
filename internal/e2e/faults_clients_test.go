package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The bounds the misbehaving clients are held to.
const (
	// clientHeapBound: tiergate's heap (go_memstats_heap_alloc_bytes) may
	// grow at most this much over its idle value while they misbehave.
	clientHeapBound = 96 << 20
	clientTimeout   = 2 * time.Second
)

// TestFaultClients: clients that misbehave cost bounded memory and leave
// no goroutine behind. An ext_proc client (tiergate's gRPC, driven
// directly) cancels its streams mid-body; HTTP clients send headers and
// never their body; a WebSocket client stops reading while its provider
// streams without pause.
func TestFaultClients(t *testing.T) {
	t.Parallel()
	s := startFaultStack(t, testPolicy, faultOptions{
		streamIdleTimeout: clientTimeout,
		tiergateFlags:     []string{"--ws-write-timeout", clientTimeout.String()},
	})
	// Warm: Envoy's connection to tiergate, the bridge, the pools.
	if got := s.send(t, s.h2, http.MethodPost, withID("/v1/responses", newID(t), ""), nil, []byte(`{"model":"gpt-5.4","input":"hi"}`)); got.status != http.StatusOK {
		t.Fatalf("warm-up: status %d", got.status)
	}
	time.Sleep(500 * time.Millisecond)
	idle := s.metrics(t, "go_goroutines", "go_memstats_heap_alloc_bytes")
	baseline, idleHeap := int(idle["go_goroutines"]), idle["go_memstats_heap_alloc_bytes"]
	peak := s.watchHeap(t)

	t.Run("ext_proc streams cancelled mid-body end", func(t *testing.T) {
		conn, err := grpc.NewClient(s.extproc, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		client := extprocv3.NewExternalProcessorClient(conn)
		const streams, bodySize = 100, 1 << 20
		body := append([]byte(`{"model":"gpt-5.4","service_tier":"priority","input":"`), bytes.Repeat([]byte("x"), bodySize)...)
		body = append(body, `"}`...)
		var wg sync.WaitGroup
		errs := make(chan error, streams)
		for i := range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- cancelMidBody(client, body, i%2 == 0)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		s.settleGoroutines(t, baseline+soakSlack, 5*time.Second)
		if n := s.metrics(t, "tiergate_extproc_streams_active")["tiergate_extproc_streams_active"]; n != 0 {
			t.Errorf("tiergate_extproc_streams_active %v after every stream was cancelled, want 0", n)
		}
	})

	t.Run("a client that never sends its body gets Envoy's 408 at the idle timeout", func(t *testing.T) {
		const clients = 10
		var wg sync.WaitGroup
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pr, pw := io.Pipe()
				defer pw.Close()
				client := s.h1
				if i%2 == 1 {
					client = s.h2
				}
				id := newID(t)
				ctx, cancel := context.WithTimeout(context.Background(), 10*clientTimeout)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+withID("/v1/responses", id, ""), pr)
				req.ContentLength = 1000
				go func() { _, _ = pw.Write([]byte(`{"model":"gpt-5.4","service_tier":"priority",`)) }() // and nothing more
				start := time.Now()
				resp, err := client.Do(req)
				took := time.Since(start)
				if err != nil {
					t.Errorf("%s: %v, want Envoy's 408", id, err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestTimeout {
					t.Errorf("%s: status %d, want 408", id, resp.StatusCode)
				}
				if took > clientTimeout+promptly {
					t.Errorf("%s: answered after %v, want within %v of the %v idle timeout", id, took, promptly, clientTimeout)
				}
				s.up.none(t, id)
			}()
		}
		wg.Wait()
		s.settleGoroutines(t, baseline+soakSlack, 5*time.Second)
	})

	t.Run("a WebSocket client that stops reading is closed at the write timeout, its provider held back", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c, _, err := wsDialURL(ctx, s.stack, "/v1/responses?fault="+wsFlood, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5.4","input":"hi"}`)); err != nil {
			t.Fatal(err)
		}
		// Read nothing. The bridge's write to the client blocks once Envoy's
		// and the kernel's buffers are full; the write timeout ends the session.
		start := time.Now()
		ended := false
		for !ended && time.Since(start) < 30*time.Second {
			time.Sleep(200 * time.Millisecond)
			m := s.metrics(t, "tiergate_ws_sessions_active")
			ended = m[`tiergate_ws_sessions_active{endpoint="responses_ws"}`] == 0
		}
		if !ended {
			t.Fatalf("the session with a client that reads nothing is still open after 30 s")
		}
		flooded := s.fake.floodBytes.Load()
		t.Logf("the session ended after %v; the provider wrote %.1f MiB before it was held back", time.Since(start).Round(time.Millisecond), float64(flooded)/(1<<20))
		if flooded >= floodLimit {
			t.Errorf("the provider wrote all its %d MiB: nothing held it back", floodLimit>>20)
		}
		rec := s.turnRecord(t, "resp_"+wsFlood)
		if got := rec.Get("status").Str; got != "client_closed" {
			t.Errorf("the turn's record status %q, want client_closed: %s", got, rec.Raw)
		}
		s.settleGoroutines(t, baseline+soakSlack, 5*time.Second)
	})

	if p := peak(); p-idleHeap > clientHeapBound {
		t.Errorf("tiergate's heap peaked at %.1f MiB, %.1f MiB over idle; want at most %d MiB over",
			p/(1<<20), (p-idleHeap)/(1<<20), clientHeapBound>>20)
	} else {
		t.Logf("tiergate's heap: idle %.1f MiB, peak %.1f MiB while the clients misbehaved", idleHeap/(1<<20), p/(1<<20))
	}
}

// cancelMidBody opens an ext_proc stream as Envoy would, sends the request
// headers, and cancels the stream: right after the headers' answer, or
// while the body is on its way (afterHeaders false).
func cancelMidBody(client extprocv3.ExternalProcessorClient, body []byte, afterHeaders bool) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := client.Process(ctx)
	if err != nil {
		return fmt.Errorf("open a stream: %w", err)
	}
	err = stream.Send(&extprocv3.ProcessingRequest{
		ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: filterv3.ProcessingMode_BUFFERED},
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":method", RawValue: []byte("POST")},
			{Key: ":path", RawValue: []byte("/v1/responses")},
			{Key: "content-length", RawValue: []byte(fmt.Sprint(len(body)))},
		}}}},
	})
	if err != nil {
		return fmt.Errorf("send the headers: %w", err)
	}
	if _, err := stream.Recv(); err != nil {
		return fmt.Errorf("the headers' answer: %w", err)
	}
	if afterHeaders {
		return nil // cancel with the body not begun
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		_ = stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
	}()
	time.Sleep(time.Millisecond)
	cancel()
	<-sent
	return nil
}

// watchHeap samples tiergate's heap every 100 ms until the test ends and
// returns a function that reports the peak so far.
func (fs *faultStack) watchHeap(t *testing.T) func() float64 {
	t.Helper()
	var mu sync.Mutex
	var peak float64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if m, err := scrape(fs.adminURL, "go_memstats_heap_alloc_bytes"); err == nil {
				mu.Lock()
				peak = max(peak, m["go_memstats_heap_alloc_bytes"])
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}
