package policy

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// DefaultYAML is the policy that applies when no file is given: strip
// priority (and fast) from every request, the cost-safe choice.
//
//go:embed default.yaml
var DefaultYAML []byte

// Problem is one thing wrong with a policy file, at a place named in the
// file's own terms (rules[2].action).
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// ConfigError lists every problem found in a policy file.
type ConfigError struct {
	Problems []Problem
}

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Default returns the embedded default policy.
func Default() *Policy {
	p, err := Load(DefaultYAML)
	if err != nil {
		panic(fmt.Sprintf("embedded default policy: %v", err))
	}
	return p
}

// Load parses, validates and compiles a policy file (YAML or JSON). On any
// problem it returns a *ConfigError that lists all of them.
func Load(data []byte) (*Policy, error) {
	sum := sha256.Sum256(data)
	l := loader{limits: map[*tiergatev1.Budget]int64{}}
	cfg := l.parse(data)
	if len(l.problems) > 0 {
		return nil, &ConfigError{Problems: l.problems}
	}
	p, err := compile(cfg, l.limits)
	if err != nil {
		return nil, err
	}
	p.sha256 = hex.EncodeToString(sum[:])
	p.loadedAt = time.Now()
	return p, nil
}

type loader struct {
	problems []Problem
	// limits holds each budget's limit exactly as written, in micro-units
	// (the proto's double cannot hold every 6-decimal amount exactly).
	limits map[*tiergatev1.Budget]int64
}

