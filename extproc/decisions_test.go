package extproc

import (
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tiergate/tiergate/policy"
)

// TestDecisionCache: a repeated decision is served from the cache, every
// field of the key tells decisions apart, a model name too long to keep is
// still answered correctly, and each decision's metadata and counter are
// its own.
func TestDecisionCache(t *testing.T) {
	t.Parallel()
	srv := benchServer(t)
	pol := srv.opts.Store.Load()
	other, err := policy.Load([]byte("rules: [{service_tier: priority, action: block}]"))
	if err != nil {
		t.Fatal(err)
	}
	base := policy.HTTPOutcome{}
	base.Action, base.Requested, base.Tier, base.Sent = policy.ActionFilter, policy.TierPriority, policy.TierPriority, policy.TierNone
	base.Rule, base.RequestModel = "#1", "gpt-5.5"
	c := srv.decisions
	first := c.get(srv, pol, policy.EndpointResponses, &base)
	if again := c.get(srv, pol, policy.EndpointResponses, &base); again != first {
		t.Error("the same decision was not served from the cache")
	}
	modelOf := func(d *decision) string {
		t.Helper()
		resp := &extprocv3.ProcessingResponse{}
		resp.ProtoReflect().SetUnknown(d.metadata)
		return roundTrip(t, resp).GetDynamicMetadata().GetFields()["tiergate"].GetStructValue().GetFields()["model"].GetStringValue()
	}
	for _, tc := range []struct {
		name   string
		pol    *policy.Policy
		ep     policy.Endpoint
		change func(o *policy.HTTPOutcome)
	}{
		{"another policy", other, policy.EndpointResponses, func(*policy.HTTPOutcome) {}},
		{"another endpoint", pol, policy.EndpointChatCompletions, func(*policy.HTTPOutcome) {}},
		{"another action", pol, policy.EndpointResponses, func(o *policy.HTTPOutcome) { o.Action = policy.ActionPass }},
		{"another requested tier", pol, policy.EndpointResponses, func(o *policy.HTTPOutcome) { o.Requested = policy.TierFlex }},
		{"another judged tier", pol, policy.EndpointResponses, func(o *policy.HTTPOutcome) { o.Tier = policy.TierFlex }},
		{"another sent tier", pol, policy.EndpointResponses, func(o *policy.HTTPOutcome) { o.Sent = policy.TierFlex }},
		{"another rule", pol, policy.EndpointResponses, func(o *policy.HTTPOutcome) { o.Rule = "#2" }},
		{"another group", pol, policy.EndpointResponses, func(o *policy.HTTPOutcome) { o.Group = "batch" }},
		{"another model", pol, policy.EndpointResponses, func(o *policy.HTTPOutcome) { o.RequestModel = "gpt-5.5-mini" }},
		{"a model too long to keep", pol, policy.EndpointResponses, func(o *policy.HTTPOutcome) { o.RequestModel = strings.Repeat("m", maxCachedNames+1) }},
		// With identity.group_header the group is whatever the header says.
		{"a group too long to keep", pol, policy.EndpointResponses, func(o *policy.HTTPOutcome) { o.Group = strings.Repeat("g", maxCachedNames) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.change(&o)
			d := c.get(srv, tc.pol, tc.ep, &o)
			if d == first {
				t.Fatal("a different decision was served the cached one")
			}
			if got := modelOf(d); got != o.RequestModel {
				t.Errorf("metadata model %q, want %q", got, o.RequestModel)
			}
			if len(o.RequestModel)+len(o.Group) > maxCachedNames && c.get(srv, tc.pol, tc.ep, &o) == d {
				t.Error("a decision whose names are longer than maxCachedNames was kept")
			}
		})
	}
	// The counter is the decision's own series.
	first.counter.Inc()
	if got := testutil.ToFloat64(srv.opts.Decisions.Counter(pol, policy.EndpointResponses, &base.Decision)); got != 1 {
		t.Errorf("the cached counter counted into another series (its own reads %g)", got)
	}
}
