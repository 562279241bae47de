package wsbridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/syncbuf"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// eventWait bounds a wait for an event or frame that should come. It is a
// guard against a hang, not a speed check: under the race detector, on two
// cores shared with other test packages, relaying a 10 MiB frame has taken
// over 10 s.
const eventWait = 30 * time.Second

// TestMain fails the package if any session, bridge or WebSocket goroutine
// outlives the tests: every test closes what it opened.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitGoroutines(10*time.Second, leakMarkers...); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left behind after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakMarkers are stack frames that no goroutine may still be in once the
// sessions (and test servers) that started them are over.
var leakMarkers = []string{
	"tiergate/wsbridge.(*session)",
	"tiergate/wsbridge.(*Bridge)",
	"github.com/coder/websocket.",
}

// waitGoroutines waits until no goroutine but the caller's has a frame
// matching any marker, and returns the stacks of those that remain after d.
func waitGoroutines(d time.Duration, markers ...string) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var bad []string
		for i, g := range strings.Split(string(buf), "\n\n") {
			if i == 0 {
				continue // this goroutine
			}
			for _, m := range markers {
				if strings.Contains(g, m) {
					bad = append(bad, g)
					break
				}
			}
		}
		if len(bad) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(bad, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// testPolicy is the policy most tests run under.
var testPolicy = `
identity:
  group_header: x-tiergate-group
groups:
- name: codex-fast
  force_service_tier: priority
  api_key_sha256: ["` + sha256Hex("sk-fast") + `"]
rules:
- name: fast-group
  service_tier: priority
  action: pass
  groups: [codex-fast]
- name: no-priority-on-gpt-5.5
  service_tier: priority
  action: block
  model_whitelist: ["gpt-5.5", "gpt-realtime-max"]
- name: strip-priority
  service_tier: priority
  action: filter
metrics:
  models: ["gpt-5.5", "gpt-5.4"]
`

func mustPolicy(t testing.TB, yaml string) *policy.Policy {
	t.Helper()
	p, err := policy.Load([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// harness is a bridge on a real listener in front of a fake upstream.
type harness struct {
	t      testing.TB
	up     *fakeUpstream
	bridge *Bridge
	srv    *httptest.Server
	store  *policy.Store
	reg    *prometheus.Registry
	usage  *syncbuf.Buffer
	logs   *syncbuf.Buffer
}

func newHarness(t testing.TB, policyYAML string, mods ...func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, up: newFakeUpstream(t), reg: prometheus.NewRegistry(), usage: &syncbuf.Buffer{}, logs: &syncbuf.Buffer{}}
	h.store = policy.NewStore(mustPolicy(t, policyYAML))
	decisions, err := policy.NewDecisionMetrics(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := usage.NewMetrics(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Store: h.store, Registerer: h.reg, Decisions: decisions, Tokens: tokens,
		Usage:    usage.NewRecordWriter(h.usage),
		Log:      slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Upstream: h.up.url(),
	}
	for _, m := range mods {
		m(&opts)
	}
	h.bridge, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewUnstartedServer(h.bridge)
	h.srv.Config = h.bridge.HTTPServer()
	h.srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = h.bridge.Shutdown(ctx)
		h.srv.Close()
	})
	return h
}

func (h *harness) wsURL(path string) string {
	return "ws://" + h.srv.Listener.Addr().String() + path
}

// dial opens a client session through the bridge.
func (h *harness) dial(t testing.TB, path string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, h.wsURL(path), opts)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	c.SetReadLimit(64 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return c, resp
}

func withHeader(kv ...string) *websocket.DialOptions {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return &websocket.DialOptions{HTTPHeader: h}
}

func send(t testing.TB, c *websocket.Conn, frame string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// next reads one event; a failed read fails the test.
func next(t testing.TB, c *websocket.Conn) gjson.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventWait)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return gjson.ParseBytes(data)
}

// until reads events up to and including the first of type typ.
func until(t testing.TB, c *websocket.Conn, typ string) []gjson.Result {
	t.Helper()
	var evs []gjson.Result
	for {
		ev := next(t, c)
		evs = append(evs, ev)
		if ev.Get("type").Str == typ {
			return evs
		}
		if len(evs) > 10000 {
			t.Fatalf("no %s event", typ)
		}
	}
}

// closed reads until the connection ends and returns its close frame (code
// -1 when it ended without one), and every event read before it.
func closed(t testing.TB, c *websocket.Conn) (websocket.CloseError, []gjson.Result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventWait)
	defer cancel()
	var evs []gjson.Result
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce, evs
			}
			if ctx.Err() != nil {
				t.Fatal("the session did not close")
			}
			return websocket.CloseError{Code: -1, Reason: err.Error()}, evs
		}
		evs = append(evs, gjson.ParseBytes(data))
	}
}

// records returns the usage records written so far.
func (h *harness) records() []map[string]any {
	var out []map[string]any
	for _, l := range h.usage.Lines() {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			h.t.Fatalf("usage record is not JSON: %v\n%s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// waitSessions waits until the bridge has no session open.
func (h *harness) waitSessions(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for h.bridge.Sessions() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still open", h.bridge.Sessions())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkRecord compares the fields want names (JSON numbers as float64; nil
// means the field must be absent).
func checkRecord(t testing.TB, got, want map[string]any) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		switch {
		case w == nil && ok:
			t.Errorf("record %s = %v, want it absent\nrecord: %v", k, g, got)
		case w != nil && !ok:
			t.Errorf("record lacks %s (want %v)\nrecord: %v", k, w, got)
		case w != nil && g != w:
			t.Errorf("record %s = %v, want %v\nrecord: %v", k, g, w, got)
		}
	}
}

// frameTexts returns the upstream's received frames as strings.
func frameTexts(fs []fakeFrame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f.data)
	}
	return out
}

// waitFrames waits until the upstream connection has received n frames.
func waitFrames(t testing.TB, fc *fakeConn, n int) []fakeFrame {
	t.Helper()
	deadline := time.Now().Add(eventWait)
	for {
		fs := fc.received()
		if len(fs) >= n {
			return fs
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream received %d frames, want %d: %v", len(fs), n, fs)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// gatherText renders the harness's metrics in the Prometheus text format.
func gatherText(t testing.TB, h *harness) string {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// checkSeries checks that the metrics text holds each of want, a series
// with its value as the text exposition writes it.
func checkSeries(t testing.TB, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("metrics lack %s", w)
		}
	}
}
