package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// The Go collector's gauges the idle mode reads, from tiergate's admin
// listener and the minimal relay's alike (both register
// collectors.NewGoCollector()). Goroutine stacks are not in the heap, and a
// session is two goroutines, so both are read.
const (
	gaugeHeapInuse  = "go_memstats_heap_inuse_bytes"
	gaugeStackInuse = "go_memstats_stack_inuse_bytes"
)

// wsReport is one ws round's figures; with --json it is printed as is.
type wsReport struct {
	Target   string `json:"target"`
	Mode     string `json:"mode"`
	Sessions int    `json:"sessions"`
	// WarmupTurns (latency) and WarmupSeconds (throughput) ran before the
	// measured turns and are not counted.
	WarmupTurns   int     `json:"warmup_turns,omitempty"`
	WarmupSeconds float64 `json:"warmup_seconds,omitempty"`
	Seconds       float64 `json:"seconds"`
	// Turns is measured turns that completed and passed the checks.
	Turns          int               `json:"turns"`
	TurnsPerSecond float64           `json:"turns_per_second,omitempty"`
	Errors         int               `json:"errors"`
	ErrorKinds     map[string]int    `json:"error_kinds,omitempty"`
	ErrorExamples  map[string]string `json:"error_examples,omitempty"`
	// LatencyMicros is the client's time per turn: response.create sent to
	// response.completed read.
	LatencyMicros *latency `json:"latency_us,omitempty"`
	CPU           *wsCPU   `json:"cpu,omitempty"`
	// OpenSeconds (idle, concurrent) is the time to open every session and
	// run one turn on each; Held is how many were then open at once.
	OpenSeconds float64   `json:"open_seconds,omitempty"`
	Held        int       `json:"held,omitempty"`
	Memory      *wsMemory `json:"memory,omitempty"`
	// PeakRSS is the target's highest RSS while the sessions opened.
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`
}

// wsCPU is CPU time per turn over the measured time.
type wsCPU struct {
	TargetMicrosPerTurn *float64 `json:"target_us_per_turn,omitempty"`
	TargetCores         *float64 `json:"target_cores,omitempty"`
	LoadMicrosPerTurn   float64  `json:"load_us_per_turn"`
	LoadCores           float64  `json:"load_cores"`
	// OtherCores is what the rest of the machine kept busy (without --pid
	// the target is in it); StealCores what the hypervisor took.
	OtherCores float64 `json:"other_cores"`
	StealCores float64 `json:"steal_cores"`
}

// memSample is the target's memory at one moment: heap and stacks in use
// (--admin) and resident set (--pid). The heap is read as the Go
// collector reports it, garbage not yet collected included.
type memSample struct {
	HeapInuse  int64 `json:"heap_inuse_bytes,omitempty"`
	StackInuse int64 `json:"stack_inuse_bytes,omitempty"`
	RSS        int64 `json:"rss_bytes,omitempty"`
}

type wsMemory struct {
	Before memSample `json:"before"`
	After  memSample `json:"after"`
	// Per held session: after less before, divided by Held.
	HeapPerSession  *float64 `json:"heap_per_session_bytes,omitempty"`
	StackPerSession *float64 `json:"stack_per_session_bytes,omitempty"`
	// HeapStackPerSession is the two together: what the Go runtime holds
	// per session.
	HeapStackPerSession *float64 `json:"heap_stack_per_session_bytes,omitempty"`
	RSSPerSession       *float64 `json:"rss_per_session_bytes,omitempty"`
}

// setResults merges the workers' results over the measured time.
func (r *wsReport) setResults(results []workerResult, elapsed time.Duration) {
	r.setErrors(results)
	r.Seconds = max(elapsed, 0).Seconds()
	r.Turns, r.LatencyMicros = summarizeLatency(results)
	if r.Seconds > 0 {
		r.TurnsPerSecond = float64(r.Turns) / r.Seconds
	}
}

func (r *wsReport) setErrors(results []workerResult) {
	r.Errors, r.ErrorKinds, r.ErrorExamples = mergeErrors(results)
}

// setCPU sets CPU time per turn from the snapshots at the edges of the
// measured time (after setResults).
func (r *wsReport) setCPU(pid int, before, after cpuSnapshot) {
	u, ok := measureCPU(pid, before, after, float64(r.Turns))
	if !ok {
		return
	}
	r.CPU = &wsCPU{
		TargetMicrosPerTurn: u.targetPerUnit, TargetCores: u.targetCores,
		LoadMicrosPerTurn: u.selfPerUnit, LoadCores: u.selfCores,
		OtherCores: u.otherCores, StealCores: u.stealCores,
	}
}

func (r *wsReport) setMemory(before, after memSample) {
	m := &wsMemory{Before: before, After: after}
	if r.Held > 0 {
		per := func(a, b int64) *float64 { return finite(float64(a-b) / float64(r.Held)) }
		if after.HeapInuse > 0 {
			m.HeapPerSession = per(after.HeapInuse, before.HeapInuse)
			m.StackPerSession = per(after.StackInuse, before.StackInuse)
			m.HeapStackPerSession = per(after.HeapInuse+after.StackInuse, before.HeapInuse+before.StackInuse)
		}
		if after.RSS > 0 {
			m.RSSPerSession = per(after.RSS, before.RSS)
		}
	}
	r.Memory = m
}

// scrapeGauges reads the named gauges (unlabelled) from a Prometheus text
// endpoint.
func scrapeGauges(ctx context.Context, client *http.Client, metricsURL string, names ...string) (map[string]float64, error) {
	families, err := scrapeFamilies(ctx, client, metricsURL)
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(names))
	for _, n := range names {
		mf, ok := families[n]
		if !ok || mf.GetType() != dto.MetricType_GAUGE || len(mf.GetMetric()) != 1 {
			return nil, fmt.Errorf("GET %s: no gauge %s (is the Go collector registered?)", metricsURL, n)
		}
		out[n] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	return out, nil
}

func (r *wsReport) writeText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ws %s %s: %d sessions\n", r.Mode, r.Target, r.Sessions)
	fmt.Fprintf(&b, "turns         %d", r.Turns)
	if r.TurnsPerSecond > 0 {
		fmt.Fprintf(&b, " (%.0f/s over %.2fs)", r.TurnsPerSecond, r.Seconds)
	}
	fmt.Fprintf(&b, "\nerrors        %d\n", r.Errors)
	writeErrorKinds(&b, r.ErrorKinds, r.ErrorExamples)
	if l := r.LatencyMicros; l != nil {
		fmt.Fprintf(&b, "latency       p50 %s  p90 %s  p99 %s  max %s (client, per turn)\n",
			fmtMicros(&l.P50), fmtMicros(&l.P90), fmtMicros(&l.P99), fmtMicros(&l.Max))
	}
	if c := r.CPU; c != nil {
		target := "n/a"
		if c.TargetMicrosPerTurn != nil {
			target = fmt.Sprintf("%.1fµs/turn (%.2f cores)", *c.TargetMicrosPerTurn, *c.TargetCores)
		}
		fmt.Fprintf(&b, "cpu           target %s  load tool %.1fµs/turn (%.2f cores)  rest of the machine %.2f cores (steal %.2f)\n",
			target, c.LoadMicrosPerTurn, c.LoadCores, c.OtherCores, c.StealCores)
	}
	if r.Held > 0 || r.OpenSeconds > 0 {
		fmt.Fprintf(&b, "held          %d sessions open at once, opened (one turn each) in %.2fs\n", r.Held, r.OpenSeconds)
	}
	if m := r.Memory; m != nil {
		kib := func(v *float64) string {
			if v == nil {
				return "n/a"
			}
			return fmt.Sprintf("%.1f KiB", *v/1024)
		}
		fmt.Fprintf(&b, "per session   heap %s  stacks %s  heap+stacks %s  rss %s\n",
			kib(m.HeapPerSession), kib(m.StackPerSession), kib(m.HeapStackPerSession), kib(m.RSSPerSession))
		fmt.Fprintf(&b, "target        heap %.1f -> %.1f MiB  stacks %.1f -> %.1f MiB  rss %.1f -> %.1f MiB\n",
			mib(m.Before.HeapInuse), mib(m.After.HeapInuse), mib(m.Before.StackInuse), mib(m.After.StackInuse),
			mib(m.Before.RSS), mib(m.After.RSS))
	}
	if r.PeakRSS > 0 {
		fmt.Fprintf(&b, "peak rss      %.1f MiB\n", mib(r.PeakRSS))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mib(v int64) float64 { return float64(v) / (1 << 20) }
