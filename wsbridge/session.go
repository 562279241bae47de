package wsbridge

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/policy"
)

// session is one bridged WebSocket session: the client's connection, the
// upstream's, the two pumps between them (relay.go), the session model, and
// the turns in flight (turns.go).
type session struct {
	b         *Bridge
	ep        policy.Endpoint
	em        *epMetrics
	client    *websocket.Conn
	upstream  *websocket.Conn
	header    http.Header // the upgrade request's, to resolve the group
	keys      []string    // API keys offered as openai-insecure-api-key.<key>
	requestID string
	start     time.Time

	// lastData is when the last data frame went either way, in nanoseconds
	// since start (monotonic). Pings do not count.
	lastData atomic.Int64
	// writing is, per side, when the write to it in progress began, in
	// nanoseconds since start plus one; 0 when none is. The watchdog reads it.
	writing [2]atomic.Int64
	// stopRelay is set once the session is ending: the pumps still read
	// (so the close handshakes complete and late events are accounted) but
	// forward nothing more.
	stopRelay atomic.Bool
	// records numbers the session's usage records (their turn field), from
	// 1; the pumps, the timers and Shutdown all write records.
	records atomic.Uint32

	// Owned by the client pump.
	groupPol *policy.Policy // the policy group was resolved under
	group    string
	cands    []string // scratch for the candidate models
	// spend is the budgets' view for the frame being policed (client pump
	// only); the decision reads it through a pointer, allocating nothing.
	spend budget.View

	// mu guards what both pumps, the timers and Shutdown share.
	mu     sync.Mutex
	models models
	turns  turnBook
	ended  bool
	cause  endCause
	idle   *time.Timer
	max    *time.Timer

	closers          sync.WaitGroup // the goroutines running the two closes
	c2uDone, u2cDone chan struct{}
}

func newSession(b *Bridge, ep policy.Endpoint, r *http.Request, client, up *websocket.Conn, keys []string) *session {
	client.SetReadLimit(b.opts.ReadLimit)
	s := &session{
		b:         b,
		ep:        ep,
		em:        b.eps[ep],
		client:    client,
		upstream:  up,
		header:    r.Header,
		keys:      keys,
		requestID: r.Header.Get("X-Request-Id"),
		start:     time.Now(),
		c2uDone:   make(chan struct{}),
		u2cDone:   make(chan struct{}),
	}
	if r.URL.RawQuery != "" {
		s.models.connect(queryModels(r.URL.RawQuery))
	}
	return s
}

// run relays until the session ends, then records the turns still open and
// counts the session. It returns once every goroutine of the session has.
func (s *session) run() {
	s.em.active.Inc()
	s.mu.Lock()
	s.idle = time.AfterFunc(s.b.opts.IdleTimeout, s.checkIdle)
	s.max = time.AfterFunc(s.b.opts.MaxSession, func() { s.end(causeMaxSession) })
	s.mu.Unlock()

	go func() {
		defer close(s.u2cDone)
		s.upstreamToClient()
	}()
	s.clientToUpstream()
	close(s.c2uDone)
	<-s.u2cDone
	s.closers.Wait()

	s.mu.Lock()
	s.idle.Stop()
	s.max.Stop()
	cause := s.cause
	s.mu.Unlock()
	s.recordOpen(cause.turnStatus)
	s.em.active.Dec()
	s.em.m.sessions.WithLabelValues(s.em.endpoint, closeCodeLabel(cause.label)).Inc()
	s.b.log.Debug("session ended", "request_id", s.requestID, "endpoint", s.em.endpoint,
		"close_code", cause.label, "why", cause.why, "duration", time.Since(s.start).String())
}

// touch notes a data frame, for the idle timeout, and returns when it was
// (nanoseconds since start).
func (s *session) touch() int64 {
	now := int64(time.Since(s.start))
	s.lastData.Store(now)
	return now
}

