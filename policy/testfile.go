package policy

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/tiergate/tiergate/internal/decimal"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// FastModeBeta is the anthropic-beta token of Anthropic fast mode that
// tiergate writes: a test case's service_tier: priority on /v1/messages
// sends it, as a forced group's request gets it.
const FastModeBeta = fastModeBeta

// LoadTests parses and validates a policy test file (tiergatev1.PolicyTests,
// YAML or JSON) as strictly as Load does a policy file: unknown fields,
// nulls and values of the wrong type are problems, and on any problem it
// returns a *ConfigError listing every one. It does not load the policy the
// file names.
func LoadTests(data []byte) (*tiergatev1.PolicyTests, error) {
	l := loader{}
	tf := l.parseTests(data)
	if len(l.problems) > 0 {
		return nil, &ConfigError{Problems: l.problems}
	}
	return tf, nil
}

func (l *loader) parseTests(data []byte) *tiergatev1.PolicyTests {
	tf := &tiergatev1.PolicyTests{}
	doc, ok := l.document(data, "the file is empty")
	if !ok {
		return tf
	}
	top, ok := l.object("", doc)
	if !ok {
		return tf
	}
	names := map[string]int{}
	l.fields("", top, map[string]func(string, any){
		"policy": func(p string, v any) { tf.Policy, _ = l.name(p, v) },
		"cases": func(p string, v any) {
			for i, item := range l.list(p, v) {
				ip := fmt.Sprintf("%s[%d]", p, i)
				c := l.testCase(ip, item)
				if c.Name != "" {
					if j, dup := names[c.Name]; dup {
						l.addf(ip+".name", "duplicate case name %q (also cases[%d])", c.Name, j)
					} else {
						names[c.Name] = i
					}
				}
				tf.Cases = append(tf.Cases, c)
			}
		},
	})
	if _, ok := top["policy"]; !ok {
		l.addf("policy", "required (the policy file under test, relative to this file)")
	}
	if list, isList := top["cases"].([]any); !isList && top["cases"] == nil || isList && len(list) == 0 {
		l.addf("cases", "required: at least one case")
	}
	return tf
}

func (l *loader) testCase(path string, v any) *tiergatev1.PolicyTestCase {
	c := &tiergatev1.PolicyTestCase{}
	m, ok := l.object(path, v)
	if !ok {
		return c
	}
	l.fields(path, m, map[string]func(string, any){
		"name": func(p string, v any) { c.Name, _ = l.name(p, v) },
		"path": func(p string, v any) {
			if s, ok := l.name(p, v); ok {
				if !strings.HasPrefix(s, "/") {
					l.addf(p, "%q: a path starts with / (as Envoy's :path)", s)
				}
				c.Path = s
			}
		},
		"headers": func(p string, v any) { c.Headers = l.testHeaders(p, v) },
		"body":    func(p string, v any) { c.Body, _ = l.text(p, v) },
		"json": func(p string, v any) {
			if obj, ok := l.object(p, v); ok {
				b, err := json.Marshal(obj) // keys sorted, numbers as written
				if err != nil {
					l.addf(p, "%v", err)
					return
				}
				c.Json = string(b)
			}
		},
		"model":        func(p string, v any) { c.Model, _ = l.name(p, v) },
		"service_tier": func(p string, v any) { c.ServiceTier, _ = l.name(p, v) },
		"usage":        func(p string, v any) { c.Usage = l.testUsage(p, v) },
		"budget_spent": func(p string, v any) { c.BudgetSpent = l.budgetSpent(p, v) },
		"want":         func(p string, v any) { c.Want = l.testWant(p, v) },
	})
	l.checkTestCase(path, m, c)
	return c
}

// testHeaders reads a case's headers, by lower-case name.
func (l *loader) testHeaders(path string, v any) map[string]string {
	hm, ok := l.object(path, v)
	if !ok {
		return nil
	}
	headers := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(hm)) {
		kp, hv := path+"."+k, hm[k]
		if !validHeaderName(k) {
			l.addf(kp, "%q is not a valid HTTP header name", k)
			continue
		}
		lower := strings.ToLower(k)
		if _, dup := headers[lower]; dup {
			l.addf(kp, "header %s is given twice (names are compared in lower case)", lower)
			continue
		}
		if s, ok := l.text(kp, hv); ok {
			headers[lower] = s
		}
	}
	return headers
}

// budgetSpent reads a case's spend so far, by budget key, in units.
func (l *loader) budgetSpent(path string, v any) map[string]float64 {
	bm, ok := l.object(path, v)
	if !ok {
		return nil
	}
	spent := map[string]float64{}
	for _, k := range slices.Sorted(maps.Keys(bm)) {
		if micros, ok := l.exactAmount(path+"."+k, bm[k], 6); ok {
			spent[k] = float64(micros) / MicrosPerUnit
		}
	}
	return spent
}

