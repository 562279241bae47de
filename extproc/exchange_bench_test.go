package extproc

import (
	"bytes"
	"strconv"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/policy"
)

func benchServer(tb testing.TB) *Server {
	return newTestServer(tb, prometheus.NewRegistry(), Options{Store: policy.NewStore(policy.Default())})
}

// benchMessages are a request's headers and buffered body as Envoy sends
// them (the headers the load tool sends, values in raw_value).
func benchMessages(body []byte) (*extprocv3.ProcessingRequest, *extprocv3.ProcessingRequest) {
	hv := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	headers := []*corev3.HeaderValue{
		hv(":authority", "api.openai.com"), hv(":path", "/v1/responses"), hv(":method", "POST"), hv(":scheme", "https"),
		hv("user-agent", "codex_cli_rs/0.98.0 (Linux 6.8; x86_64) xterm-256color"), hv("content-type", "application/json"),
		hv("content-length", strconv.Itoa(len(body))), hv("accept", "text/event-stream"),
		hv("authorization", "Bearer sk-proj-tiergateBenchKey0123456789abcdefghijklmnopqrstuvwxyz"),
		hv("openai-beta", "responses=experimental"), hv("x-forwarded-proto", "https"), hv("x-request-id", "00000000-0000-4000-8000-000000000001"),
	}
	h := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: headers}}}}
	b := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}}
	return h, b
}

func benchBody(tier string) []byte {
	return []byte(`{"model":"gpt-5.5","service_tier":"` + tier + `","input":"` + string(bytes.Repeat([]byte("x"), 1900)) + `","stream":true}`)
}

var benchCodec = newAnswerCodec()

// BenchmarkExchange is tiergate's own cost per request in the ext_proc
// benchmark's transaction (scripts/bench-extproc.sh): a 2 KiB Responses
// body, rewritten (filter) or passed.
func BenchmarkExchange(b *testing.B) {
	srv := benchServer(b)
	for _, tier := range []string{"priority", "flex"} {
		h, body := benchMessages(benchBody(tier))
		msgs := []*extprocv3.ProcessingRequest{h, body}
		b.Run(tier, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				wholeExchange(b, srv, msgs)
			}
		})
	}
}

// TestExchangeAllocatesLittle holds the per-request garbage down: with the
// answers built once or recycled, a request costs a handful of
// allocations (the exchange, the request ID, the model name, the header
// lookup, and the codec's output slices, as gRPC's own codec makes them),
// where it cost 33 before. Under the
// race detector sync.Pool drops items on purpose, so the bound is only
// checked without it (.ci/run runs this test both ways).
func TestExchangeAllocatesLittle(t *testing.T) {
	srv := benchServer(t)
	for _, tc := range []struct {
		tier string
		max  float64
	}{{"priority", 10}, {"flex", 10}} {
		t.Run(tc.tier, func(t *testing.T) {
			h, body := benchMessages(benchBody(tc.tier))
			msgs := []*extprocv3.ProcessingRequest{h, body}
			wholeExchange(t, srv, msgs) // fill the pool
			allocs := testing.AllocsPerRun(50, func() { wholeExchange(t, srv, msgs) })
			if raceEnabled {
				t.Logf("%.0f allocations per request under -race (not checked)", allocs)
				return
			}
			if allocs > tc.max {
				t.Errorf("%.0f allocations per request, want at most %.0f", allocs, tc.max)
			}
		})
	}
}
