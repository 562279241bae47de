package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tiergate/tiergate/policy"
	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
	"github.com/tiergate/tiergate/usage"
)

// headerFlags collects repeated --header k=v flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

// evalDecision is the one JSON line `tiergate eval` writes to stderr.
type evalDecision struct {
	Endpoint             string            `json:"endpoint"`
	Group                string            `json:"group"`
	Model                string            `json:"model"`
	ServiceTierRequested string            `json:"service_tier_requested"`
	ServiceTierSent      string            `json:"service_tier_sent"`
	Action               string            `json:"action"`
	Rule                 string            `json:"rule"`
	Message              string            `json:"message"`
	Budget               string            `json:"budget"`
	ShadowRule           string            `json:"shadow_rule,omitempty"`
	ShadowAction         string            `json:"shadow_action,omitempty"`
	Status               int               `json:"status"`
	SetHeaders           map[string]string `json:"set_headers,omitempty"`
	RemoveHeaders        []string          `json:"remove_headers,omitempty"`
	// With --usage and a policy with prices: what the request would cost.
	Cost               *json.Number `json:"cost,omitempty"`
	Currency           string       `json:"currency,omitempty"`
	PriceTier          string       `json:"price_tier,omitempty"`
	CostUnpricedReason string       `json:"cost_unpriced_reason,omitempty"`
}

// runEval decides one request read from stdin exactly as the ext_proc
// server would, printing the body that would go upstream (or the error body
// returned) on stdout and the decision on stderr.
func runEval(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "policy file (default: the embedded default policy)")
	path := fs.String("path", "", "request path, e.g. /v1/responses (required)")
	maxBody := fs.Int64("max-body-bytes", defaultMaxBody, "largest body, compressed or decompressed")
	usageJSON := fs.String("usage", "", `the response's usage as record fields, to price the request, e.g. {"input_tokens":1000,"output_tokens":200,"service_tier_reported":"default"}`)
	var headers, spentFlags headerFlags
	fs.Var(&headers, "header", "request header as name=value (repeatable)")
	fs.Var(&spentFlags, "budget-spent", "spend already counted on a budget for the caller's group this window, as NAME=AMOUNT in currency units (repeatable; other budgets have spent nothing)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: tiergate eval [--config FILE] --path /v1/responses [--header k=v]... [--budget-spent NAME=AMOUNT]... [--usage JSON] < body.json")
		return exitCode(exitError)
	}
	p, err := loadPolicy(*config)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitCode(exitError)
	}
	spent := map[string]int64{}
	for _, spec := range spentFlags {
		if err := parseSpent(p, spec, spent); err != nil {
			fmt.Fprintf(stderr, "tiergate eval: --budget-spent %v\n", err)
			return exitCode(exitError)
		}
	}
	var used *tiergatev1.UsageRecord
	if *usageJSON != "" {
		if used, err = usage.ParseRecord([]byte(*usageJSON)); err != nil {
			fmt.Fprintf(stderr, "tiergate eval: --usage: %v\n", err)
			return exitCode(exitError)
		}
	}
	hdr := map[string][]string{}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok {
			fmt.Fprintf(stderr, "tiergate eval: --header %q: want name=value\n", h)
			return exitCode(exitError)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		hdr[k] = append(hdr[k], v)
	}
	body, err := io.ReadAll(io.LimitReader(stdin, *maxBody+1))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if int64(len(body)) > *maxBody {
		return fmt.Errorf("body larger than --max-body-bytes (%d)", *maxBody)
	}
	res := decideOffline(p, &offlineRequest{path: *path, header: hdr, body: body, spent: spent, used: used, maxBody: *maxBody})
	_, _ = stdout.Write(res.body)
	if res.refused {
		return writeDecision(stderr, res.decision, exitRefused)
	}
	return writeDecision(stderr, res.decision, exitForwarded)
}

func writeDecision(w io.Writer, d evalDecision, code int) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode decision: %w", err)
	}
	fmt.Fprintf(w, "%s\n", b)
	if code != 0 {
		return exitCode(code)
	}
	return nil
}

// loadPolicy reads a policy file, or returns the embedded default for "".
func loadPolicy(path string) (*policy.Policy, error) {
	if path == "" {
		return policy.Default(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	p, err := policy.Load(data)
	if err != nil {
		return nil, fmt.Errorf("policy %s:\n%w", path, err)
	}
	return p, nil
}
