package budget

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/internal/redistest"
	"github.com/tiergate/tiergate/policy"
)

// BenchmarkRequestPath is what a budget adds to one request: reading the
// group's spend for the decision, and adding the request's cost at its end.
func BenchmarkRequestPath(b *testing.B) {
	tr, p := benchTracker(b)
	requestPath(b, tr, p)
}

// benchTracker is a tracker over trackerPolicy, with spend in memory.
func benchTracker(b *testing.B) (*Tracker, *policy.Policy) {
	b.Helper()
	p, err := policy.Load([]byte(trackerPolicy))
	if err != nil {
		b.Fatal(err)
	}
	tr, err := New(NewMemory(), func() *policy.Policy { return p }, prometheus.NewRegistry(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	return tr, p
}

// requestPath runs the request path against tr: the view of codex-fast's
// spend on the first budget of p, then a charge of its cost.
func requestPath(b *testing.B, tr *Tracker, p *policy.Policy) {
	b.Helper()
	bud := &p.Budgets()[0]
	c := Charge{Group: "codex-fast", Cost: policy.Cost{Model: "gpt-5.5", Tier: policy.TierPriority, Pico: 1_234_567_890}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		now := tr.Now()
		v := tr.View(now)
		if s, _ := v.Spent(bud, "codex-fast"); s < 0 {
			b.Fatal("negative spend")
		}
		c.At = now
		tr.Account(p, c)
	}
}

// BenchmarkRequestPathRedis is BenchmarkRequestPath with spend kept in
// Redis, while it answers and while it is down: the request path reads the
// local view and queues the increment either way, so the figures match.
func BenchmarkRequestPathRedis(b *testing.B) {
	for _, state := range []string{"up", "down"} {
		b.Run("redis_"+state, func(b *testing.B) {
			srv := redistest.Start(b, redistest.Options{})
			tr, p := benchTracker(b)
			tr.Configure(&policy.RedisStore{Address: srv.Addr, Refresh: policy.DefaultRefresh})
			b.Cleanup(tr.Close)
			for deadline := time.Now().Add(5 * time.Second); tr.StoreStatus() != StatusOK; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					b.Fatal("the store did not connect")
				}
			}
			if state == "down" {
				srv.Stop()
				for deadline := time.Now().Add(5 * time.Second); tr.StoreStatus() != StatusUnreachable; time.Sleep(5 * time.Millisecond) {
					tr.Account(p, Charge{Group: "codex-fast", At: time.Now(), Cost: policy.Cost{Model: "gpt-5.5", Tier: policy.TierPriority, Pico: PicosPerMicro}})
					if time.Now().After(deadline) {
						b.Fatal("the store did not see Redis go")
					}
				}
			}
			requestPath(b, tr, p)
		})
	}
}
