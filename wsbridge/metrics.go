package wsbridge

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// Metric names, defined once. Conventions:
// https://prometheus.io/docs/practices/naming/ (units in names, _total
// counters, bounded label values only).
const (
	metricSessionsActive = "tiergate_ws_sessions_active"
	metricSessionsTotal  = "tiergate_ws_sessions_total"
	metricFrames         = "tiergate_ws_frames_total"
	metricTurns          = "tiergate_ws_turns_total"
	metricTTFT           = "tiergate_ws_time_to_first_token_seconds"
	metricTurnDuration   = "tiergate_ws_turn_duration_seconds"
	metricUpgrades       = "tiergate_ws_upgrades_total"
)

// Directions, the values of tiergate_ws_frames_total's direction.
const (
	dirClientToUpstream = "client_to_upstream"
	dirUpstreamToClient = "upstream_to_client"
)

// Upgrade results, the values of tiergate_ws_upgrades_total's result.
const (
	upgradeAccepted    = "accepted"             // a session started
	upgradeRefused     = "upstream_refused"     // the upstream answered the handshake with an HTTP error
	upgradeTimeout     = "upstream_timeout"     // the dial timed out (504)
	upgradeUnreachable = "upstream_unreachable" // the upstream could not be reached (502)
	upgradeDraining    = "draining"             // tiergate is shutting down (503)
	upgradeBadRequest  = "bad_request"          // not a valid WebSocket handshake, or a refused Origin
)

var upgradeResults = []string{upgradeAccepted, upgradeRefused, upgradeTimeout, upgradeUnreachable, upgradeDraining, upgradeBadRequest}

// turnStatuses bounds tiergate_ws_turns_total's status label: an upstream
// status outside this set is counted as "other" (the record keeps it).
var turnStatuses = []string{
	usage.StatusCompleted, usage.StatusIncomplete, usage.StatusFailed, usage.StatusCancelled,
	usage.StatusBlocked, usage.StatusRefused, usage.StatusClientClosed, usage.StatusUpstreamClosed, usage.StatusUpstreamError,
}

// wsEndpoints are the endpoints the bridge serves.
var wsEndpoints = []policy.Endpoint{policy.EndpointResponsesWS, policy.EndpointRealtime}

type metrics struct {
	active   *prometheus.GaugeVec
	sessions *prometheus.CounterVec
	frames   *prometheus.CounterVec
	turns    *prometheus.CounterVec
	ttft     *prometheus.HistogramVec
	duration *prometheus.HistogramVec
	upgrades *prometheus.CounterVec
}

// epMetrics are one endpoint's series, resolved once so that the per-frame
// path never hashes label values.
type epMetrics struct {
	active   prometheus.Gauge
	c2u, u2c prometheus.Counter
	ttft     prometheus.Observer
	duration prometheus.Observer
	turns    map[string]prometheus.Counter
	// upgrades holds every result's counter, made at start so that the
	// alerts' rate() sees each series (at zero) before its first event.
	upgrades map[string]prometheus.Counter
	m        *metrics
	endpoint string
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricSessionsActive,
			Help: "WebSocket sessions open now through the bridge, by endpoint (responses_ws, realtime).",
		}, []string{"endpoint"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricSessionsTotal,
			Help: "WebSocket sessions ended, by endpoint and the close code the client's connection ended with (1006 when it was lost without one; application codes 3000-4999 are \"other\").",
		}, []string{"endpoint", "close_code"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricFrames,
			Help: "WebSocket data frames relayed, by endpoint and direction (client_to_upstream, upstream_to_client). A blocked frame is counted as read, though it never reaches the upstream.",
		}, []string{"endpoint", "direction"}),
		turns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricTurns,
			Help: "WebSocket turns ended (one usage record each), by endpoint and status (" + strings.Join(turnStatuses, ", ") + ", other).",
		}, []string{"endpoint", "status"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricTTFT,
			Help:    "Time from a turn's response.create (or the upstream's response.created, for a turn the server started) to its first output delta, in seconds.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120},
		}, []string{"endpoint"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricTurnDuration,
			Help:    "Time from a turn's response.create (or response.created) to its end, in seconds.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800},
		}, []string{"endpoint"}),
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricUpgrades,
			Help: "WebSocket upgrade requests, by endpoint and result (" + strings.Join(upgradeResults, ", ") + ").",
		}, []string{"endpoint", "result"}),
	}
	for _, c := range []prometheus.Collector{m.active, m.sessions, m.frames, m.turns, m.ttft, m.duration, m.upgrades} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register wsbridge metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) forEndpoint(ep policy.Endpoint) *epMetrics {
	name := ep.String()
	e := &epMetrics{
		m:        m,
		endpoint: name,
		active:   m.active.WithLabelValues(name),
		c2u:      m.frames.WithLabelValues(name, dirClientToUpstream),
		u2c:      m.frames.WithLabelValues(name, dirUpstreamToClient),
		ttft:     m.ttft.WithLabelValues(name),
		duration: m.duration.WithLabelValues(name),
		turns:    make(map[string]prometheus.Counter, len(turnStatuses)+1),
		upgrades: make(map[string]prometheus.Counter, len(upgradeResults)),
	}
	for _, s := range slices.Concat(turnStatuses, []string{"other"}) {
		e.turns[s] = m.turns.WithLabelValues(name, s)
	}
	for _, r := range upgradeResults {
		e.upgrades[r] = m.upgrades.WithLabelValues(name, r)
	}
	return e
}

// upgrade counts one upgrade request by its result, one of upgradeResults.
func (e *epMetrics) upgrade(result string) { e.upgrades[result].Inc() }

// turn counts one ended turn.
func (e *epMetrics) turn(status string) {
	c, ok := e.turns[status]
	if !ok {
		c = e.turns["other"]
	}
	c.Inc()
}

// closeCodeLabel bounds a close code for use as a label: the codes RFC 6455
// and IANA define keep their number, application codes are "other".
func closeCodeLabel(code int) string {
	if code >= int(websocket.StatusNormalClosure) && code <= int(websocket.StatusTLSHandshake) {
		return strconv.Itoa(code)
	}
	return "other"
}
