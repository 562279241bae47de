package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Modes of `tiergate-load ws`.
const (
	modeLatency    = "latency"
	modeThroughput = "throughput"
	modeIdle       = "idle"
	modeConcurrent = "concurrent"
)

// wsLoadConfig is everything `tiergate-load ws` is told.
type wsLoadConfig struct {
	target         string
	upstreamListen string
	failEvery      uint64
	mode           string
	sessions       int
	turns          int
	warmupTurns    int
	duration       time.Duration
	warmup         time.Duration
	settle         time.Duration
	dialParallel   int
	admin          string
	pid            int
	json           bool
	timeout        time.Duration
}

// defaultSessions is each mode's session count (issue 4's figures).
var defaultSessions = map[string]int{modeLatency: 1, modeThroughput: 32, modeIdle: 2000, modeConcurrent: 5000}

func parseWSFlags(args []string, stderr io.Writer) (*wsLoadConfig, error) {
	c := &wsLoadConfig{}
	fs := flag.NewFlagSet("ws", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.target, "target", "", "WebSocket URL of the sessions, e.g. ws://127.0.0.1:8081/v1/responses; empty: the in-process fake upstream (--upstream-listen), the direct baseline")
	fs.StringVar(&c.upstreamListen, "upstream-listen", "", "also serve the fake upstream in this process, here (the bridge or relay under test dials it): the clients and the upstream share one process, the target has its own")
	fs.Uint64Var(&c.failEvery, "upstream-fail-every", 0, "the in-process upstream answers every Nth turn with a broken response.completed (to test the checks)")
	fs.StringVar(&c.mode, "mode", modeLatency, "latency (one session, sequential turns), throughput (sessions back to back for --duration), idle (sessions opened, one turn each, held; the target's memory per session) or concurrent (sessions all open at once, one turn each)")
	fs.IntVar(&c.sessions, "sessions", 0, "sessions (default: latency 1, throughput 32, idle 2000, concurrent 5000)")
	fs.IntVar(&c.turns, "turns", 2000, "latency: measured turns")
	fs.IntVar(&c.warmupTurns, "warmup-turns", 200, "latency: turns before the measured ones, not timed")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "throughput: measured time")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "throughput: load before the measured time, not counted")
	fs.DurationVar(&c.settle, "settle", 2*time.Second, "idle, concurrent: wait this long with every session open before reading the target's memory")
	fs.IntVar(&c.dialParallel, "dial-parallel", 256, "idle, concurrent: handshakes in flight at once (below the listen backlog)")
	fs.StringVar(&c.admin, "admin", "", "the target's admin base URL: its heap from /metrics (go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes) before and after (idle, concurrent)")
	fs.IntVar(&c.pid, "pid", 0, "the target's process: its RSS (idle, concurrent) and CPU time per turn (throughput)")
	fs.BoolVar(&c.json, "json", false, "print one JSON object instead of text")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "limit on one handshake and on one turn")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("ws: unexpected argument %q", fs.Arg(0))
	}
	def, ok := defaultSessions[c.mode]
	if !ok {
		return nil, fmt.Errorf("--mode %q: want latency, throughput, idle or concurrent", c.mode)
	}
	if c.sessions == 0 {
		c.sessions = def
	}
	switch {
	case c.target == "" && c.upstreamListen == "":
		return nil, errors.New("--target or --upstream-listen (direct) is needed")
	case c.sessions < 1, c.turns < 1, c.warmupTurns < 0, c.dialParallel < 1:
		return nil, errors.New("--sessions, --turns and --dial-parallel must be at least 1, --warmup-turns not negative")
	case c.duration <= 0 || c.warmup < 0 || c.timeout <= 0 || c.settle < 0:
		return nil, errors.New("--duration and --timeout must be positive, --warmup and --settle not negative")
	case c.mode == modeLatency && c.sessions != 1:
		return nil, errors.New("--mode latency runs one session")
	}
	return c, nil
}

