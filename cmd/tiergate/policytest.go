package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/tiergate/tiergate/internal/decimal"
	"github.com/tiergate/tiergate/policy"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// Exit statuses of `tiergate test` (docs/contracts.md, "CLI").
const (
	exitTestFailed    = 1
	exitTestMalformed = 2
)

// runTest runs policy test files: every case is decided through the
// server's decision (decideOffline) and each want field given is compared.
// It prints one line per mismatch, "file: case: field: want X, got Y",
// then "N passed, N failed".
func runTest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: tiergate test FILE...") }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitCode(exitTestMalformed)
	}
	var passed, failed int
	malformed := false
	for _, name := range fs.Args() {
		p, tf, problems := loadTestFile(name)
		if len(problems) > 0 {
			for _, line := range problems {
				fmt.Fprintf(stdout, "%s: %s\n", name, line)
			}
			malformed = true
			continue
		}
		for _, c := range tf.Cases {
			mismatches := runCase(p, c)
			for _, m := range mismatches {
				fmt.Fprintf(stdout, "%s: %s: %s\n", name, c.Name, m)
			}
			if len(mismatches) > 0 {
				failed++
			} else {
				passed++
			}
		}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
	switch {
	case malformed:
		return exitCode(exitTestMalformed)
	case failed > 0:
		return exitCode(exitTestFailed)
	}
	return nil
}

// loadTestFile reads a test file and the policy it names, returning every
// problem found with either as lines.
func loadTestFile(name string) (*policy.Policy, *tiergatev1.PolicyTests, []string) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, nil, []string{err.Error()}
	}
	tf, err := policy.LoadTests(data)
	if err != nil {
		return nil, nil, problemLines("", err)
	}
	polPath := tf.Policy
	if !filepath.IsAbs(polPath) {
		polPath = filepath.Join(filepath.Dir(name), polPath)
	}
	pdata, err := os.ReadFile(polPath)
	if err != nil {
		return nil, nil, []string{fmt.Sprintf("policy: %v", err)}
	}
	p, err := policy.Load(pdata)
	if err != nil {
		return nil, nil, problemLines("policy "+tf.Policy+": ", err)
	}
	var problems []string
	for i, c := range tf.Cases {
		for _, b := range slices.Sorted(maps.Keys(c.BudgetSpent)) {
			if !hasBudget(p, b) {
				problems = append(problems, fmt.Sprintf("cases[%d].budget_spent.%s: the policy has no budget %q", i, b, b))
			}
		}
	}
	return p, tf, problems
}

func problemLines(prefix string, err error) []string {
	var ce *policy.ConfigError
	if !errors.As(err, &ce) {
		return []string{prefix + err.Error()}
	}
	lines := make([]string, len(ce.Problems))
	for i, pr := range ce.Problems {
		lines[i] = prefix + pr.String()
	}
	return lines
}

// runCase decides one case and returns its mismatches, one line each.
func runCase(p *policy.Policy, c *tiergatev1.PolicyTestCase) []string {
	r := &offlineRequest{path: c.Path, header: map[string][]string{}, spent: map[string]int64{}, maxBody: defaultMaxBody}
	for k, v := range c.Headers {
		r.header[k] = []string{v}
	}
	switch {
	case c.Json != "":
		r.body = []byte(c.Json)
	case c.Model != "" || c.ServiceTier != "":
		r.body = shorthandBody(r, c)
	default:
		r.body = []byte(c.Body)
	}
	for b, amount := range c.BudgetSpent {
		r.spent[b] = int64(math.Round(amount * policy.MicrosPerUnit))
	}
	if u := c.Usage; u != nil {
		r.used = &tiergatev1.UsageRecord{
			InputTokens: u.InputTokens, CachedInputTokens: u.CachedInputTokens,
			CacheWriteInputTokens: u.CacheWriteInputTokens, OutputTokens: u.OutputTokens,
			ReasoningTokens: u.ReasoningTokens, ServiceTierReported: u.ServiceTierReported,
		}
	}
	res := decideOffline(p, r)
	got := &res.decision
	w := c.Want
	var out []string
	str := func(field string, want *string, got string) {
		if want != nil && *want != got {
			out = append(out, fmt.Sprintf("%s: want %q, got %q", field, *want, got))
		}
	}
	str("action", w.Action, got.Action)
	str("rule", w.Rule, got.Rule)
	str("service_tier_sent", w.ServiceTierSent, got.ServiceTierSent)
	if w.Status != nil && int(*w.Status) != got.Status {
		out = append(out, fmt.Sprintf("status: want %d, got %d", *w.Status, got.Status))
	}
	str("message", w.Message, got.Message)
	str("budget", w.Budget, got.Budget)
	str("shadow_rule", w.ShadowRule, got.ShadowRule)
	str("shadow_action", w.ShadowAction, got.ShadowAction)
	if w.Cost != nil {
		want := strconv.FormatFloat(*w.Cost, 'f', -1, 64)
		switch {
		case res.priced:
			if f, _ := strconv.ParseFloat(decimal.String(res.cost, 12), 64); f != *w.Cost {
				out = append(out, fmt.Sprintf("cost: want %s, got %s", want, decimal.String(res.cost, 12)))
			}
		case res.refused:
			out = append(out, fmt.Sprintf("cost: want %s, got none (refused with %d)", want, got.Status))
		case c.Usage == nil:
			out = append(out, fmt.Sprintf("cost: want %s, got none (the case gives no usage)", want))
		case got.CostUnpricedReason != "":
			out = append(out, fmt.Sprintf("cost: want %s, got none (unpriced: %s)", want, got.CostUnpricedReason))
		default:
			out = append(out, fmt.Sprintf("cost: want %s, got none (the policy has no prices)", want))
		}
	}
	if w.UpstreamBody != nil {
		switch {
		case res.refused:
			out = append(out, fmt.Sprintf("upstream_body: want %q, got nothing (refused with %d)", *w.UpstreamBody, got.Status))
		case string(res.body) != *w.UpstreamBody:
			out = append(out, fmt.Sprintf("upstream_body: want %q, got %q", *w.UpstreamBody, res.body))
		}
	}
	return out
}

// shorthandBody writes the body of a case given as model and service_tier:
// {"model": M, "service_tier": T}; on /v1/messages fast mode, as a client
// asks for it: "speed": "fast" and the beta token.
func shorthandBody(r *offlineRequest, c *tiergatev1.PolicyTestCase) []byte {
	m := map[string]string{}
	if c.Model != "" {
		m["model"] = c.Model
	}
	if c.ServiceTier != "" {
		if ep, _ := policy.ParsePath(c.Path); ep == policy.EndpointMessages {
			m["speed"] = "fast"
			if prev := r.header["anthropic-beta"]; len(prev) > 0 {
				r.header["anthropic-beta"] = []string{prev[0] + "," + policy.FastModeBeta}
			} else {
				r.header["anthropic-beta"] = []string{policy.FastModeBeta}
			}
		} else {
			m["service_tier"] = c.ServiceTier
		}
	}
	b, _ := json.Marshal(m) // a map of strings always encodes
	return b
}
