// Package gcsettings sets the Go garbage collector up for tiergate serve:
// a minimum headroom over the live heap (a tuner that adjusts GOGC after
// every collection), and a soft memory limit (GOMEMLIMIT) read from the
// container's cgroup when asked.
//
// tiergate's live heap is a few MiB while it allocates kilobytes per
// request, so at Go's default GOGC of 100 (collect when the heap has grown
// by the live heap) the collector runs dozens of times a second under load,
// and its cost rivals the policy's own (BENCHMARKS.md). A fixed higher GOGC
// would cure that but multiply the heap when large bodies make the live
// heap large. So the heap may grow by at least a fixed headroom, and by the
// live heap once that is larger: GOGC = max(100, headroom/live). The memory
// limit bounds both, collecting harder as the container's limit nears.
package gcsettings

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
)

// CgroupShare is the share of the container's memory limit used as the
// soft limit: the rest is left for what the Go runtime does not count
// (goroutine stacks are counted; the binary and kernel buffers are not).
const CgroupShare = 0.9

// unlimited: cgroup v1 reports "no limit" as a huge number (close to
// MaxInt64, rounded to a page).
const unlimited = 1 << 60

// CgroupLimit reads the memory limit of the cgroup mounted at root
// (normally /sys/fs/cgroup; a container sees its own there): cgroup v2's
// memory.max, else cgroup v1's memory/memory.limit_in_bytes. ok is false
// when neither file exists or the limit is "max" (none).
func CgroupLimit(root string) (limit int64, ok bool, err error) {
	for _, name := range []string{"memory.max", filepath.Join("memory", "memory.limit_in_bytes")} {
		raw, err := os.ReadFile(filepath.Join(root, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("cgroup memory limit: %w", err)
		}
		s := strings.TrimSpace(string(raw))
		if s == "max" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return 0, false, fmt.Errorf("cgroup memory limit: %s holds %q", name, s)
		}
		if n >= unlimited {
			return 0, false, nil
		}
		return n, true, nil
	}
	return 0, false, nil
}

// ParseBytes reads a size: a number of bytes, or one with a binary unit
// (KiB, MiB, GiB, TiB), as GOMEMLIMIT is written.
func ParseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	num, shift := s, uint(0)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			num, shift = rest, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB, GiB or TiB)", s)
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << shift, nil
}

// MemoryLimit resolves a --memory-limit value: "off" is no limit (0),
// "auto" is CgroupShare of the cgroup's limit under root (0 when there is
// none), anything else a size for ParseBytes. source says where the
// figure came from, for the log.
func MemoryLimit(value, root string) (limit int64, source string, err error) {
	switch value {
	case "off":
		return 0, "off", nil
	case "auto":
		cg, ok, err := CgroupLimit(root)
		if err != nil || !ok {
			return 0, "auto: no cgroup memory limit", err
		}
		return int64(float64(cg) * CgroupShare), fmt.Sprintf("auto: %.0f%% of the cgroup's %d bytes", CgroupShare*100, cg), nil
	}
	n, err := ParseBytes(value)
	if err != nil {
		return 0, "", err
	}
	return n, "flag", nil
}

// minPercent: the heap may always grow by the live heap, as with Go's
// default.
const minPercent = 100

// heapMinimum is Go's least heap goal at GOGC 100 (4 MiB); the runtime
// scales it with GOGC, so a high GOGC on a near-empty heap (at start-up,
// say) would let the heap grow to 4 MiB × GOGC/100 before the first
// collection. PercentFor keeps that within the headroom.
const heapMinimum = 4 << 20

// PercentFor is the GOGC under which a heap with live bytes live grows by
// about headroom before the next collection: headroom/live, at least 100
// (growth by the live heap, Go's default, once that is more), and at most
// what keeps the runtime's scaled heap minimum within the headroom (so a
// heap under 4 MiB gets a goal of about the headroom itself, not live plus
// headroom).
func PercentFor(live, headroom uint64) int {
	headroom = min(headroom, maxHeadroom) // headroom*100 must not overflow
	ceiling := max(headroom*100/heapMinimum, minPercent)
	if live == 0 {
		return int(ceiling)
	}
	return int(min(max(headroom*100/live, minPercent), ceiling))
}

// maxHeadroom bounds the headroom PercentFor works with (1 PiB: any larger
// figure means "never collect" just as well).
const maxHeadroom = 1 << 50

// liveHeap reads the live heap the last collection marked.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// Percent reads the GOGC in force (-1 when the collector is off, as
// debug.SetGCPercent reports it).
func Percent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return -1
	}
	return int(s[0].Value.Uint64())
}

// tuner re-sets GOGC after every collection.
type tuner struct {
	headroom uint64
	mu       sync.Mutex // serialises adjust and stop
	stopped  bool
	percent  int // last set
}

// sentinel is garbage made once per cycle: its cleanup runs after the
// collection that found it unreachable. (Larger than the tiny allocator's
// 16 bytes, whose blocks can keep a small object alive indefinitely.)
type sentinel struct{ _ [32]byte }

func (t *tuner) arm() {
	runtime.AddCleanup(new(sentinel), func(t *tuner) {
		if t.adjust() {
			t.arm()
		}
	}, t)
}

// adjust sets GOGC for the live heap the last collection found, and
// reports whether the tuner still runs. A change under a tenth is left
// alone, so that a steady heap does not reset it every cycle.
func (t *tuner) adjust() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	if p := PercentFor(liveHeap(), t.headroom); !withinATenth(t.percent, p) {
		debug.SetGCPercent(p)
		t.percent = p
	}
	return true
}

// withinATenth reports whether p is within a tenth of cur.
func withinATenth(cur, p int) bool {
	d := p - cur
	return d*10 <= cur && -d*10 <= cur
}

// stop ends the tuning and puts GOGC back to percent.
func (t *tuner) stop(percent int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	debug.SetGCPercent(percent)
}

// StartTuner keeps at least headroom bytes of heap growth between
// collections until ctx ends, by setting GOGC after each one; when ctx ends
// GOGC goes back to what it was.
func StartTuner(ctx context.Context, headroom uint64) {
	before := Percent()
	t := &tuner{headroom: headroom, percent: before}
	t.adjust()
	t.arm()
	go func() {
		<-ctx.Done()
		t.stop(before)
	}()
}
