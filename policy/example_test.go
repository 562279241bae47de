package policy_test

import (
	"fmt"
	"net/http"

	"google.golang.org/protobuf/proto"

	"github.com/tiergate/tiergate/policy"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// examplePolicy reserves priority on gpt-5.5 for one group and strips it
// for everyone else; it prices gpt-5.5 at two tiers.
const examplePolicy = `
identity:
  group_header: x-tiergate-group
groups:
- name: codex-fast
rules:
- name: codex-fast-ok
  service_tier: priority
  action: pass
  groups: [codex-fast]
- name: no-priority-on-gpt-5.5
  service_tier: priority
  action: block
  error_message: priority is reserved for the codex-fast group
  model_whitelist: ["gpt-5.5"]
  fallback_action: filter
prices:
  currency: USD
  as_of: "2026-12-07"
  models:
  - model: gpt-5.5
    tiers:
      default:  {input: 5, cached_input: 0.5, output: 30}
      priority: {input: 12.5, cached_input: 1.25, output: 75}
`

// headers makes a header lookup from a map of lower-case names, as the
// ext_proc server and tiergate eval hand them to DecideHTTP.
func headers(h map[string]string) func(string) string {
	return func(name string) string { return h[name] }
}

// Loading a policy and deciding HTTP requests through DecideHTTP, the entry
// the ext_proc server and `tiergate eval` share: a request whose tier the
// policy filters goes upstream without it, one it blocks is answered with
// the endpoint's own 403 body, and one it passes goes on untouched.
func Example() {
	p, err := policy.Load([]byte(examplePolicy))
	if err != nil {
		fmt.Println(err)
		return
	}
	ep, deployment := policy.ParsePath("/v1/responses")
	for _, c := range []struct {
		group, body string
	}{
		{"", `{"model":"gpt-5.4","service_tier":"fast","input":"hi"}`},
		{"", `{"model":"gpt-5.5","service_tier":"priority","input":"hi"}`},
		{"codex-fast", `{"model":"gpt-5.5","service_tier":"priority","input":"hi"}`},
	} {
		out := p.DecideHTTP(&policy.HTTPRequest{
			Endpoint: ep, Deployment: deployment,
			Header: headers(map[string]string{"x-tiergate-group": c.group}),
			Body:   []byte(c.body),
		})
		switch {
		case out.Refusal != policy.RefusalNone:
			fmt.Printf("%s by %s: %d %s\n", out.Action, out.Rule, out.Refusal.Status(), out.Refusal.Body(ep, out.Message))
		case out.BodyChanged:
			fmt.Printf("%s by %s: sends %s\n", out.Action, out.Rule, out.Body)
		default:
			fmt.Printf("%s by %s: sends the body as it came (tier %s)\n", out.Action, out.Rule, out.Sent)
		}
	}
	// Output:
	// filter by no-priority-on-gpt-5.5: sends {"model":"gpt-5.4","input":"hi"}
	// block by no-priority-on-gpt-5.5: 403 {"error":{"message":"priority is reserved for the codex-fast group","type":"forbidden_error","param":"service_tier","code":"policy_violation"}}
	// pass by codex-fast-ok: sends the body as it came (tier priority)
}

// A body that is not valid JSON on a policed endpoint is refused with 400 in
// the endpoint's shape (here Anthropic's), never waved through.
func ExamplePolicy_DecideHTTP_invalidJSON() {
	ep, _ := policy.ParsePath("/v1/messages")
	out := policy.Default().DecideHTTP(&policy.HTTPRequest{
		Endpoint: ep,
		Header:   headers(nil),
		Body:     []byte(`{"model":"claude-opus-4-6","speed":"fast",}`),
	})
	fmt.Println(out.Refusal.Status() == http.StatusBadRequest, string(out.Refusal.Body(ep, out.Message)))
	// Output:
	// true {"type":"error","error":{"type":"invalid_request_error","message":"the request body is not valid JSON: invalid JSON at byte 42"}}
}

// Pricing a usage record with the policy's price table: the tier the
// upstream reported decides the price, and the cost is exact, in units of
// 10⁻¹² of the currency.
func ExamplePolicy_PriceRecord() {
	p, err := policy.Load([]byte(examplePolicy))
	if err != nil {
		fmt.Println(err)
		return
	}
	rec := &tiergatev1.UsageRecord{
		Model: "gpt-5.5", ServiceTierSent: "priority", ServiceTierReported: "priority",
		InputTokens: proto.Uint64(8438), CachedInputTokens: proto.Uint64(8192), OutputTokens: proto.Uint64(398),
		Status: "completed",
	}
	c, priced := p.PriceRecord(rec, false)
	fmt.Println(priced, c.Model, c.Tier, c.Pico, c.Currency)
	fmt.Println("record:", rec.GetCost(), rec.GetCurrency(), rec.GetPriceTier())
	// Output:
	// true gpt-5.5 priority 43165000000 USD
	// record: 43165000000 USD priority
}
