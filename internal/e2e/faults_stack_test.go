package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tiergate/tiergate/internal/envoyrig"
	"github.com/tiergate/tiergate/internal/freeport"
	"github.com/tiergate/tiergate/internal/kubeletdir"
)

// faultStack is a stack whose tiergate the test controls from outside:
// it can be signalled (SIGKILL, SIGSTOP, SIGCONT) and started again on the
// same addresses, its policy sits in a ConfigMap-like directory the test
// swaps as the kubelet does, and its admin listener (with --pprof) is
// known. Faults are injected only from outside the binary.
type faultStack struct {
	*stack
	tg       *tgProcess
	volume   *kubeletdir.Dir
	tgArgs   []string
	adminURL string // tiergate's admin listener
	extproc  string // tiergate's ext_proc address (host:port)
	fake     *faultUpstream
}

// faultOptions say how a faultStack differs from the shipped setup.
type faultOptions struct {
	// tiergateFlags are added to tiergate serve's command line.
	tiergateFlags []string
	// streamIdleTimeout, when set, replaces the shipped connection
	// manager's stream_idle_timeout (an hour), so that a stalled upstream or
	// client is given up within a test's time.
	streamIdleTimeout time.Duration
}

// tgProcess is one run of the tiergate binary.
type tgProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// startFaultStack runs the shipped envoy/envoy.yaml in front of a tiergate
// reading policyYAML from a kubelet-style volume, with the fake providers
// of faults_upstream_test.go.
func startFaultStack(t *testing.T, policyYAML string, o faultOptions) *faultStack {
	t.Helper()
	base, certFile, keyFile := newStack(t)
	fs := &faultStack{stack: base}
	volDir := filepath.Join(base.dir, "policy")
	if err := os.Mkdir(volDir, 0o755); err != nil {
		t.Fatal(err)
	}
	vol, err := kubeletdir.New(volDir, "policy.yaml", []byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	fs.volume = vol

	fs.fake = startFaultUpstream(t, base.certs)
	base.up = fs.fake.upstream
	base.ws = fs.fake.ws

	fs.extproc = freeport.Addr(t)
	wsAddr := freeport.Addr(t)
	admin := freeport.Addr(t)
	fs.adminURL = "http://" + admin
	fs.tgArgs = append([]string{"serve",
		"--config", vol.File(),
		"--extproc-listen", fs.extproc,
		"--ws-listen", wsAddr,
		"--ws-upstream", "ws://" + fs.fake.wsAddr,
		"--admin-listen", admin,
		"--usage-log", base.usageFile,
		"--shutdown-grace", "1s",
		"--pprof",
	}, o.tiergateFlags...)
	fs.tg = fs.startTiergate(t)

	shipped, err := os.ReadFile("../../envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	base.opts = base.envoyOptions(t, fs.extproc, wsAddr, fs.fake.addr, certFile, keyFile)
	base.shipped = shipped
	if base.config, err = envoyrig.Rewrite(shipped, base.opts); err != nil {
		t.Fatal(err)
	}
	if o.streamIdleTimeout > 0 {
		base.config = setStreamIdleTimeout(t, base.config, o.streamIdleTimeout)
	}
	base.launchEnvoy(t)
	base.dialClients(t, 30*time.Second, 64)
	return fs
}

// setStreamIdleTimeout sets the ingress connection manager's
// stream_idle_timeout in the rewritten bootstrap config (JSON).
func setStreamIdleTimeout(t *testing.T, config []byte, d time.Duration) []byte {
	t.Helper()
	var tree map[string]any
	if err := json.Unmarshal(config, &tree); err != nil {
		t.Fatal(err)
	}
	set := 0
	for _, l := range tree["static_resources"].(map[string]any)["listeners"].([]any) {
		lm := l.(map[string]any)
		if lm["name"] != envoyrig.IngressListener {
			continue
		}
		for _, fc := range lm["filter_chains"].([]any) {
			for _, f := range fc.(map[string]any)["filters"].([]any) {
				tc := f.(map[string]any)["typed_config"].(map[string]any)
				if _, ok := tc["stream_idle_timeout"]; ok {
					tc["stream_idle_timeout"] = fmt.Sprintf("%gs", d.Seconds())
					set++
				}
			}
		}
	}
	if set == 0 {
		t.Fatal("the shipped bootstrap has no stream_idle_timeout to shorten")
	}
	out, err := json.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// startTiergate starts tiergate with the stack's arguments and waits until
// it is ready; the test's end stops it.
func (fs *faultStack) startTiergate(t *testing.T) *tgProcess {
	t.Helper()
	cmd := exec.Command(tiergateBin, fs.tgArgs...)
	cmd.Stdout, cmd.Stderr = fs.tgLog, fs.tgLog
	if err := cmd.Start(); err != nil {
		t.Fatalf("start tiergate: %v", err)
	}
	p := &tgProcess{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot act on SIGTERM
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("tiergate's log:\n%s", tail(fs.tgLog.String(), 8000))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := adminHTTP.Get(fs.adminURL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("tiergate exited before it was ready:\n%s", tail(fs.tgLog.String(), 4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tiergate not ready after 30s:\n%s", tail(fs.tgLog.String(), 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signal sends sig to the running tiergate.
func (fs *faultStack) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := fs.tg.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal tiergate %v: %v", sig, err)
	}
}

// metrics reads tiergate's /metrics as name{labels} → value, for the
// series whose name starts with one of prefixes.
func (fs *faultStack) metrics(t *testing.T, prefixes ...string) map[string]float64 {
	t.Helper()
	m, err := scrape(fs.adminURL, prefixes...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// scrape reads adminURL's /metrics as name{labels} → value, for the series
// whose name starts with one of prefixes.
func scrape(adminURL string, prefixes ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, adminURL+"/metrics", nil)
	resp, err := adminHTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", adminURL, err)
	}
	defer resp.Body.Close()
	out, _, err := readSamples(resp.Body, func(line string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				return true
			}
		}
		return false
	})
	return out, err
}

// readSamples reads a Prometheus text exposition: each sample whose line
// keep accepts, keyed by the line up to its value. Lines keep accepts whose
// value is no number are returned in bad, for the caller to fail on or
// pass over.
func readSamples(r io.Reader, keep func(line string) bool) (samples map[string]float64, bad []string, err error) {
	samples = map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !keep(line) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			bad = append(bad, line)
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			bad = append(bad, line)
			continue
		}
		samples[line[:i]] = v
	}
	return samples, bad, sc.Err()
}

// goroutines reads tiergate's go_goroutines.
func (fs *faultStack) goroutines(t *testing.T) int {
	t.Helper()
	return int(fs.metrics(t, "go_goroutines")["go_goroutines"])
}

// settleGoroutines waits until tiergate's goroutine count is at most
// limit, and fails with a goroutine dump if it stays above it for within.
func (fs *faultStack) settleGoroutines(t *testing.T, limit int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := fs.goroutines(t)
		if n <= limit {
			return n
		}
		if time.Now().After(deadline) {
			t.Errorf("tiergate has %d goroutines %v after the fault, want at most %d; its goroutines:\n%s",
				n, within, limit, tail(fs.pprofGoroutines(t), 12000))
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pprofGoroutines returns tiergate's goroutine dump (--pprof).
func (fs *faultStack) pprofGoroutines(t *testing.T) string {
	t.Helper()
	resp, err := adminHTTP.Get(fs.adminURL + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
