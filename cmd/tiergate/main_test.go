package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tiergate/tiergate/envoy"
	"github.com/tiergate/tiergate/internal/compresstest"
	"github.com/tiergate/tiergate/internal/gcsettings"
	"github.com/tiergate/tiergate/internal/syncbuf"
)

// binary is the tiergate binary the subprocess tests run, built once.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tiergate-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tiergate")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic("go build: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func runBinary(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		files []string
		code  int
		want  []string
	}{
		{"a good file passes silently", []string{"testdata/good.yaml"}, 0, nil},
		{"a bad file lists every problem as file: place: message", []string{"testdata/good.yaml", "testdata/bad.yaml"}, 1, []string{
			`testdata/bad.yaml: groups[0].force_service_tier: all is not a tier a request can be forced to (want priority, flex, auto, default, scale or ultrafast)`,
			`testdata/bad.yaml: rules[0].action: unknown action "blok" (want pass, filter or block)`,
			`testdata/bad.yaml: rules[1].serviceTier: unknown field (did you mean service_tier? fields are written in snake_case)`,
			`testdata/bad.yaml: rules[1].service_tier: required (priority, fast, flex, auto, default, scale, ultrafast or all)`,
			`testdata/bad.yaml: rules[1].name: duplicate rule name "typo" (also rules[0])`,
		}},
		{"a file with budgets and prices passes", []string{"testdata/budgets.yaml"}, 0, nil},
		{"bad budgets are named in the file's own terms", []string{"testdata/budgets-bad.yaml"}, 1, []string{
			`testdata/budgets-bad.yaml: budgets[0].service_tiers: required when on_exhausted is filter (name the tiers to remove once the limit is reached)`,
			`testdata/budgets-bad.yaml: budgets[1].limit: must be greater than 0`,
			`testdata/budgets-bad.yaml: budgets[1].name: "other" is reserved (it names the spend and metrics of group header values the policy does not name)`,
			`testdata/budgets-bad.yaml: budgets[1].window: unknown window "fortnight" (want day, week or month)`,
			`testdata/budgets-bad.yaml: budgets[1].service_tiers[1]: default cannot be filtered: removing the tier does not lower the default tier's spend (use on_exhausted: block)`,
			`testdata/budgets-bad.yaml: budgets: budgets need prices: (spend is the priced cost of each request; without a price table no budget would ever move)`,
			`testdata/budgets-bad.yaml: budgets[0].name: "cap" is also the name of rules[0] (budgets and rules share the rule label in metrics)`,
		}},
		{"a missing file is reported", []string{"testdata/nope.yaml"}, 1, []string{"testdata/nope.yaml: open testdata/nope.yaml: no such file or directory"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runBinary(t, nil, append([]string{"validate"}, tc.files...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stdout:\n%s", r.code, tc.code, r.stdout)
			}
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if len(tc.want) == 0 && strings.TrimSpace(r.stdout) != "" {
				t.Fatalf("unexpected output:\n%s", r.stdout)
			}
			if len(tc.want) > 0 && len(lines) != len(tc.want) {
				t.Errorf("%d lines, want %d:\n%s", len(lines), len(tc.want), r.stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout, w+"\n") {
					t.Errorf("missing line %q in:\n%s", w, r.stdout)
				}
			}
		})
	}
}

