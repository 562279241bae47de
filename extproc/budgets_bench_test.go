package extproc

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/policy"
)

// benchPassPolicy passes priority and prices it; with budget it also has a
// budget that applies to every request and is never reached.
const benchPassPolicy = `
prices:
  currency: USD
  models:
  - model: "*"
    tiers:
      default: {input: 1.25, output: 10}
      priority: {input: 2.5, output: 20}
rules: [{service_tier: priority, action: pass}]
`

const benchBudget = `
budgets:
- name: everyone
  service_tiers: [priority]
  window: day
  limit: 1000000000
  on_exhausted: filter
`

func benchBudgetServer(tb testing.TB, withBudget bool) *Server {
	tb.Helper()
	yaml := benchPassPolicy
	if withBudget {
		yaml += benchBudget
	}
	p, err := policy.Load([]byte(yaml))
	if err != nil {
		tb.Fatal(err)
	}
	store := policy.NewStore(p)
	reg := prometheus.NewRegistry()
	opts := Options{Store: store}
	if withBudget {
		if opts.Budgets, err = budget.New(budget.NewMemory(), store.Load, reg, budget.Options{}); err != nil {
			tb.Fatal(err)
		}
	}
	return newTestServer(tb, reg, opts)
}

// benchResponse is a JSON response with usage, as Envoy streams it.
func benchResponse() (*extprocv3.ProcessingRequest, *extprocv3.ProcessingRequest) {
	hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	h := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			hv(":status", "200"), hv("content-type", "application/json")}}}}}
	b := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{EndOfStream: true, Body: []byte(`{"id":"resp_1","object":"response","status":"completed","model":"gpt-5.5","service_tier":"priority","usage":{"input_tokens":8438,"input_tokens_details":{"cached_tokens":8192},"output_tokens":398,"output_tokens_details":{"reasoning_tokens":256},"total_tokens":8836}}`)}}}
	return h, b
}

// exchangeWithResponse is exchangeOnce with the response phases: the
// request judged, the response's usage read and, with budgets, its cost
// accounted.
func exchangeWithResponse(tb testing.TB, srv *Server, msgs []*extprocv3.ProcessingRequest) {
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

// BenchmarkExchangeBudget is a passed request with a response carrying
// usage, without budgets and with one that applies and is not exhausted:
// the budget's share is the difference (go test -bench ExchangeBudget
// -count 6, compared with benchstat).
func BenchmarkExchangeBudget(b *testing.B) {
	h, body := benchMessages(benchBody("priority"))
	rh, rb := benchResponse()
	msgs := []*extprocv3.ProcessingRequest{h, body, rh, rb}
	for _, tc := range []struct {
		name   string
		budget bool
	}{{"none", false}, {"applying", true}} {
		srv := benchBudgetServer(b, tc.budget)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				exchangeWithResponse(b, srv, msgs)
			}
		})
	}
}

// TestBudgetAddsNoAllocationToTheRequestPath: judging a request against a
// budget reads spend through a view kept in the recycled answer, and its
// accounting adds to an existing counter.
func TestBudgetAddsNoAllocationToTheRequestPath(t *testing.T) {
	h, body := benchMessages(benchBody("priority"))
	rh, rb := benchResponse()
	msgs := []*extprocv3.ProcessingRequest{h, body, rh, rb}
	var allocs [2]float64
	for i, withBudget := range []bool{false, true} {
		srv := benchBudgetServer(t, withBudget)
		exchangeWithResponse(t, srv, msgs) // fill the pools and the counter
		allocs[i] = testing.AllocsPerRun(50, func() { exchangeWithResponse(t, srv, msgs) })
	}
	if raceEnabled {
		t.Logf("%.0f and %.0f allocations under -race (not checked)", allocs[0], allocs[1])
		return
	}
	if allocs[1] > allocs[0] {
		t.Errorf("%.0f allocations per request with a budget, %.0f without: want no more", allocs[1], allocs[0])
	}
}