// checkTestCase checks a case read from m as a whole: the fields it
// requires, and its body given one way only.
func (l *loader) checkTestCase(path string, m map[string]any, c *tiergatev1.PolicyTestCase) {
	for _, k := range []string{"name", "path", "want"} {
		if _, ok := m[k]; !ok {
			l.addf(join(path, k), "required")
		}
	}
	_, body := m["body"]
	_, js := m["json"]
	_, model := m["model"]
	_, tier := m["service_tier"]
	switch given := btoi(body) + btoi(js) + btoi(model || tier); {
	case given == 0:
		l.addf(path, "no body: give body (raw text), json (an object), or model and service_tier")
	case given > 1:
		l.addf(path, "give the body one way only: body, json, or model and service_tier")
	}
	ep, _ := ParsePath(c.Path)
	if ep == EndpointMessageBatches && (model || tier) {
		l.addf(path, "on /v1/messages/batches write the batch body (json with requests[].params); model and service_tier describe one request")
	}
	if tier && ep == EndpointMessages {
		if t := ParseTier(c.ServiceTier); t != TierPriority {
			l.addf(path+".service_tier", "on /v1/messages only priority (fast mode) can be written as service_tier; write the body for anything else")
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (l *loader) testUsage(path string, v any) *tiergatev1.TestUsage {
	u := &tiergatev1.TestUsage{}
	m, ok := l.object(path, v)
	if !ok {
		return u
	}
	count := func(dst **uint64) func(string, any) {
		return func(p string, v any) {
			if n, ok := l.count(p, v); ok {
				*dst = &n
			}
		}
	}
	l.fields(path, m, map[string]func(string, any){
		"input_tokens":             count(&u.InputTokens),
		"cached_input_tokens":      count(&u.CachedInputTokens),
		"cache_write_input_tokens": count(&u.CacheWriteInputTokens),
		"output_tokens":            count(&u.OutputTokens),
		"reasoning_tokens":         count(&u.ReasoningTokens),
		"service_tier_reported":    func(p string, v any) { u.ServiceTierReported, _ = l.name(p, v) },
	})
	return u
}

func (l *loader) testWant(path string, v any) *tiergatev1.TestWant {
	w := &tiergatev1.TestWant{}
	m, ok := l.object(path, v)
	if !ok {
		return w
	}
	str := func(dst **string) func(string, any) {
		return func(p string, v any) {
			if s, ok := l.text(p, v); ok {
				*dst = &s
			}
		}
	}
	action := func(dst **string) func(string, any) {
		return func(p string, v any) {
			if a := l.action(p, v); a != tiergatev1.Action_ACTION_UNSPECIFIED {
				s := enumName(a.String(), "ACTION_")
				*dst = &s
			}
		}
	}
	l.fields(path, m, map[string]func(string, any){
		"action":            action(&w.Action),
		"rule":              str(&w.Rule),
		"service_tier_sent": str(&w.ServiceTierSent),
		"status": func(p string, v any) {
			n, ok := l.count(p, v)
			switch {
			case !ok:
			case n != 0 && (n < 100 || n > 599):
				l.addf(p, "%d is not an HTTP status (0: forwarded)", n)
			default:
				s := uint32(n)
				w.Status = &s
			}
		},
		"message":       str(&w.Message),
		"budget":        str(&w.Budget),
		"shadow_rule":   str(&w.ShadowRule),
		"shadow_action": action(&w.ShadowAction),
		"cost": func(p string, v any) {
			if pico, ok := l.exactAmount(p, v, 12); ok {
				f, _ := strconv.ParseFloat(decimal.String(pico, 12), 64)
				w.Cost = &f
			}
		},
		"upstream_body": str(&w.UpstreamBody),
	})
	if len(m) == 0 {
		l.addf(path, "nothing to compare: give at least one field")
	}
	return w
}

// count reads a non-negative integer.
func (l *loader) count(path string, v any) (uint64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		l.addf(path, "want a whole number, got %s", describe(v))
		return 0, false
	}
	u, err := strconv.ParseUint(n.String(), 10, 64)
	if err != nil {
		l.addf(path, "want a whole number 0 or more, got %s", n)
		return 0, false
	}
	return u, true
}

// exactAmount reads a non-negative amount of currency with at most places
// decimals, exactly, in units of 10^-places.
func (l *loader) exactAmount(path string, v any, places int) (uint64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		l.addf(path, "want a number of currency units, got %s", describe(v))
		return 0, false
	}
	if strings.HasPrefix(n.String(), "-") {
		l.addf(path, "must not be negative")
		return 0, false
	}
	u, err := decimal.Parse(n.String(), places)
	if err != nil {
		l.addf(path, "%v", err)
		return 0, false
	}
	if places == 6 && u > maxMicros || float64(u) > math.MaxInt64 {
		l.addf(path, "%s is too large", n)
		return 0, false
	}
	return u, true
}
