package budget

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tiergate/tiergate/policy"
)

// Store states, as /readyz reports them for a Redis store.
const (
	StatusOK          = "ok"
	StatusUnreachable = "unreachable"
	StatusAuthFailed  = "auth_failed"
)

// DefaultMaxPending is how many distinct keys may hold increments not yet
// sent to Redis (docs/contracts.md, "Budgets"); past it new keys' increments
// are dropped and counted.
const DefaultMaxPending = 10_000

// redisTimeout bounds one dial, read or write. Everything that waits on
// Redis runs in the store's own goroutine, never on the request path; the
// bound only keeps an unreachable address from stalling the flushes and
// refreshes behind it.
const redisTimeout = 2 * time.Second

// flushDelay is how long the store gathers increments before sending
// them: small next to any refresh interval, long enough to batch a busy
// replica's requests.
const flushDelay = 5 * time.Millisecond

// closeFlushTimeout is how long Close may spend sending what is pending.
const closeFlushTimeout = 2 * time.Second

// Redis is the store shared by replicas: one counter per budget, group and
// window in Redis, read through a local view.
//
// Decisions read counters from memory: the totals Redis held at the last
// refresh plus this replica's own increments Redis has not confirmed, so a
// replica never under-counts itself. Add records an increment locally and
// wakes the store's goroutine, which sends increments (merged per key) in
// one MULTI of INCRBY and EXPIRE, and reads the totals back every refresh
// interval. While Redis is unreachable increments stay pending, merged per
// key, up to maxPending keys.
type Redis struct {
	log        *slog.Logger
	metrics    *storeMetrics
	maxPending int
	now        func() time.Time
	// keys lists the counters decisions may read now (the policy's budgets
	// and groups in their current windows), so the view holds other
	// replicas' spend for groups this one has not served yet.
	keys func(now time.Time) []Key

	// counters maps Key to *redisCounter; reads take no lock.
	counters sync.Map

	// mu guards pending and every change to a counter's own part, so that a
	// confirmed increment leaves pending and own together.
	mu      sync.Mutex
	pending map[Key]int64
	// next is a configuration Reconfigure asked for, not yet applied.
	next *policy.RedisStore

	// warned holds the keys whose problems were logged; the store's
	// goroutine alone uses it.
	warned map[string]bool

	wake chan struct{}
	// holding is set while sends wait for the next refresh tick after a
	// failure: Add then does not wake the goroutine for nothing.
	holding atomic.Bool
	status  atomic.Pointer[string]
	stop    context.CancelFunc
	done    chan struct{}
}

// redisCounter is one key's spend as this replica knows it.
type redisCounter struct {
	// base is the total Redis held when last read (or last incremented
	// by this replica).
	base atomic.Int64
	// own is this replica's increments Redis has not confirmed.
	own atomic.Int64
}

// redisOptions are what a Redis store takes from its tracker.
type redisOptions struct {
	log        *slog.Logger
	metrics    *storeMetrics
	maxPending int
	now        func() time.Time
	keys       func(time.Time) []Key
}

// newRedis starts a store for cfg; it connects in the background, so a
// Redis that is down delays nothing. Close stops it.
func newRedis(cfg *policy.RedisStore, o redisOptions) *Redis {
	ctx, stop := context.WithCancel(context.Background())
	r := &Redis{
		log: o.log, metrics: o.metrics, maxPending: o.maxPending, now: o.now, keys: o.keys,
		pending: map[Key]int64{},
		warned:  map[string]bool{},
		next:    cfg,
		wake:    make(chan struct{}, 1),
		stop:    stop,
		done:    make(chan struct{}),
	}
	r.metrics.up.Set(0) // until the first answer
	quietRedis.Do(func() { redis.SetLogger(discardLogger{}) })
	go r.run(ctx)
	return r
}

// Kind implements Store.
func (r *Redis) Kind() string { return "redis" }

// Status returns ok, unreachable or auth_failed (unreachable until Redis
// first answers).
func (r *Redis) Status() string {
	if s := r.status.Load(); s != nil {
		return *s
	}
	return StatusUnreachable
}

// Spent implements Store: the last totals read plus this replica's own
// unconfirmed increments. It never waits on Redis.
func (r *Redis) Spent(k Key) int64 {
	if c, ok := r.counters.Load(k); ok {
		rc := c.(*redisCounter)
		return rc.base.Load() + rc.own.Load()
	}
	return 0
}

