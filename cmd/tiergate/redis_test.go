package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tiergate/tiergate/internal/kubeletdir"
	"github.com/tiergate/tiergate/internal/pricetest"
	"github.com/tiergate/tiergate/internal/redistest"
	"github.com/tiergate/tiergate/internal/testcert"
)

// sharedBudgetPolicy blocks callers with no group once they have spent
// 0.00002: one request of 10 input and 5 output tokens at 1 and 2 per
// million.
var sharedBudgetPolicy = pricetest.Table() + `budgets:
- name: everyone-daily
  window: day
  limit: 0.00002
  on_exhausted: block
budget_store:
  redis:
    address: %s
    password_file: %s
    key_prefix: "tiergate:"
    refresh: %s
`

const sharedRefresh = 300 * time.Millisecond

// writeSharedPolicy writes sharedBudgetPolicy for Redis at addr with
// password in a file; extra lines go into budget_store.redis.
func writeSharedPolicy(t *testing.T, addr, password string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "policy.yaml")
	text := fmt.Appendf(nil, sharedBudgetPolicy, addr, pw, sharedRefresh)
	for _, l := range extra {
		text = append(text, "    "+l+"\n"...)
	}
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func extprocClient(t *testing.T, addr string) extprocv3.ExternalProcessorClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return extprocv3.NewExternalProcessorClient(conn)
}

// readyDetail returns /readyz's status code and JSON.
func readyDetail(t *testing.T, admin string) (int, readyJSON) {
	t.Helper()
	code, body := get(t, "http://"+admin+"/readyz")
	var r readyJSON
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz: %v: %s", err, body)
	}
	return code, r
}

// TestTwoServesShareOneBudgetThroughRedis: what one replica serves counts
// against the budget on the other within one refresh interval.
func TestTwoServesShareOneBudgetThroughRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{Password: "s3cret"})
	path := writeSharedPolicy(t, srv.Addr, "s3cret")
	_, a, logA := startServeLogged(t, "--config", path, "--usage-log", "off")
	_, b, _ := startServeLogged(t, "--config", path, "--usage-log", "off")
	for _, addrs := range []map[string]string{a, b} {
		waitReady(t, addrs["admin"], "ok")
	}
	if strings.Contains(logA.String(), "budgets keep spend in memory") {
		t.Errorf("serve warned of the memory store with budget_store set:\n%s", logA)
	}
	ca, cb := extprocClient(t, a["extproc"]), extprocClient(t, b["extproc"])
	ctx := context.Background()
	const body = `{"model":"gpt-5.5"}`
	const response = `{"id":"resp_1","model":"gpt-5.5","usage":{"input_tokens":10,"output_tokens":5}}`
	// b decides without spending: a request whose response never comes
	// adds nothing.
	if code, err := transact(ctx, cb, body, ""); err != nil || code != http.StatusOK {
		t.Fatalf("b before any spend: %d, %v; want 200", code, err)
	}
	// a serves the whole budget.
	if code, err := transact(ctx, ca, body, response); err != nil || code != http.StatusOK {
		t.Fatalf("a: %d, %v; want 200", code, err)
	}
	spent := time.Now()
	for {
		code, err := transact(ctx, cb, body, "")
		if err != nil {
			t.Fatal(err)
		}
		if code == http.StatusTooManyRequests {
			break
		}
		if time.Since(spent) > 5*time.Second {
			t.Fatalf("b still answers %d 5s after a spent the budget", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// One refresh, plus sending and reading back on a busy test machine.
	if took := time.Since(spent); took > sharedRefresh+250*time.Millisecond {
		t.Errorf("b refused %s after a spent the budget, want within one refresh (%s)", took, sharedRefresh)
	}
	_, page := get(t, "http://"+b["admin"]+"/budgets")
	if !strings.Contains(page, `"group":"none"`) || !strings.Contains(page, `"spent":0.00002`) || !strings.Contains(page, `"state":"exhausted"`) {
		t.Errorf("b's /budgets = %s, want none at 0.00002, exhausted", page)
	}
	_, metrics := get(t, "http://"+b["admin"]+"/metrics")
	if !strings.Contains(metrics, "tiergate_budget_store_up 1") {
		t.Error("b's /metrics lacks tiergate_budget_store_up 1")
	}
}

// TestServeStaysReadyWhateverRedisDoes: a wrong password, an unreachable
// address and a TLS failure are each clear in the log, /readyz's detail and
// the gauge, and readiness holds.
func TestServeStaysReadyWhateverRedisDoes(t *testing.T) {
	t.Parallel()
	withPassword := redistest.Start(t, redistest.Options{Password: "right"})
	certs := testcert.New(t)
	withTLS := redistest.Start(t, redistest.Options{Password: "right", TLS: &certs})
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherCA, testcert.New(t).CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	closed := redistest.ClosedAddr(t)
	cases := []struct {
		name, policy, state, logWant string
	}{
		{"a wrong password is auth_failed", writeSharedPolicy(t, withPassword.Addr, "wrong"), "auth_failed", "WRONGPASS"},
		{"an unreachable address is unreachable", writeSharedPolicy(t, closed, "right"), "unreachable", "connection refused"},
		{"a certificate from another CA is unreachable", writeSharedPolicy(t, withTLS.Addr, "right", "tls: {ca_file: "+otherCA+"}"), "unreachable", "certificate signed by unknown authority"},
		{"the right CA and password are ok", writeSharedPolicy(t, withTLS.Addr, "right", "tls: {ca_file: "+withTLS.CAFile()+"}"), "ok", "budget store reachable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, addrs, log := startServeLogged(t, "--config", tc.policy, "--usage-log", "off")
			waitReady(t, addrs["admin"], tc.state)
			if code, r := readyDetail(t, addrs["admin"]); code != http.StatusOK || r.Status != "ok" {
				t.Errorf("/readyz = %d %+v, want 200 ok: Redis trouble never fails readiness", code, r)
			}
			for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log.String(), tc.logWant); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the log does not say %q:\n%s", tc.logWant, log)
				}
			}
			up := "0"
			if tc.state == "ok" {
				up = "1"
			}
			if _, metrics := get(t, "http://"+addrs["admin"]+"/metrics"); !strings.Contains(metrics, "tiergate_budget_store_up "+up) {
				t.Errorf("/metrics lacks tiergate_budget_store_up %s", up)
			}
		})
	}
}

