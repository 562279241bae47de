package budget

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tiergate/tiergate/internal/pricetest"
	"github.com/tiergate/tiergate/internal/redistest"
	"github.com/tiergate/tiergate/internal/syncbuf"
	"github.com/tiergate/tiergate/internal/testcert"
	"github.com/tiergate/tiergate/policy"
)

// redisFixture is a tracker whose policy keeps spend in Redis.
type redisFixture struct {
	tracker *Tracker
	pol     *policy.Policy
	reg     *prometheus.Registry
	log     *syncbuf.Buffer
}

func newRedisFixture(t *testing.T, cfg *policy.RedisStore, opts Options) *redisFixture {
	t.Helper()
	return newRedisFixtureFor(t, trackerPolicy, cfg, opts)
}

func newRedisFixtureFor(t *testing.T, yaml string, cfg *policy.RedisStore, opts Options) *redisFixture {
	t.Helper()
	p, err := policy.Load([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	f := &redisFixture{pol: p, reg: prometheus.NewRegistry(), log: &syncbuf.Buffer{}}
	opts.Log = slog.New(slog.NewJSONHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.tracker, err = New(NewMemory(), func() *policy.Policy { return p }, f.reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	f.tracker.Configure(cfg)
	t.Cleanup(f.tracker.Close)
	return f
}

func (f *redisFixture) redis(t *testing.T) *Redis {
	t.Helper()
	r, ok := f.tracker.Store().(*Redis)
	if !ok {
		t.Fatalf("store is %s, want redis", f.tracker.Store().Kind())
	}
	return r
}

func (f *redisFixture) budget(t *testing.T, name string) *policy.Budget {
	t.Helper()
	for i, b := range f.pol.Budgets() {
		if b.Name == name {
			return &f.pol.Budgets()[i]
		}
	}
	t.Fatalf("no budget %q", name)
	return nil
}

func (f *redisFixture) spent(t *testing.T, name, group string, at time.Time) int64 {
	t.Helper()
	v := f.tracker.View(at)
	s, _ := v.Spent(f.budget(t, name), group)
	return s
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func redisCfg(addr string) *policy.RedisStore {
	return &policy.RedisStore{Address: addr, KeyPrefix: "tg:", Refresh: 50 * time.Millisecond}
}

func charge(group, model string, tier policy.Tier, picos uint64, at time.Time) Charge {
	return Charge{Group: group, At: at, Cost: policy.Cost{Model: model, Tier: tier, Pico: picos}}
}

func TestRedisKeysTTLsAndValuesAreAsDesignSays(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	now := newClock("2026-12-07T10:00:00Z") // a Monday
	f := newRedisFixture(t, redisCfg(srv.Addr), Options{Now: now.now})
	r := f.redis(t)
	// 1.2345675 units rounds half to even to 1.234568 (micro-units).
	f.tracker.Account(f.pol, charge("codex-fast", "gpt-5.5", policy.TierPriority, 1_234_567_500_000, now.now()))
	f.tracker.Account(f.pol, charge("stranger", "gpt-4o", policy.TierDefault, 2_000_000, now.now()))
	waitFor(t, 5*time.Second, "the increments were not sent", func() bool { return r.Pending() == 0 })

	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	day := 24 * time.Hour
	cases := []struct {
		name, key string
		value     string
		ttl       time.Duration
	}{
		{"a day's key is dated its day and lives to its end plus a day", "tg:{fast-daily}:codex-fast:2026-12-07", "1234568", 14*time.Hour + day},
		{"a week's key is dated its Monday", "tg:{all-weekly}:codex-fast:2026-12-07", "1234568", 6*day + 14*time.Hour + day},
		{"a month's key is dated the first", "tg:{all-monthly}:codex-fast:2026-12-01", "1234568", 24*day + 14*time.Hour + day},
		{"a group the policy does not name spends in other", "tg:{all-weekly}:other:2026-12-07", "2", 6*day + 14*time.Hour + day},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Get(ctx, tc.key).Result()
			if err != nil || got != tc.value {
				t.Errorf("GET %s = %q, %v; want %q", tc.key, got, err, tc.value)
			}
			ttl, err := c.TTL(ctx, tc.key).Result()
			// Redis counts the TTL down in real time from when it was set.
			if err != nil || ttl > tc.ttl || ttl < tc.ttl-5*time.Second {
				t.Errorf("TTL %s = %s, %v; want %s (less the seconds the test took)", tc.key, ttl, err, tc.ttl)
			}
		})
	}
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil || len(keys) != len(cases) {
		t.Errorf("Redis holds %v (%v), want exactly the %d keys above", keys, err, len(cases))
	}
}

func TestTwoStoresEnforceOneBudgetWithinARefresh(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	cfg := redisCfg(srv.Addr)
	cfg.Refresh = 200 * time.Millisecond
	a := newRedisFixture(t, cfg, Options{})
	b := newRedisFixture(t, cfg, Options{})
	waitFor(t, 5*time.Second, "the stores did not connect", func() bool {
		return a.tracker.StoreStatus() == StatusOK && b.tracker.StoreStatus() == StatusOK
	})
	limit := a.budget(t, "fast-daily").Limit
	// a serves the group up to its limit; b has served nothing.
	start := time.Now()
	a.tracker.Account(a.pol, charge("codex-fast", "gpt-5.5", policy.TierPriority, uint64(limit)*PicosPerMicro, time.Now()))
	if got := a.spent(t, "fast-daily", "codex-fast", time.Now()); got != limit {
		t.Fatalf("a reads %d at once, want its own %d", got, limit)
	}
	waitFor(t, 2*time.Second, "b never saw a's spend", func() bool {
		return b.spent(t, "fast-daily", "codex-fast", time.Now()) >= limit
	})
	// One refresh interval, plus the time to send and read back on a
	// loaded test machine.
	if took := time.Since(start); took > cfg.Refresh+150*time.Millisecond {
		t.Errorf("b saw the spend after %s, want within one refresh (%s)", took, cfg.Refresh)
	}
	// b's decision for the group now acts on the exhausted budget.
	v := b.tracker.View(time.Now())
	d := b.pol.DecideHTTP(&policy.HTTPRequest{Endpoint: policy.EndpointResponses, Group: "codex-fast", Spend: &v,
		Body: []byte(`{"model":"gpt-5.5","service_tier":"priority"}`)}).Decision
	if d.Budget != "fast-daily" || d.Action != policy.ActionFilter {
		t.Errorf("b's decision: budget %q action %v, want fast-daily filter", d.Budget, d.Action)
	}
}

// outagePolicy has one budget and eight groups, each with its own key.
var outagePolicy = pricetest.Table() + `identity: {group_header: x-tiergate-group}
groups: [{name: g1}, {name: g2}, {name: g3}, {name: g4}, {name: g5}, {name: x1}, {name: x2}, {name: x3}]
budgets:
- name: all-weekly
  window: week
  limit: 5
  on_exhausted: block
`

func TestRedisStoppedAndRestartedUnderLoad(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	const bound = 5
	f := newRedisFixtureFor(t, outagePolicy, redisCfg(srv.Addr), Options{MaxPending: bound})
	r := f.redis(t)
	waitFor(t, 5*time.Second, "the store did not connect", func() bool { return f.tracker.StoreStatus() == StatusOK })

	// Load: two workers charge five groups (five keys of all-weekly, the
	// only budget a default-tier gpt-4o charge falls under).
	groups := []string{"g1", "g2", "g3", "g4", "g5"}
	var sent [5]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				g := (i + w) % len(groups)
				f.tracker.Account(f.pol, charge(groups[g], "gpt-4o", policy.TierDefault, 7*PicosPerMicro, time.Now()))
				sent[g].Add(7)
				time.Sleep(200 * time.Microsecond)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	srv.Stop()
	waitFor(t, 5*time.Second, "the store never saw Redis go", func() bool { return f.tracker.StoreStatus() == StatusUnreachable })
	waitFor(t, 5*time.Second, "the five groups' increments are not all pending", func() bool { return r.Pending() == bound })
	if up := testutil.ToFloat64(f.tracker.metrics.store.up); up != 0 {
		t.Errorf("tiergate_budget_store_up = %v during the outage, want 0", up)
	}
	// During the outage, each replica's view still holds its own spend.
	for i, g := range groups {
		if got, min := f.spent(t, "all-weekly", g, time.Now()), sent[i].Load()-7; got < min {
			t.Errorf("during the outage %s reads %d, want at least %d (its own spend)", g, got, min)
		}
	}
	// Three more groups: past the bound, each increment is dropped.
	for _, g := range []string{"x1", "x2", "x3"} {
		f.tracker.Account(f.pol, charge(g, "gpt-4o", policy.TierDefault, PicosPerMicro, time.Now()))
	}
	if got := testutil.ToFloat64(f.tracker.metrics.store.dropped); got != 3 {
		t.Errorf("tiergate_budget_increments_dropped_total = %v, want 3", got)
	}
	srv.Restart()
	waitFor(t, 5*time.Second, "the store never saw Redis back", func() bool { return f.tracker.StoreStatus() == StatusOK })
	time.Sleep(100 * time.Millisecond) // load goes on with Redis back
	close(stop)
	wg.Wait()
	waitFor(t, 5*time.Second, "the pending increments were not sent", func() bool { return r.Pending() == 0 })

	c := srv.Client()
	defer c.Close()
	retries := testutil.ToFloat64(f.tracker.metrics.store.errors.WithLabelValues(opIncrRetry))
	now := time.Now()
	for i, g := range groups {
		key := weeklyKey(g, now)
		got, err := c.Get(context.Background(), key).Int64()
		want := sent[i].Load()
		switch {
		case err != nil:
			t.Errorf("GET %s: %v", key, err)
		case retries == 0 && got != want:
			t.Errorf("%s = %d in Redis, want exactly the %d sent (no ambiguous retry happened)", key, got, want)
		case got < want:
			t.Errorf("%s = %d in Redis, want at least the %d sent", key, got, want)
		}
	}
	for _, g := range []string{"x1", "x2", "x3"} {
		key := weeklyKey(g, now)
		if n, _ := c.Exists(context.Background(), key).Result(); n != 0 {
			t.Errorf("%s exists: a dropped increment reached Redis", key)
		}
	}
}

func TestTheRequestPathNeverWaitsOnRedis(t *testing.T) {
	t.Parallel()
	// A server that accepts connections and never answers: every send and
	// refresh waits for its timeout.
	ln := serveLoopback(t, func(c net.Conn) { t.Cleanup(func() { c.Close() }) })
	f := newRedisFixture(t, redisCfg(ln.Addr().String()), Options{})
	b := f.budget(t, "all-weekly")
	start := time.Now()
	var total int64
	for i := range 2000 {
		now := time.Now()
		v := f.tracker.View(now)
		if _, left := v.Spent(b, "team-a"); left <= 0 {
			t.Fatal("no time left in the window")
		}
		f.tracker.Account(f.pol, charge("team-a", "gpt-4o", policy.TierDefault, uint64(i+1)*PicosPerMicro, now))
		total += int64(i + 1)
	}
	took := time.Since(start)
	t.Logf("2000 decisions and charges: %s", took)
	if took > 500*time.Millisecond {
		t.Errorf("2000 decisions and charges took %s against a Redis that never answers, want far less than one timeout (%s)", took, redisTimeout)
	}
	if got := f.spent(t, "all-weekly", "team-a", time.Now()); got != total {
		t.Errorf("the view reads %d, want this replica's own %d", got, total)
	}
}

func TestStoreFailuresAreClear(t *testing.T) {
	t.Parallel()
	plain := redistest.Start(t, redistest.Options{Password: "right-password",
		// The ACL docs/deployment.md recommends: its keys, its commands.
		Users: []string{"tiergate on >user-password ~tg:* resetchannels -@all +incrby +expire +mget +multi +exec +ping"}})
	certs := testcert.New(t)
	secure := redistest.Start(t, redistest.Options{TLS: &certs})
	otherCA := testcert.New(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	wrongPW := write("wrong", "wrong-password\n")
	userPW := write("user", "user-password\n")
	rightPW := write("right", "right-password\n")
	otherCAFile := write("other-ca.pem", string(otherCA.CAPEM))
	closed := redistest.ClosedAddr(t)
	// os.Setenv, not t.Setenv, which forbids t.Parallel: the variable's
	// name is this test's alone.
	if err := os.Setenv("TIERGATE_TEST_REDIS_PASSWORD", "right-password"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Unsetenv("TIERGATE_TEST_REDIS_PASSWORD") })
	cases := []struct {
		name    string
		cfg     policy.RedisStore
		status  string
		logWant string
	}{
		{"the right password from a file connects", policy.RedisStore{Address: plain.Addr, PasswordFile: rightPW}, StatusOK, "budget store reachable"},
		{"the right password from the environment connects", policy.RedisStore{Address: plain.Addr, PasswordEnv: "TIERGATE_TEST_REDIS_PASSWORD"}, StatusOK, "budget store reachable"},
		{"an ACL user limited to its keys and commands sends and reads", policy.RedisStore{Address: plain.Addr, Username: "tiergate", PasswordFile: userPW, KeyPrefix: "tg:"}, StatusOK, "budget store reachable"},
		{"an ACL user's keys outside its pattern are refused", policy.RedisStore{Address: plain.Addr, Username: "tiergate", PasswordFile: userPW, KeyPrefix: "other:"}, StatusAuthFailed, "NOPERM"},
		{"a wrong password is an authentication failure", policy.RedisStore{Address: plain.Addr, PasswordFile: wrongPW}, StatusAuthFailed, "WRONGPASS"},
		{"no password where one is required is an authentication failure", policy.RedisStore{Address: plain.Addr}, StatusAuthFailed, "NOAUTH"},
		{"a missing password file is an authentication failure", policy.RedisStore{Address: plain.Addr, PasswordFile: filepath.Join(dir, "absent")}, StatusAuthFailed, "password_file: open"},
		{"an unset password variable is an authentication failure", policy.RedisStore{Address: plain.Addr, PasswordEnv: "TIERGATE_TEST_UNSET"}, StatusAuthFailed, "$TIERGATE_TEST_UNSET is not set"},
		{"an unreachable address is unreachable", policy.RedisStore{Address: closed}, StatusUnreachable, "connection refused"},
		{"TLS with the server's CA connects", policy.RedisStore{Address: secure.Addr, TLS: &policy.RedisTLS{CAFile: secure.CAFile()}}, StatusOK, "budget store reachable"},
		{"TLS with another CA fails verification", policy.RedisStore{Address: secure.Addr, TLS: &policy.RedisTLS{CAFile: otherCAFile}}, StatusUnreachable, "certificate signed by unknown authority"},
		{"TLS under a name the certificate lacks fails verification", policy.RedisStore{Address: secure.Addr, TLS: &policy.RedisTLS{CAFile: secure.CAFile(), ServerName: "redis.example"}}, StatusUnreachable, "redis.example"},
		{"a missing CA file is reported", policy.RedisStore{Address: secure.Addr, TLS: &policy.RedisTLS{CAFile: filepath.Join(dir, "absent.pem")}}, StatusUnreachable, "tls: ca_file: open"},
		{"plaintext to a TLS server is unreachable", policy.RedisStore{Address: secure.Addr}, StatusUnreachable, "budget store: Redis is unreachable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Refresh = 50 * time.Millisecond
			f := newRedisFixture(t, &cfg, Options{})
			f.tracker.Account(f.pol, charge("team-a", "gpt-4o", policy.TierDefault, PicosPerMicro, time.Now()))
			waitFor(t, 8*time.Second, fmt.Sprintf("no log line with %q:\n%s", tc.logWant, f.log), func() bool {
				return strings.Contains(f.log.String(), tc.logWant)
			})
			if tc.status == StatusOK {
				waitFor(t, 5*time.Second, "the increment was not sent", func() bool { return f.redis(t).Pending() == 0 })
			} else {
				time.Sleep(100 * time.Millisecond) // two refreshes: the state must hold
			}
			if got := f.tracker.StoreStatus(); got != tc.status {
				t.Errorf("status = %q, want %q; log:\n%s", got, tc.status, f.log)
			}
			wantUp := 0.0
			if tc.status == StatusOK {
				wantUp = 1
			}
			if got := testutil.ToFloat64(f.tracker.metrics.store.up); got != wantUp {
				t.Errorf("tiergate_budget_store_up = %v, want %v", got, wantUp)
			}
			if n := strings.Count(f.log.String(), "budget store reachable"); tc.status != StatusOK && n > 0 {
				t.Errorf("the store was logged reachable %d times: its state flaps\n%s", n, f.log)
			}
			if strings.Contains(f.log.String(), "right-password") || strings.Contains(f.log.String(), "wrong-password") {
				t.Errorf("a password reached the log:\n%s", f.log)
			}
		})
	}
}

func TestAReconfigurationKeepsPendingIncrements(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	closed := redistest.ClosedAddr(t)
	f := newRedisFixture(t, redisCfg(closed), Options{})
	r := f.redis(t)
	now := time.Now()
	f.tracker.Account(f.pol, charge("team-a", "gpt-4o", policy.TierDefault, 5*PicosPerMicro, now))
	f.tracker.Account(f.pol, charge("team-a", "gpt-4o", policy.TierDefault, 6*PicosPerMicro, now))
	waitFor(t, 5*time.Second, "the closed address was not found unreachable", func() bool {
		return f.tracker.StoreStatus() == StatusUnreachable && strings.Contains(f.log.String(), "connection refused")
	})
	if r.Pending() != 1 {
		t.Fatalf("%d keys pending, want 1 (two increments merged)", r.Pending())
	}
	f.tracker.Configure(redisCfg(srv.Addr))
	if f.tracker.Store() != Store(r) {
		t.Fatal("reconfiguring Redis replaced the store; it must keep it and its pending increments")
	}
	waitFor(t, 5*time.Second, "the pending increment did not reach the new Redis", func() bool { return r.Pending() == 0 })
	c := srv.Client()
	defer c.Close()
	key := weeklyKey("team-a", now)
	if got, err := c.Get(context.Background(), key).Int64(); err != nil || got != 11 {
		t.Errorf("GET %s = %d, %v; want 11", key, got, err)
	}
}

func TestSwitchingStoresKeepsTheSpend(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	f := newRedisFixture(t, nil, Options{})
	now := time.Now()
	f.tracker.Account(f.pol, charge("team-a", "gpt-4o", policy.TierDefault, 9*PicosPerMicro, now))
	if k := f.tracker.Store().Kind(); k != "memory" {
		t.Fatalf("store %s before budget_store, want memory", k)
	}
	f.tracker.Configure(redisCfg(srv.Addr))
	r := f.redis(t)
	waitFor(t, 5*time.Second, "memory's spend did not reach Redis", func() bool { return r.Pending() == 0 })
	if got := f.spent(t, "all-weekly", "team-a", now); got != 9 {
		t.Errorf("after moving to Redis the view reads %d, want 9", got)
	}
	f.tracker.Configure(nil)
	if k := f.tracker.Store().Kind(); k != "memory" {
		t.Fatalf("store %s after budget_store was removed, want memory", k)
	}
	if got := f.spent(t, "all-weekly", "team-a", now); got != 9 {
		t.Errorf("after moving back to memory the view reads %d, want 9", got)
	}
}

func TestAKeyRedisRefusesDoesNotResendTheOthers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	now := time.Now()
	c := srv.Client()
	defer c.Close()
	// Someone wrote a string where team-a's weekly counter goes: INCRBY on
	// it fails inside the MULTI, the other INCRBYs are applied.
	poisoned := weeklyKey("team-a", now)
	if err := c.Set(context.Background(), poisoned, "not a number", 0).Err(); err != nil {
		t.Fatal(err)
	}
	f := newRedisFixture(t, redisCfg(srv.Addr), Options{})
	f.tracker.Account(f.pol, charge("team-a", "gpt-4o", policy.TierDefault, 3*PicosPerMicro, now))
	f.tracker.Account(f.pol, charge("codex-fast", "gpt-4o", policy.TierDefault, 4*PicosPerMicro, now))
	r := f.redis(t)
	waitFor(t, 5*time.Second, "the refused key did not stay pending alone", func() bool { return r.Pending() == 1 })
	time.Sleep(200 * time.Millisecond) // several refresh ticks, each sending what is pending again
	good := weeklyKey("codex-fast", now)
	if got, err := c.Get(context.Background(), good).Int64(); err != nil || got != 4 {
		t.Errorf("GET %s = %d, %v; want 4, sent once", good, got, err)
	}
	if n := strings.Count(f.log.String(), "value is not an integer"); n != 1 {
		t.Errorf("the log names Redis's refusal %d times, want once:\n%s", n, f.log)
	}
	if got := f.tracker.StoreStatus(); got != StatusOK {
		t.Errorf("status %q: Redis answers, it is not unreachable", got)
	}
}

// execCutter is a TCP proxy to Redis that, while armed, lets a MULTI reach
// Redis and then cuts the connection instead of relaying EXEC's answer:
// the client cannot know whether its increments were applied.
type execCutter struct {
	ln     net.Listener
	target string
	armed  atomic.Bool
	cuts   atomic.Int64
}

func newExecCutter(t *testing.T, target string) *execCutter {
	t.Helper()
	p := &execCutter{target: target}
	p.ln = serveLoopback(t, func(c net.Conn) { go p.serve(c) })
	return p
}

// serveLoopback listens on a free loopback port until the test ends and
// hands each connection to serve, on the goroutine that accepts them.
func serveLoopback(t *testing.T, serve func(net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c)
		}
	}()
	return ln
}