// Add implements Store: it records the increment locally and returns at
// once; the store's goroutine sends it. Past maxPending distinct keys, an
// increment to a key not pending already is dropped and counted.
func (r *Redis) Add(k Key, micros int64) {
	r.mu.Lock()
	if _, ok := r.pending[k]; !ok && len(r.pending) >= r.maxPending {
		r.mu.Unlock()
		r.metrics.dropped.Inc()
		return
	}
	r.pending[k] += micros
	// Under mu, so that prune (which keeps pending keys) cannot drop the
	// counter between its lookup and this increment.
	r.counter(k).own.Add(micros)
	r.mu.Unlock()
	if r.holding.Load() {
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Redis) counter(k Key) *redisCounter {
	if c, ok := r.counters.Load(k); ok {
		return c.(*redisCounter)
	}
	c, _ := r.counters.LoadOrStore(k, new(redisCounter))
	return c.(*redisCounter)
}

// Entries implements Store.
func (r *Redis) Entries(since time.Time) []Entry {
	var out []Entry
	s := since.Unix()
	r.counters.Range(func(k, c any) bool {
		rc := c.(*redisCounter)
		if key := k.(Key); key.Start >= s {
			if v := rc.base.Load() + rc.own.Load(); v != 0 {
				out = append(out, Entry{Key: key, Spent: v})
			}
		}
		return true
	})
	return out
}

// Pending returns how many keys hold increments not yet confirmed by Redis.
func (r *Redis) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Reconfigure switches to another Redis (or other credentials, TLS,
// prefix, refresh): the store reconnects and keeps its pending increments,
// which go to the new one.
func (r *Redis) Reconfigure(cfg *policy.RedisStore) {
	r.mu.Lock()
	r.next = cfg
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Close stops the store after one last attempt, bounded in time, to send
// what is pending.
func (r *Redis) Close() {
	r.stop()
	<-r.done
}

// redisConn is the connection the store's goroutine owns.
type redisConn struct {
	cfg    *policy.RedisStore
	client *redis.Client
	// err is why there is no client (unreadable TLS files).
	err error
}

func (r *Redis) run(ctx context.Context) {
	defer close(r.done)
	var conn redisConn
	tick := time.NewTicker(policy.DefaultRefresh)
	defer tick.Stop()
	defer func() {
		if conn.client != nil {
			fctx, cancel := context.WithTimeout(context.Background(), closeFlushTimeout)
			r.flush(fctx, &conn)
			cancel()
			_ = conn.client.Close()
		}
	}()
	// failed holds flushes back to the refresh ticks after a failure, so a
	// busy replica does not redial Redis on every request while it is down.
	failed := false
	for {
		if r.applyConfig(&conn) {
			tick.Reset(conn.cfg.Refresh)
			failed = !r.flush(ctx, &conn)
			r.refresh(ctx, &conn)
		}
		r.holding.Store(failed)
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			if !failed {
				// Increments that arrive meanwhile go in the same MULTI:
				// under load, one send per few milliseconds, not per
				// request.
				time.Sleep(flushDelay)
				failed = !r.flush(ctx, &conn)
			}
		case <-tick.C:
			failed = !r.flush(ctx, &conn)
			r.refresh(ctx, &conn)
			r.prune()
		}
	}
}

// applyConfig connects to the configuration Reconfigure asked for, if any,
// and reports whether it did.
func (r *Redis) applyConfig(conn *redisConn) bool {
	r.mu.Lock()
	next := r.next
	r.next = nil
	r.mu.Unlock()
	if next == nil {
		return false
	}
	if conn.client != nil {
		_ = conn.client.Close()
	}
	conn.cfg = next
	conn.client, conn.err = newRedisClient(next)
	r.log.Info("budget store connecting", "store", next.String())
	if conn.err != nil {
		r.failure("connect", conn.err, next)
	}
	return true
}

// client returns the connection's client after retrying its construction
// (TLS files may be mounted after start-up).
func (r *Redis) client(conn *redisConn) *redis.Client {
	if conn.client == nil && conn.cfg != nil {
		conn.client, conn.err = newRedisClient(conn.cfg)
		if conn.err != nil {
			r.failure("connect", conn.err, conn.cfg)
		}
	}
	return conn.client
}

// flush sends the pending increments in one MULTI and reports whether
// Redis took them (true when there was nothing to send).
func (r *Redis) flush(ctx context.Context, conn *redisConn) bool {
	r.mu.Lock()
	batch := maps.Clone(r.pending)
	r.mu.Unlock()
	if len(batch) == 0 {
		return true
	}
	client := r.client(conn)
	if client == nil {
		return false
	}
	now := r.now()
	keys := make([]Key, 0, len(batch))
	incrs := make([]*redis.IntCmd, 0, len(batch))
	_, err := client.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		for k, v := range batch {
			name := redisKey(conn.cfg.KeyPrefix, k)
			keys = append(keys, k)
			incrs = append(incrs, pipe.IncrBy(ctx, name, v))
			pipe.Expire(ctx, name, keyTTL(k, now))
		}
		return nil
	})
	// Each INCRBY that has its own answer was applied, whatever happened
	// to the rest: Redis runs every command of an EXEC, so one failing
	// key (a counter someone overwrote with a string) must not make the
	// others be sent, and counted, again.
	confirmed := 0
	for i, k := range keys {
		if incrs[i].Err() == nil {
			r.counter(k).base.Store(incrs[i].Val())
			confirmed++
		}
	}
	r.mu.Lock()
	for i, k := range keys {
		if incrs[i].Err() != nil {
			continue
		}
		v := batch[k]
		if left := r.pending[k] - v; left != 0 {
			r.pending[k] = left
		} else {
			delete(r.pending, k)
		}
		r.counter(k).own.Add(-v)
	}
	r.mu.Unlock()
	if err == nil {
		r.success(conn.cfg)
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	for i := range keys {
		if e := incrs[i].Err(); e != nil && authFailure(e) {
			err = e // a key the ACL user may not write: the credentials' fault
		}
	}
	var refused redis.Error
	if errors.As(err, &refused) && !authFailure(err) {
		// Redis answered, and refused some keys: it is up. They stay
		// pending (and are sent again each refresh) until someone repairs
		// them; the log says so once per key.
		for i, k := range keys {
			if e := incrs[i].Err(); e != nil {
				r.warnOnce(redisKey(conn.cfg.KeyPrefix, k), "budget store: Redis refused an increment; it stays pending and is sent again each refresh", e)
			}
		}
		r.metrics.errors.WithLabelValues(opIncr).Inc()
		r.success(conn.cfg)
		return true
	}
	if ambiguous(err) {
		// The MULTI may have been applied: sending it again may count it
		// twice, which errs on the side of the limit.
		r.metrics.errors.WithLabelValues(opIncrRetry).Inc()
		r.log.Warn("budget store: an increment may or may not have reached Redis; sending it again (it may count twice)",
			"keys", len(keys)-confirmed, "err", err)
	}
	r.failure(opIncr, err, conn.cfg)
	return false
}

// refresh reads back the totals of every key decisions may read: the
// policy's in their current windows and those this replica holds.
func (r *Redis) refresh(ctx context.Context, conn *redisConn) {
	client := r.client(conn)
	if client == nil {
		return
	}
	now := r.now()
	want := map[Key]struct{}{}
	for _, k := range r.keys(now) {
		want[k] = struct{}{}
	}
	r.counters.Range(func(k, _ any) bool {
		if key := k.(Key); key.End > now.Unix() {
			want[key] = struct{}{}
		}
		return true
	})
	if len(want) == 0 {
		if err := client.Ping(ctx).Err(); err != nil {
			r.failure(opRefresh, err, conn.cfg)
			return
		}
		r.success(conn.cfg)
		return
	}
	keys := make([]Key, 0, len(want))
	names := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
		names = append(names, redisKey(conn.cfg.KeyPrefix, k))
	}
	vals, err := client.MGet(ctx, names...).Result()
	if err != nil {
		if ctx.Err() == nil {
			r.failure(opRefresh, err, conn.cfg)
		}
		return
	}
	for i, k := range keys {
		var total int64
		if s, ok := vals[i].(string); ok {
			if total, err = strconv.ParseInt(s, 10, 64); err != nil {
				r.warnOnce(names[i], "budget store: a counter in Redis is not an integer; read as 0", err)
				total = 0
			}
		}
		if c, ok := r.counters.Load(k); ok {
			c.(*redisCounter).base.Store(total)
		} else if total != 0 {
			r.counter(k).base.Store(total)
		}
	}
	r.success(conn.cfg)
}