// waitReady waits until /readyz is ready with the budget store in state.
func waitReady(t *testing.T, admin, state string) {
	t.Helper()
	var r readyJSON
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var code int
		if code, r = readyDetail(t, admin); code == http.StatusOK && r.BudgetStore == state {
			return
		}
	}
	t.Fatalf("/readyz = %+v, want budget_store %s", r, state)
}

// TestAReloadThatMovesTheStoreKeepsPendingSpend: spend served while the
// policy's Redis is unreachable reaches the Redis a reload names instead.
func TestAReloadThatMovesTheStoreKeepsPendingSpend(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{Password: "s3cret"})
	closed := redistest.ClosedAddr(t)
	before, err := os.ReadFile(writeSharedPolicy(t, closed, "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(writeSharedPolicy(t, srv.Addr, "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := kubeletdir.New(t.TempDir(), "tiergate.yaml", before)
	if err != nil {
		t.Fatal(err)
	}
	_, addrs, _ := startServeLogged(t, "--config", dir.File(), "--usage-log", "off")
	waitReady(t, addrs["admin"], "unreachable")
	const response = `{"id":"resp_1","model":"gpt-5.5","usage":{"input_tokens":10,"output_tokens":5}}`
	if code, err := transact(context.Background(), extprocClient(t, addrs["extproc"]), `{"model":"gpt-5.5"}`, response); err != nil || code != http.StatusOK {
		t.Fatalf("request: %d, %v", code, err)
	}
	if err := dir.Update(after); err != nil {
		t.Fatal(err)
	}
	waitReady(t, addrs["admin"], "ok")
	c := srv.Client()
	defer c.Close()
	key := "tiergate:{everyone-daily}:none:" + time.Now().UTC().Format(time.DateOnly)
	var got int64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got, err = c.Get(context.Background(), key).Int64(); err == nil {
			break
		}
	}
	if got != 20 {
		t.Errorf("GET %s = %d (%v), want the 20 micro-units served before the reload", key, got, err)
	}
}
