package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tiergate/tiergate/internal/freeport"
	"github.com/tiergate/tiergate/internal/syncbuf"
	"github.com/tiergate/tiergate/internal/testcert"
)

// freeRun returns a port N with N .. N+4 free a moment ago, as scripts/run
// --port needs.
func freeRun(t *testing.T) int {
	t.Helper()
	for range 50 {
		base := freeport.Port(t)
		if base > 65000 {
			continue
		}
		ok := true
		for i := 1; i <= 4 && ok; i++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no five free ports in a row")
	return 0
}

// TestRunCommand runs the README's run command, scripts/run, offline: its
// upstream override points Envoy at a local stand-in for the providers. A
// request through Envoy is policed (a filtered body reaches the stand-in, a
// blocked one gets 403), and an interrupt (Ctrl-C) stops Envoy and tiergate.
func TestRunCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certs := testcert.NewFor(t, "api.openai.com", "api.anthropic.com")
	up := startUpstream(t, certs)
	caFile := writeFile(t, dir, "ca.pem", certs.CAPEM)
	policyFile := writeFile(t, dir, "policy.yaml", []byte(`
rules:
- {service_tier: priority, action: block, model_whitelist: ["gpt-5.5"]}
- {service_tier: priority, action: filter}
`))
	port := freeRun(t)
	script, err := filepath.Abs("../../scripts/run")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script, "--port", strconv.Itoa(port), "--upstream", up.addr, "--upstream-ca", caFile,
		"--", "--config", policyFile, "--usage-log", "off")
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(cmd.Environ(), "TIERGATE_ENVOY="+envoyBin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("scripts/run's output:\n%s", tail(out.String(), 6000))
		}
	})

	base := "http://127.0.0.1:" + strconv.Itoa(port)
	// Ready: tiergate's /readyz and Envoy's admin /ready.
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second) // includes go build
	defer cancel()
	for _, u := range []string{"http://127.0.0.1:" + strconv.Itoa(port+4) + "/readyz", "http://127.0.0.1:" + strconv.Itoa(port+1) + "/ready"} {
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			resp, err := adminHTTP.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-exited:
				t.Fatalf("scripts/run exited early: %v\n%s", waitErr, out.String())
			case <-ctx.Done():
				t.Fatalf("%s not ready", u)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}

	post := func(t *testing.T, path, body string) (int, string) {
		t.Helper()
		resp, err := adminHTTP.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	t.Run("a priority request is filtered on its way to the provider", func(t *testing.T) {
		status, body := post(t, "/v1/responses?e2e=run-filter", `{"model":"gpt-5.4","service_tier":"priority","input":"hi"}`)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		if got := up.take(t, "run-filter"); string(got.body) != `{"model":"gpt-5.4","input":"hi"}` || got.host != "api.openai.com" {
			t.Errorf("the provider received %q for host %s", got.body, got.host)
		}
	})
	t.Run("a blocked request gets 403 and reaches no provider", func(t *testing.T) {
		status, body := post(t, "/v1/chat/completions?e2e=run-block", `{"model":"gpt-5.5","service_tier":"priority","messages":[]}`)
		if status != http.StatusForbidden || !strings.Contains(body, "policy_violation") {
			t.Errorf("status %d, body %s; want 403 policy_violation", status, body)
		}
		up.none(t, "run-block")
	})
	t.Run("an interrupt stops Envoy and tiergate", func(t *testing.T) {
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-exited:
			t.Logf("scripts/run ended: %v", waitErr)
		case <-time.After(30 * time.Second):
			t.Fatal("scripts/run still running 30s after SIGINT")
		}
		for i := range 5 {
			addr := "127.0.0.1:" + strconv.Itoa(port+i)
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s still accepts connections", addr)
			}
		}
	})
}
