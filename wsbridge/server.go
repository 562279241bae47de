package wsbridge

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// Defaults of the Options that have one.
const (
	DefaultUpstream     = "wss://api.openai.com"
	DefaultDialTimeout  = 10 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	// DefaultIdleTimeout is long because Codex sessions sit idle between
	// turns while the user reads and types.
	DefaultIdleTimeout = 15 * time.Minute
	// DefaultMaxSession is a little over the upstream's own 60-minute limit,
	// so the upstream's websocket_connection_limit_reached arrives first and
	// clients see the error they know.
	DefaultMaxSession = 65 * time.Minute
	// DefaultReadLimit holds the largest Realtime event, an audio append of up
	// to 15 MiB (base64), with room for its JSON.
	DefaultReadLimit = 16 << 20
)

// Paths the bridge serves.
const (
	PathResponses = "/v1/responses"
	PathRealtime  = "/v1/realtime"
)

// Options configure a Bridge. Store, Registerer, Decisions and Tokens are
// required; every other field has a default.
type Options struct {
	// Store holds the policy. Every client frame reads it afresh, so a reload
	// applies to the next frame of every open session.
	Store *policy.Store
	// Registerer receives the bridge's metrics (never the global registry).
	Registerer prometheus.Registerer
	// Decisions and Tokens are shared with the ext_proc server.
	Decisions *policy.DecisionMetrics
	Tokens    *usage.Metrics
	// Budgets keeps spend and gives each response.create a view of it;
	// nil: budgets in the policy are not enforced (nor spend kept).
	Budgets *budget.Tracker
	// Usage receives one record per turn and per refused frame; nil discards
	// them.
	Usage *usage.RecordWriter
	// Log receives one line per refused frame (info), failed upstream dials
	// (warn) and, at debug, one line per session. Nil discards.
	Log *slog.Logger

	// Upstream is the base URL dialled for each session, ws:// or wss://
	// (http:// and https:// are read as such); the client's path and query
	// are appended. Default DefaultUpstream.
	Upstream string
	// DialTimeout bounds the upstream's TCP, TLS and WebSocket handshake;
	// when it runs out the client gets 504. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// WriteTimeout bounds the writing of one frame to either side. A side
	// that reads nothing for this long is cut off and the session ends (a
	// watchdog looks a few times per timeout, at least once a second, so the
	// cut comes within a tick of it). Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// IdleTimeout ends a session in which no data frame went either way for
	// this long (pings do not count), closing both sides with 1008.
	// Default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxSession ends any session this long after it started, closing both
	// sides with 1001. Default DefaultMaxSession.
	MaxSession time.Duration
	// ReadLimit bounds one message from either side; a larger one ends the
	// session (1009 to its sender). Default DefaultReadLimit.
	ReadLimit int64
	// AllowedOrigins, when not empty, restricts browser clients to these
	// Origin host patterns (path.Match syntax, case-insensitive; a pattern
	// with "://" is matched against scheme://host). A request without an
	// Origin, or whose Origin is its own Host, is always allowed. Empty: no
	// Origin check, since callers authenticate with API keys.
	AllowedOrigins []string
}

// Bridge is an http.Handler that bridges WebSocket sessions on /v1/responses
// (Responses API WebSocket mode) and /v1/realtime (Realtime API) to the
// upstream, policing every client frame and accounting every turn.
//
// For each upgrade it dials the upstream first and accepts the client only
// once the upstream has accepted, so the client gets the upstream's
// subprotocol and Codex's headers, or the upstream's refusal. A plain HTTP
// request to those paths gets 426, any other path 404.
//
// Serve it over HTTP/1.1 (HTTP/2 cannot upgrade): HTTPServer returns a
// suitably configured http.Server. A session runs on two goroutines of its
// own once ServeHTTP has returned (the connection is hijacked), so stopping
// the http.Server neither waits for sessions nor ends them: Shutdown does.
type Bridge struct {
	opts     Options
	upstream *url.URL
	client   *http.Client
	log      *slog.Logger
	metrics  *metrics
	eps      map[policy.Endpoint]*epMetrics

	mu        sync.Mutex
	draining  bool
	sessions  map[*session]struct{}
	wg        sync.WaitGroup // upgrades in progress and sessions
	watchStop chan struct{}  // stops the watchdog; nil while none runs

	// force is cancelled when Shutdown's grace runs out: dials in progress
	// give up, and sessions are closed.
	force       context.Context
	forceCancel context.CancelFunc
}

