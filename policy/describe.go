package policy

import (
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tiergate/tiergate/internal/decimal"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// fileRule and friends mirror the policy file, so /policy shows the policy
// in the terms it was written in.
type fileRule struct {
	Name                 string   `json:"name,omitempty"`
	Label                string   `json:"label"`
	ServiceTier          string   `json:"service_tier"`
	Action               string   `json:"action"`
	ErrorMessage         string   `json:"error_message,omitempty"`
	ModelWhitelist       []string `json:"model_whitelist,omitempty"`
	FallbackAction       string   `json:"fallback_action,omitempty"`
	FallbackErrorMessage string   `json:"fallback_error_message,omitempty"`
	Groups               []string `json:"groups,omitempty"`
	Endpoints            []string `json:"endpoints,omitempty"`
	Shadow               bool     `json:"shadow,omitempty"`
}

type fileGroup struct {
	Name             string   `json:"name"`
	ForceServiceTier string   `json:"force_service_tier,omitempty"`
	APIKeySHA256     []string `json:"api_key_sha256,omitempty"`
}

type fileBudget struct {
	Name         string      `json:"name"`
	Groups       []string    `json:"groups,omitempty"`
	ServiceTiers []string    `json:"service_tiers,omitempty"`
	Models       []string    `json:"models,omitempty"`
	Window       string      `json:"window"`
	Limit        json.Number `json:"limit"`
	OnExhausted  string      `json:"on_exhausted"`
	Shadow       bool        `json:"shadow,omitempty"`
}

type fileConfig struct {
	Rules        []fileRule        `json:"rules"`
	Groups       []fileGroup       `json:"groups,omitempty"`
	Budgets      []fileBudget      `json:"budgets,omitempty"`
	Identity     map[string]string `json:"identity,omitempty"`
	ModelAliases map[string]string `json:"model_aliases,omitempty"`
	Metrics      map[string]any    `json:"metrics,omitempty"`
	// BudgetStore holds only addresses, names and paths: no password is
	// ever in the file.
	BudgetStore json.RawMessage `json:"budget_store,omitempty"`
}

// enumName spells a proto enum value as the policy file does.
func enumName(full, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(full, prefix))
}

// RedactedJSON renders the policy as the file would write it, with each
// rule's label added and every API key digest replaced by "redacted": a
// digest of a short key can be reversed, so it is not shown.
func (p *Policy) RedactedJSON() ([]byte, error) {
	cfg := p.config
	out := fileConfig{Rules: []fileRule{}, ModelAliases: cfg.GetModelAliases()}
	for i, r := range cfg.GetRules() {
		fr := fileRule{
			Name: r.Name, Label: ruleLabel(r.Name, i),
			ServiceTier:          enumName(r.ServiceTier.String(), "SERVICE_TIER_"),
			Action:               enumName(r.Action.String(), "ACTION_"),
			ErrorMessage:         r.ErrorMessage,
			ModelWhitelist:       r.ModelWhitelist,
			FallbackErrorMessage: r.FallbackErrorMessage,
			Groups:               r.Groups,
			Shadow:               r.Shadow,
		}
		if r.FallbackAction != tiergatev1.Action_ACTION_UNSPECIFIED {
			fr.FallbackAction = enumName(r.FallbackAction.String(), "ACTION_")
		}
		for _, e := range r.Endpoints {
			fr.Endpoints = append(fr.Endpoints, enumName(e.String(), "ENDPOINT_"))
		}
		out.Rules = append(out.Rules, fr)
	}
	for _, g := range cfg.GetGroups() {
		fg := fileGroup{Name: g.Name}
		if g.ForceServiceTier != tiergatev1.ServiceTier_SERVICE_TIER_UNSPECIFIED {
			fg.ForceServiceTier = enumName(g.ForceServiceTier.String(), "SERVICE_TIER_")
		}
		for range g.ApiKeySha256 {
			fg.APIKeySHA256 = append(fg.APIKeySHA256, "redacted")
		}
		out.Groups = append(out.Groups, fg)
	}
	if h := cfg.GetIdentity().GetGroupHeader(); h != "" {
		out.Identity = map[string]string{"group_header": h}
	}
	if m := cfg.GetMetrics().GetModels(); len(m) > 0 {
		out.Metrics = map[string]any{"models": m}
	}
	for i, b := range cfg.GetBudgets() {
		fb := fileBudget{
			Name: b.Name, Groups: b.Groups, Models: b.Models,
			Window:      enumName(b.Window.String(), "BUDGET_WINDOW_"),
			Limit:       json.Number(decimal.String(uint64(p.budgets[i].Limit), 6)),
			OnExhausted: enumName(b.OnExhausted.String(), "ACTION_"),
			Shadow:      b.Shadow,
		}
		for _, t := range b.ServiceTiers {
			fb.ServiceTiers = append(fb.ServiceTiers, enumName(t.String(), "SERVICE_TIER_"))
		}
		out.Budgets = append(out.Budgets, fb)
	}
	if bs := cfg.GetBudgetStore(); bs != nil {
		raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(bs)
		if err != nil {
			return nil, fmt.Errorf("budget_store: %w", err)
		}
		out.BudgetStore = raw
	}
	return json.Marshal(out)
}
