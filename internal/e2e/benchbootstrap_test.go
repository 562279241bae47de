package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tiergate/tiergate/internal/envoyrig"
)

// TestBenchmarkBootstrapsLoadInEnvoy: the bootstraps scripts/bench-envoy.sh
// runs (envoy/envoy.yaml rewritten for a local plain-HTTP provider, exact
// balance, with and without ext_proc) are ones the pinned Envoy accepts. A
// misspelt or misplaced field would otherwise show only when someone next
// runs the benchmark; Envoy's validate mode refuses unknown fields.
func TestBenchmarkBootstrapsLoadInEnvoy(t *testing.T) {
	t.Parallel()
	shipped, err := os.ReadFile("../../envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    envoyrig.Options
	}{
		{"Envoy alone, the floor", envoyrig.Options{WithoutExtProc: true, PlainUpstreams: true, ExactBalance: true}},
		{"Envoy with an ext_proc server", envoyrig.Options{PlainUpstreams: true, ExactBalance: true,
			Clusters: map[string]string{"tiergate_extproc": "127.0.0.1:1", "openai": "127.0.0.1:2", "anthropic": "127.0.0.1:2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := envoyrig.Rewrite(shipped, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "envoy.json")
			if err := os.WriteFile(file, out, 0o600); err != nil {
				t.Fatal(err)
			}
			// Validation reads the config and exits; a minute is far more
			// than it needs, and bounds a run that would not end.
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, envoyBin, "--mode", "validate", "-c", file, "--log-level", "warn")
			msg, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("Envoy refuses the benchmark's bootstrap: %v\n%s", err, msg)
			}
			if !strings.Contains(string(msg), "OK") {
				t.Fatalf("Envoy's validate mode did not say OK:\n%s", msg)
			}
		})
	}
}
