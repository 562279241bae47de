package main

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestServeBudgets: serve with budgets warns that the memory store is per
// replica, and /budgets lists each budget's groups with their limits.
func TestServeBudgets(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binary, "serve", "--config", "testdata/budgets.yaml",
		"--admin-listen", "127.0.0.1:0", "--extproc-listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0", "--usage-log", "off")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	warned, admin := make(chan struct{}), make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			var l struct {
				Level, Msg, Listener, Address, Store string
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			if l.Level == "WARN" && l.Store == "memory" && strings.Contains(l.Msg, "each replica") && !once {
				once = true
				close(warned)
			}
			if l.Msg == "listening" && l.Listener == "admin" {
				admin <- l.Address
			}
		}
	}()
	var base string
	select {
	case a := <-admin:
		base = "http://" + a
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not log its admin listener")
	}
	select {
	case <-warned:
	case <-time.After(5 * time.Second):
		t.Error("serve did not warn that budgets are kept in memory per replica")
	}
	code, body := get(t, base+"/budgets")
	var rows []struct {
		Budget, Group, State string
		Spent, Limit         float64
	}
	if err := json.Unmarshal([]byte(body), &rows); code != 200 || err != nil {
		t.Fatalf("/budgets = %d %v\n%s", code, err, body)
	}
	if len(rows) != 1 || rows[0].Budget != "codex-fast-daily" || rows[0].Group != "codex-fast" ||
		rows[0].Limit != 200 || rows[0].Spent != 0 || rows[0].State != "ok" {
		t.Errorf("/budgets = %s, want codex-fast-daily's one named group with nothing spent", body)
	}
	_, metrics := get(t, base+"/metrics")
	for _, m := range []string{`tiergate_budget_limit{budget="codex-fast-daily"} 200`, `tiergate_budget_limit{budget="everyone-monthly"} 5000`, `tiergate_budget_spent{budget="codex-fast-daily",group="codex-fast"} 0`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}