func (p *execCutter) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	var sawExec atomic.Bool
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if strings.Contains(strings.ToUpper(string(buf[:n])), "EXEC\r\n") {
					sawExec.Store(true)
				}
				if _, err := server.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				server.Close()
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if sawExec.Swap(false) && p.armed.CompareAndSwap(true, false) {
				p.cuts.Add(1)
				return // Redis ran the MULTI; its answer is lost
			}
			if _, err := client.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func TestAnAmbiguousSendIsRetriedAndCounted(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	cut := newExecCutter(t, srv.Addr)
	f := newRedisFixture(t, redisCfg(cut.ln.Addr().String()), Options{})
	waitFor(t, 5*time.Second, "the store did not connect", func() bool { return f.tracker.StoreStatus() == StatusOK })
	r := f.redis(t)
	cut.armed.Store(true)
	now := time.Now()
	f.tracker.Account(f.pol, charge("team-a", "gpt-4o", policy.TierDefault, 5*PicosPerMicro, now))
	waitFor(t, 5*time.Second, "the cut increment was never confirmed", func() bool { return cut.cuts.Load() == 1 && r.Pending() == 0 })
	if got := testutil.ToFloat64(f.tracker.metrics.store.errors.WithLabelValues(opIncrRetry)); got != 1 {
		t.Errorf(`tiergate_budget_store_errors_total{op="incr_retry"} = %v, want 1`, got)
	}
	c := srv.Client()
	defer c.Close()
	key := weeklyKey("team-a", now)
	// At least once: Redis applied the first MULTI, and the retry again.
	if got, err := c.Get(context.Background(), key).Int64(); err != nil || got != 10 {
		t.Errorf("GET %s = %d, %v; want 10 (the 5 applied, then sent again)", key, got, err)
	}
	if !strings.Contains(f.log.String(), "may or may not have reached Redis") {
		t.Errorf("the retry was not logged:\n%s", f.log)
	}
}

