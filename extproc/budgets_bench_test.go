package extproc

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// budgetedPassPolicy is pricedPassPolicy with a budget that applies to
// every request of the benchmark (every group, priority) and is never
// reached.
const budgetedPassPolicy = pricedPassPolicy + `budgets:
- {name: everyone, service_tiers: [priority], window: day, limit: 1000000000, on_exhausted: filter}
`

// budgetBenchServer is a server under yaml, with a budget tracker when the
// policy has budgets, writing records to a sink that discards them.
func budgetBenchServer(tb testing.TB, yaml string) *Server {
	tb.Helper()
	p, err := policy.Load([]byte(yaml))
	if err != nil {
		tb.Fatal(err)
	}
	store := policy.NewStore(p)
	reg := prometheus.NewRegistry()
	opts := Options{Store: store, Usage: usage.NewRecordWriter(discard{})}
	if len(p.Budgets()) > 0 {
		if opts.Budgets, err = budget.New(budget.NewMemory(), store.Load, reg, budget.Options{}); err != nil {
			tb.Fatal(err)
		}
	}
	return newTestServer(tb, reg, opts)
}

// wholeExchange is tiergate's own share of one request's stream, without
// gRPC's transport: each of msgs answered (the request judged and, when
// msgs carry the response, its usage read, the record priced and written
// and, with budgets, the cost accounted), the answers encoded by the
// server's codec, the stream closed.
func wholeExchange(tb testing.TB, srv *Server, msgs []*extprocv3.ProcessingRequest) {
	x := &exchange{srv: srv}
	for _, m := range msgs {
		resp, _, err := x.handle(m)
		if err != nil {
			tb.Fatal(err)
		}
		wire, err := benchCodec.Marshal(x.outgoing(resp))
		if err != nil {
			tb.Fatal(err)
		}
		wire.Free()
		x.sent()
	}
	x.close()
}

// BenchmarkBudget is BenchmarkPricing's request (a pass policy, a JSON
// response with usage) priced, without and with a budget that applies and
// is not exhausted: reading the group's spend for the decision and adding
// the cost at the end. "prices-again" repeats "prices" in the same run, so
// the difference between the two is the run's noise.
func BenchmarkBudget(b *testing.B) {
	h, body := benchMessages(benchBody("priority"))
	rh, rb := responseMessages()
	msgs := []*extprocv3.ProcessingRequest{h, body, rh, rb}
	for _, c := range []struct{ name, policy string }{
		{"prices", pricedPassPolicy}, {"budget", budgetedPassPolicy}, {"prices-again", pricedPassPolicy},
	} {
		srv := budgetBenchServer(b, c.policy)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				wholeExchange(b, srv, msgs)
			}
		})
	}
}

// TestBudgetAddsNoAllocationToTheRequestPath: judging a request against a
// budget reads spend through a view kept in the recycled answer, and its
// accounting adds to an existing counter, so a budget costs no allocation.
func TestBudgetAddsNoAllocationToTheRequestPath(t *testing.T) {
	h, body := benchMessages(benchBody("priority"))
	rh, rb := responseMessages()
	msgs := []*extprocv3.ProcessingRequest{h, body, rh, rb}
	var allocs [2]float64
	for i, yaml := range []string{pricedPassPolicy, budgetedPassPolicy} {
		srv := budgetBenchServer(t, yaml)
		wholeExchange(t, srv, msgs) // fill the pools and the counter
		allocs[i] = testing.AllocsPerRun(50, func() { wholeExchange(t, srv, msgs) })
	}
	if raceEnabled {
		t.Logf("%.0f and %.0f allocations under -race (not checked)", allocs[0], allocs[1])
		return
	}
	if allocs[1] > allocs[0] {
		t.Errorf("%.0f allocations per request with a budget, %.0f without: want no more", allocs[1], allocs[0])
	}
}
