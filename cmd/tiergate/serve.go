package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/extproc"
	"github.com/tiergate/tiergate/internal/gcsettings"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

const defaultMaxBody = extproc.DefaultMaxBodyBytes

// serveConfig is everything `tiergate serve` is told on its command line.
type serveConfig struct {
	configPath    string
	extprocListen string
	grpcMaxMsg    int
	maxBody       int64
	maxUsage      int
	adminListen   string
	pprof         bool
	ws            wsConfig
	usageLog      string
	usageQueue    int
	logLevel      string
	shutdownGrace time.Duration
	gcHeadroom    string
	// gcHeadroomBytes is gcHeadroom parsed; 0 leaves GOGC alone.
	gcHeadroomBytes int64
	memoryLimit     string
	// explicit names the flags given on the command line: they win over
	// the GOGC and GOMEMLIMIT environment variables, which win over the
	// defaults.
	explicit map[string]bool
}

func parseServeFlags(args []string, stderr io.Writer) (*serveConfig, error) {
	c := &serveConfig{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.configPath, "config", "", "policy file, watched and reloaded live (default: the embedded default policy, which strips priority)")
	fs.StringVar(&c.extprocListen, "extproc-listen", "127.0.0.1:50051", "ext_proc gRPC address: host:port or unix:///path/to.sock")
	fs.IntVar(&c.grpcMaxMsg, "grpc-max-message-bytes", extproc.DefaultMaxMessageBytes, "largest ext_proc message accepted or sent; at least Envoy's per_connection_buffer_limit_bytes (envoy.yaml: 64 MiB) plus headroom")
	fs.Int64Var(&c.maxBody, "max-body-bytes", defaultMaxBody, "largest request body after decompression; a larger gzip body is refused (400)")
	fs.IntVar(&c.maxUsage, "max-usage-bytes", extproc.DefaultMaxUsageBytes, "how much of a non-streamed response (or of one SSE event) is kept to read its usage; beyond it the usage is recorded as unknown")
	c.ws.register(fs)
	fs.StringVar(&c.adminListen, "admin-listen", "127.0.0.1:9464", "address of /metrics, /healthz, /readyz and /policy (in Kubernetes bind :9464)")
	fs.BoolVar(&c.pprof, "pprof", false, "also serve Go's runtime profiles at /debug/pprof/ on the admin listener (off by default: they show internals, and a profile being taken costs CPU)")
	fs.StringVar(&c.usageLog, "usage-log", "stdout", "where usage records go, one JSON object per line: stdout, a file path, or off")
	fs.IntVar(&c.usageQueue, "usage-log-queue", usage.DefaultQueueSize, "how many usage records may wait for a slow or blocked --usage-log writer; beyond it records are dropped and counted (tiergate_usage_records_dropped_total), never waited for")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug (one line per decision), info (one line per block), warn or error; logs go to stderr as JSON")
	fs.DurationVar(&c.shutdownGrace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long open streams and sessions may run on before they are closed")
	fs.StringVar(&c.gcHeadroom, "gc-headroom", "16MiB", "least heap growth between garbage collections (GOGC is set to max(100, headroom/max(live heap, 4MiB)) after each one): the live heap is a few MiB, so Go's default of growing by the live heap collects dozens of times a second under load; 0 leaves GOGC alone, and GOGC in the environment turns this default off")
	fs.StringVar(&c.memoryLimit, "memory-limit", "auto", "soft memory limit of the Go runtime (GOMEMLIMIT): a size such as 200MiB, off, or auto (90% of the container's cgroup memory limit, none without one); GOMEMLIMIT in the environment wins over this default")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	if c.usageQueue < 1 {
		return nil, fmt.Errorf("--usage-log-queue: %d, want at least 1", c.usageQueue)
	}
	c.explicit = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { c.explicit[f.Name] = true })
	if err := c.ws.validate(); err != nil {
		return nil, err
	}
	if c.gcHeadroom != "0" {
		var err error
		if c.gcHeadroomBytes, err = gcsettings.ParseBytes(c.gcHeadroom); err != nil {
			return nil, fmt.Errorf("--gc-headroom: %w", err)
		}
	}
	if c.memoryLimit != "auto" && c.memoryLimit != "off" {
		if _, err := gcsettings.ParseBytes(c.memoryLimit); err != nil {
			return nil, fmt.Errorf("--memory-limit: %w", err)
		}
	}
	return c, nil
}

// systemRoot is the root below which /proc and the cgroup mounts are read
// for --memory-limit auto (a variable for tests).
var systemRoot = "/"

