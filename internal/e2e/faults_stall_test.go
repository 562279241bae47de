package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// shippedMessageTimeout is envoy.yaml's ext_proc message_timeout, which
// the stall test waits out (envoyrig does not rewrite it; 10 s is short
// enough to wait).
const shippedMessageTimeout = 10 * time.Second

// TestFaultStall stops tiergate (SIGSTOP) for longer than Envoy's
// message_timeout while requests wait on it: each client gets Envoy's 5xx
// promptly after the timeout, nothing reaches the provider, and once
// tiergate runs again (SIGCONT) the goroutines of those abandoned streams
// end and it serves the next request.
func TestFaultStall(t *testing.T) {
	t.Parallel()
	if !strings.Contains(string(mustRead(t, "../../envoy/envoy.yaml")), "message_timeout: 10s") {
		t.Fatal("envoy.yaml's message_timeout is no longer 10s: update shippedMessageTimeout")
	}
	s := startFaultStack(t, testPolicy, faultOptions{})
	body := `{"model":"gpt-5.4","service_tier":"priority","input":"hi"}`
	for _, cl := range s.clients() { // warm: connections and pools exist
		if got := s.send(t, cl.c, http.MethodPost, withID("/v1/responses", newID(t), ""), nil, []byte(body)); got.status != http.StatusOK {
			t.Fatalf("before the stall: status %d", got.status)
		}
	}
	time.Sleep(500 * time.Millisecond)
	baseline := s.goroutines(t)

	s.signal(t, syscall.SIGSTOP)
	s.waitStopped(t)
	stoppedAt := time.Now()
	stopped := true
	defer func() {
		if stopped {
			s.signal(t, syscall.SIGCONT)
		}
	}()
	const stalled = 20
	type outcome struct {
		id      string
		status  int
		body    string
		err     error
		elapsed time.Duration
	}
	outcomes := make([]outcome, stalled)
	var wg sync.WaitGroup
	for i := range stalled {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := s.h1
			if i%2 == 1 {
				client = s.h2
			}
			o := outcome{id: newID(t)}
			ctx, cancel := context.WithTimeout(context.Background(), 3*shippedMessageTimeout)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+withID("/v1/responses", o.id, ""), strings.NewReader(body))
			start := time.Now()
			resp, err := client.Do(req)
			if err == nil {
				var b []byte
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				o.status, o.body = resp.StatusCode, string(b)
			}
			o.err, o.elapsed = err, time.Since(start)
			outcomes[i] = o
		}()
	}
	wg.Wait()
	s.signal(t, syscall.SIGCONT)
	stopped = false

	for _, o := range outcomes {
		switch {
		case o.err != nil:
			t.Errorf("request %s: %v, want Envoy's error answer", o.id, o.err)
		case o.status != http.StatusGatewayTimeout:
			t.Errorf("request %s: status %d (%s), want Envoy's 504", o.id, o.status, o.body)
		case o.elapsed > shippedMessageTimeout+time.Second:
			t.Errorf("request %s: the 504 came after %v, want within a second of the %v message_timeout", o.id, o.elapsed, shippedMessageTimeout)
		}
		s.up.none(t, o.id)
		if at, ok := s.fake.arrivals.Load(o.id); ok {
			t.Logf("request %s reached the provider %v after SIGSTOP; Envoy's access log: %s",
				o.id, at.(time.Time).Sub(stoppedAt), s.accessLine(t, o.id).Raw)
		}
	}
	t.Logf("%d requests during the stall; the first answered after %v (status %d, %q)", stalled,
		outcomes[0].elapsed.Round(time.Millisecond), outcomes[0].status, outcomes[0].body)

	after := s.settleGoroutines(t, baseline+soakSlack, 5*time.Second)
	t.Logf("goroutines: %d before the stall, %d after SIGCONT", baseline, after)
	if got := s.send(t, s.h2, http.MethodPost, withID("/v1/responses", newID(t), ""), nil, []byte(body)); got.status != http.StatusOK {
		t.Errorf("after the stall: status %d, want 200", got.status)
	}
}

// waitStopped waits until every thread of tiergate is stopped: SIGSTOP
// takes effect on each thread as the kernel next schedules it, which on a
// loaded machine can be after a request has already been answered.
func (fs *faultStack) waitStopped(t *testing.T) {
	t.Helper()
	tasks := filepath.Join("/proc", strconv.Itoa(fs.tg.cmd.Process.Pid), "task")
	deadline := time.Now().Add(5 * time.Second)
	for {
		stopped, threads := 0, 0
		dirs, err := os.ReadDir(tasks)
		if err != nil {
			t.Fatalf("read tiergate's threads: %v", err)
		}
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(tasks, d.Name(), "stat"))
			if err != nil {
				continue // the thread ended
			}
			threads++
			// The state follows the command name in parentheses.
			if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'T' {
				stopped++
			}
		}
		if threads > 0 && stopped == threads {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of tiergate's %d threads stopped 5s after SIGSTOP", stopped, threads)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
