package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// extprocConfig is everything `tiergate-load extproc` is told.
type extprocConfig struct {
	target    string
	streams   int
	conns     int
	duration  time.Duration
	warmup    time.Duration
	bodySize  int
	expect    expectation
	admin     string
	pid       int
	json      bool
	timeout   time.Duration
	authority string
	maxMsg    int
	// cpuProfile is where the load tool's own CPU profile goes, to tell
	// what a server's answers cost the client (Envoy's side) apart from
	// what they cost the server.
	cpuProfile string
	decodeAll  bool
	// response adds the response half: response_headers and a JSON
	// response_body carrying usage, as Envoy sends them (STREAMED, one
	// chunk), so that the server's response path and accounting run.
	response bool
}

func parseExtprocFlags(args []string, stderr io.Writer) (*extprocConfig, error) {
	c := &extprocConfig{}
	var expect string
	fs := flag.NewFlagSet("extproc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.target, "target", "127.0.0.1:50051", "ext_proc server address (host:port)")
	fs.IntVar(&c.streams, "streams", 16, "concurrent streams (requests in flight through Envoy)")
	fs.IntVar(&c.conns, "conns", 2, "gRPC connections the streams are spread over")
	fs.DurationVar(&c.duration, "duration", 8*time.Second, "measured time")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "load before the measured time, not counted (connections, pools, GC reach a steady state)")
	fs.IntVar(&c.bodySize, "body-size", 2048, "request body size in bytes (a Responses request asking for priority)")
	fs.StringVar(&expect, "expect", string(expectFilter), "what a correct body answer is: filter (tiergate, default policy: body rewritten without service_tier), continue (null server: unchanged) or rewrite (null server with --echo: any body mutation with a matching content-length)")
	fs.StringVar(&c.admin, "admin", "", "admin base URL of the server (tiergate's --admin-listen, or the null server's): report its own time per message (tiergate_extproc_message_duration_seconds) over the measured time")
	fs.IntVar(&c.pid, "pid", 0, "server process to report on: resident memory idle before the run and peak during it, CPU time per transaction")
	fs.BoolVar(&c.json, "json", false, "print one JSON object instead of text")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "limit on one transaction (envoy.yaml's message_timeout is 10s)")
	fs.StringVar(&c.authority, "authority", "api.openai.com", ":authority of the requests")
	fs.IntVar(&c.maxMsg, "grpc-max-message-bytes", defaultMaxMsg, "largest message sent or accepted (raised to fit --body-size)")
	fs.BoolVar(&c.decodeAll, "decode-all", false, "decode and check every answer in full, instead of only those whose bytes differ from the last answer that passed (which costs the load tool, and so the server sharing its machine, CPU that Envoy would not spend)")
	fs.BoolVar(&c.response, "response", false, "after the request body's answer, send the response half too: response_headers, then a JSON Responses answer carrying usage as one response_body chunk (the response path and usage accounting run)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the load tool's own CPU profile over the whole run (warm-up included) to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("extproc: unexpected argument %q", fs.Arg(0))
	}
	var err error
	if c.expect, err = parseExpectation(expect); err != nil {
		return nil, err
	}
	switch {
	case c.streams < 1:
		return nil, errors.New("--streams must be at least 1")
	case c.conns < 1:
		return nil, errors.New("--conns must be at least 1")
	case c.duration <= 0:
		return nil, errors.New("--duration must be positive")
	case c.warmup < 0:
		return nil, errors.New("--warmup must not be negative")
	case c.timeout <= 0:
		return nil, errors.New("--timeout must be positive")
	}
	// The rewrite comes back as large as the body, plus headers.
	c.maxMsg = max(c.maxMsg, c.bodySize+1<<20)
	return c, nil
}

