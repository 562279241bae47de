package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tiergate/tiergate/internal/envoyrig"
	"github.com/tiergate/tiergate/internal/freeport"
	"github.com/tiergate/tiergate/internal/syncbuf"
	"github.com/tiergate/tiergate/internal/testcert"
)

// tiergateBin and envoyBin are set by TestMain.
var tiergateBin, envoyBin string

// adminHTTP is the client for the admin APIs and readiness endpoints of the
// processes the tests start, and for requests that need no client of a
// stack's own. Its timeout makes a process that accepts a connection and
// never answers fail the test that asked, rather than hang the package
// until go test's own timeout, which names no culprit.
var adminHTTP = &http.Client{Timeout: 15 * time.Second}

// TestMain checks the pinned Envoy and builds tiergate once, without the
// race detector (the tests time real traffic; the race detector's tiergate
// is what the package tests run).
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if envoyBin, err = envoyrig.Binary(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: Envoy:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "tiergate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	tiergateBin = filepath.Join(dir, "tiergate")
	build := exec.Command("go", "build", "-o", tiergateBin, "github.com/tiergate/tiergate/cmd/tiergate")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build ./cmd/tiergate:", err)
		return 1
	}
	return m.Run()
}

// A bootstrap is a shipped Envoy config the tests run.
type bootstrap struct {
	name string
	file string // relative to this directory
	// pod marks k8s/base/envoy.yaml, which has a probe listener too.
	pod bool
}

var bootstraps = []bootstrap{
	{name: "envoy.yaml", file: "../../envoy/envoy.yaml"},
	{name: "envoy-unix-socket.yaml", file: "../../envoy/envoy-unix-socket.yaml"},
	{name: "k8s-base-envoy.yaml", file: "../../k8s/base/envoy.yaml", pod: true},
}

// identityHeader is the test's stand-in for an authenticated identity:
// the filter envoyrig inserts after the group-header strip copies it into
// x-tiergate-group.
const identityHeader = "x-e2e-identity"