// applyGC sets the garbage collector up until ctx ends: the headroom tuner
// and the memory limit from the flags when given, else from GOGC and
// GOMEMLIMIT when set (the Go runtime has applied them already), else from
// the defaults. It logs what is in force.
func applyGC(ctx context.Context, c *serveConfig, log *slog.Logger) {
	headroomFrom, tune := "default", true
	switch {
	case c.explicit["gc-headroom"]:
		headroomFrom = "flag"
	case os.Getenv("GOGC") != "":
		headroomFrom, tune = "off: GOGC is set", false
	}
	var headroom int64
	if tune && c.gcHeadroomBytes > 0 {
		headroom = c.gcHeadroomBytes
		gcsettings.StartTuner(ctx, uint64(headroom))
	}
	limitFrom := "GOMEMLIMIT"
	if c.explicit["memory-limit"] || os.Getenv("GOMEMLIMIT") == "" {
		limit, source, err := gcsettings.MemoryLimit(c.memoryLimit, systemRoot)
		if err != nil {
			// Only auto gets here (parseServeFlags checked a size). An
			// unreadable cgroup must not keep the sidecar from starting:
			// run without a limit, and say so.
			log.Warn("cannot read the container's memory limit; running without a soft memory limit (set --memory-limit)", "err", err)
			source = "auto: cgroup unreadable"
		}
		if limit <= 0 {
			limit = math.MaxInt64 // none: Go's own default
		}
		debug.SetMemoryLimit(limit)
		limitFrom = source
	}
	log.Info("garbage collector", "gc_headroom_bytes", headroom, "gc_headroom_from", headroomFrom,
		"gc_percent", gcsettings.Percent(),
		"memory_limit_bytes", debug.SetMemoryLimit(-1), "memory_limit_from", limitFrom)
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// openUsageLog returns the usage log's writer and a function that closes it.
func openUsageLog(dest string, stdout io.Writer) (io.Writer, func() error, error) {
	switch dest {
	case "stdout", "-", "":
		return stdout, func() error { return nil }, nil
	case "off":
		return io.Discard, func() error { return nil }, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("--usage-log: %w", err)
	}
	return f, f.Close, nil
}

// listen opens a TCP address or, for unix:///path, a Unix socket (a stale
// socket file from a previous run is removed first).
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", addr)
}

// runServe runs the servers until ctx ends, then drains them.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseServeFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg.logLevel)
	if err != nil {
		return err
	}
	// The tuner runs until serve returns, not until SIGTERM: the drain that
	// follows is still under load.
	gcCtx, stopGC := context.WithCancel(context.Background())
	defer stopGC()
	applyGC(gcCtx, cfg, log)
	p, err := loadPolicy(cfg.configPath)
	if err != nil {
		return err
	}
	source := cfg.configPath
	if source == "" {
		source = "embedded default"
	}
	log.Info("policy loaded", "source", source, "sha256", p.SHA256())
	store := policy.NewStore(p)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	usageOut, closeUsage, err := openUsageLog(cfg.usageLog, stdout)
	if err != nil {
		return err
	}
	defer closeUsage()
	// Queued: a usage log that blocks (stdout nobody reads) or fails costs
	// records, counted, never request time.
	usageLog, err := usage.NewQueuedLog(usageOut, usage.QueueOptions{Size: cfg.usageQueue, Registerer: reg, Log: log})
	if err != nil {
		return err
	}
	decisions, err := policy.NewDecisionMetrics(reg)
	if err != nil {
		return err
	}
	tokens, err := usage.NewMetrics(reg)
	if err != nil {
		return err
	}
	budgets, err := budget.New(budget.NewMemory(), store.Load, reg, budget.Options{Log: log})
	if err != nil {
		return err
	}
	defer budgets.Close() // for an early return; closed again below, harmlessly
	budgetsInForce(log, budgets, p)

	// Everything that can refuse the flags or the environment comes before
	// anything serves: a bad --ws-upstream or a taken port ends start-up
	// with no listener announced and none left open.
	ep, err := extproc.New(extproc.Options{
		Store: store, Registerer: reg, Decisions: decisions, Tokens: tokens, Usage: usageLog, Log: log,
		Budgets: budgets, MaxBodyBytes: cfg.maxBody, MaxUsageBytes: cfg.maxUsage,
	})
	if err != nil {
		return err
	}
	bridge, err := cfg.ws.bridge(store, reg, decisions, tokens, budgets, usageLog, log)
	if err != nil {
		return err
	}
	watcher, err := policy.NewWatcher(cfg.configPath, store, reg, log, policy.WatcherOptions{
		Reloaded: func(p *policy.Policy) { budgetsInForce(log, budgets, p) },
	})
	if err != nil {
		return err
	}
	adminLn, err := listen(cfg.adminListen)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	defer adminLn.Close() // for an early return; a second Close is harmless
	wsLn, err := listen(cfg.ws.listen)
	if err != nil {
		return fmt.Errorf("WebSocket listener: %w", err)
	}
	defer wsLn.Close()
	extprocLn, err := listen(cfg.extprocListen)
	if err != nil {
		return fmt.Errorf("ext_proc listener: %w", err)
	}
	defer extprocLn.Close()

	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3) // one per listener below
	wg.Add(1)
	go func() {
		defer wg.Done()
		watcher.Run(runCtx)
	}()

	rd := &readiness{}
	// Envoy's preStop hook (tiergate drain) starts the WebSocket sessions'
	// grace while Envoy still runs, so that the sessions still open when it
	// ends are closed with 1001 and recorded, not cut when Envoy exits.
	// ext_proc keeps serving: Envoy sends requests until its listeners close.
	var drainOnce sync.Once
	drainBridge := func() {
		drainOnce.Do(func() {
			rd.draining.Store(true)
			log.Info("draining WebSocket sessions (tiergate drain)", "grace", cfg.shutdownGrace.String())
			go func() {
				ctx, done := context.WithTimeout(context.Background(), cfg.shutdownGrace)
				defer done()
				if err := bridge.Shutdown(ctx); err != nil {
					log.Warn("drain grace over; closed the remaining WebSocket sessions with 1001", "err", err)
				}
			}()
		})
	}
	admin := &http.Server{Handler: adminHandler(reg, store, budgets, source, rd, cfg.pprof, drainBridge), ReadHeaderTimeout: 10 * time.Second}
	log.Info("listening", "listener", "admin", "address", listenerAddress(adminLn))
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := admin.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin listener: %w", err)
		}
	}()

	wsServer := bridge.HTTPServer()
	log.Info("listening", "listener", "websocket", "address", listenerAddress(wsLn), "tls", cfg.ws.tlsCert != "", "upstream", cfg.ws.upstream)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		if cfg.ws.tlsCert != "" {
			err = wsServer.ServeTLS(wsLn, cfg.ws.tlsCert, cfg.ws.tlsKey)
		} else {
			err = wsServer.Serve(wsLn)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("WebSocket listener: %w", err)
		}
	}()

	grpcServer, health := extproc.NewGRPCServer(cfg.grpcMaxMsg)
	ep.Register(grpcServer)
	log.Info("listening", "listener", "extproc", "address", listenerAddress(extprocLn))
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := grpcServer.Serve(extprocLn); err != nil {
			errc <- fmt.Errorf("ext_proc listener: %w", err)
		}
	}()

	// Ready only once policy changes are seen (a ConfigMap update that lands
	// during start-up must not wait for the next poll), and until a signal
	// or a listener's failure.
	var runErr error
	watching := watcher.Watching()