// New returns a Bridge.
func New(opts Options) (*Bridge, error) {
	if opts.Store == nil || opts.Registerer == nil || opts.Decisions == nil || opts.Tokens == nil {
		return nil, errors.New("wsbridge: Store, Registerer, Decisions and Tokens are required")
	}
	if opts.Upstream == "" {
		opts.Upstream = DefaultUpstream
	}
	u, err := parseUpstream(opts.Upstream)
	if err != nil {
		return nil, err
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&opts.DialTimeout, DefaultDialTimeout},
		{&opts.WriteTimeout, DefaultWriteTimeout},
		{&opts.IdleTimeout, DefaultIdleTimeout},
		{&opts.MaxSession, DefaultMaxSession},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if opts.ReadLimit <= 0 {
		opts.ReadLimit = DefaultReadLimit
	}
	for _, p := range opts.AllowedOrigins {
		if _, err := path.Match(p, ""); err != nil {
			return nil, errors.New("wsbridge: bad allowed origin pattern " + p + ": " + err.Error())
		}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	opts.Tokens.StartUnpriced(policy.EndpointResponsesWS.String(), policy.UnpricedNoUsage, policy.UnpricedNoPrice)
	opts.Tokens.StartUnpriced(policy.EndpointRealtime.String(), policy.UnpricedReasons()...)
	b := &Bridge{
		opts:     opts,
		upstream: u,
		client:   newUpstreamClient(),
		log:      opts.Log,
		metrics:  m,
		eps:      make(map[policy.Endpoint]*epMetrics, len(wsEndpoints)),
		sessions: make(map[*session]struct{}),
	}
	for _, ep := range wsEndpoints {
		b.eps[ep] = m.forEndpoint(ep)
	}
	b.force, b.forceCancel = context.WithCancel(context.Background())
	return b, nil
}

// HTTPServer returns an http.Server for the bridge's listener: HTTP/1.1 only
// (a WebSocket upgrade needs it; with TLS, ALPN offers only http/1.1),
// a header read timeout, and the server's own errors logged through the
// bridge's logger. Serve it with Serve or ServeTLS.
func (b *Bridge) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           b,
		ReadHeaderTimeout: 10 * time.Second,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:          log.New(slogWriter{b.log}, "", 0),
	}
}

// Ready reports whether the bridge accepts new sessions: false from the
// moment Shutdown is called, so /readyz can take the pod out of rotation.
func (b *Bridge) Ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.draining
}

// Sessions returns the number of sessions open now.
func (b *Bridge) Sessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

// Shutdown drains the bridge. New upgrades get 503 at once; open sessions
// run on until they end by themselves or ctx is done. Then every remaining
// session is closed with 1001 on both sides, its open turns are recorded
// as cut short (client_closed), and dials in progress are abandoned.
// Shutdown returns when every session has ended: nil if all ended within
// the grace, ctx's error otherwise. It does not close listeners; stop the
// http.Server too.
func (b *Bridge) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	b.draining = true
	b.mu.Unlock()
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	b.forceCancel()
	b.mu.Lock()
	open := make([]*session, 0, len(b.sessions))
	for s := range b.sessions {
		open = append(open, s)
	}
	b.mu.Unlock()
	for _, s := range open {
		s.end(causeShutdown)
	}
	<-done
	return ctx.Err()
}

// begin admits an upgrade unless the bridge is draining. Every admitted
// upgrade must call b.wg.Done.
func (b *Bridge) begin() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.draining {
		return false
	}
	b.wg.Add(1)
	return true
}

// register makes a session visible to Shutdown; it reports false when
// the grace has already run out.
func (b *Bridge) register(s *session) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.force.Err() != nil {
		return false
	}
	b.sessions[s] = struct{}{}
	if b.watchStop == nil {
		b.watchStop = make(chan struct{})
		go b.watch(b.watchStop)
	}
	return true
}

func (b *Bridge) unregister(s *session) {
	b.mu.Lock()
	delete(b.sessions, s)
	if len(b.sessions) == 0 && b.watchStop != nil {
		close(b.watchStop)
		b.watchStop = nil
	}
	b.mu.Unlock()
}