// warnOnce logs a problem with one key the first time it is seen, so a
// broken counter does not fill the log every refresh.
func (r *Redis) warnOnce(key, msg string, err error) {
	if r.warned[key+"\x00"+msg] {
		return
	}
	r.warned[key+"\x00"+msg] = true
	r.log.Warn(msg, "key", key, "err", err)
}

// prune drops counters retention past their window's end with nothing
// pending, as the memory store does.
func (r *Redis) prune() {
	cutoff := r.now().Unix() - int64(retention/time.Second)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counters.Range(func(k, c any) bool {
		key := k.(Key)
		if _, pending := r.pending[key]; key.End < cutoff && !pending {
			r.counters.Delete(k)
		}
		return true
	})
}

// Store error operations (tiergate_budget_store_errors_total{op}).
const (
	opConnect   = "connect"
	opIncr      = "incr"
	opIncrRetry = "incr_retry"
	opRefresh   = "refresh"
)

var storeOps = []string{opConnect, opIncr, opIncrRetry, opRefresh}

func (r *Redis) failure(op string, err error, cfg *policy.RedisStore) {
	r.metrics.errors.WithLabelValues(op).Inc()
	status := StatusUnreachable
	if authFailure(err) {
		status = StatusAuthFailed
	}
	r.setStatus(status, err, "op", op, "address", cfg.Address)
}

