// Package gcsettings sets the Go garbage collector up for tiergate serve:
// a minimum headroom over the live heap (a tuner that adjusts GOGC after
// every collection), and a soft memory limit (GOMEMLIMIT) read from the
// process's own cgroup when asked.
//
// tiergate's live heap is a few MiB while it allocates kilobytes per
// request, so at Go's default GOGC of 100 (collect when the heap has grown
// by the live heap) the collector runs dozens of times a second under load,
// and its cost rivals the policy's own (BENCHMARKS.md). A fixed higher GOGC
// would cure that but multiply the heap when large bodies make the live
// heap large. So the heap may grow by at least a fixed headroom, and by the
// live heap once that is larger: GOGC = max(100, headroom/max(live, 4 MiB)),
// 4 MiB being the runtime's least heap goal, which GOGC scales too. The
// memory limit bounds both, collecting harder as the container's limit
// nears.
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
	"slices"
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

// CgroupLimit reads the memory limit that applies to this process: the
// least limit on its own cgroup and the cgroup's ancestors up to the
// mount, in cgroup v1's memory hierarchy when there is one (hybrid hosts
// keep the memory controller there), else in cgroup v2. The process's
// cgroup comes from /proc/self/cgroup and where it is mounted from
// /proc/self/mountinfo, as the Go runtime finds its CPU limit: a container
// usually sees its own cgroup at the mount's root, but a process under
// systemd, or in a container without a cgroup namespace, sits deeper.
//
// root is the filesystem root ("/"; tests pass a directory laid out as
// one). ok is false when there is no cgroup (not Linux, no mount) or no
// limit ("max", or v1's near-MaxInt64 "none").
func CgroupLimit(root string) (limit int64, ok bool, err error) {
	dir, mount, file, found, err := ownCgroup(root)
	if err != nil || !found {
		return 0, false, err
	}
	// Walk up to the mount: a parent's limit binds the child too, and
	// cgroup v2's root has no memory.max at all.
	for {
		n, set, err := readLimit(filepath.Join(root, dir, file))
		if err != nil {
			return 0, false, err
		}
		if set && (!ok || n < limit) {
			limit, ok = n, true
		}
		if dir == mount || filepath.Dir(dir) == dir {
			return limit, ok, nil
		}
		dir = filepath.Dir(dir)
	}
}

// readLimit reads one limit file; set is false when it is absent or says
// there is no limit.
func readLimit(path string) (n int64, set bool, err error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("cgroup memory limit: %w", err)
	}
	s := strings.TrimSpace(string(raw))
	if s == "max" {
		return 0, false, nil
	}
	n, err = strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, false, fmt.Errorf("cgroup memory limit: %s holds %q", path, s)
	}
	return n, n < unlimited, nil
}

// ownCgroup finds the directory of this process's memory cgroup (dir,
// below mount, both absolute paths under root) and the name of its limit
// file. found is false when the process is in no cgroup hierarchy that has
// a mount.
func ownCgroup(root string) (dir, mount, file string, found bool, err error) {
	raw, err := os.ReadFile(filepath.Join(root, "proc", "self", "cgroup"))
	if errors.Is(err, os.ErrNotExist) {
		return "", "", "", false, nil // not Linux, or no /proc
	}
	if err != nil {
		return "", "", "", false, fmt.Errorf("cgroup memory limit: %w", err)
	}
	// Lines are "hierarchy-id:controllers:path"; v2's is "0::path".
	var v1Path, v2Path string
	var inV1, inV2 bool
	for line := range strings.Lines(string(raw)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2Path, inV2 = parts[2], true
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			v1Path, inV1 = parts[2], true
		}
	}
	if !inV1 && !inV2 {
		return "", "", "", false, nil
	}
	mounts, err := os.ReadFile(filepath.Join(root, "proc", "self", "mountinfo"))
	if err != nil {
		return "", "", "", false, fmt.Errorf("cgroup memory limit: %w", err)
	}
	var v2Mount, v2Root string
	for line := range strings.Lines(string(mounts)) {
		// "id parent major:minor root mountpoint options [optional...] - fstype source superoptions"
		pre, post, ok := strings.Cut(strings.TrimSpace(line), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		mountRoot, point := unescapeMount(f[3]), unescapeMount(f[4])
		switch {
		case inV1 && g[0] == "cgroup" && slices.Contains(strings.Split(g[2], ","), "memory"):
			return below(point, mountRoot, v1Path), point, "memory.limit_in_bytes", true, nil
		case inV2 && g[0] == "cgroup2" && v2Mount == "":
			v2Mount, v2Root = point, mountRoot
		}
	}
	if v2Mount == "" {
		return "", "", "", false, nil
	}
	return below(v2Mount, v2Root, v2Path), v2Mount, "memory.max", true, nil
}

// below is where cgroup path sits under a mount of the hierarchy's
// mountRoot at point: the mount itself when path is not below mountRoot
// (a cgroup namespace can show paths relative to another root).
func below(point, mountRoot, path string) string {
	rel, err := filepath.Rel(mountRoot, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return point
	}
	return filepath.Join(point, rel)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, and so
// on) in a path field.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
// "auto" is CgroupShare of the process's cgroup limit (CgroupLimit under
// root; 0 when there is none), anything else a size for ParseBytes. source
// says where the figure came from, for the log.
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