// watch is the write watchdog: while any session is open it looks at each
// a few times per WriteTimeout (at least once a second) and ends those
// whose write has run past WriteTimeout. One goroutine and one ticker for
// all sessions cost less than a timer armed per frame; a stuck write is cut
// at most a tick after its timeout.
func (b *Bridge) watch(stop <-chan struct{}) {
	tick := min(max(b.opts.WriteTimeout/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	var open []*session
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		b.mu.Lock()
		open = open[:0]
		for s := range b.sessions {
			open = append(open, s)
		}
		b.mu.Unlock()
		for _, s := range open {
			s.checkWrites(b.opts.WriteTimeout)
		}
		clear(open)
	}
}

// ServeHTTP serves one upgrade: check it, dial the upstream, accept the
// client, and start the session, which relays on its own goroutines after
// ServeHTTP has returned.
func (b *Bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ep policy.Endpoint
	switch r.URL.Path {
	case PathResponses:
		ep = policy.EndpointResponsesWS
	case PathRealtime:
		ep = policy.EndpointRealtime
	default:
		writeError(w, http.StatusNotFound, "not_found",
			"tiergate's WebSocket bridge serves only "+PathResponses+" and "+PathRealtime)
		return
	}
	em := b.eps[ep]
	if !hasToken(r.Header, "Connection", "upgrade") || !hasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		writeError(w, http.StatusUpgradeRequired, "upgrade_required",
			r.URL.Path+" on this listener is WebSocket only: connect with a WebSocket client (Upgrade: websocket); plain HTTP requests go through Envoy's HTTP route")
		return
	}
	if status, msg := checkHandshake(w, r); status != 0 {
		em.upgrade(upgradeBadRequest)
		writeError(w, status, "invalid_websocket_handshake", msg)
		return
	}
	if !b.originAllowed(r) {
		em.upgrade(upgradeBadRequest)
		writeError(w, http.StatusForbidden, "origin_not_allowed", "this Origin may not open WebSocket sessions here")
		return
	}
	if !b.begin() {
		refuseDraining(w, em)
		return
	}
	s := b.open(w, r, ep, em)
	if s == nil {
		b.wg.Done()
		return
	}
	// The session runs on its own goroutines and the handler returns: the
	// handler's stack, grown deep by the dial and the handshake, is freed
	// instead of being held for the session's hour.
	go func() {
		defer b.wg.Done()
		defer b.unregister(s)
		s.run()
	}()
}

// open dials the upstream, accepts the client and registers the session;
// nil when the upgrade was answered otherwise.
func (b *Bridge) open(w http.ResponseWriter, r *http.Request, ep policy.Endpoint, em *epMetrics) *session {
	pol := b.opts.Store.Load()
	offered := headerTokens(r.Header, "Sec-WebSocket-Protocol")
	up, resp, err := b.dial(r, pol, offered)
	if err != nil {
		b.dialFailed(w, r, em, resp, err)
		return nil
	}
	// The upstream's 101 headers the client gets with its own.
	copyHeaders(w.Header(), resp.Header, clientResponseHeaders)
	var protos []string
	if p := up.Subprotocol(); p != "" {
		protos = []string{p}
	}
	client, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: protos,
		// The Origin was checked above, before the upstream was dialled.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionNoContextTakeover,
	})
	if err != nil {
		// Accept has answered the client; only a failed hijack gets here.
		_ = up.CloseNow()
		b.log.Warn("accepting the client failed", "endpoint", em.endpoint, "err", err)
		return nil
	}
	em.upgrade(upgradeAccepted)
	// The request's headers outlive the handler: net/http does not reuse
	// them, and the session reads them (never the request's context).
	s := newSession(b, ep, r, client, up, subprotocolKeys(offered))
	if !b.register(s) {
		_ = client.Close(websocket.StatusGoingAway, reasonShutdown)
		_ = up.Close(websocket.StatusGoingAway, reasonShutdown)
		return nil
	}
	return s
}

// checkHandshake checks what websocket.Accept would refuse, before the
// upstream is dialled for nothing. It returns 0 when the handshake is good.
func checkHandshake(w http.ResponseWriter, r *http.Request) (int, string) {
	switch {
	case !r.ProtoAtLeast(1, 1):
		return http.StatusUpgradeRequired, "a WebSocket handshake needs HTTP/1.1"
	case r.Method != http.MethodGet:
		return http.StatusMethodNotAllowed, "a WebSocket handshake is a GET"
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		return http.StatusBadRequest, "unsupported Sec-WebSocket-Version (only 13 is)"
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return http.StatusBadRequest, "a WebSocket handshake needs exactly one Sec-WebSocket-Key"
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		return http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64"
	}
	return 0, ""
}

// originAllowed applies AllowedOrigins the way websocket.Accept does.
func (b *Bridge) originAllowed(r *http.Request) bool {
	if len(b.opts.AllowedOrigins) == 0 {
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(r.Host, u.Host) {
		return true
	}
	for _, p := range b.opts.AllowedOrigins {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// refuseDraining answers an upgrade that arrives, or whose dial is still
// under way, once tiergate is shutting down.
func refuseDraining(w http.ResponseWriter, em *epMetrics) {
	em.upgrade(upgradeDraining)
	writeError(w, http.StatusServiceUnavailable, "unavailable", "tiergate is shutting down; reconnect")
}

// writeError answers with an error body in the OpenAI shape
// (docs/contracts.md, "Error shapes").
func writeError(w http.ResponseWriter, status int, code, message string) {
	typ := "invalid_request_error"
	if status >= http.StatusInternalServerError {
		typ = "server_error"
	}
	type detail struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	}
	body, _ := json.Marshal(struct {
		Error detail `json:"error"`
	}{detail{Message: message, Type: typ, Code: code}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// slogWriter turns the http.Server's own error lines into log records.
// Failed TLS handshakes (port scans, TCP health checks) are debug noise.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	if strings.Contains(line, "TLS handshake error") {
		level = slog.LevelDebug
	}
	w.l.Log(context.Background(), level, "websocket listener", "err", line)
	return len(p), nil
}