func (l *loader) addf(path, format string, args ...any) {
	l.problems = append(l.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (l *loader) parse(data []byte) *tiergatev1.Config {
	cfg := &tiergatev1.Config{}
	if len(bytes.TrimSpace(data)) == 0 {
		l.addf("", "the file is empty (write `rules: []` for a policy with no rules)")
		return cfg
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		l.addf("", "not valid YAML or JSON: %v", err)
		return cfg
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		l.addf("", "not valid YAML or JSON: %v", err)
		return cfg
	}
	top, ok := l.object("", doc)
	if !ok {
		return cfg
	}
	l.fields("", top, map[string]func(string, any){
		"rules": func(path string, v any) {
			for i, item := range l.list(path, v) {
				cfg.Rules = append(cfg.Rules, l.rule(fmt.Sprintf("%s[%d]", path, i), item))
			}
		},
		"groups": func(path string, v any) {
			for i, item := range l.list(path, v) {
				cfg.Groups = append(cfg.Groups, l.group(fmt.Sprintf("%s[%d]", path, i), item))
			}
		},
		"identity": func(path string, v any) {
			cfg.Identity = &tiergatev1.Identity{}
			if m, ok := l.object(path, v); ok {
				l.fields(path, m, map[string]func(string, any){
					"group_header": func(path string, v any) {
						if s, ok := l.name(path, v); ok {
							if !validHeaderName(s) {
								l.addf(path, "%q is not a valid HTTP header name", s)
							}
							cfg.Identity.GroupHeader = s
						}
					},
				})
			}
		},
		"model_aliases": func(path string, v any) {
			m, ok := l.object(path, v)
			if !ok {
				return
			}
			cfg.ModelAliases = map[string]string{}
			for _, k := range slices.Sorted(maps.Keys(m)) {
				p := path + "." + k
				if strings.TrimSpace(k) == "" {
					l.addf(path, "blank model name as an alias")
					continue
				}
				if s, ok := l.name(p, m[k]); ok {
					cfg.ModelAliases[k] = s
				}
			}
		},
		"budgets": func(path string, v any) {
			for i, item := range l.list(path, v) {
				cfg.Budgets = append(cfg.Budgets, l.budget(fmt.Sprintf("%s[%d]", path, i), item))
			}
		},
		"metrics": func(path string, v any) {
			cfg.Metrics = &tiergatev1.Metrics{}
			if m, ok := l.object(path, v); ok {
				l.fields(path, m, map[string]func(string, any){
					"models": func(path string, v any) { cfg.Metrics.Models = l.names(path, v, "model name") },
				})
			}
		},
		"prices":       func(path string, v any) { cfg.Prices = l.prices(path, v) },
		"budget_store": func(path string, v any) { cfg.BudgetStore = l.budgetStore(path, v) },
	})
	l.crossCheck(cfg)
	l.crossCheckBudgets(cfg, pricesGiven(cfg))
	return cfg
}

func (l *loader) rule(path string, v any) *tiergatev1.Rule {
	r := &tiergatev1.Rule{}
	m, ok := l.object(path, v)
	if !ok {
		return r
	}
	l.fields(path, m, map[string]func(string, any){
		"name": func(p string, v any) {
			if s, ok := l.name(p, v); ok {
				if strings.HasPrefix(s, "#") {
					l.addf(p, "rule names must not start with # (unnamed rules are labelled #1, #2... by position)")
				} else {
					l.checkName(p, s, "rule name")
				}
				r.Name = s
			}
		},
		"service_tier":           func(p string, v any) { r.ServiceTier = l.tier(p, v, true) },
		"action":                 func(p string, v any) { r.Action = l.action(p, v) },
		"error_message":          func(p string, v any) { r.ErrorMessage, _ = l.text(p, v) },
		"model_whitelist":        func(p string, v any) { r.ModelWhitelist = l.names(p, v, "model name") },
		"fallback_action":        func(p string, v any) { r.FallbackAction = l.action(p, v) },
		"fallback_error_message": func(p string, v any) { r.FallbackErrorMessage, _ = l.text(p, v) },
		"groups": func(p string, v any) {
			r.Groups = l.names(p, v, "group name")
			for i, g := range r.Groups {
				l.checkName(fmt.Sprintf("%s[%d]", p, i), g, "group name")
			}
		},
		"shadow": func(p string, v any) { r.Shadow, _ = l.boolean(p, v) },
		"endpoints": func(p string, v any) {
			for i, item := range l.list(p, v) {
				ip := fmt.Sprintf("%s[%d]", p, i)
				if s, ok := l.name(ip, item); ok {
					e, known := endpointValues[s]
					if !known {
						l.addf(ip, "unknown endpoint %q (want chat_completions, responses, messages, responses_ws or realtime)", s)
						continue
					}
					r.Endpoints = append(r.Endpoints, e)
				}
			}
		},
	})
	if _, ok := m["service_tier"]; !ok {
		l.addf(path+".service_tier", "required (priority, fast, flex, auto, default, scale, ultrafast or all)")
	}
	if _, ok := m["action"]; !ok {
		l.addf(path+".action", "required (pass, filter or block)")
	}
	if _, ok := m["fallback_action"]; ok && len(r.ModelWhitelist) == 0 {
		l.addf(path+".fallback_action", "needs a non-empty model_whitelist (an empty whitelist already matches every model)")
	}
	return r
}

func (l *loader) group(path string, v any) *tiergatev1.Group {
	g := &tiergatev1.Group{}
	m, ok := l.object(path, v)
	if !ok {
		return g
	}
	l.fields(path, m, map[string]func(string, any){
		"name": func(p string, v any) {
			if s, ok := l.name(p, v); ok {
				l.checkName(p, s, "group name")
				g.Name = s
			}
		},
		"force_service_tier": func(p string, v any) { g.ForceServiceTier = l.tier(p, v, false) },
		"api_key_sha256": func(p string, v any) {
			for i, item := range l.list(p, v) {
				ip := fmt.Sprintf("%s[%d]", p, i)
				if s, ok := l.name(ip, item); ok {
					if !isSHA256Hex(s) {
						l.addf(ip, "not a SHA-256 digest: want 64 lower-case hex digits (printf %%s \"$KEY\" | sha256sum)")
						continue
					}
					g.ApiKeySha256 = append(g.ApiKeySha256, s)
				}
			}
		},
	})
	if _, ok := m["name"]; !ok {
		l.addf(path+".name", "required")
	}
	return g
}

// crossCheck finds the problems that span entries: duplicate names and key
// digests claimed twice.
func (l *loader) crossCheck(cfg *tiergatev1.Config) {
	ruleAt := map[string]int{}
	for i, r := range cfg.Rules {
		if r.Name == "" {
			continue
		}
		if j, dup := ruleAt[r.Name]; dup {
			l.addf(fmt.Sprintf("rules[%d].name", i), "duplicate rule name %q (also rules[%d])", r.Name, j)
			continue
		}
		ruleAt[r.Name] = i
	}
	groupAt := map[string]int{}
	type place struct{ group, index int }
	keyAt := map[string]place{}
	for i, g := range cfg.Groups {
		if g.Name != "" {
			if j, dup := groupAt[g.Name]; dup {
				l.addf(fmt.Sprintf("groups[%d].name", i), "duplicate group name %q (also groups[%d])", g.Name, j)
			} else {
				groupAt[g.Name] = i
			}
		}
		for k, h := range g.ApiKeySha256 {
			if at, dup := keyAt[h]; dup {
				l.addf(fmt.Sprintf("groups[%d].api_key_sha256[%d]", i, k),
					"key digest already listed at groups[%d].api_key_sha256[%d] (a key belongs to one group only)", at.group, at.index)
				continue
			}
			keyAt[h] = place{i, k}
		}
	}
}

// fields walks an object's keys in a stable order, dispatching known ones
// and reporting unknown ones (with the snake_case spelling when a camelCase
// one was used).
func (l *loader) fields(path string, m map[string]any, known map[string]func(string, any)) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		p := join(path, k)
		if f, ok := known[k]; ok {
			if m[k] == nil {
				l.addf(p, "null is not allowed (leave the key out instead)")
				continue
			}
			f(p, m[k])
			continue
		}
		if snake := toSnake(k); snake != k {
			if _, ok := known[snake]; ok {
				l.addf(p, "unknown field (did you mean %s? fields are written in snake_case)", snake)
				continue
			}
		}
		l.addf(p, "unknown field (known: %s)", strings.Join(slices.Sorted(maps.Keys(known)), ", "))
	}
}