wait:
	for {
		select {
		case <-watching:
			watching = nil
			rd.ready.Store(true)
			// Logged after /readyz turns ready, so a line-reader (a test,
			// a log alert on slow starts) can rely on the order.
			log.Info("ready")
		case <-ctx.Done():
			log.Info("shutting down", "grace", cfg.shutdownGrace.String())
			break wait
		case runErr = <-errc:
			log.Error("shutting down after a failure", "err", runErr)
			break wait
		}
	}
	rd.draining.Store(true)
	health.Shutdown() // NOT_SERVING: Envoy's health checks see the drain
	shutdownCtx, done := context.WithTimeout(context.Background(), cfg.shutdownGrace)
	defer done()
	// HTTP streams and WebSocket sessions drain side by side within one grace.
	var drain sync.WaitGroup
	drain.Add(2)
	go func() { defer drain.Done(); stopGRPC(grpcServer, cfg.shutdownGrace, log) }()
	go func() {
		defer drain.Done()
		if err := bridge.Shutdown(shutdownCtx); err != nil {
			log.Warn("shutdown grace over; closed the remaining WebSocket sessions with 1001", "err", err)
		}
		_ = wsServer.Shutdown(shutdownCtx)
	}()
	drain.Wait()
	// Every stream and session has written its record by now (the gRPC
	// server waits for its handlers); the queue gets what is left of the
	// grace, and at least flushFloor, to reach the writer.
	flushCtx, flushDone := context.WithTimeout(context.Background(), max(time.Until(deadlineOf(shutdownCtx)), flushFloor))
	if err := usageLog.Close(flushCtx); err != nil {
		log.Error("usage log not flushed", "err", err)
	}
	flushDone()
	cancel()
	_ = admin.Shutdown(shutdownCtx)
	wg.Wait()
	// After the drain: the requests that finished in it have added their
	// spend, and Close makes one last attempt to send it to Redis.
	budgets.Close()
	log.Info("stopped")
	return runErr
}

// flushFloor is the least time the usage queue gets to flush at shutdown,
// even when draining used the whole grace: the records of the streams and
// sessions the grace cut are written last.
const flushFloor = time.Second

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

func listenerAddress(ln net.Listener) string {
	if ln.Addr().Network() == "unix" {
		return "unix://" + ln.Addr().String()
	}
	return ln.Addr().String()
}

// budgetsInForce puts p's budget store in force (reconnecting when its
// settings changed), starts p's budget counters at zero and says, whenever
// a policy with budgets and no shared store comes into force, what the
// memory store guarantees: spend is this replica's alone and is lost on
// restart, so N replicas let a group spend up to N times a limit.
func budgetsInForce(log *slog.Logger, budgets *budget.Tracker, p *policy.Policy) {
	budgets.Configure(p.BudgetStore())
	budgets.Prepare(p)
	if n := len(p.Budgets()); n > 0 && p.BudgetStore() == nil {
		log.Warn("budgets keep spend in memory: each replica counts only what it served and forgets it on restart, so with N replicas a group may spend up to N times a limit",
			"budgets", n, "store", "memory")
	}
}
