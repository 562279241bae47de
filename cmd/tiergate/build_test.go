package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStaticBuild runs the build command the Dockerfile uses and checks that
// what it produces is static (it must start on distroless/static, which has
// no libc) and reports the stamped version.
func TestStaticBuild(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "tiergate")
	cmd := exec.Command("../../scripts/build-static.sh")
	cmd.Env = append(os.Environ(), "OUT="+out, "VERSION=v9.9.9-test")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-static.sh: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatalf("the binary is dynamically linked (program header %v)", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("the binary imports %v", libs)
	}
	v, err := exec.Command(out, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(v)) != "tiergate v9.9.9-test" {
		t.Fatalf("version = %q, want the stamped one", v)
	}
}
