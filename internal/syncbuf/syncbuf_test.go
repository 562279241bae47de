package syncbuf

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentWritesAreKeptWhole: lines written from many goroutines at
// once all arrive, each whole (run with -race, it also proves the locking).
func TestConcurrentWritesAreKeptWhole(t *testing.T) {
	t.Parallel()
	var b Buffer
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				fmt.Fprintf(&b, "writer %d line %d\n", g, i)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	lines := b.Lines()
	if len(lines) != 400 {
		t.Fatalf("%d lines, want 400", len(lines))
	}
	slices.Sort(lines)
	if lines[0] != "writer 0 line 0" || !strings.HasPrefix(lines[399], "writer 7 line ") {
		t.Errorf("lines not whole: first %q, last %q", lines[0], lines[399])
	}
	c := b.Bytes()
	c[0] = 'X'
	if b.String()[0] == 'X' {
		t.Error("Bytes is not a copy")
	}
}