// runWS runs one round of WebSocket sessions and prints its report. It
// fails (exit status 1, after the report) when any turn or handshake
// failed or nothing completed, so scripts cannot miss a broken run.
func runWS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseWSFlags(args, stderr)
	if err != nil {
		return err
	}
	// A descriptor per client connection, and one more per session for the
	// upstream's end when it runs here.
	need := cfg.sessions
	if cfg.upstreamListen != "" {
		need *= 2
	}
	if err := checkFileLimit(need); err != nil {
		return err
	}
	if cfg.upstreamListen != "" {
		ln, err := net.Listen("tcp", cfg.upstreamListen)
		if err != nil {
			return fmt.Errorf("--upstream-listen: %w", err)
		}
		slog.New(slog.NewJSONHandler(stderr, nil)).Info("listening", "listener", "ws-upstream", "address", ln.Addr().String())
		upCtx, stopUp := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- serveUntil(upCtx, ln, &fakeUpstream{failEvery: cfg.failEvery}) }()
		defer func() { stopUp(); <-served }()
		if cfg.target == "" {
			cfg.target = "ws://" + ln.Addr().String() + "/v1/responses"
		}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ForceAttemptHTTP2 = false
	d := &wsDriver{cfg: cfg, client: &http.Client{Transport: t}, metrics: &http.Client{Timeout: 5 * time.Second}}
	rep := &wsReport{Target: cfg.target, Mode: cfg.mode, Sessions: cfg.sessions}
	switch cfg.mode {
	case modeLatency:
		err = d.latency(ctx, rep)
	case modeThroughput:
		err = d.throughput(ctx, rep)
	default:
		err = d.hold(ctx, rep)
	}
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return printReport(stdout, cfg.json, rep, rep.Errors, rep.Turns)
}

// wsDriver runs the modes.
type wsDriver struct {
	cfg     *wsLoadConfig
	client  *http.Client // handshakes
	metrics *http.Client // the target's /metrics
}

// latency runs one session's turns one after the other: the time a turn
// takes through the target, without queueing.
func (d *wsDriver) latency(ctx context.Context, rep *wsReport) error {
	g := newGuard(ctx, d.cfg.timeout)
	defer g.finish()
	res := &workerResult{latencies: make([]time.Duration, 0, d.cfg.turns)}
	var s *wsSession
	defer func() {
		if s != nil {
			closeSession(s)
		}
	}()
	var start time.Time // of the first measured turn
	for i := 0; i < d.cfg.warmupTurns+d.cfg.turns && ctx.Err() == nil; i++ {
		if s == nil {
			var err error
			if s, err = dialWS(ctx, d.client, d.cfg.target, d.cfg.timeout); err != nil {
				res.fail("dial", err)
				continue
			}
			g.add(s)
		}
		began := time.Now()
		if i == d.cfg.warmupTurns {
			start = began
		}
		s = res.turn(s, began, i >= d.cfg.warmupTurns)
	}
	rep.WarmupTurns = d.cfg.warmupTurns
	rep.setResults([]workerResult{*res}, res.lastEnd.Sub(start))
	return nil
}

// turn runs one turn on s, which began at began, and books it: an error
// by its kind, a success's latency if counted (the turn is in the measured
// window). It returns the session to go on with: nil when the turn broke
// it (it is closed), so the caller dials anew.
func (r *workerResult) turn(s *wsSession, began time.Time, counted bool) *wsSession {
	kind, broken, err := s.turn()
	ended := time.Now()
	if err != nil {
		r.fail(kind, err)
		if broken {
			_ = s.c.CloseNow()
			return nil
		}
		return s
	}
	if counted {
		r.latencies = append(r.latencies, ended.Sub(began))
		r.lastEnd = ended
	}
	return s
}

// throughput runs sessions back to back for the measured time; turns
// that start in the window are counted.
func (d *wsDriver) throughput(ctx context.Context, rep *wsReport) error {
	g := newGuard(ctx, d.cfg.timeout)
	defer g.finish()
	start := time.Now()
	from, to := start.Add(d.cfg.warmup), start.Add(d.cfg.warmup+d.cfg.duration)
	first := takeAt(ctx, from, func(err error) cpuSnapshot {
		if err != nil {
			return cpuSnapshot{err: err}
		}
		return takeCPUSnapshot(d.cfg.pid)
	})
	results := make([]workerResult, d.cfg.sessions)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[i]
			res.latencies = make([]time.Duration, 0, 1<<14)
			var s *wsSession
			defer func() {
				if s != nil {
					closeSession(s)
				}
			}()
			for ctx.Err() == nil {
				began := time.Now()
				if !began.Before(to) {
					return
				}
				if s == nil {
					var err error
					if s, err = dialWS(ctx, d.client, d.cfg.target, d.cfg.timeout); err != nil {
						res.fail("dial", err)
						time.Sleep(10 * time.Millisecond) // a refusing target is not spun on
						continue
					}
					g.add(s)
					continue
				}
				s = res.turn(s, began, !began.Before(from))
			}
		}()
	}
	wg.Wait()
	after := takeCPUSnapshot(d.cfg.pid)
	before := <-first
	if err := errors.Join(before.err, after.err); err != nil {
		return err
	}
	rep.WarmupSeconds = d.cfg.warmup.Seconds()
	elapsed := d.cfg.duration
	for _, r := range results {
		if r.lastEnd.Sub(from) > elapsed {
			elapsed = r.lastEnd.Sub(from)
		}
	}
	rep.setResults(results, elapsed)
	rep.setCPU(d.cfg.pid, before, after)
	return nil
}

