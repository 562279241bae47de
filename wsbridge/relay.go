package wsbridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// The relay is two pumps, one per direction. Each reads one whole message
// and writes it before reading the next, so a side that reads slowly slows
// the side that sends to it (through TCP), and a session never holds more
// than one message per direction: no queue anywhere. Message buffers come
// from a pool and go back after the write, so an idle session holds none.
//
// Reads and writes take context.Background: with coder/websocket a
// cancellable context costs a timer registration per call, and a timer
// armed per write wakes the runtime's network poller each time (some
// microseconds a frame). Deadlines are enforced around the pumps instead:
// each pump notes when its write began, the bridge's watchdog (server.go)
// ends a session whose write has run past WriteTimeout, cutting the stuck
// side; an idle timer per session; and the session's end, which closes both
// connections and so unblocks every read and write.

// closeMsg is the close frame one side is sent; code 0 means the
// connection is already gone (or going) and is closed without a handshake.
type closeMsg struct {
	code   websocket.StatusCode
	reason string
}

// endCause is why a session ended and what each side is told.
type endCause struct {
	toClient, toUpstream closeMsg
	// turnStatus is the status of turns the end cuts short.
	turnStatus string
	// label is the close code the client's connection ended with, for
	// tiergate_ws_sessions_total (1006 when it was lost without one).
	label int
	why   string // for the log
}

// Close reasons tiergate sends.
const (
	reasonIdle       = "idle timeout"
	reasonMaxSession = "maximum session length reached"
	reasonShutdown   = "tiergate is shutting down"
	reasonClientLost = "client connection lost"
	reasonUpLost     = "upstream connection lost"
	reasonClientSlow = "client not reading"
	reasonUpSlow     = "upstream not reading"
	reasonClientBig  = "client message exceeds the read limit"
	reasonUpBig      = "upstream message exceeds the read limit"
	reasonInternal   = "tiergate internal error"
)

var (
	// A turn still open at the idle timeout is one the upstream stopped
	// answering (the client asked and is waiting), so it is recorded as
	// the upstream's failure, not the client's.
	causeIdle = endCause{
		toClient: closeMsg{websocket.StatusPolicyViolation, reasonIdle}, toUpstream: closeMsg{websocket.StatusPolicyViolation, reasonIdle},
		turnStatus: usage.StatusUpstreamClosed, label: int(websocket.StatusPolicyViolation), why: "idle",
	}
	causeMaxSession = endCause{
		toClient: closeMsg{websocket.StatusGoingAway, reasonMaxSession}, toUpstream: closeMsg{websocket.StatusGoingAway, reasonMaxSession},
		turnStatus: usage.StatusClientClosed, label: int(websocket.StatusGoingAway), why: "max_session",
	}
	// causeInternal ends a session whose pump panicked: tiergate's own
	// failure, so both sides get 1011 and the turns it cuts are recorded
	// as cancelled.
	causeInternal = endCause{
		toClient: closeMsg{websocket.StatusInternalError, reasonInternal}, toUpstream: closeMsg{websocket.StatusInternalError, reasonInternal},
		turnStatus: usage.StatusCancelled, label: int(websocket.StatusInternalError), why: "internal_error",
	}
	causeShutdown = endCause{
		toClient: closeMsg{websocket.StatusGoingAway, reasonShutdown}, toUpstream: closeMsg{websocket.StatusGoingAway, reasonShutdown},
		turnStatus: usage.StatusClientClosed, label: int(websocket.StatusGoingAway), why: "shutdown",
	}
)

// side names one of a session's two connections.
type side uint8

const (
	sideClient side = iota
	sideUpstream
)

