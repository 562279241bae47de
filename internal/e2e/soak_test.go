package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The soak's knobs. CI runs the defaults (two minutes); scripts/soak runs
// the documented 30 minutes and draws the picture in docs/.
const (
	// soakDurationEnv is how long the load runs (a Go duration).
	soakDurationEnv = "TIERGATE_SOAK_DURATION"
	// soakSVGEnv, when set, is where the samples are drawn (SVG).
	soakSVGEnv = "TIERGATE_SOAK_SVG"
	// soakCSVEnv, when set, is where the samples are written (CSV).
	soakCSVEnv = "TIERGATE_SOAK_CSV"

	soakDefault = 2 * time.Minute
	soakWarmUp  = 15 * time.Second
	// soakWindow is the stretch compared at the start and the end.
	soakWindow = 30 * time.Second
	// The limits: the heap of the last window at most soakHeapRatio times
	// the first's; the goroutines back to the idle baseline ± soakSlack.
	soakHeapRatio = 1.2
	soakSlack     = 5
	soakHTTPRate  = 40
	soakWSWorkers = 2
	// soakHTTPWorkers is mixedLoad's number of HTTP workers.
	soakHTTPWorkers = httpWorkers
)

// soakSample is one reading of tiergate's /metrics.
type soakSample struct {
	at                      time.Duration // since the load started
	rss, heap, goroutines   float64
	requests, wsTurns, fail int64
}