// runExtproc runs one measured round against an ext_proc server and prints
// its report. It fails (exit status 1, after the report) when any answer
// was an error or nothing completed, so scripts cannot miss a broken run.
func runExtproc(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseExtprocFlags(args, stderr)
	if err != nil {
		return err
	}
	body, err := responsesBody(cfg.bodySize)
	if err != nil {
		return fmt.Errorf("--body-size: %w", err)
	}
	rep := newReport(cfg)

	// Idle memory first, before this run has sent anything.
	if cfg.pid > 0 {
		idle, err := readRSS(cfg.pid)
		if err != nil {
			return fmt.Errorf("--pid: %w", err)
		}
		rep.setIdleRSS(cfg.pid, idle)
	}

	clients, closeConns, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeConns()
	if cfg.cpuProfile != "" {
		stop, err := startCPUProfile(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer func() {
			if serr := stop(); err == nil {
				err = serr
			}
		}()
	}

	var sampler *rssSampler
	if cfg.pid > 0 {
		sampler = startRSSSampler(ctx, cfg.pid)
	}
	start := time.Now()
	l := &load{
		clients: clients, streams: cfg.streams, body: body, authority: cfg.authority,
		expect: cfg.expect, timeout: cfg.timeout, decodeAll: cfg.decodeAll, response: cfg.response,
		from: start.Add(cfg.warmup), to: start.Add(cfg.warmup + cfg.duration),
	}
	// The server's histogram and CPU time are read at the edges of the
	// measured window, with the load running, so that they cover what the
	// client counts.
	httpClient := &http.Client{}
	first := takeAt(ctx, l.from, func(err error) *snapshot {
		if err != nil {
			return &snapshot{err: err}
		}
		return takeSnapshot(ctx, cfg, httpClient)
	})
	results := l.run(ctx)
	before, after := <-first, takeSnapshot(ctx, cfg, httpClient)
	if err := errors.Join(before.err, after.err); err != nil {
		return err
	}
	if sampler != nil {
		peak, err := sampler.finish()
		if err != nil {
			return fmt.Errorf("--pid: %w", err)
		}
		rep.setPeakRSS(peak)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rep.setResults(results, l.from, cfg.duration)
	rep.setCPU(cfg.pid, before, after)
	if cfg.admin != "" {
		rep.setServer(before.histograms, after.histograms)
	}
	return printReport(stdout, cfg.json, rep, rep.Errors, rep.Transactions)
}

// connect opens cfg.conns connections and waits until each is up, so that
// a target that is not listening fails at once and connection set-up is
// not timed as part of the first transactions.
func connect(ctx context.Context, cfg *extprocConfig) ([]extprocv3.ExternalProcessorClient, func(), error) {
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	clients := make([]extprocv3.ExternalProcessorClient, 0, cfg.conns)
	for range cfg.conns {
		c, err := dial(cfg.target, cfg.maxMsg)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("--target: %w", err)
		}
		conns = append(conns, c)
		c.Connect()
		for s := c.GetState(); s != connectivity.Ready; s = c.GetState() {
			if s == connectivity.TransientFailure {
				closeAll()
				return nil, nil, fmt.Errorf("--target %s: cannot connect", cfg.target)
			}
			if !c.WaitForStateChange(ctx, s) {
				closeAll()
				return nil, nil, fmt.Errorf("--target %s: not ready after 5s (%s)", cfg.target, s)
			}
		}
		clients = append(clients, extprocv3.NewExternalProcessorClient(c))
	}
	return clients, closeAll, nil
}

// snapshot is what is read at each edge of the measured window.
type snapshot struct {
	histograms map[string][]bucket // the server's, by phase (--admin)
	cpu        cpuSnapshot
	err        error
}

func takeSnapshot(ctx context.Context, cfg *extprocConfig, client *http.Client) *snapshot {
	s := &snapshot{}
	if cfg.admin != "" {
		h, err := scrapeHistograms(ctx, client, metricsURL(cfg.admin), serverHistogram)
		if err != nil {
			return &snapshot{err: fmt.Errorf("--admin: %w", err)}
		}
		s.histograms = h
	}
	if s.cpu = takeCPUSnapshot(cfg.pid); s.cpu.err != nil {
		return &snapshot{err: s.cpu.err}
	}
	return s
}

// startCPUProfile starts the process's CPU profile into path; stop ends it
// and closes the file.
func startCPUProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		return nil
	}, nil
}
