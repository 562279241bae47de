package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/internal/wsfake"
	"github.com/tiergate/tiergate/policy"
)

func TestDrainFlagsKeepTheAdminAPIsOnLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"the defaults are loopback", nil, true},
		{"an IPv6 loopback is loopback", []string{"--envoy-admin", "http://[::1]:9901"}, true},
		{"localhost is loopback", []string{"--envoy-admin", "http://localhost:9901"}, true},
		{"the tiergate call may be left out", []string{"--tiergate-admin", ""}, true},
		{"a pod address is refused for Envoy", []string{"--envoy-admin", "http://10.0.0.7:9901"}, false},
		{"every interface is refused for tiergate", []string{"--tiergate-admin", "http://0.0.0.0:9464"}, false},
		{"a name that is not localhost is refused", []string{"--envoy-admin", "http://envoy:9901"}, false},
		{"https is refused", []string{"--envoy-admin", "https://127.0.0.1:9901"}, false},
		{"a zero timeout is refused", []string{"--timeout", "0s"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseDrainFlags(tc.args, io.Discard)
			if (err == nil) != tc.ok {
				t.Errorf("parseDrainFlags(%q) = %v, want ok=%v", tc.args, err, tc.ok)
			}
		})
	}
}

// TestDrainInstallCopiesARunnableBinary: the init container's step puts a
// binary on the shared volume that Envoy's hook can run.
func TestDrainInstallCopiesARunnableBinary(t *testing.T) {
	t.Parallel()
	dst := filepath.Join(t.TempDir(), "tiergate")
	if r := runBinary(t, nil, "drain", "--install", dst); r.code != 0 {
		t.Fatalf("drain --install: exit %d: %s", r.code, r.stderr)
	}
	out, err := exec.Command(dst, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "tiergate ") {
		t.Fatalf("the copy does not run: %v %q", err, out)
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".tiergate-*")); len(matches) > 0 {
		t.Errorf("temporary files left behind: %v", matches)
	}
}

// TestAdminDrainOnlyFromLoopback: POST /drain starts the WebSocket drain
// for a loopback peer only; the admin listener binds every interface in
// Kubernetes.
func TestAdminDrainOnlyFromLoopback(t *testing.T) {
	t.Parallel()
	p, err := policy.Load([]byte("rules: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	b, err := budget.New(budget.NewMemory(), policy.NewStore(p).Load, reg, budget.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var drained atomic.Int32
	h := adminHandler(reg, policy.NewStore(p), b, "test", &readiness{}, false, func() { drained.Add(1) })
	for _, tc := range []struct {
		name, remote string
		status       int
	}{
		{"a pod peer is refused", "10.1.2.3:40000", http.StatusForbidden},
		{"an IPv4 loopback peer starts it", "127.0.0.1:40000", http.StatusAccepted},
		{"an IPv6 loopback peer starts it", "[::1]:40000", http.StatusAccepted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := drained.Load()
			req := httptest.NewRequest(http.MethodPost, "/drain", nil)
			req.RemoteAddr = tc.remote
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d", rec.Code, tc.status)
			}
			if started := drained.Load() > before; started != (tc.status == http.StatusAccepted) {
				t.Errorf("drain started: %v", started)
			}
		})
	}
}