// readCause is why the session ends when reading from one side fails.
// A close frame is passed to the other side with its code and reason
// (1005, 1006 and any code that cannot be sent become 1011).
func readCause(from side, err error) endCause {
	var ce websocket.CloseError
	closed := errors.As(err, &ce)
	tooBig := !closed && errors.Is(err, websocket.ErrMessageTooBig)
	if from == sideClient {
		c := endCause{turnStatus: usage.StatusClientClosed}
		switch {
		case closed:
			c.toUpstream = closeMsg{sendable(ce.Code), truncateReason(ce.Reason)}
			c.label, c.why = int(ce.Code), "client_closed"
		case tooBig: // the client was sent 1009 by the read
			c.toUpstream = closeMsg{websocket.StatusGoingAway, reasonClientBig}
			c.label, c.why = int(websocket.StatusMessageTooBig), "client_message_too_big"
		default:
			c.toUpstream = closeMsg{websocket.StatusInternalError, reasonClientLost}
			c.label, c.why = int(websocket.StatusAbnormalClosure), "client_lost"
		}
		return c
	}
	c := endCause{turnStatus: usage.StatusUpstreamClosed}
	switch {
	case closed:
		code := sendable(ce.Code)
		c.toClient = closeMsg{code, truncateReason(ce.Reason)}
		c.label, c.why = int(code), "upstream_closed"
	case tooBig:
		c.toClient = closeMsg{websocket.StatusInternalError, reasonUpBig}
		c.label, c.why = int(websocket.StatusInternalError), "upstream_message_too_big"
	default:
		c.toClient = closeMsg{websocket.StatusInternalError, reasonUpLost}
		c.label, c.why = int(websocket.StatusInternalError), "upstream_lost"
	}
	return c
}

// lostCause is why the session ends when a side cannot be written to: it
// timed out (stuck) or its connection broke.
func lostCause(to side, timedOut bool) endCause {
	if to == sideClient {
		c := endCause{toUpstream: closeMsg{websocket.StatusInternalError, reasonClientLost},
			turnStatus: usage.StatusClientClosed, label: int(websocket.StatusAbnormalClosure), why: "client_lost"}
		if timedOut {
			c.toUpstream = closeMsg{websocket.StatusGoingAway, reasonClientSlow}
			c.why = "client_write_timeout"
		}
		return c
	}
	c := endCause{toClient: closeMsg{websocket.StatusInternalError, reasonUpLost},
		turnStatus: usage.StatusUpstreamClosed, label: int(websocket.StatusInternalError), why: "upstream_lost"}
	if timedOut {
		c.toClient.reason = reasonUpSlow
		c.why = "upstream_write_timeout"
	}
	return c
}

// refusalCause ends a session whose client sent a frame tiergate refuses:
// the client is told why (1008 policy, 1007 invalid JSON), the upstream
// gets a normal closure.
func refusalCause(code websocket.StatusCode, message string) endCause {
	return endCause{
		toClient:   closeMsg{code, truncateReason(message)},
		toUpstream: closeMsg{websocket.StatusNormalClosure, ""},
		turnStatus: usage.StatusClientClosed, label: int(code), why: "refused",
	}
}

// sendable maps a received close code to one that can be sent on.
func sendable(code websocket.StatusCode) websocket.StatusCode {
	switch {
	case code >= websocket.StatusNormalClosure && code <= websocket.StatusUnsupportedData,
		code >= websocket.StatusInvalidFramePayloadData && code <= websocket.StatusBadGateway,
		code >= firstApplicationCode && code <= lastApplicationCode:
		return code
	}
	return websocket.StatusInternalError
}

// The close codes RFC 6455 section 7.4.2 leaves to libraries and
// applications (3000-3999 registered with IANA, 4000-4999 private): a peer
// may send them, so they are passed on as they are.
const (
	firstApplicationCode websocket.StatusCode = 3000
	lastApplicationCode  websocket.StatusCode = 4999
)

// A control frame's payload is at most 125 bytes (RFC 6455 section 5.5), and
// a close frame's payload starts with its 2-byte code, so maxReason is the
// longest close reason a close frame holds.
const (
	maxControlPayload = 125
	closeCodeBytes    = 2
	maxReason         = maxControlPayload - closeCodeBytes
)