// checkIdle runs when the idle timer fires: it ends the session if no data
// frame went either way for IdleTimeout, and otherwise sets the timer for
// when that would be.
func (s *session) checkIdle() {
	idle := time.Since(s.start) - time.Duration(s.lastData.Load())
	if idle >= s.b.opts.IdleTimeout {
		s.end(causeIdle)
		return
	}
	s.mu.Lock()
	if !s.ended {
		s.idle.Reset(s.b.opts.IdleTimeout - idle)
	}
	s.mu.Unlock()
}

// end ends the session for cause; the first cause wins. Both connections
// are closed concurrently, each with its close code (or at once, for a side
// already gone), and the pumps see their reads fail.
func (s *session) end(c endCause) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.cause = c
	// Before the unlock: run may reach closers.Wait as soon as both pumps
	// end, which a peer can make happen at any moment once ended is set;
	// an Add from zero after that Wait began would be lost.
	s.stopRelay.Store(true)
	s.closers.Add(2)
	s.mu.Unlock()
	go s.closeConn(s.client, c.toClient)
	go s.closeConn(s.upstream, c.toUpstream)
}

func (s *session) closeConn(c *websocket.Conn, m closeMsg) {
	defer s.closers.Done()
	if m.code == 0 {
		_ = c.CloseNow()
		return
	}
	// Close writes the close frame (after any frame being written) and
	// waits up to 5s for the peer's.
	_ = c.Close(m.code, m.reason)
}

// groupFor resolves the caller's group under p, once per policy: a reload
// can change the group header or the key digests.
func (s *session) groupFor(p *policy.Policy) string {
	if p != s.groupPol {
		s.group = p.GroupFromHeaders(s.header.Get, s.keys...)
		s.groupPol = p
	}
	return s.group
}

// writeClient writes one frame to the client outside the relay pump (the
// refusal event), bounded by the write timeout.
func (s *session) writeClient(typ websocket.MessageType, p []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.b.opts.WriteTimeout)
	defer cancel()
	return s.client.Write(ctx, typ, p)
}

// Why refuseOverload ends a session whose frames would leave more waiting
// on the upstream than a session may hold.
const (
	overloadClaims  = "too many session.update frames are waiting for the upstream's session.updated"
	overloadWaiting = "too many response.create frames are waiting for the upstream's response.created"
)

var (
	overloadNamed = fmt.Sprintf("too many distinct models named in response.create frames: at most %d per session", maxClaimed)
	overloadHeld  = fmt.Sprintf("the frames waiting for the upstream would hold more than %d bytes of models, stream_ids and event_ids", maxHeld)
)

// maxHeld bounds the bytes of the strings a session holds while it waits on
// the upstream: the models of pending session.update claims and of named,
// and the stream_id, event_id and model of each response.create waiting for
// its response.created. maxClaimed and maxWaiting bound how many there are,
// but each may be as long as the read limit allows, so counts alone would
// let one session pin hundreds of MiB with frames it never stops sending.
// 64 KiB is generous: a stream_id is 1-256 characters, a model name a few
// dozen.
const maxHeld = 64 << 10

// book takes what a client frame leaves waiting on the upstream: its
// session.update claim (meta.update), its turn t (a response.create; nil
// for other frames) and the models it names at the top level. When any of
// them would pass its bound, or they would take what the session holds past
// maxHeld, it takes none and returns why, for refuseOverload: a frame may
// be both a claim and a response.create (duplicate type keys), and a
// refused frame must leave nothing behind. Called with s.mu held.
func (s *session) book(meta *frameMeta, t *turn) (overload string) {
	switch {
	case meta.update && !s.models.roomFor(len(meta.claimed)):
		return overloadClaims
	case t != nil && s.turns.full():
		return overloadWaiting
	}
	held := 0
	if meta.update {
		held += stringBytes(meta.claimed)
	}
	if t != nil {
		n, bytes := s.models.unnamed(meta.named)
		if len(s.models.named)+n > maxClaimed {
			return overloadNamed
		}
		held += t.heldBytes() + bytes
	}
	if s.models.held+s.turns.held+held > maxHeld {
		return overloadHeld
	}
	if meta.update {
		s.models.claim(s.turns.next(), meta.eventID, meta.claimed)
	}
	if t != nil {
		s.turns.push(t)
		s.models.name(meta.named)
	}
	return ""
}
