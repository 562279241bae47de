package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/tiergate/tiergate/extproc"
	"github.com/tiergate/tiergate/internal/syncbuf"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// startNull runs `tiergate-load null-extproc` in process on port 0, with
// its admin listener and any more flags, and returns the addresses its log
// lines name.
func startNull(t testing.TB, flags ...string) (addr, admin string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		args := append([]string{"null-extproc", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, flags...)
		done <- run(ctx, args, io.Discard, pw)
		_ = pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("null-extproc: %v", err)
		}
	})
	lines := bufio.NewReader(pr)
	for addr == "" || admin == "" {
		line, err := lines.ReadBytes('\n')
		if err != nil {
			t.Fatalf("null-extproc did not log both listeners: %v", err)
		}
		var entry struct{ Msg, Listener, Address string }
		if err := json.Unmarshal(line, &entry); err != nil || entry.Msg != "listening" || entry.Address == "" {
			t.Fatalf("null-extproc logged something other than its listeners: %s", line)
		}
		switch entry.Listener {
		case "null-extproc":
			addr = entry.Address
		case "admin":
			admin = "http://" + entry.Address
		}
	}
	go func() { _, _ = io.Copy(io.Discard, lines) }()
	return addr, admin
}

// serveRegistry is the registry serve builds (the Go and process
// collectors) with the decision and token metrics on it.
func serveRegistry(t testing.TB) (*prometheus.Registry, *policy.DecisionMetrics, *usage.Metrics) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	decisions, err := policy.NewDecisionMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := usage.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	return reg, decisions, tokens
}

// startTiergate runs tiergate's ext_proc server in process, built as
// cmd/tiergate/serve.go builds it (default policy, its own registry with the
// Go and process collectors, usage records discarded as --usage-log off
// does, the same gRPC options), with its /metrics served as the admin
// listener serves it. It returns the ext_proc address and the admin URL.
func startTiergate(t testing.TB) (addr, admin string) {
	t.Helper()
	reg, decisions, tokens := serveRegistry(t)
	ep, err := extproc.New(extproc.Options{
		Store: policy.NewStore(policy.Default()), Registerer: reg, Decisions: decisions, Tokens: tokens,
		Usage: usage.NewRecordWriter(io.Discard),
	})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(extproc.ServerOptions(defaultMaxMsg)...)
	ep.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = g.Serve(ln); close(served) }()
	adminSrv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	t.Cleanup(func() {
		adminSrv.Close()
		g.Stop()
		<-served
	})
	return ln.Addr().String(), adminSrv.URL + "/metrics"
}

// shortRound is the flags of a round short enough for a unit test.
func shortRound(target string, more ...string) []string {
	return append([]string{"extproc", "--target", target, "--streams", "4", "--conns", "2",
		"--warmup", "50ms", "--duration", "300ms", "--json"}, more...)
}

// runRound runs the load tool and decodes its JSON report; err is what run
// returned (exit status 1 when any answer was wrong).
func runRound(t *testing.T, args []string) (*report, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr syncbuf.Buffer
	err := run(ctx, args, &stdout, &stderr)
	var rep report
	if jerr := json.Unmarshal(stdout.Bytes(), &rep); jerr != nil {
		t.Fatalf("run %v: %v; report is not JSON (%v):\n%s\nstderr: %s", args, err, jerr, stdout.Bytes(), stderr.Bytes())
	}
	return &rep, err
}