func (l *loader) object(path string, v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		l.addf(path, "want a mapping, got %s", describe(v))
	}
	return m, ok
}

func (l *loader) list(path string, v any) []any {
	s, ok := v.([]any)
	if !ok {
		l.addf(path, "want a list, got %s", describe(v))
	}
	return s
}

// text reads a free-form string.
func (l *loader) text(path string, v any) (string, bool) {
	s, ok := v.(string)
	if !ok {
		l.addf(path, "want a string, got %s", describe(v))
	}
	return s, ok
}

// boolean reads true or false.
func (l *loader) boolean(path string, v any) (bool, bool) {
	b, ok := v.(bool)
	if !ok {
		l.addf(path, "want true or false, got %s", describe(v))
	}
	return b, ok
}

// name reads a non-blank string.
func (l *loader) name(path string, v any) (string, bool) {
	s, ok := l.text(path, v)
	if ok && strings.TrimSpace(s) == "" {
		l.addf(path, "must not be blank")
		return "", false
	}
	return s, ok
}

func (l *loader) names(path string, v any, what string) []string {
	var out []string
	for i, item := range l.list(path, v) {
		ip := fmt.Sprintf("%s[%d]", path, i)
		s, ok := item.(string)
		switch {
		case !ok:
			l.addf(ip, "want a %s, got %s", what, describe(item))
		case strings.TrimSpace(s) == "":
			l.addf(ip, "blank %s", what)
		default:
			out = append(out, s)
		}
	}
	return out
}

