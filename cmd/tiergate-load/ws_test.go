package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tiergate/tiergate/internal/syncbuf"
	"github.com/tiergate/tiergate/internal/wsfake"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
	"github.com/tiergate/tiergate/wsbridge"
)

// startCommand runs a serving subcommand in process until the test ends
// and returns the addresses its "listening" log lines name, by listener.
func startCommand(t *testing.T, args []string, listeners ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, args, io.Discard, pw)
		_ = pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", args[0], err)
		}
	})
	got := map[string]string{}
	lines := bufio.NewReader(pr)
	for len(got) < len(listeners) {
		line, err := lines.ReadBytes('\n')
		if err != nil {
			t.Fatalf("%s did not log its listeners %v: %v", args[0], listeners, err)
		}
		var entry struct{ Msg, Listener, Address string }
		if err := json.Unmarshal(line, &entry); err != nil || entry.Msg != "listening" {
			t.Fatalf("%s logged something other than its listeners: %s", args[0], line)
		}
		got[entry.Listener] = entry.Address
	}
	go func() { _, _ = io.Copy(io.Discard, lines) }()
	return got
}

// startUpstream runs `ws-upstream` on a free port; its ws:// base URL.
func startUpstream(t *testing.T, flags ...string) string {
	t.Helper()
	args := append([]string{"ws-upstream", "--listen", "127.0.0.1:0"}, flags...)
	return "ws://" + startCommand(t, args, "ws-upstream")["ws-upstream"]
}

