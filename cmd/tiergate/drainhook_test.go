package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/policy"
)

func TestDrainFlagsKeepTheAdminAPIsOnLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"the defaults are loopback", nil, true},
		{"an IPv6 loopback is loopback", []string{"--envoy-admin", "http://[::1]:9901"}, true},
		{"localhost is loopback", []string{"--envoy-admin", "http://localhost:9901"}, true},
		{"the tiergate call may be left out", []string{"--tiergate-admin", ""}, true},
		{"a pod address is refused for Envoy", []string{"--envoy-admin", "http://10.0.0.7:9901"}, false},
		{"every interface is refused for tiergate", []string{"--tiergate-admin", "http://0.0.0.0:9464"}, false},
		{"a name that is not localhost is refused", []string{"--envoy-admin", "http://envoy:9901"}, false},
		{"https is refused", []string{"--envoy-admin", "https://127.0.0.1:9901"}, false},
		{"a zero timeout is refused", []string{"--timeout", "0s"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseDrainFlags(tc.args, io.Discard)
			if (err == nil) != tc.ok {
				t.Errorf("parseDrainFlags(%q) = %v, want ok=%v", tc.args, err, tc.ok)
			}
		})
	}
}

// TestDrainInstallCopiesARunnableBinary: the init container's step puts a
// binary on the shared volume that Envoy's hook can run.
func TestDrainInstallCopiesARunnableBinary(t *testing.T) {
	t.Parallel()
	dst := filepath.Join(t.TempDir(), "tiergate")
	if r := runBinary(t, nil, "drain", "--install", dst); r.code != 0 {
		t.Fatalf("drain --install: exit %d: %s", r.code, r.stderr)
	}
	out, err := exec.Command(dst, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "tiergate ") {
		t.Fatalf("the copy does not run: %v %q", err, out)
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".tiergate-*")); len(matches) > 0 {
		t.Errorf("temporary files left behind: %v", matches)
	}
}

// TestAdminDrainOnlyFromLoopback: POST /drain starts the WebSocket drain
// for a loopback peer only; the admin listener binds every interface in
// Kubernetes.
func TestAdminDrainOnlyFromLoopback(t *testing.T) {
	t.Parallel()
	p, err := policy.Load([]byte("rules: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	b, err := budget.New(budget.NewMemory(), policy.NewStore(p).Load, reg, budget.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var drained atomic.Int32
	h := adminHandler(reg, policy.NewStore(p), b, "test", &readiness{}, false, func() { drained.Add(1) })
	for _, tc := range []struct {
		name, remote string
		status       int
	}{
		{"a pod peer is refused", "10.1.2.3:40000", http.StatusForbidden},
		{"an IPv4 loopback peer starts it", "127.0.0.1:40000", http.StatusAccepted},
		{"an IPv6 loopback peer starts it", "[::1]:40000", http.StatusAccepted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := drained.Load()
			req := httptest.NewRequest(http.MethodPost, "/drain", nil)
			req.RemoteAddr = tc.remote
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d", rec.Code, tc.status)
			}
			if started := drained.Load() > before; started != (tc.status == http.StatusAccepted) {
				t.Errorf("drain started: %v", started)
			}
		})
	}
}