func (r *Redis) success(cfg *policy.RedisStore) {
	r.setStatus(StatusOK, nil, "address", cfg.Address)
}

// setStatus records the store's state, updates the gauge and logs each
// change (not each failed attempt, which would flood the log while Redis
// is down).
func (r *Redis) setStatus(s string, err error, attrs ...any) {
	old := r.status.Swap(&s)
	if s == StatusOK {
		r.metrics.up.Set(1)
	} else {
		r.metrics.up.Set(0)
	}
	if old != nil && *old == s {
		if err != nil {
			r.log.Debug("budget store error", append(attrs, "status", s, "err", err)...)
		}
		return
	}
	switch s {
	case StatusOK:
		r.log.Info("budget store reachable", attrs...)
	case StatusAuthFailed:
		r.log.Error("budget store: Redis refused the credentials; decisions use this replica's own spend and increments wait until it accepts them",
			append(attrs, "status", s, "err", err)...)
	default:
		if err != nil {
			r.log.Error("budget store: Redis is unreachable; decisions use this replica's own spend and increments wait until it is back",
				append(attrs, "status", s, "err", err)...)
		}
	}
}

// redisKey is a counter's key: <prefix>{<budget>}:<group>:<YYYY-MM-DD>
// (docs/contracts.md, "Budgets"). The braces make the budget a hash tag;
// the store itself talks to one Redis endpoint, whose MULTI and MGET span
// several budgets.
func redisKey(prefix string, k Key) string {
	return prefix + "{" + k.Budget + "}:" + k.Group + ":" + time.Unix(k.Start, 0).UTC().Format(time.DateOnly)
}

// keyTTL is how long a counter is kept: to its window's end plus a day.
func keyTTL(k Key, now time.Time) time.Duration {
	return time.Duration(k.End-now.Unix()+secondsPerDay) * time.Second
}

// errPassword marks a password that could not be read.
var errPassword = errors.New("budget store password")

// authFailure reports an error that is about credentials: the server
// refused them, or the password could not be read.
func authFailure(err error) bool {
	if errors.Is(err, errPassword) {
		return true
	}
	for _, prefix := range []string{"WRONGPASS", "NOAUTH", "NOPERM"} {
		if redis.HasErrorPrefix(err, prefix) || strings.Contains(err.Error(), prefix+" ") {
			return true
		}
	}
	return false
}

// ambiguous reports whether a failed MULTI may have been applied: not when
// the connection could not be made (dial, TLS handshake, credentials, an
// exhausted pool) or Redis answered with an error.
func ambiguous(err error) bool {
	var rerr redis.Error
	var op *net.OpError
	var verify *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	switch {
	case errors.As(err, &rerr), authFailure(err),
		errors.As(err, &op) && op.Op == "dial",
		errors.As(err, &verify), errors.As(err, &header), errors.As(err, &unknownCA), errors.As(err, &hostname),
		errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrClosed):
		return false
	}
	return true
}

// quietRedis silences go-redis's own logger, once per process: the store
// logs every failure itself, in JSON and once per change of state, where
// go-redis would print a plain line for each failed dial.
var quietRedis sync.Once

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// newRedisClient builds a client for cfg. Nothing is dialled yet.
func newRedisClient(cfg *policy.RedisStore) (*redis.Client, error) {
	opts := &redis.Options{
		Addr:          cfg.Address,
		Protocol:      2,
		DialTimeout:   redisTimeout,
		DialerRetries: 1,
		ReadTimeout:   redisTimeout,
		WriteTimeout:  redisTimeout,
		// The store retries itself, so that it can count a retry that may
		// count an increment twice.
		MaxRetries:      -1,
		PoolSize:        4,
		DisableIdentity: true,
		CredentialsProviderContext: func(context.Context) (string, string, error) {
			pw, err := readPassword(cfg)
			return cfg.Username, pw, err
		},
	}
	if cfg.TLS != nil {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		opts.TLSConfig = tc
	}
	return redis.NewClient(opts), nil
}

// readPassword reads the password at each new connection, so a rotated
// Secret applies without a restart.
func readPassword(cfg *policy.RedisStore) (string, error) {
	switch {
	case cfg.PasswordFile != "":
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("%w: password_file: %w", errPassword, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case cfg.PasswordEnv != "":
		pw, ok := os.LookupEnv(cfg.PasswordEnv)
		if !ok {
			return "", fmt.Errorf("%w: password_env: $%s is not set", errPassword, cfg.PasswordEnv)
		}
		return pw, nil
	}
	return "", nil
}

func tlsConfig(cfg *policy.RedisStore) (*tls.Config, error) {
	t := cfg.TLS
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(cfg.Address)
		if err != nil {
			return nil, fmt.Errorf("tls: address: %w", err)
		}
		tc.ServerName = host
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: ca_file %s: no PEM certificate in it", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: cert_file and key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
