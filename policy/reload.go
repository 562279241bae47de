package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

// Store holds the policy in force. Every decision reads it with one atomic
// load, so a reload applies to the next request and the next frame of an
// open WebSocket session, and never to half of one.
type Store struct {
	p atomic.Pointer[Policy]
}

// NewStore returns a Store holding p.
func NewStore(p *Policy) *Store {
	s := &Store{}
	s.p.Store(p)
	return s
}

// Load returns the policy in force.
func (s *Store) Load() *Policy { return s.p.Load() }

// Set puts p in force.
func (s *Store) Set(p *Policy) { s.p.Store(p) }

// reload results, the values of tiergate_config_reloads_total's result label.
const (
	reloadSuccess = "success"
	reloadInvalid = "invalid"
	reloadMissing = "missing"
)

// reloadMetrics are the config reload collectors.
type reloadMetrics struct {
	reloads     *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	info        *prometheus.GaugeVec
}

func newReloadMetrics(reg prometheus.Registerer) (*reloadMetrics, error) {
	m := &reloadMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tiergate_config_reloads_total",
			Help: "Policy file reload attempts by result: success, invalid (refused; the last good policy stays), missing (the file could not be read).",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tiergate_config_last_reload_success_timestamp_seconds",
			Help: "Unix time at which the policy in force was loaded.",
		}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tiergate_config_info",
			Help: "Always 1; the sha256 label is the SHA-256 of the policy file in force.",
		}, []string{"sha256"}),
	}
	for _, c := range []prometheus.Collector{m.reloads, m.lastSuccess, m.info} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register config metrics: %w", err)
		}
	}
	// Start every result at zero so rate() and alerts see the series at once.
	for _, r := range []string{reloadSuccess, reloadInvalid, reloadMissing} {
		m.reloads.WithLabelValues(r)
	}
	return m, nil
}

func (m *reloadMetrics) inForce(p *Policy) {
	m.info.Reset()
	m.info.WithLabelValues(p.SHA256()).Set(1)
	m.lastSuccess.Set(float64(p.LoadedAt().UnixNano()) / 1e9)
}

// Watcher keeps a Store in step with a policy file mounted the way
// Kubernetes mounts a ConfigMap: the file is a symlink through a ..data
// symlink that the kubelet swaps atomically. It watches the directory, not
// the file, so it sees the swap; plain rewrites and delete-then-create work
// the same way. A periodic re-read covers any event the kernel drops.
type Watcher struct {
	path     string
	store    *Store
	log      *slog.Logger
	metrics  *reloadMetrics
	debounce time.Duration
	poll     time.Duration
	reloaded func(*Policy) // may be nil
	watching chan struct{} // closed by Run once changes are being seen
}

// WatcherOptions tune a Watcher; zero values take the defaults.
type WatcherOptions struct {
	// Debounce is how long the watcher waits for a burst of file events to
	// settle before reading (default 100ms; a burst is read at most 500ms
	// after its first event).
	Debounce time.Duration
	// Poll is how often the file is re-read regardless of events (default 10s).
	Poll time.Duration
	// Reloaded, when set, is told of each policy a reload puts in force
	// (serve warns there that budgets are kept per replica).
	Reloaded func(*Policy)
}

// NewWatcher returns a Watcher for path feeding store, with its metrics on
// reg. The store's current policy is reported as in force. With path "",
// the policy came from no file (the embedded default): the metrics still
// report it, and there is nothing to watch.
func NewWatcher(path string, store *Store, reg prometheus.Registerer, log *slog.Logger, opts WatcherOptions) (*Watcher, error) {
	m, err := newReloadMetrics(reg)
	if err != nil {
		return nil, err
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.Poll <= 0 {
		opts.Poll = 10 * time.Second
	}
	m.inForce(store.Load())
	return &Watcher{path: path, store: store, log: log, metrics: m, debounce: opts.Debounce, poll: opts.Poll,
		reloaded: opts.Reloaded, watching: make(chan struct{})}, nil
}

// Watching is closed once Run sees changes to the file (or, where it
// cannot watch, polls it): a change made after that is picked up, and one
// made between loading the policy and then has been read. serve reports
// ready only after it.
func (w *Watcher) Watching() <-chan struct{} { return w.watching }

// maxBurst bounds how long a steady stream of events can hold a reload off.
const maxBurst = 500 * time.Millisecond

// Run watches until ctx ends. Where the file or its directory cannot be
// watched (no inotify, say) it warns and polls instead, so it cannot fail.
// Call it once.
func (w *Watcher) Run(ctx context.Context) {
	if w.path == "" {
		close(w.watching)
		<-ctx.Done()
		return
	}
	fw, err := fsnotify.NewWatcher()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if err != nil {
		w.log.Warn("cannot watch the policy file; polling only", "path", w.path, "err", err)
	} else {
		defer fw.Close()
		if err := fw.Add(filepath.Dir(w.path)); err != nil {
			w.log.Warn("cannot watch the policy directory; polling only", "path", w.path, "err", err)
		}
		events, errs = fw.Events, fw.Errors
	}
	// The policy in force was read before the watch began; a change in
	// between raised no event, so read once more now.
	w.reload()
	close(w.watching)
	poll := time.NewTicker(w.poll)
	defer poll.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var burstStart time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			now := time.Now()
			if burstStart.IsZero() {
				burstStart = now
			}
			wait := w.debounce
			if left := maxBurst - now.Sub(burstStart); left < wait {
				wait = max(left, 0)
			}
			timer.Reset(wait)
		case err := <-errs:
			w.log.Warn("policy watch error", "path", w.path, "err", err)
		case <-timer.C:
			burstStart = time.Time{}
			w.reload()
		case <-poll.C:
			w.reload()
		}
	}
}

// reload reads the file once and puts it in force if it is valid and
// differs from the policy in force. It returns the result label, or "" when
// the file is unchanged.
func (w *Watcher) reload() string {
	if w.path == "" {
		return ""
	}
	data, err := os.ReadFile(w.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			w.log.Warn("policy file missing; keeping the policy in force", "path", w.path, "sha256", w.store.Load().SHA256())
		} else {
			w.log.Error("policy file unreadable; keeping the policy in force", "path", w.path, "err", err)
		}
		w.metrics.reloads.WithLabelValues(reloadMissing).Inc()
		return reloadMissing
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) == w.store.Load().SHA256() {
		return ""
	}
	p, err := Load(data)
	if err == nil {
		err = checkSuccessor(w.store.Load(), p)
	}
	if err != nil {
		w.log.Error("policy file refused; keeping the policy in force", "path", w.path,
			"sha256", w.store.Load().SHA256(), "problems", err.Error())
		w.metrics.reloads.WithLabelValues(reloadInvalid).Inc()
		return reloadInvalid
	}
	w.store.Set(p)
	w.metrics.inForce(p)
	w.metrics.reloads.WithLabelValues(reloadSuccess).Inc()
	w.log.Info("policy reloaded", "path", w.path, "sha256", p.SHA256(), "rules", len(p.rules), "budgets", len(p.budgets))
	if w.reloaded != nil {
		w.reloaded(p)
	}
	return reloadSuccess
}
