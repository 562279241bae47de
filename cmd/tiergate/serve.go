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
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/extproc"
	"github.com/tiergate/tiergate/internal/gcsettings"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
	"github.com/tiergate/tiergate/wsbridge"
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
	// level is logLevel parsed.
	level         slog.Level
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
	fs.IntVar(&c.maxUsage, "max-usage-bytes", extproc.DefaultMaxUsageBytes, "how much of a non-streamed response (or of one SSE event) is held whole to read its usage; beyond it only the members usage is read from are kept")
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
	c.explicit = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { c.explicit[f.Name] = true })
	if err := c.check(fs.Args()); err != nil {
		return nil, err
	}
	return c, nil
}

// check reads the flags that need more than their type's parsing and
// checks them against each other, reporting every bad one at once.
func (c *serveConfig) check(rest []string) error {
	var errs []error
	if len(rest) > 0 {
		errs = append(errs, fmt.Errorf("serve: unexpected argument %q", rest[0]))
	}
	if c.usageQueue < 1 {
		errs = append(errs, fmt.Errorf("--usage-log-queue: %d, want at least 1", c.usageQueue))
	}
	if err := c.level.UnmarshalText([]byte(c.logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %w", err))
	}
	if err := c.ws.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.gcHeadroom != "0" {
		var err error
		if c.gcHeadroomBytes, err = gcsettings.ParseBytes(c.gcHeadroom); err != nil {
			errs = append(errs, fmt.Errorf("--gc-headroom: %w", err))
		}
	}
	if c.memoryLimit != "auto" && c.memoryLimit != "off" {
		if _, err := gcsettings.ParseBytes(c.memoryLimit); err != nil {
			errs = append(errs, fmt.Errorf("--memory-limit: %w", err))
		}
	}
	return errors.Join(errs...)
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

// newLogger returns serve's logger: JSON lines on w, from level up.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
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
	log := newLogger(stderr, cfg.level)
	// The tuner runs until serve returns, not until SIGTERM: the drain that
	// follows is still under load.
	gcCtx, stopGC := context.WithCancel(context.Background())
	defer stopGC()
	applyGC(gcCtx, cfg, log)

	s := &server{cfg: cfg, log: log}
	defer s.close()
	// Everything that can refuse the flags or the environment comes before
	// anything serves: a bad --ws-upstream or a taken port ends start-up
	// with no listener announced and none left open.
	if err := s.build(stdout); err != nil {
		return err
	}
	if err := s.listen(); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.start(runCtx)
	runErr := s.wait(ctx)
	s.stop(cancel)
	return runErr
}

// server is what serve runs: built and bound before anything serves.
type server struct {
	cfg *serveConfig
	log *slog.Logger
	// closers run when serve returns, last first: what an early return
	// must not leave open (a second Close is harmless).
	closers []func()

	source   string // the policy file, or "embedded default"
	store    *policy.Store
	reg      *prometheus.Registry
	usageLog *usage.RecordWriter
	budgets  *budget.Tracker
	ep       *extproc.Server
	bridge   *wsbridge.Bridge
	watcher  *policy.Watcher

	adminLn, wsLn, extprocLn net.Listener

	// Set by start.
	wg         sync.WaitGroup
	errc       chan error // a listener's failure
	rd         readiness
	admin      *http.Server
	wsServer   *http.Server
	grpcServer *grpc.Server
	health     *health.Server
}

func (s *server) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// build loads the policy and makes the usage log, the metrics, the budget
// tracker, the ext_proc server, the bridge and the policy watcher.
func (s *server) build(stdout io.Writer) error {
	cfg, log := s.cfg, s.log
	p, err := loadPolicy(cfg.configPath)
	if err != nil {
		return err
	}
	s.source = cfg.configPath
	if s.source == "" {
		s.source = "embedded default"
	}
	log.Info("policy loaded", "source", s.source, "sha256", p.SHA256())
	s.store = policy.NewStore(p)

	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	usageOut, closeUsage, err := openUsageLog(cfg.usageLog, stdout)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() { _ = closeUsage() })
	// Queued: a usage log that blocks (stdout nobody reads) or fails costs
	// records, counted, never request time.
	if s.usageLog, err = usage.NewQueuedRecordWriter(usageOut, usage.QueueOptions{Size: cfg.usageQueue, Registerer: s.reg, Log: log}); err != nil {
		return err
	}
	decisions, err := policy.NewDecisionMetrics(s.reg)
	if err != nil {
		return err
	}
	tokens, err := usage.NewMetrics(s.reg)
	if err != nil {
		return err
	}
	if s.budgets, err = budget.New(budget.NewMemory(), s.store.Load, s.reg, budget.Options{Log: log}); err != nil {
		return err
	}
	s.closers = append(s.closers, s.budgets.Close) // for an early return; stop closes it first
	budgetsInForce(log, s.budgets, p)

	if s.ep, err = extproc.New(extproc.Options{
		Store: s.store, Registerer: s.reg, Decisions: decisions, Tokens: tokens, Usage: s.usageLog, Log: log,
		Budgets: s.budgets, MaxBodyBytes: cfg.maxBody, MaxUsageBytes: cfg.maxUsage,
	}); err != nil {
		return err
	}
	if s.bridge, err = cfg.ws.bridge(s.store, s.reg, decisions, tokens, s.budgets, s.usageLog, log); err != nil {
		return err
	}
	s.watcher, err = policy.NewWatcher(cfg.configPath, s.store, s.reg, log, policy.WatcherOptions{
		Reloaded: func(p *policy.Policy) { budgetsInForce(log, s.budgets, p) },
	})
	return err
}

