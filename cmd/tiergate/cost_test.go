package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCost re-prices a usage log whose total is worked out by hand from
// testdata/priced.yaml: 2 × 0.0058925 (team-a at priority) + 0.002357
// (team-a, reported default) + 0.002357 (no group, gpt-latest at default)
// + 0.013572 (team-b, Anthropic fast mode with cache reads and writes) =
// 0.030071. The blocked and refused records count nowhere; an unknown
// model, a record without usage and a Realtime turn with audio are the 3
// unpriced.
func TestCost(t *testing.T) {
	t.Parallel()
	r := runBinary(t, nil, "cost", "--config", "testdata/priced.yaml", "--json", "testdata/usage.jsonl")
	if r.code != 0 {
		t.Fatalf("exit %d; stderr: %s", r.code, r.stderr)
	}
	want := `{"currency":"USD","total":0.030071,"unpriced":3,"rows":[` +
		`{"group":"","model":"gpt-5.5","service_tier":"default","requests":1,"input_tokens":1117,"cached_input_tokens":1024,"cache_write_input_tokens":0,"output_tokens":46,"cost":0.002357},` +
		`{"group":"team-a","model":"gpt-5.5","service_tier":"default","requests":1,"input_tokens":1117,"cached_input_tokens":1024,"cache_write_input_tokens":0,"output_tokens":46,"cost":0.002357},` +
		`{"group":"team-a","model":"gpt-5.5","service_tier":"priority","requests":2,"input_tokens":2234,"cached_input_tokens":2048,"cache_write_input_tokens":0,"output_tokens":92,"cost":0.011785},` +
		`{"group":"team-b","model":"claude-opus-4-6","service_tier":"priority","requests":1,"input_tokens":1249,"cached_input_tokens":1024,"cache_write_input_tokens":200,"output_tokens":15,"cost":0.013572}]}` + "\n"
	if r.stdout != want {
		t.Errorf("report:\n got %s\nwant %s", r.stdout, want)
	}

	text := runBinary(t, nil, "cost", "--config", "testdata/priced.yaml", "testdata/usage.jsonl", "testdata/usage.jsonl")
	if text.code != 0 {
		t.Fatalf("exit %d; stderr: %s", text.code, text.stderr)
	}
	for _, line := range []string{"total 0.060142 USD\n", "unpriced records 6\n"} {
		if !strings.Contains(text.stdout, line) {
			t.Errorf("two copies of the log: output lacks %q:\n%s", line, text.stdout)
		}
	}
	if !strings.Contains(text.stdout, "team-b  claude-opus-4-6  priority") || !strings.Contains(text.stdout, "0.027144") {
		t.Errorf("the table lacks team-b's row at twice its cost:\n%s", text.stdout)
	}
}

func TestCostRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte("{\"endpoint\":\"responses\"}\n{\"cost\":\"x\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"a line that is not a record names its place", []string{"--config", "testdata/priced.yaml", bad}, "bad.jsonl:2: cost: want a number"},
		{"a policy without prices is refused", []string{"--config", "testdata/good.yaml", "testdata/usage.jsonl"}, "has no prices section"},
		{"--config is required", []string{"testdata/usage.jsonl"}, "usage: tiergate cost --config FILE"},
		{"a missing log is reported", []string{"--config", "testdata/priced.yaml", "testdata/nope.jsonl"}, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runBinary(t, nil, append([]string{"cost"}, tc.args...)...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, tc.want)
			}
		})
	}
}

// TestEvalUsage prices a decided request with the usage given on the
// command line.
func TestEvalUsage(t *testing.T) {
	t.Parallel()
	const tokens = `"input_tokens":1117,"cached_input_tokens":1024,"output_tokens":46`
	cases := []struct {
		name   string
		header string
		body   string
		usage  string
		code   int
		want   string // in the decision line; "" for no cost fields
	}{
		{"a priority request is priced at priority", "x-tiergate-group=team-a",
			`{"model":"gpt-5.5","service_tier":"priority"}`, `{` + tokens + `}`, 0,
			`"cost":0.0058925,"currency":"USD","price_tier":"priority"`},
		{"the tier the upstream reports is the one priced", "x-tiergate-group=team-a",
			`{"model":"gpt-5.5","service_tier":"priority"}`, `{` + tokens + `,"service_tier_reported":"default"}`, 0,
			`"cost":0.002357,"currency":"USD","price_tier":"default"`},
		{"an alias is priced as its model", "x-tiergate-group=team-a",
			`{"model":"gpt-latest"}`, `{` + tokens + `}`, 0,
			`"cost":0.002357,"currency":"USD","price_tier":"default"`},
		{"a model without a price says so", "x-tiergate-group=team-a",
			`{"model":"o3"}`, `{` + tokens + `}`, 0,
			`"cost_unpriced_reason":"no_price"`},
		{"a blocked request costs nothing", "x-tiergate-group=interns",
			`{"model":"gpt-5.5","service_tier":"priority"}`, `{` + tokens + `}`, 3, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runBinary(t, []byte(tc.body), "eval", "--config", "testdata/priced.yaml", "--path", "/v1/responses",
				"--header", tc.header, "--usage", tc.usage)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", r.code, tc.code, r.stderr)
			}
			if !json.Valid([]byte(r.stderr)) {
				t.Fatalf("decision is not one JSON line: %s", r.stderr)
			}
			if tc.want == "" {
				if strings.Contains(r.stderr, `"cost`) || strings.Contains(r.stderr, "price_tier") {
					t.Errorf("decision carries a cost: %s", r.stderr)
				}
				return
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("decision %s lacks %s", r.stderr, tc.want)
			}
		})
	}
	r := runBinary(t, []byte(`{"model":"gpt-5.5"}`), "eval", "--config", "testdata/priced.yaml", "--path", "/v1/responses", "--usage", `{"input_tokens":`)
	if r.code != 1 || !strings.Contains(r.stderr, "--usage") {
		t.Errorf("a malformed --usage: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestValidatePriceTables(t *testing.T) {
	t.Parallel()
	r := runBinary(t, nil, "validate", "testdata/bad-prices.yaml")
	want := []string{
		`testdata/bad-prices.yaml: prices.currency: "usd" is not an ISO 4217 currency code (three capital letters, e.g. USD)`,
		`testdata/bad-prices.yaml: prices.models[1].tiers.flex.output: required (price per million tokens)`,
		`testdata/bad-prices.yaml: prices.models[1].tiers.priority.input: negative price -2.5 (prices are non-negative)`,
		`testdata/bad-prices.yaml: prices.models[2].model: pattern "gpt-5.5" is always shadowed by prices.models[0] ("gpt-5*")`,
	}
	if r.code != 1 || r.stdout != strings.Join(want, "\n")+"\n" {
		t.Errorf("exit %d, output:\n%s\nwant 1 and:\n%s", r.code, r.stdout, strings.Join(want, "\n"))
	}
}
