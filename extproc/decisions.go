package extproc

import (
	"hash/maphash"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/policy"
)

// Most requests through one sidecar repeat a handful of decisions (the
// same model, group, rule and tier), yet each answer carried a freshly
// written copy of the decision's dynamic metadata and resolved the
// decision counter's five labels again. decisionCache keeps both per
// decision: a small direct-mapped table, bounded in size whatever the
// clients send, where a collision only costs the work the cache saves.

// decisionCacheSlots is the table's size (a power of two).
const decisionCacheSlots = 256

// maxCachedNames: a decision whose model and group names are longer
// together is not kept. The client chooses the model, and with
// identity.group_header set the group is the header's value, whatever it
// is; without the bound 256 slots could pin megabytes of client strings.
const maxCachedNames = 512

// decisionKey is everything the metadata and the counter depend on.
type decisionKey struct {
	pol                     *policy.Policy // group labels depend on it
	endpoint                policy.Endpoint
	action                  policy.Action
	requested, judged, sent policy.Tier
	rule, group, model      string
	budget                  string
	shadowRule              string
	shadowAction            policy.Action
}

// decision is what a decision's answers share. Its metadata is read-only
// once made: every answer carrying the decision points at it.
type decision struct {
	key      decisionKey
	metadata []byte // ProcessingResponse.dynamic_metadata's wire form
	counter  prometheus.Counter
}

type decisionCache struct {
	seed  maphash.Seed
	slots [decisionCacheSlots]atomic.Pointer[decision]
}

func newDecisionCache() *decisionCache { return &decisionCache{seed: maphash.MakeSeed()} }

// get returns the decision out describes, from the table or made (and
// kept) now.
func (c *decisionCache) get(srv *Server, pol *policy.Policy, ep policy.Endpoint, out *policy.HTTPOutcome) *decision {
	k := decisionKey{
		pol: pol, endpoint: ep, action: out.Action,
		requested: out.Requested, judged: out.Tier, sent: out.Sent,
		rule: out.Rule, group: out.Group, model: out.RequestModel, budget: out.Budget,
		shadowRule: out.ShadowRule, shadowAction: out.ShadowAction,
	}
	cacheable := len(k.model)+len(k.group) <= maxCachedNames
	var slot *atomic.Pointer[decision]
	if cacheable {
		slot = &c.slots[maphash.Comparable(c.seed, k)&(decisionCacheSlots-1)]
		if d := slot.Load(); d != nil && d.key == k {
			return d
		}
	}
	d := &decision{key: k, counter: srv.opts.Decisions.Counter(pol, ep, &out.Decision)}
	var m metadataFields
	m.str("endpoint", ep.String())
	m.str("action", out.Action.String())
	m.str("service_tier_requested", out.Requested.String())
	m.str("service_tier_sent", out.Sent.String())
	m.str("rule", out.Rule)
	m.str("group", out.Group)
	m.str("model", out.RequestModel)
	m.str("budget", policy.BudgetLabel(out.Budget))
	if out.ShadowRule != "" {
		m.str("shadow_rule", out.ShadowRule)
		m.str("shadow_action", out.ShadowAction.String())
	}
	d.metadata = m.appendTo(nil)
	if cacheable {
		slot.Store(d)
	}
	return d
}