// hold opens the sessions (at most --dial-parallel handshakes at once),
// runs one turn on each, and holds them all open: concurrent reports the
// time it took and that every one succeeded; idle waits --settle and reads
// the target's memory against its memory before, per session held. Then
// every held session runs one more turn, to show that each survived
// being held, and all are closed.
func (d *wsDriver) hold(ctx context.Context, rep *wsReport) error {
	g := newGuard(ctx, d.cfg.timeout)
	defer g.finish()
	var sampler *rssSampler
	var before memSample
	if d.cfg.pid > 0 || d.cfg.admin != "" {
		var err error
		if before, err = d.memory(ctx); err != nil {
			return err
		}
		if d.cfg.pid > 0 {
			sampler = startRSSSampler(ctx, d.cfg.pid)
		}
	}
	var mu sync.Mutex
	res := &workerResult{}
	turns := 0
	sessions := make([]*wsSession, d.cfg.sessions)
	sem := make(chan struct{}, d.cfg.dialParallel)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range sessions {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := dialWS(ctx, d.client, d.cfg.target, d.cfg.timeout)
			if err != nil {
				mu.Lock()
				res.fail("dial", err)
				mu.Unlock()
				return
			}
			g.add(s)
			kind, _, err := s.turn()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.fail(kind, err)
				_ = s.c.CloseNow()
				return
			}
			turns++
			sessions[i] = s
		}()
	}
	wg.Wait()
	rep.OpenSeconds = time.Since(start).Seconds()
	for _, s := range sessions {
		if s != nil {
			rep.Held++
		}
	}
	if d.cfg.pid > 0 || d.cfg.admin != "" {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d.cfg.settle):
		}
		after, err := d.memory(ctx)
		if err != nil {
			return err
		}
		rep.setMemory(before, after)
		if sampler != nil {
			peak, err := sampler.finish()
			if err != nil {
				return fmt.Errorf("--pid: %w", err)
			}
			rep.PeakRSS = peak
		}
	}
	// Still alive after being held: one more turn each, then close.
	for _, s := range sessions {
		if s == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			kind, _, err := s.turn()
			mu.Lock()
			if err != nil {
				res.fail("after holding: "+kind, err)
			} else {
				turns++
			}
			mu.Unlock()
			closeSession(s)
		}()
	}
	wg.Wait()
	rep.Turns = turns
	rep.setErrors([]workerResult{*res})
	return nil
}

// closeSession closes with a normal closure, waiting (briefly) for the
// peer's close frame as a well-behaved client does.
func closeSession(s *wsSession) {
	_ = s.c.Close(websocket.StatusNormalClosure, "")
}

// memory reads the target's heap (--admin) and RSS (--pid).
func (d *wsDriver) memory(ctx context.Context) (memSample, error) {
	var m memSample
	if d.cfg.admin != "" {
		g, err := scrapeGauges(ctx, d.metrics, metricsURL(d.cfg.admin), gaugeHeapInuse, gaugeStackInuse)
		if err != nil {
			return m, fmt.Errorf("--admin: %w", err)
		}
		m.HeapInuse, m.StackInuse = int64(g[gaugeHeapInuse]), int64(g[gaugeStackInuse])
	}
	if d.cfg.pid > 0 {
		rss, err := readRSS(d.cfg.pid)
		if err != nil {
			return m, fmt.Errorf("--pid: %w", err)
		}
		m.RSS = rss
	}
	return m, nil
}
