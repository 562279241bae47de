// Package nodeclients runs the openai npm package's own WebSocket clients
// (wsbridge/testdata/node/script.mjs: ResponsesWS, the GA Realtime client
// and the beta one) for the tests that put them in front of the bridge,
// directly (wsbridge) or through Envoy (internal/e2e).
//
// A missing Node or missing packages fail the test rather than skip it, so
// CI cannot pass without running the clients.
package nodeclients

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tidwall/gjson"
)

// Run runs script.mjs in dir (wsbridge/testdata/node, relative to the
// calling test's package) until it exits or ctx ends, with PATH, a fresh
// HOME and env ("NAME=value": NODE_EXTRA_CA_CERTS, TIERGATE_BASE_URL,
// OPENAI_API_KEY). It returns the lines the script printed, each a JSON
// object, grouped by their "client", and the whole of what it printed.
func Run(t testing.TB, ctx context.Context, dir string, env ...string) (saw map[string][]gjson.Result, stdout string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: this test runs the openai npm clients (Node 20 or later)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err != nil {
		t.Fatal("the Node test's packages are missing: scripts/test installs them, or run `npm ci --prefix wsbridge/testdata/node` from the repository root")
	}
	cmd := exec.CommandContext(ctx, node, "script.mjs")
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node script.mjs: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), out.String())
	}
	stdout = out.String()
	saw = map[string][]gjson.Result{}
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if !json.Valid(sc.Bytes()) {
			t.Fatalf("the script printed a line that is not JSON: %s", sc.Text())
		}
		line := gjson.ParseBytes(sc.Bytes())
		saw[line.Get("client").Str] = append(saw[line.Get("client").Str], line)
	}
	return saw, stdout
}
