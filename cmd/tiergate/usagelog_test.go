package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenUsageLog: --usage-log names stdout, nothing, or a file that is
// appended to (a restart keeps the records already written), and a file
// that cannot be opened stops serve before it starts.
func TestOpenUsageLog(t *testing.T) {
	t.Parallel()
	var stdout bytes.Buffer
	for _, dest := range []string{"stdout", "-", ""} {
		w, closeFn, err := openUsageLog(dest, &stdout)
		if err != nil || w != io.Writer(&stdout) || closeFn() != nil {
			t.Errorf("--usage-log %q: %v, %v; want stdout", dest, w, err)
		}
	}
	if w, _, err := openUsageLog("off", &stdout); err != nil || w != io.Discard {
		t.Errorf("--usage-log off: %v, %v; want io.Discard", w, err)
	}

	path := filepath.Join(t.TempDir(), "usage.jsonl")
	for _, line := range []string{"first\n", "second\n"} { // two runs of serve
		w, closeFn, err := openUsageLog(path, &stdout)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, line); err != nil {
			t.Fatal(err)
		}
		if err := closeFn(); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := os.ReadFile(path); string(got) != "first\nsecond\n" {
		t.Errorf("the file holds %q, want both runs' records", got)
	}
	if stdout.Len() != 0 {
		t.Errorf("a file destination wrote to stdout: %q", stdout.String())
	}

	if _, _, err := openUsageLog(filepath.Join(t.TempDir(), "missing", "usage.jsonl"), &stdout); err == nil {
		t.Error("a file in a missing directory opened")
	}
}
