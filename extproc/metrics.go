package extproc

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// metricMessageDuration is the histogram of server-side time per message,
// by phase, with messageDurationBuckets (the load tool reads it off
// /metrics, as an operator would).
const metricMessageDuration = "tiergate_extproc_message_duration_seconds"

// messageDurationBuckets are metricMessageDuration's buckets, in seconds;
// 100 µs (the target for a body message) is a bucket boundary.
var messageDurationBuckets = []float64{5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1}

// Metric names, defined once. Conventions: https://prometheus.io/docs/practices/naming/
const (
	metricRequests      = "tiergate_extproc_requests_total"
	metricStreamsActive = "tiergate_extproc_streams_active"
	metricUsageUnknown  = "tiergate_usage_unknown_total"
)

// Request outcomes, the values of tiergate_extproc_requests_total's outcome.
const (
	outcomeForwarded   = "forwarded"   // policed, sent on unchanged
	outcomeRewritten   = "rewritten"   // policed, sent on with the body or headers changed
	outcomeBlocked     = "blocked"     // refused by the policy (403)
	outcomeInvalid     = "invalid"     // refused: not JSON, undecodable, or too many occurrences (400)
	outcomeUnsupported = "unsupported" // refused: content-encoding tiergate cannot decode (415)
	outcomeUnpoliced   = "unpoliced"   // a path tiergate does not police, or a request without a body
	outcomeError       = "error"       // tiergate could not process the request (500)
)

// Phases, the values of metricMessageDuration's phase label.
const (
	phaseRequestHeaders  = "request_headers"
	phaseRequestBody     = "request_body"
	phaseResponseHeaders = "response_headers"
	phaseResponseBody    = "response_body"
	phaseOther           = "other"
)

type metrics struct {
	requests *prometheus.CounterVec
	// requestCounters caches requests' counters by requestKey: every
	// request counts one, and resolving label values hashes them each time.
	requestCounters sync.Map
	duration        *prometheus.HistogramVec
	// phases holds each phase's observer, resolved once: a message's
	// answer should not pay for hashing label values.
	phases       map[string]prometheus.Observer
	streams      prometheus.Gauge
	usageUnknown *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, tokens *usage.Metrics) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricRequests,
			Help: "HTTP requests seen by the ext_proc server, by endpoint and outcome (forwarded, rewritten, blocked, invalid, unsupported, unpoliced, error).",
		}, []string{"endpoint", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricMessageDuration,
			Help:    "Server-side time to answer one ext_proc message, by phase (request_headers, request_body, response_headers, response_body).",
			Buckets: messageDurationBuckets,
		}, []string{"phase"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricStreamsActive,
			Help: "ext_proc streams open now (one per HTTP request in flight through Envoy).",
		}),
		usageUnknown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricUsageUnknown,
			Help: "Responses whose token usage could not be read, by endpoint and reason (too_large, encoding, missing, truncated).",
		}, []string{"endpoint", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.streams, m.usageUnknown} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register ext_proc metrics: %w", err)
		}
	}
	// Start the bounded series at zero, so dashboards and alerts see them
	// before the first event.
	m.phases = map[string]prometheus.Observer{}
	for _, p := range []string{phaseRequestHeaders, phaseRequestBody, phaseResponseHeaders, phaseResponseBody, phaseOther} {
		m.phases[p] = m.duration.WithLabelValues(p)
	}
	for _, ep := range []policy.Endpoint{policy.EndpointChatCompletions, policy.EndpointResponses, policy.EndpointMessages} {
		for _, r := range []string{unknownTooLarge, unknownEncoding, unknownMissing, unknownTruncated} {
			m.usageUnknown.WithLabelValues(ep.String(), r)
		}
		// Audio is a Realtime reason only.
		tokens.StartUnpriced(ep.String(), policy.UnpricedNoUsage, policy.UnpricedNoPrice)
	}
	return m, nil
}

// requestKey names one series of tiergate_extproc_requests_total.
type requestKey struct {
	endpoint policy.Endpoint
	outcome  string
}

// countRequest counts one request under its endpoint and outcome.
func (m *metrics) countRequest(ep policy.Endpoint, outcome string) {
	k := requestKey{ep, outcome}
	c, ok := m.requestCounters.Load(k)
	if !ok {
		c, _ = m.requestCounters.LoadOrStore(k, m.requests.WithLabelValues(ep.String(), outcome))
	}
	c.(prometheus.Counter).Inc()
}
