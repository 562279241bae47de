package extproc

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// passPolicy lets every tier through; pricedPassPolicy is the same with a
// price table that prices the benchmark's model.
const (
	passPolicy       = "rules: [{service_tier: all, action: pass}]\n"
	pricedPassPolicy = passPolicy + `prices:
  currency: USD
  models:
  - {model: gpt-4o, tiers: {default: {input: 2.5, output: 10}}}
  - model: gpt-5.5
    tiers:
      default: {input: 5, cached_input: 0.5, output: 30}
      priority: {input: 12.5, cached_input: 1.25, output: 75}
  - {model: gpt-5*, tiers: {default: {input: 1.25, output: 10}}}
`
)

// discard is a usage log sink that is not io.Discard, so the record is
// built and encoded as it is in production.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// responseMessages are a JSON response's headers and its one body chunk,
// carrying usage, as Envoy sends them in STREAMED mode.
func responseMessages() (*extprocv3.ProcessingRequest, *extprocv3.ProcessingRequest) {
	hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	h := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{hv(":status", "200"), hv("content-type", "application/json")}}}}}
	b := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
		Body:        []byte(`{"id":"resp_1","object":"response","status":"completed","model":"gpt-5.5-2026-06-01","service_tier":"priority","output":[{"type":"message","content":[{"type":"output_text","text":"Hello"}]}],"usage":{"input_tokens":8438,"input_tokens_details":{"cached_tokens":8192,"cache_write_tokens":0},"output_tokens":398,"output_tokens_details":{"reasoning_tokens":256},"total_tokens":8836}}`),
		EndOfStream: true}}}
	return h, b
}

// BenchmarkPricing is one whole request under a pass policy, its JSON
// response carrying usage and its record written, without and with a
// price table (docs/contracts.md, "Cost": pricing happens once per
// record, at the response's end). "none-again" repeats "none" in the same
// run, so the difference between the two is the run's noise.
func BenchmarkPricing(b *testing.B) {
	rh, rb := responseMessages()
	h, body := benchMessages(benchBody("priority"))
	for _, c := range []struct{ name, policy string }{
		{"none", passPolicy}, {"prices", pricedPassPolicy}, {"none-again", passPolicy},
	} {
		p, err := policy.Load([]byte(c.policy))
		if err != nil {
			b.Fatal(err)
		}
		srv := newTestServer(b, prometheus.NewRegistry(), Options{Store: policy.NewStore(p), Usage: usage.NewRecordWriter(discard{})})
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				x := &exchange{srv: srv}
				for _, m := range []*extprocv3.ProcessingRequest{h, body, rh, rb} {
					resp, _, err := x.handle(m)
					if err != nil {
						b.Fatal(err)
					}
					wire, err := benchCodec.Marshal(x.outgoing(resp))
					if err != nil {
						b.Fatal(err)
					}
					wire.Free()
					x.sent()
				}
				x.close()
			}
		})
	}
}
