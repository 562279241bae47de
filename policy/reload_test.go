package policy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tiergate/tiergate/internal/kubeletdir"
)

// newKubeletDir lays out a ConfigMap volume as the kubelet does.
func newKubeletDir(t *testing.T, content string) *kubeletDir {
	t.Helper()
	d, err := kubeletdir.New(t.TempDir(), "tiergate.yaml", []byte(content))
	if err != nil {
		t.Fatal(err)
	}
	return &kubeletDir{t: t, d: d}
}

type kubeletDir struct {
	t *testing.T
	d *kubeletdir.Dir
}

func (k *kubeletDir) path() string { return k.d.File() }

func (k *kubeletDir) update(content string) {
	k.t.Helper()
	if err := k.d.Update([]byte(content)); err != nil {
		k.t.Fatal(err)
	}
}

const (
	filterFile = "rules: [{name: v1, service_tier: priority, action: filter}]\n"
	blockFile  = "rules: [{name: v2, service_tier: priority, action: block}]\n"
	passFile   = "rules: [{name: v3, service_tier: priority, action: pass}]\n"
	brokenFile = "rules: [{name: v9, service_tier: priority, action: blok}]\n"
)

func startWatcher(t *testing.T, path string) (*Store, *Watcher, *prometheus.Registry) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Load(data)
	if err != nil {
		t.Fatal(err)
	}
	store := NewStore(p)
	reg := prometheus.NewRegistry()
	w, err := NewWatcher(path, store, reg, slog.New(slog.NewTextHandler(io.Discard, nil)), WatcherOptions{Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-w.Watching():
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher did not start watching")
	}
	return store, w, reg
}

// waitForRule waits up to 2s (the promise) for the rule in force to be want.
func waitForRule(t *testing.T, store *Store, want string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if got := store.Load().rules[0].label; got == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("rule in force = %q after 2s, want %q", store.Load().rules[0].label, want)
}

// waitForCount waits up to 2s for reloads{result} to reach at least want,
// and returns it.
func waitForCount(t *testing.T, w *Watcher, result string, want float64) float64 {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := testutil.ToFloat64(w.metrics.reloads.WithLabelValues(result))
		if got >= want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("reloads{result=%q} = %v after 2s, want %v", result, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReloadKubeletConfigMap(t *testing.T) {
	t.Parallel()
	k := newKubeletDir(t, filterFile)
	store, w, reg := startWatcher(t, k.path())

	// A success is counted once per new file: re-reading the file in
	// force (a second burst of events, a poll) is not a reload. A refused
	// file is counted each time it is read, so that is at least once.
	k.update(blockFile)
	waitForRule(t, store, "v2")
	if got := waitForCount(t, w, reloadSuccess, 1); got != 1 {
		t.Errorf("reloads{result=success} = %v after one update, want 1", got)
	}

	k.update(brokenFile)
	waitForCount(t, w, reloadInvalid, 1)
	if got := store.Load().rules[0].label; got != "v2" {
		t.Fatalf("a bad update replaced the policy: rule %q in force", got)
	}

	k.update(passFile)
	waitForRule(t, store, "v3")
	if got := waitForCount(t, w, reloadSuccess, 2); got != 2 {
		t.Errorf("reloads{result=success} = %v after two good updates, want 2", got)
	}

	want := fmt.Sprintf(`
# HELP tiergate_config_info Always 1; the sha256 label is the SHA-256 of the policy file in force.
# TYPE tiergate_config_info gauge
tiergate_config_info{sha256=%q} 1
`, store.Load().SHA256())
	if err := testutil.GatherAndCompare(reg, stringsReader(want), "tiergate_config_info"); err != nil {
		t.Fatal(err)
	}
	if ts := testutil.ToFloat64(w.metrics.lastSuccess); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Fatalf("last success timestamp %v is stale", ts)
	}
}

// TestReloadChangeBeforeTheWatch: a change that lands after the policy was
// loaded but before the watch began raises no event; Run reads it before
// Watching closes, instead of at the next poll (an hour here).
func TestReloadChangeBeforeTheWatch(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(filterFile), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load([]byte(filterFile))
	if err != nil {
		t.Fatal(err)
	}
	store := NewStore(p)
	if err := os.WriteFile(path, []byte(blockFile), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(path, store, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)), WatcherOptions{Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-w.Watching():
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher did not start watching")
	}
	if got := store.Load().rules[0].label; got != "v2" {
		t.Errorf("rule in force when watching began = %q, want v2 (the file's)", got)
	}
}

func TestReloadPlainFile(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{"a rewrite in place", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(blockFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"a delete then create", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			if err := os.WriteFile(path, []byte(blockFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"a rename over the file", func(t *testing.T, path string) {
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, []byte(blockFile), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "policy.yaml")
			if err := os.WriteFile(path, []byte(filterFile), 0o644); err != nil {
				t.Fatal(err)
			}
			store, _, _ := startWatcher(t, path)
			tc.change(t, path)
			waitForRule(t, store, "v2")
		})
	}
}

func TestReloadMissingFileKeepsPolicy(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(filterFile), 0o644); err != nil {
		t.Fatal(err)
	}
	store, w, _ := startWatcher(t, path)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if got := w.reload(); got != reloadMissing {
		t.Fatalf("Reload of a missing file = %q", got)
	}
	if store.Load().rules[0].label != "v1" {
		t.Fatal("a missing file replaced the policy")
	}
	if got := w.reload(); got != reloadMissing {
		t.Fatalf("second Reload = %q", got)
	}
	if err := os.WriteFile(path, []byte(filterFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := w.reload(); got != "" {
		t.Fatalf("Reload of the same content = %q, want no reload", got)
	}
}
