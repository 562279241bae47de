package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// reloadWithin is how soon a swapped ConfigMap must be in force: the
// watcher's debounce (at most 500 ms) plus the kubelet's own steps.
const reloadWithin = 2 * time.Second

// reloadedPolicy is testPolicy with one rule more: priority on
// gpt-5.4-mini, filtered before, is now blocked. The load never sends that
// model, so its expectations hold under both.
var reloadedPolicy = strings.Replace(testPolicy, "rules:\n", `rules:
- name: no-priority-on-mini
  service_tier: priority
  action: block
  model_whitelist: ["gpt-5.4-mini"]
`, 1)

const (
	miniPriority      = `{"model":"gpt-5.4-mini","service_tier":"priority","input":"hi"}`
	miniPriorityFrame = `{"type":"response.create","model":"gpt-5.4-mini","service_tier":"priority","input":"hi"}`
)

// TestFaultReload swaps the policy the way the kubelet updates a mounted
// ConfigMap while steady mixed load (HTTP over both protocols, WebSocket
// sessions) runs through Envoy: a new policy is in force within 2 s, for
// HTTP and for the next frame of an open session; garbage, an empty file
// and a deleted file each leave the last good policy in force and are
// counted (tiergate_config_reloads_total{result}); a restore is in force
// within 2 s; and the load sees no failed request.
func TestFaultReload(t *testing.T) {
	t.Parallel()
	s := startFaultStack(t, testPolicy, faultOptions{})
	probe := func(t *testing.T) int {
		t.Helper()
		return s.send(t, s.h2, http.MethodPost, withID("/v1/responses", newID(t), ""), nil, []byte(miniPriority)).status
	}
	if st := probe(t); st != http.StatusOK {
		t.Fatalf("before the swap, priority on gpt-5.4-mini got %d, want 200 (filtered)", st)
	}
	// A session opened before the swap, with one turn under the old policy.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open, _, err := wsDialURL(ctx, s.stack, "/v1/responses", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer open.CloseNow()
	if ev := wsTurn(t, ctx, open, miniPriorityFrame); ev != "response.completed" {
		t.Fatalf("before the swap the session's turn ended with %s", ev)
	}

	load := &mixedLoad{s: s.stack, httpRate: 40, wsWorkers: 2, wsTurnGap: 20 * time.Millisecond}
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); load.run(loadCtx) }()
	defer func() { stopLoad(); wg.Wait() }()
	time.Sleep(time.Second) // the load is running

	reloads := func(t *testing.T) map[string]float64 {
		t.Helper()
		m := s.metrics(t, "tiergate_config_reloads_total")
		return map[string]float64{
			"success": m[`tiergate_config_reloads_total{result="success"}`],
			"invalid": m[`tiergate_config_reloads_total{result="invalid"}`],
			"missing": m[`tiergate_config_reloads_total{result="missing"}`],
		}
	}
	// waitFor polls until cond holds, failing after within.
	waitFor := func(t *testing.T, what string, within time.Duration, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > within {
				t.Fatalf("%s: not after %v", what, within)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(start)
	}
	// stays checks that the last good policy (the block) stays in force.
	stays := func(t *testing.T) {
		t.Helper()
		for range 5 {
			if st := probe(t); st != http.StatusForbidden {
				t.Fatalf("priority on gpt-5.4-mini got %d, want 403: the last good policy must stay", st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	start := reloads(t)

	t.Run("a new policy is in force within 2 s", func(t *testing.T) {
		if err := s.volume.Update([]byte(reloadedPolicy)); err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, "the new policy in force", reloadWithin, func() bool { return probe(t) == http.StatusForbidden })
		t.Logf("in force after %v", took.Round(time.Millisecond))
	})
	t.Run("an open session's next frame is judged by the new policy", func(t *testing.T) {
		if ev := wsTurn(t, ctx, open, miniPriorityFrame); ev != "error" {
			t.Errorf("after the swap the open session's frame got %s, want the policy's error event", ev)
		}
		_, _, err := open.Read(ctx)
		if st := websocket.CloseStatus(err); st != websocket.StatusPolicyViolation {
			t.Errorf("close %v (%v), want 1008", st, err)
		}
	})
	for _, tc := range []struct {
		name   string
		change func() error
		result string
	}{
		{"garbage is refused and counted, the last good policy stays", func() error {
			return s.volume.Update([]byte("rules: [{service_tier: priority, action: blok}\n\x00garbage"))
		}, "invalid"},
		{"an empty file is refused and counted, the last good policy stays", func() error {
			return s.volume.Update(nil)
		}, "invalid"},
		{"a deleted file is counted as missing, the last good policy stays", func() error {
			return os.Remove(s.volume.File())
		}, "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := reloads(t)[tc.result]
			if err := tc.change(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the "+tc.result+" reload counted", reloadWithin, func() bool { return reloads(t)[tc.result] > before })
			stays(t)
		})
	}
	t.Run("a restore is in force within 2 s", func(t *testing.T) {
		if err := s.volume.Update([]byte(testPolicy)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", filepath.Base(s.volume.File())), s.volume.File()); err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, "the restored policy in force", reloadWithin, func() bool { return probe(t) == http.StatusOK })
		t.Logf("in force after %v", took.Round(time.Millisecond))
	})

	stopLoad()
	wg.Wait()
	end := reloads(t)
	t.Logf("reloads counted: %v → %v; load: %s", start, end, load.report())
	if got := end["success"] - start["success"]; got != 2 {
		t.Errorf("%v successful reloads counted, want 2 (the new policy, the restore)", got)
	}
	if got := end["invalid"] - start["invalid"]; got < 2 {
		t.Errorf("%v invalid reloads counted, want at least 2 (garbage, empty)", got)
	}
	if got := end["missing"] - start["missing"]; got < 1 {
		t.Errorf("%v missing reloads counted, want at least 1", got)
	}
	if n := load.failures.Load(); n > 0 {
		t.Errorf("%d requests or turns failed during the reloads: %q", n, load.problems)
	}
	if load.requests.Load() == 0 || load.wsTurns.Load() == 0 {
		t.Errorf("the load did not run: %s", load.report())
	}
	if n := s.fake.unpoliced.Load(); n > 0 {
		t.Errorf("%d load requests reached the provider with a tier the policy refuses", n)
	}
}

// wsTurn sends frame and returns the type of the event that ends the turn
// (response.completed, or error).
func wsTurn(t *testing.T, ctx context.Context, c *websocket.Conn, frame string) string {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		t.Fatalf("write: %v", err)
	}
	for {
		ev := readEvent(t, ctx, c)
		switch typ := ev.Get("type").Str; typ {
		case "response.completed", "response.failed", "response.incomplete", "error":
			return typ
		}
	}
}