// TestSoak runs steady mixed load (HTTP over both protocols, WebSocket
// sessions on both paths) through real Envoy for TIERGATE_SOAK_DURATION
// (two minutes by default) and samples tiergate's /metrics (four times a
// second; once a second for runs over five minutes):
// the load must see no failure and nothing unpoliced; the heap of the last
// 30 s must be at most 1.2 times the first 30 s (after a warm-up, which
// fills pools and caches); and once the load stops, tiergate's goroutines
// must come back to their idle baseline ± 5.
func TestSoak(t *testing.T) {
	duration := soakDefault
	if v := os.Getenv(soakDurationEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 2*soakWindow {
			t.Fatalf("%s=%q: want a duration of at least %v", soakDurationEnv, v, 2*soakWindow)
		}
		duration = d
	}
	s := startFaultStack(t, testPolicy, faultOptions{tiergateFlags: []string{"--log-level", "warn"}})
	load := &mixedLoad{s: s.stack, httpRate: soakHTTPRate, wsWorkers: soakWSWorkers, wsTurnGap: 50 * time.Millisecond}

	// Warm-up, then the idle baseline.
	warm, cancel := context.WithTimeout(context.Background(), soakWarmUp)
	load.run(warm)
	cancel()
	time.Sleep(2 * time.Second)
	baseline := s.goroutines(t)
	t.Logf("warm-up: %s; idle goroutines %d", load.report(), baseline)

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var samples []soakSample
	var sampleErr error
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	go func() {
		defer wg.Done()
		// Short runs sample four times a second, so that each 30 s window
		// averages over many garbage-collection cycles; long ones once a
		// second, which keeps the picture small.
		interval := time.Second
		if duration <= 5*time.Minute {
			interval = 250 * time.Millisecond
		}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			m, err := scrape(s.adminURL, "process_resident_memory_bytes", "go_memstats_heap_alloc_bytes", "go_goroutines")
			if err != nil {
				sampleErr = err
				return
			}
			samples = append(samples, soakSample{at: time.Since(start),
				rss: m["process_resident_memory_bytes"], heap: m["go_memstats_heap_alloc_bytes"], goroutines: m["go_goroutines"],
				requests: load.requests.Load(), wsTurns: load.wsTurns.Load(), fail: load.failures.Load()})
		}
	}()
	load.run(ctx)
	wg.Wait()
	t.Logf("load (the warm-up included): %s; %v under load after the warm-up", load.report(), duration)
	if sampleErr != nil {
		t.Fatalf("sampling /metrics: %v", sampleErr)
	}
	if n := load.failures.Load(); n > 0 {
		t.Errorf("%d requests or turns failed under steady load: %q", n, load.problems)
	}
	if n := s.fake.unpoliced.Load(); n > 0 {
		t.Errorf("%d of %d load requests reached the provider with a tier the policy refuses", n, s.fake.loadSeen.Load())
	}
	for _, c := range s.ws.since(0) {
		for _, f := range c.received() {
			if strings.Contains(f, "priority") {
				t.Errorf("a WebSocket frame reached the provider with priority: %s", f)
			}
		}
	}

	first, last := soakMean(samples, 0, soakWindow), soakMean(samples, duration-soakWindow, duration)
	t.Logf("heap: first %v %.1f MiB, last %v %.1f MiB (ratio %.2f)", soakWindow, first/(1<<20), soakWindow, last/(1<<20), last/first)
	if math.IsNaN(first) || math.IsNaN(last) {
		t.Fatalf("too few samples (%d) to compare the heap", len(samples))
	}
	if last > soakHeapRatio*first {
		t.Errorf("the heap grew under steady load: the last %v averaged %.1f MiB, %.2f times the first %v's %.1f MiB (limit %.1f)",
			soakWindow, last/(1<<20), last/first, soakWindow, first/(1<<20), soakHeapRatio)
	}
	after := s.settleGoroutines(t, baseline+soakSlack, 15*time.Second)
	t.Logf("goroutines: baseline %d, after the load %d", baseline, after)
	if after < baseline-soakSlack {
		t.Errorf("goroutines fell to %d from a baseline of %d: a listener or worker ended", after, baseline)
	}
	// Records: one per HTTP request and per WebSocket turn. A request or
	// turn cut short when a load phase stopped has its record too (client
	// closed) but was not counted by the load: at most one per worker per
	// phase (warm-up and load).
	counted := load.requests.Load() + load.wsTurns.Load()
	inFlight := int64(2 * (soakHTTPWorkers + soakWSWorkers))
	records := countLines(t, s.usageFile)
	t.Logf("usage records: %d for %d requests and turns answered (and at most %d cut short)", records, counted, inFlight)
	if records < counted || records > counted+inFlight {
		t.Errorf("%d usage records for %d requests and turns answered, want between %d and %d", records, counted, counted, counted+inFlight)
	}
	if p := os.Getenv(soakCSVEnv); p != "" {
		if err := os.WriteFile(p, soakCSV(samples), 0o644); err != nil {
			t.Error(err)
		}
	}
	if p := os.Getenv(soakSVGEnv); p != "" {
		title := fmt.Sprintf("tiergate soak through Envoy %s: %v of mixed load (+15 s warm-up), %d HTTP requests, %d WebSocket turns, %d failures",
			envoyVersionLabel(), duration.Round(time.Second), load.requests.Load(), load.wsTurns.Load(), load.failures.Load())
		if err := os.WriteFile(p, soakSVG(samples, title), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// countLines counts the lines of the file at path.
func countLines(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return int64(bytes.Count(b, []byte("\n")))
}

// soakMean is the mean heap of the samples in [from, to).
func soakMean(samples []soakSample, from, to time.Duration) float64 {
	var sum float64
	n := 0
	for _, s := range samples {
		if s.at >= from && s.at < to {
			sum += s.heap
			n++
		}
	}
	if n < 20 {
		return math.NaN()
	}
	return sum / float64(n)
}

func soakCSV(samples []soakSample) []byte {
	var b strings.Builder
	b.WriteString("seconds,rss_bytes,heap_alloc_bytes,goroutines,http_requests,ws_turns,failures\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "%.1f,%.0f,%.0f,%.0f,%d,%d,%d\n", s.at.Seconds(), s.rss, s.heap, s.goroutines, s.requests, s.wsTurns, s.fail)
	}
	return []byte(b.String())
}