// Keys whose digests the policy knows.
const (
	keyFast  = "sk-e2e-fast"
	keyPlain = "sk-e2e-plain"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// testPolicy: codex-fast (by key or identity) is forced to priority and
// may keep it; flex-group is forced to flex; priority on gpt-5.5 (and the
// Realtime max model, and claude-opus-4-6) is blocked for everyone else;
// elsewhere it is stripped.
var testPolicy = `
identity:
  group_header: x-tiergate-group
groups:
- name: codex-fast
  force_service_tier: priority
  api_key_sha256: ["` + sha256Hex(keyFast) + `"]
- name: flex-group
  force_service_tier: flex
rules:
- name: fast-group
  service_tier: priority
  action: pass
  groups: [codex-fast]
- name: no-priority-on-gpt-5.5
  service_tier: priority
  action: block
  model_whitelist: ["gpt-5.5", "gpt-realtime-max", "claude-opus-4-6"]
- name: strip-priority
  service_tier: priority
  action: filter
`

// stack is one Envoy, one tiergate and the fake upstreams, shared by the
// subtests of one bootstrap.
type stack struct {
	url       string // https://127.0.0.1:PORT, Envoy's listener
	adminURL  string // Envoy's admin API
	up        *upstream
	ws        *wsUpstream
	certs     testcert.Set
	caFile    string
	accessLog *syncbuf.Buffer // Envoy's stdout
	envoyLog  *syncbuf.Buffer // Envoy's stderr
	tgLog     *syncbuf.Buffer // tiergate's stderr
	usageFile string
	// h1 speaks HTTP/1.1 to Envoy, h2 HTTP/2.
	h1, h2 *http.Client
	// config is the rewritten bootstrap Envoy runs, made from shipped
	// with opts.
	config  []byte
	shipped []byte
	opts    envoyrig.Options
	dir     string
}

// startStack runs bs with tiergate under policyYAML.
func startStack(t *testing.T, bs bootstrap, policyYAML string) *stack {
	t.Helper()
	s, certFile, keyFile := newStack(t)
	policyFile := writeFile(t, s.dir, "policy.yaml", []byte(policyYAML))

	s.up = startUpstream(t, s.certs)
	s.ws = startWSUpstream(t)

	extprocFlag := freeport.Addr(t)
	extprocEP := extprocFlag
	shipped, err := os.ReadFile(bs.file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(shipped), "pipe:") {
		sock := filepath.Join(s.dir, "extproc.sock")
		extprocFlag, extprocEP = "unix://"+sock, "unix://"+sock
	}
	wsAddr := freeport.Addr(t)
	startTiergate(t, s, policyFile, extprocFlag, wsAddr)

	s.shipped = shipped
	s.opts = s.envoyOptions(t, extprocEP, wsAddr, s.up.addr, certFile, keyFile)
	if bs.pod {
		s.opts.Listeners["pod_health"] = freeport.Addr(t)
	}
	if s.config, err = envoyrig.Rewrite(shipped, s.opts); err != nil {
		t.Fatal(err)
	}
	s.launchEnvoy(t)
	s.dialClients(t, 60*time.Second, 0)
	return s
}

// newStack makes a stack's directory, its certificates (for the providers'
// hosts), its logs and the certificate files Envoy's listener reads.
func newStack(t *testing.T) (s *stack, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	s = &stack{
		dir:       dir,
		certs:     testcert.NewFor(t, "api.openai.com", "api.anthropic.com"),
		accessLog: &syncbuf.Buffer{}, envoyLog: &syncbuf.Buffer{}, tgLog: &syncbuf.Buffer{},
		usageFile: filepath.Join(dir, "usage.jsonl"),
	}
	s.caFile = writeFile(t, dir, "ca.pem", s.certs.CAPEM)
	certFile = writeFile(t, dir, "cert.pem", s.certs.CertPEM)
	keyFile = writeFile(t, dir, "key.pem", s.certs.KeyPEM)
	return s, certFile, keyFile
}

// envoyOptions give Envoy's ingress listener and admin API free addresses,
// send ext_proc to extproc and the bridge's upgrades to wsAddr, and both
// providers to provider, trusted by the stack's CA.
func (s *stack) envoyOptions(t *testing.T, extproc, wsAddr, provider, certFile, keyFile string) envoyrig.Options {
	t.Helper()
	return envoyrig.Options{
		Admin:     freeport.Addr(t),
		Listeners: map[string]string{envoyrig.IngressListener: freeport.Addr(t)},
		Clusters: map[string]string{
			"tiergate_extproc": extproc,
			"tiergate_ws":      wsAddr,
			"openai":           provider,
			"anthropic":        provider,
		},
		UpstreamCA:     s.caFile,
		DownstreamTLS:  &envoyrig.TLSFiles{Cert: certFile, Key: keyFile},
		IdentityHeader: identityHeader,
	}
}

// launchEnvoy starts Envoy on s.config, listening where s.opts say.
func (s *stack) launchEnvoy(t *testing.T) {
	t.Helper()
	s.url = "https://" + s.opts.Listeners[envoyrig.IngressListener]
	s.adminURL = "http://" + s.opts.Admin
	startEnvoy(t, s.adminURL, writeFile(t, s.dir, "envoy.json", s.config), s.accessLog, s.envoyLog)
}

// dialClients makes the stack's HTTP/1.1 and HTTP/2 clients, trusting its
// CA, each request bounded by timeout; maxIdle, when not 0, is how many
// idle HTTP/1.1 connections a client keeps.
func (s *stack) dialClients(t *testing.T, timeout time.Duration, maxIdle int) {
	t.Helper()
	tlsConf := &tls.Config{RootCAs: s.certs.Pool}
	h1 := &http.Transport{TLSClientConfig: tlsConf.Clone(), DisableCompression: true, MaxIdleConnsPerHost: maxIdle,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	h2 := &http.Transport{TLSClientConfig: tlsConf.Clone(), DisableCompression: true, ForceAttemptHTTP2: true}
	t.Cleanup(h1.CloseIdleConnections)
	t.Cleanup(h2.CloseIdleConnections)
	s.h1 = &http.Client{Transport: h1, Timeout: timeout}
	s.h2 = &http.Client{Transport: h2, Timeout: timeout}
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func startTiergate(t *testing.T, s *stack, policyFile, extproc, wsAddr string) {
	t.Helper()
	admin := freeport.Addr(t)
	cmd := exec.Command(tiergateBin, "serve",
		"--config", policyFile,
		"--extproc-listen", extproc,
		"--ws-listen", wsAddr,
		"--ws-upstream", "ws://"+s.ws.addr,
		"--admin-listen", admin,
		"--usage-log", s.usageFile,
		"--shutdown-grace", "1s",
		"--log-level", "debug",
	)
	cmd.Stdout, cmd.Stderr = s.tgLog, s.tgLog
	startProcess(t, "tiergate", cmd, "http://"+admin+"/readyz", s.tgLog)
}

func startEnvoy(t *testing.T, adminURL, configFile string, stdout, stderr *syncbuf.Buffer) {
	t.Helper()
	cmd := exec.Command(envoyBin, "-c", configFile,
		"--disable-hot-restart", "--concurrency", "1", "--log-level", "warn",
		// The access log is read by the tests: flush it at once, not every second.
		"--file-flush-interval-msec", "20")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	startProcess(t, "envoy", cmd, adminURL+"/ready", stderr)
}

// startProcess starts cmd, stops it (SIGTERM, then SIGKILL) when the test
// ends, and waits until readyURL answers 200.
func startProcess(t *testing.T, name string, cmd *exec.Cmd, readyURL string, log *syncbuf.Buffer) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, tail(log.String(), 8000))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, readyURL, nil)
		if resp, err := adminHTTP.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("%s exited before it was ready: %v\n%s", name, err, log.String())
		case <-ctx.Done():
			t.Fatalf("%s not ready after 30s:\n%s", name, log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