// TestSIGTERMRecordsTheTurnsItCuts: a turn still running when the shutdown
// grace ends is closed with 1001, and its record (client_closed, turn 1)
// is on stdout when serve has exited: written after the session ended,
// flushed before the exit.
func TestSIGTERMRecordsTheTurnsItCuts(t *testing.T) {
	t.Parallel()
	stalled := wsfake.Serve(t, func(ctx context.Context, c *websocket.Conn) {
		if _, _, err := c.Read(ctx); err != nil {
			return
		}
		_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.created","response":{"id":"resp_cut","status":"in_progress","model":"gpt-5.5"}}`))
		_, _, _ = c.Read(ctx) // and never answers
	})
	cmd, addrs, stdout := startServe(t, "--ws-upstream", "ws"+strings.TrimPrefix(stalled.URL, "http"), "--shutdown-grace", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addrs["websocket"]+"/v1/responses", &websocket.DialOptions{HTTPHeader: http.Header{"X-Request-Id": {"req-cut"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5.5","input":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("the session ended with %v, want 1001", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve exited with %v", err)
	}
	var rec map[string]any
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if strings.Contains(line, `"request_id":"req-cut"`) {
			if rec != nil {
				t.Fatalf("two records for the cut turn:\n%s", stdout.String())
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	if rec["status"] != "client_closed" || rec["turn"] != 1.0 || rec["response_id"] != "resp_cut" {
		t.Errorf("the cut turn's record: %v; want status client_closed, turn 1, response_id resp_cut\nstdout:\n%s", rec, stdout.String())
	}
}

// fakeEnvoyAdmin answers /server_info, /drain_listeners and /stats as
// Envoy's admin API does, with active requests in flight on the ingress
// (the admin listener's own gauge, always 1 while a stats read runs, is
// there too). Once gone, it answers nothing: every connection, a pooled
// one included, is cut, as when Envoy's process has exited.
type fakeEnvoyAdmin struct {
	active  atomic.Int64
	drained atomic.Bool
	gone    atomic.Bool
}

func (f *fakeEnvoyAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case f.gone.Load():
		// Closing the listener alone is not enough: a poll that was
		// accepted just before it closed keeps its connection alive.
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
		}
	case r.Method == http.MethodGet && r.URL.Path == "/server_info":
		_, _ = io.WriteString(w, `{"state":"LIVE","command_line_options":{"drain_time":"0.2s","drain_strategy":"Gradual"}}`)
	case r.Method == http.MethodPost && r.URL.Path == "/drain_listeners" && r.URL.Query().Has("graceful"):
		f.drained.Store(true)
		_, _ = io.WriteString(w, "OK\n")
	case r.Method == http.MethodGet && r.URL.Path == "/stats":
		stats := `{"stats":[{"name":"http.admin.downstream_rq_active","value":1},{"name":"http.llm_ingress.downstream_rq_active","value":%d},{"name":"http.pod_health.downstream_rq_active","value":0}]}`
		_, _ = io.WriteString(w, strings.Replace(stats, "%d", strconv.FormatInt(f.active.Load(), 10), 1))
	default:
		http.NotFound(w, r)
	}
}

func TestDrainWaitsForEnvoysRequestsInFlight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// finish is when the last request ends (never: 0).
		finish  time.Duration
		stop    bool // Envoy goes away mid-drain
		wantErr bool
		least   time.Duration // the drain lasts at least this
	}{
		{name: "it returns once the drain time has passed and nothing is in flight", finish: 600 * time.Millisecond, least: 600 * time.Millisecond},
		{name: "it waits the drain time even with nothing in flight", least: 200 * time.Millisecond, finish: time.Nanosecond},
		{name: "past its timeout it gives up with exit 1", wantErr: true, least: 1500 * time.Millisecond},
		{name: "an Envoy that has gone ends the wait", stop: true, least: 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeEnvoyAdmin{}
			f.active.Store(3)
			srv := httptest.NewServer(f)
			t.Cleanup(srv.Close)
			switch {
			case tc.stop:
				time.AfterFunc(300*time.Millisecond, func() { f.gone.Store(true); srv.Listener.Close(); srv.CloseClientConnections() })
			case tc.finish > 0:
				time.AfterFunc(tc.finish, func() { f.active.Store(0) })
			}
			start := time.Now()
			err := runDrain(context.Background(), []string{"--envoy-admin", srv.URL, "--tiergate-admin", "", "--timeout", "1500ms", "--poll", "20ms"}, io.Discard)
			took := time.Since(start)
			if (err != nil) != tc.wantErr {
				t.Fatalf("runDrain = %v, want error %v", err, tc.wantErr)
			}
			if !f.drained.Load() {
				t.Error("Envoy was never asked to drain gracefully")
			}
			if took < tc.least || took > tc.least+time.Second {
				t.Errorf("the drain took %v, want about %v", took, tc.least)
			}
		})
	}
}
