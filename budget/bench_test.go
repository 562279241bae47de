package budget

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/policy"
)

// BenchmarkRequestPath is what a budget adds to one request: reading the
// group's spend for the decision, and adding the request's cost at its end.
func BenchmarkRequestPath(b *testing.B) {
	p, err := policy.Load([]byte(trackerPolicy))
	if err != nil {
		b.Fatal(err)
	}
	tr, err := New(NewMemory(), func() *policy.Policy { return p }, prometheus.NewRegistry(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	bud := &p.Budgets()[0]
	c := Charge{Group: "codex-fast", Cost: policy.Cost{Model: "gpt-5.5", Tier: policy.TierPriority, Pico: 1_234_567_890}}
	b.ReportAllocs()
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