func TestEval(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		args     []string
		body     []byte
		code     int
		stdout   string
		decision map[string]any
	}{
		{
			name: "the default policy strips fast", args: []string{"--path", "/v1/responses"},
			body: readFile(t, "responses-priority.json"), code: 0,
			stdout:   `{"model":"gpt-5.5","input":"hi"}`,
			decision: map[string]any{"endpoint": "responses", "action": "filter", "rule": "#1", "service_tier_requested": "priority", "service_tier_sent": "none", "model": "gpt-5.5"},
		},
		{
			name: "a block prints the error body and exits 3", args: []string{"--config", "testdata/good.yaml", "--path", "/v1/responses"},
			body: readFile(t, "responses-priority.json"), code: 3,
			stdout: `{"error":{"message":"priority is reserved for the codex-fast group","type":"forbidden_error","param":"service_tier","code":"policy_violation"}}`,
			decision: map[string]any{"action": "block", "rule": "no-priority-on-gpt-5.5", "status": 403.0,
				"message": "priority is reserved for the codex-fast group"},
		},
		{
			name: "the group header selects a forcing group", args: []string{"--config", "testdata/good.yaml", "--path", "/v1/chat/completions", "--header", "x-tiergate-group=codex-fast"},
			body: []byte(`{"model":"gpt-5.5-mini","messages":[]}`), code: 0,
			stdout:   `{"model":"gpt-5.5-mini","messages":[],"service_tier":"priority"}`,
			decision: map[string]any{"group": "codex-fast", "action": "pass", "rule": "codex-fast-ok", "service_tier_sent": "priority", "service_tier_requested": "none"},
		},
		{
			name: "an API key's digest selects its group", args: []string{"--config", "testdata/good.yaml", "--path", "/v1/responses", "--header", "Authorization=Bearer sk-test-keyed"},
			body: []byte(`{"model":"gpt-4o","service_tier":"priority"}`), code: 0,
			stdout:   `{"model":"gpt-4o"}`,
			decision: map[string]any{"group": "keyed", "action": "filter", "rule": "strip-priority"},
		},
		{
			name: "Anthropic fast mode is filtered from body and header", args: []string{"--path", "/v1/messages", "--header", "anthropic-beta=fast-mode-2026-02-01,context-1m-2025-08-07"},
			body: readFile(t, "messages-fast.json"), code: 0,
			stdout:   `{"model":"claude-opus-4-6","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`,
			decision: map[string]any{"endpoint": "messages", "action": "filter", "set_headers": map[string]any{"anthropic-beta": "context-1m-2025-08-07"}},
		},
		{
			name: "a gzip body is decoded, policed and forwarded decoded", args: []string{"--path", "/v1/chat/completions", "--header", "content-encoding=gzip"},
			body: compresstest.Gzip(readFile(t, "chat-priority.json")), code: 0,
			// As the server forwards it: decoded, and (being streamed) asking
			// for its usage, which the server reads and takes out again.
			stdout: `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
			decision: map[string]any{"action": "filter", "remove_headers": []any{"content-encoding"},
				"set_headers": map[string]any{"accept-encoding": "identity"}},
		},
		{
			name: "a request without a body passes untouched", args: []string{"--path", "/v1/responses"},
			body: nil, code: 0, stdout: "",
			decision: map[string]any{"endpoint": "responses", "action": "pass", "service_tier_sent": "none"},
		},
		{
			name: "an unknown encoding is refused with 415", args: []string{"--path", "/v1/chat/completions", "--header", "content-encoding=br"},
			body: []byte("xx"), code: 3,
			stdout:   `{"error":{"message":"content-encoding \"br\" is not supported; send the body uncompressed, gzip or deflate","type":"invalid_request_error","param":null,"code":"unsupported_content_encoding"}}`,
			decision: map[string]any{"status": 415.0},
		},
		{
			name: "every content-encoding line counts", args: []string{"--path", "/v1/chat/completions", "--header", "content-encoding=identity", "--header", "content-encoding=br"},
			body: []byte(`{"model":"gpt-4o"}`), code: 3,
			stdout:   `{"error":{"message":"content-encoding \"identity,br\" is not supported; send the body uncompressed, gzip or deflate","type":"invalid_request_error","param":null,"code":"unsupported_content_encoding"}}`,
			decision: map[string]any{"status": 415.0},
		},
		{
			name: "invalid JSON is refused with 400 in Anthropic's shape", args: []string{"--path", "/v1/messages"},
			body: readFile(t, "invalid.json"), code: 3,
			stdout:   `{"type":"error","error":{"type":"invalid_request_error","message":"the request body is not valid JSON: invalid JSON at byte 44"}}`,
			decision: map[string]any{"status": 400.0},
		},
		{
			name: "an Azure deployment is judged as the model it aliases", args: []string{"--config", "testdata/good.yaml", "--path", "/openai/deployments/gpt-latest/chat/completions/"},
			body: []byte(`{"model":"gpt-4o","SERVICE_TIER":"priority"}`), code: 3,
			stdout:   `{"error":{"message":"priority is reserved for the codex-fast group","type":"forbidden_error","param":"service_tier","code":"policy_violation"}}`,
			decision: map[string]any{"endpoint": "chat_completions", "action": "block", "rule": "no-priority-on-gpt-5.5", "status": 403.0},
		},
		{
			name: "an unpoliced path passes untouched", args: []string{"--path", "/v1/embeddings"},
			body: readFile(t, "responses-priority.json"), code: 0,
			stdout:   string(readFile(t, "responses-priority.json")),
			decision: map[string]any{"endpoint": "unknown", "action": "pass"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runBinary(t, tc.body, append([]string{"eval"}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", r.code, tc.code, r.stderr)
			}
			if r.stdout != tc.stdout {
				t.Errorf("stdout:\n got %s\nwant %s", r.stdout, tc.stdout)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want one decision line:\n%s", len(lines), r.stderr)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
				t.Fatalf("decision line is not JSON: %v\n%s", err, lines[0])
			}
			for k, v := range tc.decision {
				if gb, _ := json.Marshal(got[k]); string(gb) != mustJSON(v) {
					t.Errorf("decision[%s] = %s, want %s (line %s)", k, gb, mustJSON(v), lines[0])
				}
			}
		})
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = busy.Close() }) // after the parallel cases, not before
	taken := busy.Addr().String()
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command prints usage", nil, 2, "usage: tiergate <command>"},
		{"an unknown command is named", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"eval needs a path", []string{"eval"}, 1, "usage: tiergate eval"},
		{"eval names a malformed header", []string{"eval", "--path", "/v1/responses", "--header", "nothing"}, 1, `--header "nothing": want name=value`},
		{"eval's unknown flag is an error like the rest", []string{"eval", "--bogus"}, 1, "flag provided but not defined: -bogus"},
		{"eval fails with exit 1 on a policy file it cannot read", []string{"eval", "--config", "testdata/missing.yaml", "--path", "/v1/responses"}, 1, "read policy"},
		{"eval fails with exit 1 on a bad policy", []string{"eval", "--config", "testdata/bad.yaml", "--path", "/v1/responses"}, 1, `rules[0].action: unknown action "blok"`},
		{"validate needs a file", []string{"validate"}, 1, "usage: tiergate validate FILE..."},
		{"serve refuses a TLS certificate without its key, before listening", []string{"serve", "--ws-tls-cert", "cert.pem"}, 1, "--ws-tls-cert and --ws-tls-key go together"},
		{"serve refuses a bad log level", []string{"serve", "--log-level", "loud"}, 1, "--log-level"},
		{"serve refuses a stray argument", []string{"serve", "extra"}, 1, `unexpected argument "extra"`},
		{"serve refuses a GC headroom it cannot read", []string{"serve", "--gc-headroom", "lots"}, 1, `--gc-headroom: "lots" is not a size`},
		{"serve refuses a memory limit it cannot read", []string{"serve", "--memory-limit", "5GB"}, 1, `--memory-limit: "5GB" is not a size`},
		{"serve refuses a bad policy", []string{"serve", "--config", "testdata/bad.yaml", "--admin-listen", "127.0.0.1:0", "--extproc-listen", "127.0.0.1:0"}, 1, `rules[0].action: unknown action "blok"`},
		{"serve refuses a bad WebSocket upstream, before listening", []string{"serve", "--ws-upstream", "ftp://example.com", "--admin-listen", "127.0.0.1:0", "--extproc-listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0"}, 1, "the scheme must be ws, wss, http or https"},
		{"serve refuses a port it cannot bind, before listening", []string{"serve", "--admin-listen", "127.0.0.1:0", "--extproc-listen", "127.0.0.1:0", "--ws-listen", taken}, 1, "WebSocket listener"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runBinary(t, nil, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d (want %d), stderr:\n%s\nwant it to contain %q", r.code, tc.code, r.stderr, tc.want)
			}
			// A refused start announces no listener: nothing served.
			if strings.Contains(r.stderr, `"msg":"listening"`) {
				t.Errorf("a refused start logged a listener:\n%s", r.stderr)
			}
		})
	}
	if r := runBinary(t, nil, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "tiergate ") {
		t.Fatalf("version: exit %d stdout %q", r.code, r.stdout)
	}
}

// TestServeReportsEveryBadFlag: serve names every flag it refuses in one
// run, not the first alone, so an operator fixes them in one go.
func TestServeReportsEveryBadFlag(t *testing.T) {
	t.Parallel()
	r := runBinary(t, nil, "serve", "--log-level", "loud", "--usage-log-queue", "0", "--ws-tls-cert", "cert.pem",
		"--gc-headroom", "lots", "--memory-limit", "5GB", "extra")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{
		`unexpected argument "extra"`, "--usage-log-queue: 0, want at least 1", "--log-level",
		"--ws-tls-cert and --ws-tls-key go together", `--gc-headroom: "lots" is not a size`, `--memory-limit: "5GB" is not a size`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not name %q:\n%s", want, r.stderr)
		}
	}
}

// startServe runs `tiergate serve` with args, every listener not named in
// args on a free loopback port, and waits until all three are logged and
// /readyz reports ready.
func startServe(t *testing.T, args ...string) (*exec.Cmd, map[string]string, *syncbuf.Buffer) {
	t.Helper()
	return startServeEnv(t, nil, args...)
}

// startServeEnv is startServe with env added to the environment.
func startServeEnv(t *testing.T, env []string, args ...string) (*exec.Cmd, map[string]string, *syncbuf.Buffer) {
	t.Helper()
	cmd, addrs, usage, _ := startServeFull(t, env, args...)
	return cmd, addrs, usage
}

// startServeLogged is startServe that also returns serve's log (stderr),
// kept as it is written.
func startServeLogged(t *testing.T, args ...string) (*exec.Cmd, map[string]string, *syncbuf.Buffer) {
	t.Helper()
	cmd, addrs, _, log := startServeFull(t, nil, args...)
	return cmd, addrs, log
}

func startServeFull(t *testing.T, env []string, args ...string) (*exec.Cmd, map[string]string, *syncbuf.Buffer, *syncbuf.Buffer) {
	t.Helper()
	for _, l := range []string{"--admin-listen", "--extproc-listen", "--ws-listen"} {
		if !slices.Contains(args, l) {
			args = append(args, l, "127.0.0.1:0")
		}
	}
	cmd := exec.Command(binary, append([]string{"serve"}, args...)...)
	// The runner's own GOGC or GOMEMLIMIT would change what serve's
	// defaults are seen to do; the tests set them where they mean to.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "GOGC=") || strings.HasPrefix(kv, "GOMEMLIMIT=")
	})
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	usage := &syncbuf.Buffer{}
	cmd.Stdout = usage
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addrs := map[string]string{}
	ready := make(chan struct{})
	lines := make(chan string, 100)
	log := &syncbuf.Buffer{}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			_, _ = log.Write(append(sc.Bytes(), '\n'))
			var l struct{ Msg, Listener, Address string }
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			switch l.Msg {
			case "listening":
				lines <- l.Listener + "=" + l.Address
			case "ready":
				lines <- "ready="
			}
		}
		close(lines)
	}()
	// admin, extproc, websocket, and the "ready" line that follows /readyz
	// turning ready: until then /readyz may still say "starting".
	want := 4
	go func() {
		for l := range lines {
			k, v, _ := strings.Cut(l, "=")
			addrs[k] = v
			if len(addrs) == want {
				close(ready)
				for range lines {
				}
				return
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not log its listeners")
	}
	return cmd, addrs, usage, log
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeAdminAndShutdown(t *testing.T) {
	t.Parallel()
	cmd, addrs, _ := startServe(t, "--config", "testdata/good.yaml")
	base := "http://" + addrs["admin"]
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": `{"status":"ok"}`} {
		if code, body := get(t, base+path); code != 200 || strings.TrimSpace(body) != want {
			t.Errorf("%s = %d %q", path, code, body)
		}
	}
	code, body := get(t, base+"/policy")
	var pol struct {
		Source   string
		SHA256   string
		LoadedAt string `json:"loaded_at"`
		Policy   struct {
			Rules  []struct{ Label, Action string }
			Groups []struct {
				Name         string
				APIKeySHA256 []string `json:"api_key_sha256"`
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &pol); code != 200 || err != nil {
		t.Fatalf("/policy = %d %v\n%s", code, err, body)
	}
	if len(pol.Policy.Rules) != 3 || pol.Policy.Rules[1].Action != "block" {
		t.Errorf("/policy rules = %+v", pol.Policy.Rules)
	}
	if strings.Contains(body, "0a5928330") || pol.Policy.Groups[1].APIKeySHA256[0] != "redacted" {
		t.Errorf("/policy shows key digests:\n%s", body)
	}
	_, metrics := get(t, base+"/metrics")
	for _, m := range []string{"tiergate_config_info{sha256=", "tiergate_config_reloads_total{result=\"invalid\"} 0", "go_goroutines"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if code, _ := get(t, base+"/debug/pprof/cmdline"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/cmdline without --pprof = %d, want 404", code)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}
}

// TestServePprof: --pprof adds Go's profiles to the admin listener, and
// nothing else changes.
func TestServePprof(t *testing.T) {
	t.Parallel()
	_, addrs, _ := startServe(t, "--pprof")
	base := "http://" + addrs["admin"]
	for _, tc := range []struct {
		path string
		want string
	}{
		{"/debug/pprof/cmdline", "--pprof"},
		{"/debug/pprof/", "goroutine"},
		{"/debug/pprof/goroutine?debug=1", "goroutine profile:"},
		{"/healthz", "ok"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, body := get(t, base+tc.path)
			if code != http.StatusOK || !strings.Contains(body, tc.want) {
				t.Errorf("GET %s = %d, want 200 with %q; got\n%.300s", tc.path, code, tc.want, body)
			}
		})
	}
}

// TestServeGCSettings: serve's garbage collector settings come from its
// flags, else from GOGC and GOMEMLIMIT, else from its defaults (16 MiB of
// headroom over a live heap of a few MiB: GOGC well above 100; no memory
// limit here, where the test runs without a cgroup memory limit), and show
// on /metrics as the Go collector reports them.
func TestServeGCSettings(t *testing.T) {
	t.Parallel()
	const noLimit = "9.223372036854776e+18"
	// By default serve takes its limit from the cgroup it runs in, which
	// is this test's: none on a bare machine, 90% of it in a container.
	autoLimit, _, err := gcsettings.MemoryLimit("auto", "/")
	if err != nil {
		t.Fatal(err)
	}
	defaultLimit := noLimit
	if autoLimit > 0 {
		defaultLimit = strconv.FormatFloat(float64(autoLimit), 'g', -1, 64)
	}
	for _, tc := range []struct {
		name      string
		env, args []string
		gc        func(float64) bool
		wantGC    string
		wantLimit string
	}{
		{"defaults", nil, nil, func(p float64) bool { return p > 200 }, "above 200", defaultLimit},
		{"environment", []string{"GOGC=150", "GOMEMLIMIT=300MiB"}, nil, func(p float64) bool { return p == 150 }, "150", "3.145728e+08"},
		{"flags win over the environment", []string{"GOGC=150", "GOMEMLIMIT=300MiB"}, []string{"--gc-headroom", "1GiB", "--memory-limit", "100MiB"},
			func(p float64) bool { return p > 1000 }, "above 1000", "1.048576e+08"},
		{"headroom 0 leaves GOGC alone, memory limit off", []string{"GOMEMLIMIT=300MiB"}, []string{"--gc-headroom", "0", "--memory-limit", "off"},
			func(p float64) bool { return p == 100 }, "100", noLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, addrs, _ := startServeEnv(t, tc.env, tc.args...)
			_, metrics := get(t, "http://"+addrs["admin"]+"/metrics")
			if gc, err := gcPercent(metrics); err != nil || !tc.gc(gc) {
				t.Errorf("go_gc_gogc_percent = %g (%v), want %s", gc, err, tc.wantGC)
			}
			if !strings.Contains(metrics, "\ngo_gc_gomemlimit_bytes "+tc.wantLimit+"\n") {
				t.Errorf("go_gc_gomemlimit_bytes is not %s", tc.wantLimit)
			}
		})
	}
}

// gcPercent reads the GOGC in force from a /metrics page.
func gcPercent(metrics string) (float64, error) {
	var gc float64
	i := strings.Index(metrics, "\ngo_gc_gogc_percent ")
	if i < 0 {
		return 0, fmt.Errorf("no go_gc_gogc_percent")
	}
	_, err := fmt.Sscanf(metrics[i+1:], "go_gc_gogc_percent %g", &gc)
	return gc, err
}

// TestApplyGCMemoryLimitFromTheCgroup: --memory-limit auto takes 90% of the
// cgroup's limit, none without one, and an unreadable cgroup is a warning,
// not a refusal to start. (In process, not parallel: it sets the process's
// memory limit and the cgroup root.)
func TestApplyGCMemoryLimitFromTheCgroup(t *testing.T) {
	defer func(root string) { systemRoot = root }(systemRoot)
	defer debug.SetMemoryLimit(math.MaxInt64)
	for _, tc := range []struct {
		name      string
		memoryMax string
		want      int64
		warn      bool
	}{
		{"a 256 MiB container", "268435456\n", 241591910, false},
		{"no limit", "max\n", math.MaxInt64, false},
		{"an unreadable limit", "garbage\n", math.MaxInt64, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A cgroup v2 container: its own cgroup at the mount's root.
			systemRoot = t.TempDir()
			for name, content := range map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"proc/self/mountinfo":      "29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
				"sys/fs/cgroup/memory.max": tc.memoryMax,
			} {
				p := filepath.Join(systemRoot, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := parseServeFlags(nil, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			t.Setenv("GOMEMLIMIT", "")
			var logs bytes.Buffer
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			applyGC(ctx, cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
			if got := debug.SetMemoryLimit(-1); got != tc.want {
				t.Errorf("memory limit %d, want %d", got, tc.want)
			}
			if warned := strings.Contains(logs.String(), `"level":"WARN"`); warned != tc.warn {
				t.Errorf("warned %v, want %v; logs:\n%s", warned, tc.warn, logs.String())
			}
		})
	}
}

// TestEnvoyConfigReachesServeDefaults: envoy/envoy.yaml, run beside
// `tiergate serve` with no flags (the README's quick start), reaches the
// ext_proc server and the bridge where serve listens by default.
func TestEnvoyConfigReachesServeDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := parseServeFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../../envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for cluster, want := range map[string]string{"tiergate_extproc": cfg.extprocListen, "tiergate_ws": cfg.ws.listen} {
		if got, err := envoy.ClusterAddress(raw, cluster); err != nil || got != want {
			t.Errorf("envoy.yaml's %s reaches %q (%v); serve listens on %q by default", cluster, got, err, want)
		}
	}
}
