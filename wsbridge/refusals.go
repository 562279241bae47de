package wsbridge

import (
	"time"

	"github.com/coder/websocket"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// refuse answers a response.create the policy blocked (or that is not
// valid JSON): one error event, fully written, then the close with the
// message. The frame never reaches the upstream, which is closed normally.
func (s *session) refuse(res *policy.Result) {
	s.refuseWith(res.Refusal, res.Message, &turn{
		start: time.Now(), model: res.RequestModel, group: res.Group,
		requested: res.Requested, sent: policy.TierNone, action: res.Action, rule: res.Rule,
		budget: res.Budget, shadowRule: res.ShadowRule, shadowAction: res.ShadowAction,
	}, res.Tier, res.RetryAfter)
}

// refuseOverload ends a session whose client sends frames faster than the
// upstream confirms them (too many session.update or response.create
// frames waiting).
func (s *session) refuseOverload(group, msg string) {
	s.refuseWith(policy.RefusalPolicy, msg, &turn{start: time.Now(), group: group, action: policy.ActionBlock}, policy.TierNone, 0)
}

// refuseWith sends the refusal's error event, records t and closes the
// session with the refusal's close code. retryAfter is a budget refusal's
// seconds to its window's end.
func (s *session) refuseWith(r policy.Refusal, msg string, t *turn, judged policy.Tier, retryAfter int64) {
	status := usage.StatusRefused
	if r.Blocked() {
		status = usage.StatusBlocked
	}
	s.stopRelay.Store(true) // the upstream pump must not slip a frame in before the close
	err := s.writeClient(websocket.MessageText, r.Event(msg, retryAfter))
	s.b.log.Info("frame refused", "request_id", s.requestID, "endpoint", s.em.endpoint,
		"status", r.Status(), "group", t.group, "model", t.model, "service_tier", judged.String(),
		"rule", t.rule, "budget", t.budget, "message", msg)
	s.record(t, status, r.Status(), usage.Unknown(), "", time.Now())
	if err != nil {
		s.end(lostCause(sideClient, false))
		return
	}
	s.end(refusalCause(r.CloseCode(), msg))
}
