package gcsettings

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// fakeSystem lays out files (path relative to the root: content) as a
// filesystem root, for CgroupLimit's /proc/self and cgroup mounts.
func fakeSystem(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// Mount tables as hosts and containers show them.
const (
	// A cgroup v2 host or a container with its own cgroup namespace.
	mountsV2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
	// A hybrid host: memory on v1, an empty v2 hierarchy beside it.
	mountsHybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n" +
		"32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n" +
		"35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n" +
		"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
	// A cgroup v1 container without a cgroup namespace: the runtime mounts
	// the container's own cgroup at the hierarchy's mount point.
	mountsV1Container = "1210 1205 0:32 /kubepods/pod1/c1 /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
)

func TestCgroupLimit(t *testing.T) {
	t.Parallel()
	const v1None = "9223372036854771712\n"
	for _, tc := range []struct {
		name    string
		files   map[string]string
		want    int64
		ok, err bool
	}{
		{"v2, limit at the mount's root (a container)", map[string]string{
			"proc/self/cgroup": "0::/\n", "proc/self/mountinfo": mountsV2,
			"sys/fs/cgroup/memory.max": "268435456\n",
		}, 268435456, true, false},
		{"v2, no limit", map[string]string{
			"proc/self/cgroup": "0::/\n", "proc/self/mountinfo": mountsV2,
			"sys/fs/cgroup/memory.max": "max\n",
		}, 0, false, false},
		{"v2, a systemd unit's own limit, not the root's", map[string]string{
			"proc/self/cgroup": "0::/system.slice/tiergate.service\n", "proc/self/mountinfo": mountsV2,
			"sys/fs/cgroup/system.slice/tiergate.service/memory.max": "536870912\n",
			"sys/fs/cgroup/system.slice/memory.max":                  "max\n",
		}, 536870912, true, false},
		{"v2, a parent's tighter limit binds", map[string]string{
			"proc/self/cgroup": "0::/kubepods/pod1/c1\n", "proc/self/mountinfo": mountsV2,
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": "268435456\n",
			"sys/fs/cgroup/kubepods/pod1/memory.max":    "134217728\n",
			"sys/fs/cgroup/kubepods/memory.max":         "1073741824\n",
		}, 134217728, true, false},
		{"hybrid: v1's memory hierarchy, not v2's", map[string]string{
			"proc/self/cgroup":                                           "4:memory:/process_api/abc\n1:cpu:/\n0::/\n",
			"proc/self/mountinfo":                                        mountsHybrid,
			"sys/fs/cgroup/memory/memory.limit_in_bytes":                 v1None,
			"sys/fs/cgroup/memory/process_api/memory.limit_in_bytes":     v1None,
			"sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": "314572800\n",
		}, 314572800, true, false},
		{"v1 container: its cgroup is the mount", map[string]string{
			"proc/self/cgroup":                           "9:memory:/kubepods/pod1/c1\n",
			"proc/self/mountinfo":                        mountsV1Container,
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n",
		}, 536870912, true, false},
		{"v1, no limit anywhere", map[string]string{
			"proc/self/cgroup": "4:memory:/a\n", "proc/self/mountinfo": mountsHybrid,
			"sys/fs/cgroup/memory/memory.limit_in_bytes":   v1None,
			"sys/fs/cgroup/memory/a/memory.limit_in_bytes": v1None,
		}, 0, false, false},
		{"a mount point with a space", map[string]string{
			"proc/self/cgroup":            "0::/\n",
			"proc/self/mountinfo":         "29 23 0:26 / /sys/fs/cgroup\\040v2 rw - cgroup2 cgroup2 rw\n",
			"sys/fs/cgroup v2/memory.max": "1048576\n",
		}, 1048576, true, false},
		{"no /proc (not Linux)", nil, 0, false, false},
		{"in no hierarchy with a mount", map[string]string{
			"proc/self/cgroup": "0::/\n", "proc/self/mountinfo": "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n",
		}, 0, false, false},
		{"garbage", map[string]string{
			"proc/self/cgroup": "0::/\n", "proc/self/mountinfo": mountsV2, "sys/fs/cgroup/memory.max": "lots",
		}, 0, false, true},
		{"zero", map[string]string{
			"proc/self/cgroup": "0::/\n", "proc/self/mountinfo": mountsV2, "sys/fs/cgroup/memory.max": "0",
		}, 0, false, true},
		{"no mountinfo", map[string]string{"proc/self/cgroup": "0::/\n"}, 0, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok, err := CgroupLimit(fakeSystem(t, tc.files))
			if got != tc.want || ok != tc.ok || (err != nil) != tc.err {
				t.Errorf("CgroupLimit = %d, %v, %v; want %d, %v, error %v", got, ok, err, tc.want, tc.ok, tc.err)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64 // 0: an error
	}{
		{"1048576", 1 << 20}, {"200MiB", 200 << 20}, {"1GiB", 1 << 30}, {"64KiB", 64 << 10},
		{"2TiB", 2 << 40}, {"512B", 512}, {" 3 MiB", 3 << 20},
		{"", 0}, {"MiB", 0}, {"-1", 0}, {"0", 0}, {"1.5GiB", 0}, {"10MB", 0}, {"9999999999TiB", 0},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseBytes(tc.in)
			if tc.want == 0 {
				if err == nil {
					t.Errorf("ParseBytes(%q) = %d, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ParseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	v2 := func(max string) string {
		return fakeSystem(t, map[string]string{
			"proc/self/cgroup": "0::/\n", "proc/self/mountinfo": mountsV2, "sys/fs/cgroup/memory.max": max,
		})
	}
	limited, unlimited := v2("268435456"), v2("max")
	for _, tc := range []struct {
		name, value, root string
		want              int64
		err               bool
	}{
		{"auto under a 256 MiB container", "auto", limited, 241591910, false},
		{"auto without a limit", "auto", unlimited, 0, false},
		{"off", "off", limited, 0, false},
		{"a size", "100MiB", limited, 100 << 20, false},
		{"a bad size", "lots", limited, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, source, err := MemoryLimit(tc.value, tc.root)
			if got != tc.want || (err != nil) != tc.err || (err == nil && source == "") {
				t.Errorf("MemoryLimit(%q) = %d (%q), %v; want %d, error %v", tc.value, got, source, err, tc.want, tc.err)
			}
		})
	}
}

func TestPercentFor(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	for _, tc := range []struct {
		name           string
		live, headroom uint64
		want           int
	}{
		{"a small heap gets the headroom", 4 * mib, 16 * mib, 400},
		{"a smaller one more", 5 * mib, 40 * mib, 800},
		{"a heap as large as the headroom: Go's default", 16 * mib, 16 * mib, 100},
		{"a large heap never below Go's default", 200 * mib, 16 * mib, 100},
		{"a heap smaller than Go's minimum: the ceiling", 1 * mib, 16 * mib, 400},
		{"an empty heap: the ceiling", 0, 16 * mib, 400},
		{"a larger headroom raises the ceiling", 1 * mib, 64 * mib, 1600},
		{"a headroom under Go's minimum: Go's default", 1 * mib, 2 * mib, 100},
		{"an absurd headroom does not overflow", 1 * mib, 1 << 63, int(maxHeadroom * 100 / heapMinimum)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := PercentFor(tc.live, tc.headroom); got != tc.want {
				t.Errorf("PercentFor(%d, %d) = %d, want %d", tc.live, tc.headroom, got, tc.want)
			}
		})
	}
}

// TestTunerFollowsTheLiveHeap: after collections, GOGC is what PercentFor
// gives for the live heap, and it follows the heap as it grows; when the
// tuner stops GOGC is back to what it was. (Not parallel: GOGC is the
// process's.)
func TestTunerFollowsTheLiveHeap(t *testing.T) {
	before := Percent()
	ctx, cancel := context.WithCancel(context.Background())
	const headroom = 64 << 20
	StartTuner(ctx, headroom)

	// waitFor collects until GOGC is within a tenth of PercentFor's answer
	// for the live heap (the cleanup that sets it runs after the cycle).
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			runtime.GC()
			want := PercentFor(liveHeap(), headroom)
			got := Percent()
			if withinATenth(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOGC %d, want about %d for a live heap of %d bytes", what, got, want, liveHeap())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("small heap")
	if Percent() <= 100 {
		t.Errorf("with a live heap of %d bytes and %d of headroom, GOGC is %d", liveHeap(), headroom, Percent())
	}
	big := make([][]byte, 0, 256)
	for range 256 {
		big = append(big, make([]byte, 1<<20)) // 256 MiB live
	}
	waitFor("large heap")
	if got := Percent(); got > 110 { // changes under a tenth are not made
		t.Errorf("with a live heap of %d bytes GOGC is %d, want Go's default 100", liveHeap(), got)
	}
	runtime.KeepAlive(big)

	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for Percent() != before {
		if time.Now().After(deadline) {
			t.Fatalf("after stopping, GOGC is %d, want %d back", Percent(), before)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
