package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestSIGTERMDrains: on SIGTERM the binary reports not ready at once while
// an open WebSocket session runs on through the grace period, then closes
// it with 1001 and exits cleanly.
func TestSIGTERMDrains(t *testing.T) {
	t.Parallel()
	upstream := fakeResponsesUpstream(t)
	// The grace must outlast the readiness poll (3s at most) plus the
	// refused dial below on a loaded machine; the test waits all of it.
	cmd, addrs, usage := startServe(t, "--ws-upstream", upstream, "--shutdown-grace", "5s")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addrs["websocket"]+"/v1/responses", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	// One whole turn before the drain starts.
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5.5","input":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// The gRPC health service, as Envoy's health checks watch it.
	conn, err := grpc.NewClient(addrs["extproc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	watchCtx, endWatch := context.WithCancel(ctx)
	defer endWatch()
	watch, err := healthpb.NewHealthClient(conn).Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := watch.Recv(); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before SIGTERM: %v, %v; want SERVING", st, err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st, err := watch.Recv(); err != nil || st.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health after SIGTERM: %v, %v; want NOT_SERVING", st, err)
	}
	endWatch() // an open watch would hold the graceful stop to the end of the grace
	sawNotReady := false
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !sawNotReady; {
		resp, err := http.Get("http://" + addrs["admin"] + "/readyz")
		if err == nil {
			sawNotReady = resp.StatusCode == http.StatusServiceUnavailable
			resp.Body.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sawNotReady {
		t.Fatal("/readyz did not report 503 while draining")
	}
	// The drain is still under load: the GC headroom tuner stays on (its
	// default puts GOGC well above Go's 100) until serve returns.
	_, metrics := get(t, "http://"+addrs["admin"]+"/metrics")
	if gc, err := gcPercent(metrics); err != nil || gc <= 200 {
		t.Errorf("go_gc_gogc_percent while draining = %g (%v); want the tuner's, above 200", gc, err)
	}
	// New sessions are refused while the open one runs on.
	if _, resp, err := websocket.Dial(ctx, "ws://"+addrs["websocket"]+"/v1/responses", nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a new upgrade while draining: err=%v resp=%v, want 503", err, resp)
	}
	_, _, err = c.Read(ctx)
	if status := websocket.CloseStatus(err); status != websocket.StatusGoingAway {
		t.Fatalf("the open session ended with %v (%v), want 1001 after the grace period", status, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee interface{ ExitCode() int }
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 0) {
			t.Fatalf("serve exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not exit after the grace period")
	}
	if !strings.Contains(usage.String(), `"endpoint":"responses_ws"`) {
		t.Errorf("no WebSocket turn was recorded:\n%s", usage.String())
	}
}