var tierValues = map[string]tiergatev1.ServiceTier{
	"priority":  tiergatev1.ServiceTier_SERVICE_TIER_PRIORITY,
	"fast":      tiergatev1.ServiceTier_SERVICE_TIER_PRIORITY,
	"flex":      tiergatev1.ServiceTier_SERVICE_TIER_FLEX,
	"auto":      tiergatev1.ServiceTier_SERVICE_TIER_AUTO,
	"default":   tiergatev1.ServiceTier_SERVICE_TIER_DEFAULT,
	"scale":     tiergatev1.ServiceTier_SERVICE_TIER_SCALE,
	"ultrafast": tiergatev1.ServiceTier_SERVICE_TIER_ULTRAFAST,
	"all":       tiergatev1.ServiceTier_SERVICE_TIER_ALL,
}

func (l *loader) tier(path string, v any, allowAll bool) tiergatev1.ServiceTier {
	s, ok := l.name(path, v)
	if !ok {
		return 0
	}
	t, known := tierValues[s]
	switch {
	case !known:
		want := "priority, fast, flex, auto, default, scale or ultrafast"
		if allowAll {
			want = "priority, fast, flex, auto, default, scale, ultrafast or all"
		}
		l.addf(path, "unknown service tier %q (want %s)%s", s, want, lowerHint(s, tierValues))
	case t == tiergatev1.ServiceTier_SERVICE_TIER_ALL && !allowAll:
		l.addf(path, "all is not a tier a request can be forced to (want priority, flex, auto, default, scale or ultrafast)")
		return 0
	}
	return t
}

var actionValues = map[string]tiergatev1.Action{
	"pass":   tiergatev1.Action_ACTION_PASS,
	"filter": tiergatev1.Action_ACTION_FILTER,
	"block":  tiergatev1.Action_ACTION_BLOCK,
}

var endpointValues = map[string]tiergatev1.Endpoint{
	"chat_completions": tiergatev1.Endpoint_ENDPOINT_CHAT_COMPLETIONS,
	"responses":        tiergatev1.Endpoint_ENDPOINT_RESPONSES,
	"messages":         tiergatev1.Endpoint_ENDPOINT_MESSAGES,
	"responses_ws":     tiergatev1.Endpoint_ENDPOINT_RESPONSES_WS,
	"realtime":         tiergatev1.Endpoint_ENDPOINT_REALTIME,
}

func (l *loader) action(path string, v any) tiergatev1.Action {
	s, ok := l.name(path, v)
	if !ok {
		return 0
	}
	a, known := actionValues[s]
	if !known {
		l.addf(path, "unknown action %q (want pass, filter or block)%s", s, lowerHint(s, actionValues))
	}
	return a
}

// lowerHint points out that a value is known once lower-cased.
func lowerHint[V any](s string, known map[string]V) string {
	if _, ok := known[strings.ToLower(strings.TrimSpace(s))]; ok {
		return "; values are written in lower case"
	}
	return ""
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("string %q", x)
	case json.Number:
		return "number " + x.String()
	case bool:
		return fmt.Sprintf("boolean %t", x)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// toSnake spells a camelCase name in snake_case.
func toSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if 'A' <= r && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r + ('a' - 'A'))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9') && !('a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}

