package check

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// exampleTests is the example overlay's policy test file; the policy it
// names must be the one the overlay renders into its ConfigMap.
const exampleTests = "../overlays/example/policy/tiergate_test.yaml"

// TestExamplePolicyPassesItsTests runs `tiergate test` (the root module's
// command, through go run) on the example overlay's test file: a change to
// the example policy that breaks what its tests say fails here.
func TestExamplePolicyPassesItsTests(t *testing.T) {
	r := render(t, "../overlays/example")
	cm := configMap(r, "tiergate-policy")
	if cm == nil {
		t.Fatal("the example overlay renders no tiergate-policy ConfigMap")
	}
	tested := string(mustRead(t, filepath.Join(filepath.Dir(exampleTests), "tiergate.yaml")))
	if cm.Data["tiergate.yaml"] != tested {
		t.Fatal("the ConfigMap's policy is not the file the tests run against (policy/tiergate.yaml)")
	}
	abs, err := filepath.Abs(exampleTests)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", "./cmd/tiergate", "test", abs)
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tiergate test: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	if m := regexp.MustCompile(`^([0-9]+) passed, 0 failed$`).FindStringSubmatch(last); m == nil || m[1] == "0" {
		t.Fatalf("tiergate test ended with %q, want every case passed:\n%s", last, out)
	}
}