// startRelay runs `ws-relay` in front of upstream; its session URL and
// admin base URL.
func startRelay(t *testing.T, upstream string) (target, admin string) {
	t.Helper()
	a := startCommand(t, []string{"ws-relay", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--upstream", upstream},
		"ws-relay", "admin")
	return "ws://" + a["ws-relay"] + "/v1/responses", "http://" + a["admin"]
}

// startBridge runs a wsbridge.Bridge in process, built as cmd/tiergate/ws.go
// builds it (default policy, flags' defaults, usage records discarded as
// --usage-log off does, its own registry with the Go and process
// collectors served as /metrics); its session URL and admin base URL.
func startBridge(t *testing.T, upstream string) (target, admin string) {
	t.Helper()
	reg, decisions, tokens := serveRegistry(t)
	b, err := wsbridge.New(wsbridge.Options{
		Store: policy.NewStore(policy.Default()), Registerer: reg, Decisions: decisions, Tokens: tokens,
		Usage: usage.NewRecordWriter(io.Discard), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Upstream: upstream, ReadLimit: wsbridge.DefaultReadLimit,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := b.HTTPServer()
	served := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(served) }()
	adminSrv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	t.Cleanup(func() {
		adminSrv.Close()
		_ = srv.Close()
		<-served
		if err := b.Shutdown(context.Background()); err != nil {
			t.Errorf("bridge shutdown: %v", err)
		}
	})
	return "ws://" + ln.Addr().String() + "/v1/responses", adminSrv.URL
}

// runWSRound runs `ws` and decodes its JSON report; err is what run returned.
func runWSRound(t *testing.T, args ...string) (*wsReport, error) {
	t.Helper()
	var stdout, stderr syncbuf.Buffer
	err := run(t.Context(), append([]string{"ws", "--json"}, args...), &stdout, &stderr)
	var rep wsReport
	if jerr := json.Unmarshal(stdout.Bytes(), &rep); jerr != nil {
		t.Fatalf("ws %v: %v; report is not JSON (%v):\n%s\nstderr: %s", args, err, jerr, stdout.Bytes(), stderr.Bytes())
	}
	return &rep, err
}

// shortModes are the four modes cut down to a unit test's size.
var shortModes = []struct {
	name string
	args []string
}{
	{"latency", []string{"--mode", "latency", "--turns", "50", "--warmup-turns", "5"}},
	{"throughput", []string{"--mode", "throughput", "--sessions", "4", "--warmup", "50ms", "--duration", "300ms"}},
	{"idle", []string{"--mode", "idle", "--sessions", "20", "--settle", "10ms"}},
	{"concurrent", []string{"--mode", "concurrent", "--sessions", "50", "--dial-parallel", "16", "--settle", "0s"}},
}

func TestEveryWSModeCompletesWithoutErrorsThroughTheRelayAndTheBridge(t *testing.T) {
	t.Parallel()
	upstream := startUpstream(t)
	relay, relayAdmin := startRelay(t, upstream)
	bridge, bridgeAdmin := startBridge(t, upstream)
	for _, target := range []struct{ name, url, admin string }{
		{"direct", upstream + "/v1/responses", ""},
		{"relay", relay, relayAdmin},
		{"bridge", bridge, bridgeAdmin},
	} {
		for _, m := range shortModes {
			t.Run(target.name+" "+m.name, func(t *testing.T) {
				args := append([]string{"--target", target.url}, m.args...)
				if target.admin != "" {
					// Both servers run in this process: its RSS and their heap.
					args = append(args, "--admin", target.admin, "--pid", strconv.Itoa(os.Getpid()))
				}
				rep, err := runWSRound(t, args...)
				if err != nil || rep.Turns == 0 || rep.Errors != 0 {
					t.Fatalf("run: %v; turns %d, errors %d %v; want some and none", err, rep.Turns, rep.Errors, rep.ErrorExamples)
				}
				switch m.name {
				case "latency":
					if rep.Turns != 50 || rep.WarmupTurns != 5 {
						t.Errorf("%d turns counted after %d of warm-up; want 50 after 5", rep.Turns, rep.WarmupTurns)
					}
					fallthrough
				case "throughput":
					if l := rep.LatencyMicros; l == nil || l.P50 <= 0 || l.P99 < l.P50 {
						t.Errorf("latency %+v; want ordered percentiles", l)
					}
				default:
					if rep.Held != rep.Sessions || rep.Turns != 2*rep.Sessions {
						t.Errorf("held %d, turns %d of %d sessions; want all held, two turns each", rep.Held, rep.Turns, rep.Sessions)
					}
					if target.admin != "" && (rep.Memory == nil || rep.Memory.After.HeapInuse == 0 || rep.Memory.After.RSS == 0) {
						t.Errorf("memory %+v; want the target's heap and RSS", rep.Memory)
					}
				}
			})
		}
	}
}

func TestDirectModeServesTheUpstreamInProcess(t *testing.T) {
	t.Parallel()
	rep, err := runWSRound(t, "--upstream-listen", "127.0.0.1:0", "--mode", "throughput", "--sessions", "2", "--warmup", "0s", "--duration", "200ms")
	if err != nil || rep.Turns == 0 || rep.Errors != 0 || rep.TurnsPerSecond <= 0 {
		t.Fatalf("run: %v; turns %d (%v/s), errors %d %v", err, rep.Turns, rep.TurnsPerSecond, rep.Errors, rep.ErrorExamples)
	}
}

func TestABrokenUpstreamReplyIsCountedAsAnError(t *testing.T) {
	t.Parallel()
	upstream := startUpstream(t, "--fail-every", "4")
	bridge, _ := startBridge(t, upstream)
	for _, target := range []string{upstream + "/v1/responses", bridge} {
		rep, err := runWSRound(t, "--target", target, "--mode", "latency", "--turns", "40", "--warmup-turns", "0")
		const kind = "response.completed without usage or service_tier"
		if rep.ErrorKinds[kind] == 0 || rep.Turns == 0 {
			t.Errorf("%s: turns %d, errors %v; want some turns and %q counted", target, rep.Turns, rep.ErrorKinds, kind)
		}
		if code, ok := err.(exitCode); !ok || code != 1 {
			t.Errorf("%s: run returned %v; want exit status 1", target, err)
		}
	}
}

func TestFailedHandshakesAreCountedAndFailTheRun(t *testing.T) {
	t.Parallel()
	// The relay's admin listener is no WebSocket upstream: every handshake
	// fails, and the failures are counted, not fatal.
	_, admin := startRelay(t, "ws://127.0.0.1:1")
	rep, err := runWSRound(t, "--target", "ws"+admin[len("http"):]+"/v1/responses", "--mode", "throughput",
		"--sessions", "1", "--warmup", "0s", "--duration", "100ms")
	if err == nil || rep.ErrorKinds["dial"] == 0 {
		t.Fatalf("run: %v; errors %v; want dial errors and a failed run", err, rep.ErrorKinds)
	}
}

func TestABrokenSessionIsDialledAnew(t *testing.T) {
	t.Parallel()
	// Every session the target accepts is closed with 1011 after the first
	// frame: each turn breaks its session, and the next must dial anew
	// rather than write into the closed one.
	var accepted atomic.Int64
	target := wsfake.Serve(t, func(ctx context.Context, c *websocket.Conn) {
		accepted.Add(1)
		if _, _, err := c.Read(ctx); err == nil {
			_ = c.Close(websocket.StatusInternalError, "broken on purpose")
		}
		_ = c.CloseNow()
	})
	const turns = 6
	rep, err := runWSRound(t, "--target", "ws"+strings.TrimPrefix(target.URL, "http")+"/v1/responses",
		"--mode", "latency", "--turns", strconv.Itoa(turns), "--warmup-turns", "0")
	const kind = "read: closed with 1011"
	if want := map[string]int{kind: turns}; !maps.Equal(rep.ErrorKinds, want) || rep.Turns != 0 {
		t.Errorf("turns %d, errors %v; want none and %v", rep.Turns, rep.ErrorKinds, want)
	}
	if n := accepted.Load(); n != turns {
		t.Errorf("%d sessions dialled for %d turns that each broke theirs; want one each", n, turns)
	}
	if code, ok := err.(exitCode); !ok || code != 1 {
		t.Errorf("run returned %v; want exit status 1", err)
	}
}