// compile turns a validated config into the evaluation form.
func compile(cfg *tiergatev1.Config, limits map[*tiergatev1.Budget]int64) (*Policy, error) {
	p := &Policy{
		config:      cfg,
		forced:      map[string]Tier{},
		keyGroups:   map[[32]byte]string{},
		aliases:     cfg.GetModelAliases(),
		modelLabels: map[string]struct{}{},
		groupLabels: map[string]struct{}{},
		groupHeader: strings.ToLower(cfg.GetIdentity().GetGroupHeader()),
		prices:      compilePrices(cfg.GetPrices()),
		budgetStore: compileBudgetStore(cfg.GetBudgetStore()),
	}
	for _, m := range cfg.GetPrices().GetModels() {
		if !strings.HasSuffix(m.Model, "*") {
			p.modelLabels[m.Model] = struct{}{} // a model the policy names
		}
	}
	for _, m := range cfg.GetMetrics().GetModels() {
		p.modelLabels[m] = struct{}{}
	}
	for k, v := range p.aliases {
		p.modelLabels[k] = struct{}{}
		p.modelLabels[v] = struct{}{}
	}
	for _, g := range cfg.Groups {
		p.groupLabels[g.Name] = struct{}{}
		if t := tierFromProto(g.ForceServiceTier); t != TierNone {
			p.forced[g.Name] = t
		}
		for _, h := range g.ApiKeySha256 {
			var sum [32]byte
			if _, err := hex.Decode(sum[:], []byte(h)); err != nil {
				return nil, fmt.Errorf("group %q: key digest: %w", g.Name, err)
			}
			p.keyGroups[sum] = g.Name
		}
	}
	for i, r := range cfg.Rules {
		cr := rule{
			label:       ruleLabel(r.Name, i),
			action:      actionFromProto(r.Action),
			message:     r.ErrorMessage,
			hasFallback: r.FallbackAction != tiergatev1.Action_ACTION_UNSPECIFIED,
			fallback:    actionFromProto(r.FallbackAction),
			fallbackMsg: r.FallbackErrorMessage,
			groups:      r.Groups,
			shadow:      r.Shadow,
		}
		if r.ServiceTier == tiergatev1.ServiceTier_SERVICE_TIER_ALL {
			cr.all = true
		} else {
			cr.tier = tierFromProto(r.ServiceTier)
		}
		for _, w := range r.ModelWhitelist {
			if strings.HasSuffix(w, "*") {
				cr.whitelist = append(cr.whitelist, pattern{text: strings.TrimSuffix(w, "*"), prefix: true})
				continue
			}
			cr.whitelist = append(cr.whitelist, pattern{text: w})
			p.modelLabels[w] = struct{}{}
		}
		for _, e := range r.Endpoints {
			cr.endpoints |= 1 << endpointFromProto(e)
		}
		for _, g := range r.Groups {
			p.groupLabels[g] = struct{}{}
		}
		p.rules = append(p.rules, cr)
		p.shadows = p.shadows || cr.shadow
	}
	compileBudgets(p, cfg, limits)
	return p, nil
}

func tierFromProto(t tiergatev1.ServiceTier) Tier {
	switch t {
	case tiergatev1.ServiceTier_SERVICE_TIER_PRIORITY:
		return TierPriority
	case tiergatev1.ServiceTier_SERVICE_TIER_FLEX:
		return TierFlex
	case tiergatev1.ServiceTier_SERVICE_TIER_AUTO:
		return TierAuto
	case tiergatev1.ServiceTier_SERVICE_TIER_DEFAULT:
		return TierDefault
	case tiergatev1.ServiceTier_SERVICE_TIER_SCALE:
		return TierScale
	case tiergatev1.ServiceTier_SERVICE_TIER_ULTRAFAST:
		return TierUltrafast
	}
	return TierNone
}

func actionFromProto(a tiergatev1.Action) Action {
	switch a {
	case tiergatev1.Action_ACTION_FILTER:
		return ActionFilter
	case tiergatev1.Action_ACTION_BLOCK:
		return ActionBlock
	}
	return ActionPass
}

func endpointFromProto(e tiergatev1.Endpoint) Endpoint {
	switch e {
	case tiergatev1.Endpoint_ENDPOINT_CHAT_COMPLETIONS:
		return EndpointChatCompletions
	case tiergatev1.Endpoint_ENDPOINT_RESPONSES:
		return EndpointResponses
	case tiergatev1.Endpoint_ENDPOINT_MESSAGES:
		return EndpointMessages
	case tiergatev1.Endpoint_ENDPOINT_RESPONSES_WS:
		return EndpointResponsesWS
	case tiergatev1.Endpoint_ENDPOINT_REALTIME:
		return EndpointRealtime
	}
	return EndpointUnknown
}
