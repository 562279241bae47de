package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// readRSS returns a process's resident set size in bytes, from the VmRSS
// line of /proc/PID/status (which the kernel gives in kB).
func readRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(data)
}

func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmRSS:"))
		if !ok {
			continue
		}
		fields := bytes.Fields(rest)
		if len(fields) != 2 || string(fields[1]) != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS line (a kernel thread, or not Linux?)")
}

// rssSampler records the highest RSS of a process seen while it runs.
// Sampling can miss a peak shorter than its interval; at 20 ms it catches
// anything a garbage-collection cycle of a loaded server holds.
type rssSampler struct {
	pid  int
	stop context.CancelFunc
	done sync.WaitGroup
	peak int64
	err  error
}

const rssInterval = 20 * time.Millisecond

func startRSSSampler(ctx context.Context, pid int) *rssSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &rssSampler{pid: pid, stop: cancel}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(rssInterval)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) sample() {
	rss, err := readRSS(s.pid)
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return
	}
	s.peak = max(s.peak, rss)
}

// finish stops sampling (after one last sample) and returns the peak.
func (s *rssSampler) finish() (int64, error) {
	s.stop()
	s.done.Wait()
	s.sample()
	if s.peak == 0 {
		return 0, s.err
	}
	return s.peak, nil
}

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, which
// Linux fixes at 100 for user space on every architecture Go supports.
const userHZ = 100

// readCPU returns the CPU time a process has used, user plus system, all
// threads, from /proc/PID/stat (10 ms resolution).
func readCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(data)
}

func parseStatCPU(stat []byte) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may hold spaces and
	// parentheses itself: count fields from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc stat %q", stat)
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc stat %q", stat)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected /proc stat %q", stat)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// machineCPU is the machine's CPU time from the first line of /proc/stat:
// busy (user, nice, system, irq, softirq, steal) and steal alone (time the
// hypervisor gave this VM's CPUs to someone else).
type machineCPU struct {
	busy, steal time.Duration
}

func readMachineCPU() (machineCPU, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	return parseProcStat(data)
}

func parseProcStat(stat []byte) (machineCPU, error) {
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := bytes.Fields(line)
	// cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || string(f[0]) != "cpu" {
		return machineCPU{}, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	var t [8]int64
	for i := range t {
		n, err := strconv.ParseInt(string(f[i+1]), 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("unexpected /proc/stat line %q", line)
		}
		t[i] = n
	}
	tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / userHZ }
	return machineCPU{busy: tick(t[0] + t[1] + t[2] + t[5] + t[6] + t[7]), steal: tick(t[7])}, nil
}

// cpuSnapshot is the CPU time read at each edge of the measured time.
type cpuSnapshot struct {
	at      time.Time
	target  time.Duration // the target's (--pid)
	self    time.Duration
	machine machineCPU
	err     error
}

func takeCPUSnapshot(pid int) cpuSnapshot {
	s := cpuSnapshot{at: time.Now()}
	var err error
	if pid > 0 {
		if s.target, err = readCPU(pid); err != nil {
			return cpuSnapshot{err: fmt.Errorf("--pid: %w", err)}
		}
	}
	if s.self, err = readCPU(os.Getpid()); err != nil {
		return cpuSnapshot{err: err}
	}
	if s.machine, err = readMachineCPU(); err != nil {
		return cpuSnapshot{err: err}
	}
	return s
}

// cpuUse is the CPU time spent between two snapshots, per unit of work (a
// transaction or a turn) and in cores.
type cpuUse struct {
	selfPerUnit, selfCores     float64
	targetPerUnit, targetCores *float64 // with --pid
	// otherCores is what the rest of the machine kept busy (without --pid
	// the target is in it), stealCores what the hypervisor took: the noise
	// a round ran in.
	otherCores, stealCores float64
}

// measureCPU is the CPU spent between before and after over units of work;
// false when there was no work or no time between them.
func measureCPU(pid int, before, after cpuSnapshot, units float64) (cpuUse, bool) {
	secs := after.at.Sub(before.at).Seconds()
	if units <= 0 || secs <= 0 {
		return cpuUse{}, false
	}
	self := (after.self - before.self).Seconds()
	u := cpuUse{selfPerUnit: self * 1e6 / units, selfCores: self / secs}
	target := 0.0
	if pid > 0 {
		target = (after.target - before.target).Seconds()
		u.targetPerUnit = finite(target * 1e6 / units)
		u.targetCores = finite(target / secs)
	}
	busy := (after.machine.busy - before.machine.busy).Seconds()
	u.otherCores = max(0, busy-target-self) / secs
	u.stealCores = (after.machine.steal - before.machine.steal).Seconds() / secs
	return u, true
}

// takeAt calls take(nil) at when, on its own goroutine while the load runs,
// and delivers the result; take(ctx.Err()) if ctx ends first. It reads a
// snapshot at the start of the measured window.
func takeAt[T any](ctx context.Context, when time.Time, take func(error) T) <-chan T {
	out := make(chan T, 1)
	go func() {
		t := time.NewTimer(time.Until(when))
		defer t.Stop()
		select {
		case <-ctx.Done():
			out <- take(ctx.Err())
		case <-t.C:
			out <- take(nil)
		}
	}()
	return out
}