// truncateReason cuts s to maxReason bytes without splitting a UTF-8
// sequence.
func truncateReason(s string) string {
	if len(s) <= maxReason {
		return s
	}
	i := maxReason
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// survivePanic, deferred by each pump, ends the session with 1011 when the
// pump panics. Nothing else recovers a session's goroutines, so without it
// one bad frame would take the process, and every session and request in
// the pod, down with it.
func (s *session) survivePanic(pump string) {
	if r := recover(); r != nil {
		s.b.log.Error("WebSocket pump panicked; the session ends with 1011", "pump", pump, "request_id", s.requestID,
			"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		s.end(causeInternal)
	}
}

// clientToUpstream is the client's pump: read a frame, police it, write
// it upstream (or refuse it and end the session).
func (s *session) clientToUpstream() {
	defer s.survivePanic("client_to_upstream")
	for {
		typ, r, err := s.client.Reader(context.Background())
		if err != nil {
			s.end(readCause(sideClient, err))
			return
		}
		bp := getBuf()
		frame, err := readMessage(r, *bp)
		*bp = frame
		if err != nil {
			putBuf(bp)
			s.end(readCause(sideClient, err))
			return
		}
		now := s.touch()
		s.em.c2u.Inc()
		if s.stopRelay.Load() {
			putBuf(bp)
			continue
		}
		ok, werr := s.fromClient(typ, frame, now)
		putBuf(bp)
		if werr != nil {
			s.writeFailed(sideUpstream, s.u2cDone)
			return
		}
		if !ok {
			return
		}
	}
}

// upstreamToClient is the upstream's pump: read an event, account it,
// write it to the client.
func (s *session) upstreamToClient() {
	defer s.survivePanic("upstream_to_client")
	for {
		typ, r, err := s.upstream.Reader(context.Background())
		if err != nil {
			s.end(readCause(sideUpstream, err))
			return
		}
		bp := getBuf()
		frame, err := readMessage(r, *bp)
		*bp = frame
		if err != nil {
			putBuf(bp)
			s.end(readCause(sideUpstream, err))
			return
		}
		now := s.touch()
		s.em.u2c.Inc()
		if typ == websocket.MessageText {
			s.account(frame)
		}
		if s.stopRelay.Load() {
			putBuf(bp)
			continue
		}
		err = s.write(sideClient, typ, frame, now)
		putBuf(bp)
		if err != nil {
			s.writeFailed(sideClient, s.c2uDone)
			return
		}
	}
}

// fromClient polices one client frame and forwards it. ok is false when the
// frame was refused and the session is ending; werr is a failed write
// upstream.
func (s *session) fromClient(typ websocket.MessageType, frame []byte, now int64) (ok bool, werr error) {
	ob := getBuf()
	defer putBuf(ob)
	body, ok := s.police(frame, ob)
	if !ok {
		return false, nil
	}
	if err := s.write(sideUpstream, typ, body, now); err != nil {
		return false, err
	}
	return true, nil
}

// police applies the policy to one client frame and books what the frame
// starts (a turn, a claim on the session model). body is what goes
// upstream: frame, or a rewrite in *ob. ok is false when the frame was
// refused and the session is ending.
func (s *session) police(frame []byte, ob *[]byte) (body []byte, ok bool) {
	pol := s.b.opts.Store.Load()
	group := s.groupFor(pol)
	s.mu.Lock()
	s.cands = s.models.candidates(s.cands[:0])
	s.mu.Unlock()
	req := policy.Request{Endpoint: s.ep, Group: group, SessionModels: s.cands, Buf: *ob}
	var decidedAt time.Time
	if t := s.b.opts.Budgets; t != nil && len(pol.Budgets()) > 0 {
		// The frame's arrival is its decision time: the turn's cost goes
		// to the windows that contain it.
		decidedAt = t.Now()
		s.spend = t.View(decidedAt)
		req.Spend = &s.spend
	}
	res := pol.ApplyFrame(&req, frame)
	if res.BodyChanged {
		*ob = res.Body // return the grown buffer to the pool
	}
	clear(s.cands) // drop references to model strings

	if res.Policed {
		s.b.opts.Decisions.Observe(pol, s.ep, &res.Decision)
		s.b.opts.Budgets.Acted(&res.Decision)
		if len(res.Shadows) > 0 {
			s.b.opts.Decisions.ObserveShadows(&res.Decision)
			s.logShadows(&res)
		}
		if res.Refusal != policy.RefusalNone {
			s.refuse(&res)
			return nil, false
		}
	}
	meta := readFrame(frame, res.Policed)
	if !meta.update && !res.Policed {
		if strayFrame(frame) {
			s.mu.Lock()
			s.turns.stray()
			s.mu.Unlock()
		}
		return res.Body, true // most frames (audio, items): nothing to book
	}
	var t *turn
	if res.Policed {
		t = &turn{
			lane: meta.streamID, eventID: meta.eventID, start: time.Now(),
			model: res.RequestModel, group: res.Group,
			requested: res.Requested, sent: res.Sent, action: res.Action, rule: res.Rule, pol: pol,
			budget: res.Budget, decidedAt: decidedAt,
			shadowRule: res.ShadowRule, shadowAction: res.ShadowAction,
		}
	}
	// The frame is booked before it is written: the upstream may answer
	// before the write returns.
	s.mu.Lock()
	overload := s.book(&meta, t)
	s.mu.Unlock()
	if overload != "" {
		s.refuseOverload(group, overload)
		return nil, false
	}
	return res.Body, true
}

// logShadows logs each shadow match of a frame at info, with what was
// decided instead.
func (s *session) logShadows(res *policy.Result) {
	for _, m := range res.Shadows {
		s.b.log.Info("shadow match", "request_id", s.requestID, "endpoint", s.em.endpoint,
			"shadow_rule", m.Rule, "shadow_action", m.Action.String(), "shadow_budget", m.Budget,
			"group", res.Group, "model", res.RequestModel, "service_tier", res.Tier.String(),
			"action", res.Action.String(), "rule", res.Rule)
	}
}

// writeFailed ends the session after a write to one side failed. The
// failure usually means that side closed or broke, which its own pump is
// about to read (with the close code, if it sent one); give it a moment to
// name the cause before calling the side lost.
func (s *session) writeFailed(to side, otherDone <-chan struct{}) {
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-otherDone:
	case <-t.C:
	}
	s.end(lostCause(to, false))
}

// write writes one frame to a side, noting when the write began (began,
// in nanoseconds since the session started) for the watchdog.
func (s *session) write(to side, typ websocket.MessageType, p []byte, began int64) error {
	c := s.client
	if to == sideUpstream {
		c = s.upstream
	}
	s.writing[to].Store(began + 1)
	err := c.Write(context.Background(), typ, p)
	s.writing[to].Store(0)
	return err
}

// checkWrites is the watchdog's look at the session: a write in progress
// for longer than limit ends it, cutting the side that does not read.
func (s *session) checkWrites(limit time.Duration) {
	now := int64(time.Since(s.start))
	for _, to := range []side{sideClient, sideUpstream} {
		if w := s.writing[to].Load(); w != 0 && now-(w-1) >= int64(limit) {
			s.end(lostCause(to, true))
			return
		}
	}
}

// Message buffers. A pool, not a buffer per pump, so that an idle session
// holds none; a buffer grown past maxPooledBuf by a large frame is dropped
// after use rather than pinned.
const (
	initialBuf   = 4 << 10
	maxPooledBuf = 1 << 20
)

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, initialBuf)
	return &b
}}

func getBuf() *[]byte {
	bp := bufPool.Get().(*[]byte)
	*bp = (*bp)[:0]
	return bp
}

func putBuf(bp *[]byte) {
	if cap(*bp) > maxPooledBuf {
		return
	}
	bufPool.Put(bp)
}

// readMessage reads a whole message into buf[:0], growing it as needed
// (the connection's read limit bounds it).
func readMessage(r io.Reader, buf []byte) ([]byte, error) {
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
