package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tiergate/tiergate/internal/envoyrig"
	"github.com/tiergate/tiergate/internal/freeport"
	"github.com/tiergate/tiergate/internal/syncbuf"
	"github.com/tiergate/tiergate/internal/testcert"
)

// proc is a process the drain test stops itself, as the kubelet would.
type proc struct {
	cmd    *exec.Cmd
	log    *syncbuf.Buffer
	exited chan struct{}
	err    error
}

func startProc(t *testing.T, name string, cmd *exec.Cmd, readyURL string) *proc {
	t.Helper()
	p := &proc{cmd: cmd, log: &syncbuf.Buffer{}, exited: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.log
	}
	cmd.Stderr = p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, tail(p.log.String(), 6000))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := adminHTTP.Get(readyURL); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it was ready: %v\n%s", name, p.err, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 30s:\n%s", name, p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends sig and waits for the process to exit.
func (p *proc) stop(t *testing.T, name string, sig syscall.Signal, within time.Duration) {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("%s still running %v after %v", name, within, sig)
	}
}

// podOptions is what a pod-shaped stack runs: the pod's bootstrap
// (k8s/base/envoy.yaml), tiergate on the Unix socket, and the given fakes.
type podOptions struct {
	certs                testcert.Set
	upstream, wsUpstream string // the fake providers' addresses
	tiergateArgs         []string
	envoyArgs            []string
	// tiergateStdout, when set, receives tiergate's stdout; with
	// usageStdout the usage records go there instead of to a file.
	tiergateStdout *os.File
	usageStdout    bool
}

// pod is a running Envoy and tiergate that the test stops itself.
type pod struct {
	listen                    string // Envoy's TLS listener
	envoyAdmin, tiergateAdmin string // host:port
	usageFile                 string
	envoy, tiergate           *proc
}

func startPod(t *testing.T, o podOptions) *pod {
	t.Helper()
	dir := t.TempDir()
	p := &pod{usageFile: filepath.Join(dir, "usage.jsonl")}
	sock := filepath.Join(dir, "extproc.sock")
	wsAddr := freeport.Addr(t)
	p.tiergateAdmin = freeport.Addr(t)
	usageLog := p.usageFile
	if o.usageStdout {
		usageLog = "stdout"
	}
	args := append([]string{"serve",
		"--config", writeFile(t, dir, "policy.yaml", []byte(testPolicy)),
		"--extproc-listen", "unix://" + sock, "--ws-listen", wsAddr, "--ws-upstream", "ws://" + o.wsUpstream,
		"--admin-listen", p.tiergateAdmin, "--usage-log", usageLog}, o.tiergateArgs...)
	cmd := exec.Command(tiergateBin, args...)
	if o.tiergateStdout != nil {
		cmd.Stdout = o.tiergateStdout
	}
	p.tiergate = startProc(t, "tiergate", cmd, "http://"+p.tiergateAdmin+"/readyz")

	shipped, err := os.ReadFile("../../k8s/base/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p.listen, p.envoyAdmin = freeport.Addr(t), freeport.Addr(t)
	config, err := envoyrig.Rewrite(shipped, envoyrig.Options{
		Admin:     p.envoyAdmin,
		Listeners: map[string]string{"llm_ingress": p.listen, "pod_health": freeport.Addr(t)},
		Clusters: map[string]string{
			"tiergate_extproc": "unix://" + sock, "tiergate_ws": wsAddr, "openai": o.upstream, "anthropic": o.upstream,
		},
		UpstreamCA:     writeFile(t, dir, "ca.pem", o.certs.CAPEM),
		DownstreamTLS:  &envoyrig.TLSFiles{Cert: writeFile(t, dir, "cert.pem", o.certs.CertPEM), Key: writeFile(t, dir, "key.pem", o.certs.KeyPEM)},
		IdentityHeader: identityHeader,
	})
	if err != nil {
		t.Fatal(err)
	}
	p.envoy = startProc(t, "envoy", exec.Command(envoyBin, append([]string{"-c", writeFile(t, dir, "envoy.json", config),
		"--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"}, o.envoyArgs...)...),
		"http://"+p.envoyAdmin+"/ready")
	return p
}
