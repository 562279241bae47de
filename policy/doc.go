// Package policy owns tiergate's service-tier policy: loading and validating
// the policy file (tiergate.v1.Config), reloading it live, deciding what a
// request or WebSocket frame may carry, rewriting request bodies and
// frames byte by byte to carry exactly that, and pricing what was used with
// the policy file's price table (Cost, PriceRecord: exact, in integer units
// of 10⁻¹² of the currency). Budgets are decided here too, as the last step
// of evaluation, from a read-only SpendView the caller passes in with the
// request; keeping spend is package budget's job, never this one's. Shadow
// rules and budgets are judged in their place and reported on the decision
// (ShadowRule, Shadows) without deciding anything. It also decodes policy
// test files (LoadTests), as strictly as policy files.
//
// It knows nothing of gRPC, Envoy or WebSockets: callers hand it the
// endpoint, the caller's identity, and the raw body or frame, and get back a
// decision plus the bytes to forward. Rewriting never re-marshals a body; a
// body that needs no change is never copied.
package policy
