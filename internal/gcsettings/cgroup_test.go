package gcsettings

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// childEnv marks the test binary re-run inside a cgroup: it prints what
// CgroupLimit and MemoryLimit read there, and exits.
const childEnv = "GCSETTINGS_CGROUP_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		limit, ok, err := CgroupLimit("/")
		auto, _, autoErr := MemoryLimit("auto", "/")
		fmt.Printf("%d %v %v %d %v\n", limit, ok, err, auto, autoErr)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestCgroupLimitInARealCgroup: in a memory cgroup made for it below this
// process's own (the kernel's, not a fake tree), CgroupLimit reads the
// limit set there, and "auto" is 90% of it. It needs a cgroup it may
// create, so root and a writable cgroup v1 memory hierarchy, or a v2 one
// that delegates the memory controller; the fake trees above cover every
// layout everywhere.
func TestCgroupLimitInARealCgroup(t *testing.T) {
	t.Parallel()
	dir, _, file, found, err := ownCgroup("/")
	if err != nil || !found {
		t.Skipf("no memory cgroup found for this process (%v)", err)
	}
	if file == "memory.max" {
		controllers, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
		if err != nil || !strings.Contains(string(controllers), "memory") {
			t.Skipf("cgroup v2 at %s does not delegate the memory controller to children", dir)
		}
	}
	child := filepath.Join(dir, fmt.Sprintf("tiergate-gcsettings-test-%d", os.Getpid()))
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Skipf("cannot create a memory cgroup here: %v", err)
	}
	t.Cleanup(func() {
		// The kernel refuses rmdir for a moment after the last task exits.
		for i := 0; i < 50; i++ {
			if err := os.Remove(child); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("cgroup %s left behind", child)
	})
	// This process's own limit binds the child too, when it is tighter.
	const set = 300 << 20
	limit := int64(set)
	if own, ok, err := CgroupLimit("/"); err != nil {
		t.Fatalf("this process's own limit: %v", err)
	} else if ok && own < limit {
		limit = own
	}
	if err := os.WriteFile(filepath.Join(child, file), []byte(strconv.Itoa(set)), 0o644); err != nil {
		t.Skipf("cannot set a limit on the cgroup made here: %v", err)
	}

	// The shell moves itself into the cgroup, then becomes the test binary,
	// so the child reads its limit from its first instruction on.
	const cannotMove = 77
	script := fmt.Sprintf(`echo $$ > "$1" || exit %d; exec "$0"`, cannotMove)
	cmd := exec.Command("/bin/sh", "-c", script, os.Args[0], filepath.Join(child, "cgroup.procs"))
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) && ee.ExitCode() == cannotMove {
		t.Skipf("cannot move a process into the cgroup made here: %s", out)
	}
	if err != nil {
		t.Fatalf("child in %s: %v\n%s", child, err, out)
	}
	want := fmt.Sprintf("%d true <nil> %d <nil>", limit, int64(float64(limit)*CgroupShare))
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("in a cgroup limited to %d bytes (in force: %d) the child read %q, want %q", set, limit, got, want)
	}
}