func TestCloseSendsWhatIsPending(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	cfg := redisCfg(srv.Addr)
	cfg.Refresh = time.Minute // no tick during the test
	f := newRedisFixture(t, cfg, Options{})
	waitFor(t, 5*time.Second, "the store did not connect", func() bool { return f.tracker.StoreStatus() == StatusOK })
	r := f.redis(t)
	r.holding.Store(true) // as after a failed send: increments wait for the next tick
	now := time.Now()
	f.tracker.Account(f.pol, charge("team-a", "gpt-4o", policy.TierDefault, 8*PicosPerMicro, now))
	c := srv.Client()
	defer c.Close()
	key := weeklyKey("team-a", now)
	time.Sleep(50 * time.Millisecond)
	if n, _ := c.Exists(context.Background(), key).Result(); n != 0 {
		t.Fatal("the increment was sent before Close; the test proves nothing")
	}
	f.tracker.Close()
	if got, err := c.Get(context.Background(), key).Int64(); err != nil || got != 8 {
		t.Errorf("after Close, GET %s = %d, %v; want 8", key, got, err)
	}
}

// weeklyKey is the Redis key (prefix "tg:") of group's spend on the
// all-weekly budget in the week of now.
func weeklyKey(group string, now time.Time) string {
	start, _ := Bounds(policy.WindowWeek, now)
	return redisKey("tg:", Key{Budget: "all-weekly", Group: group, Start: start.Unix()})
}