// listen binds the three listeners.
func (s *server) listen() error {
	var err error
	if s.adminLn, err = listen(s.cfg.adminListen); err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	s.closers = append(s.closers, func() { _ = s.adminLn.Close() })
	if s.wsLn, err = listen(s.cfg.ws.listen); err != nil {
		return fmt.Errorf("WebSocket listener: %w", err)
	}
	s.closers = append(s.closers, func() { _ = s.wsLn.Close() })
	if s.extprocLn, err = listen(s.cfg.extprocListen); err != nil {
		return fmt.Errorf("ext_proc listener: %w", err)
	}
	s.closers = append(s.closers, func() { _ = s.extprocLn.Close() })
	return nil
}

// start runs the policy watcher and serves the three listeners until
// ctx ends; a listener's failure goes to errc.
func (s *server) start(ctx context.Context) {
	cfg, log := s.cfg, s.log
	s.errc = make(chan error, 3) // one per listener below
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watcher.Run(ctx)
	}()

	s.admin = &http.Server{Handler: adminHandler(s.reg, s.store, s.budgets, s.source, &s.rd, cfg.pprof, s.drainBridge()), ReadHeaderTimeout: 10 * time.Second}
	log.Info("listening", "listener", "admin", "address", listenerAddress(s.adminLn))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.admin.Serve(s.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("admin listener: %w", err)
		}
	}()

	s.wsServer = s.bridge.HTTPServer()
	log.Info("listening", "listener", "websocket", "address", listenerAddress(s.wsLn), "tls", cfg.ws.tlsCert != "", "upstream", cfg.ws.upstream)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var err error
		if cfg.ws.tlsCert != "" {
			err = s.wsServer.ServeTLS(s.wsLn, cfg.ws.tlsCert, cfg.ws.tlsKey)
		} else {
			err = s.wsServer.Serve(s.wsLn)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("WebSocket listener: %w", err)
		}
	}()

	s.grpcServer, s.health = extproc.NewGRPCServer(cfg.grpcMaxMsg)
	s.ep.Register(s.grpcServer)
	log.Info("listening", "listener", "extproc", "address", listenerAddress(s.extprocLn))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.grpcServer.Serve(s.extprocLn); err != nil {
			s.errc <- fmt.Errorf("ext_proc listener: %w", err)
		}
	}()
}

// drainBridge returns what /drain calls. Envoy's preStop hook (tiergate
// drain) starts the WebSocket sessions' grace while Envoy still runs, so
// that the sessions still open when it ends are closed with 1001 and
// recorded, not cut when Envoy exits. ext_proc keeps serving: Envoy sends
// requests until its listeners close.
func (s *server) drainBridge() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			s.rd.draining.Store(true)
			s.log.Info("draining WebSocket sessions (tiergate drain)", "grace", s.cfg.shutdownGrace.String())
			go func() {
				ctx, done := context.WithTimeout(context.Background(), s.cfg.shutdownGrace)
				defer done()
				if err := s.bridge.Shutdown(ctx); err != nil {
					s.log.Warn("drain grace over; closed the remaining WebSocket sessions with 1001", "err", err)
				}
			}()
		})
	}
}

// wait reports ready once policy changes are seen (a ConfigMap update
// that lands during start-up must not wait for the next poll), and
// returns on ctx's end (nil) or a listener's failure (the failure).
func (s *server) wait(ctx context.Context) error {
	watching := s.watcher.Watching()
	for {
		select {
		case <-watching:
			watching = nil
			s.rd.ready.Store(true)
			// Logged after /readyz turns ready, so a line-reader (a test,
			// a log alert on slow starts) can rely on the order.
			s.log.Info("ready")
		case <-ctx.Done():
			s.log.Info("shutting down", "grace", s.cfg.shutdownGrace.String())
			return nil
		case err := <-s.errc:
			s.log.Error("shutting down after a failure", "err", err)
			return err
		}
	}
}

// stop drains the servers within one grace, flushes the usage log, and
// stops what start ran (cancel ends the watcher).
func (s *server) stop(cancel context.CancelFunc) {
	cfg, log := s.cfg, s.log
	s.rd.draining.Store(true)
	s.health.Shutdown() // NOT_SERVING: Envoy's health checks see the drain
	shutdownCtx, done := context.WithTimeout(context.Background(), cfg.shutdownGrace)
	defer done()
	// HTTP streams and WebSocket sessions drain side by side within one grace.
	var drain sync.WaitGroup
	drain.Add(2)
	go func() { defer drain.Done(); stopGRPC(s.grpcServer, cfg.shutdownGrace, log) }()
	go func() {
		defer drain.Done()
		if err := s.bridge.Shutdown(shutdownCtx); err != nil {
			log.Warn("shutdown grace over; closed the remaining WebSocket sessions with 1001", "err", err)
		}
		_ = s.wsServer.Shutdown(shutdownCtx)
	}()
	drain.Wait()
	// Every stream and session has written its record by now (the gRPC
	// server waits for its handlers); the queue gets what is left of the
	// grace, and at least flushFloor, to reach the writer.
	flushCtx, flushDone := context.WithTimeout(context.Background(), max(time.Until(deadlineOf(shutdownCtx)), flushFloor))
	if err := s.usageLog.Close(flushCtx); err != nil {
		log.Error("usage log not flushed", "err", err)
	}
	flushDone()
	cancel()
	_ = s.admin.Shutdown(shutdownCtx)
	s.wg.Wait()
	// After the drain: the requests that finished in it have added their
	// spend, and Close makes one last attempt to send it to Redis.
	s.budgets.Close()
	log.Info("stopped")
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
