package policy

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/internal/pricetest"
)

// budgetTestPrices is a price table for policies with budgets, which need one.
var budgetTestPrices = pricetest.Table("priority: {input: 2, output: 4}")

func TestBudgetConfigErrors(t *testing.T) {
	t.Parallel()
	ok := "{name: b, window: day, limit: 10, on_exhausted: block}"
	cases := []struct {
		name string
		file string
		want []string
	}{
		{"a budget name with a space is refused", "budgets: [{name: 'team a', window: day, limit: 10, on_exhausted: block}]\n",
			[]string{`budgets[0].name: budget name "team a": names use only letters, digits, '.', '_' and '-'`}},
		{"a budget named other is refused as reserved", "budgets: [{name: other, window: day, limit: 10, on_exhausted: block}]\n",
			[]string{`budgets[0].name: "other" is reserved (it names the spend and metrics of group header values the policy does not name)`}},
		{"a group named none is refused as reserved", "groups: [{name: none}]\n",
			[]string{`groups[0].name: "none" is reserved (it names the spend and metrics of callers with no group)`}},
		{"a rule's group with a slash is refused", "rules: [{service_tier: priority, action: block, groups: [a/b]}]\n",
			[]string{`rules[0].groups[0]: group name "a/b": names use only letters, digits, '.', '_' and '-'`}},
		{"a rule name with a colon is refused", "rules: [{name: 'a:b', service_tier: priority, action: block}]\n",
			[]string{`rules[0].name: rule name "a:b": names use only letters, digits, '.', '_' and '-'`}},
		{"a budget that shares a rule's name is refused", "rules: [{name: cap, service_tier: priority, action: pass}]\nbudgets: [{name: cap, window: day, limit: 10, on_exhausted: block}]\n",
			[]string{`budgets[0].name: "cap" is also the name of rules[0] (budgets and rules share the rule label in metrics)`}},
		{"duplicate budget names are refused", "budgets: [" + ok + ", " + ok + "]\n",
			[]string{`budgets[1].name: duplicate budget name "b" (also budgets[0])`}},
		{"a filter budget without service_tiers is refused", "budgets: [{name: b, window: day, limit: 10, on_exhausted: filter}]\n",
			[]string{"budgets[0].service_tiers: required when on_exhausted is filter (name the tiers to remove once the limit is reached)"}},
		{"a filter budget with an empty service_tiers is refused", "budgets: [{name: b, window: day, limit: 10, on_exhausted: filter, service_tiers: []}]\n",
			[]string{"budgets[0].service_tiers: required when on_exhausted is filter (name the tiers to remove once the limit is reached)"}},
		{"a filter budget that lists default is refused", "budgets: [{name: b, window: day, limit: 10, on_exhausted: filter, service_tiers: [priority, default]}]\n",
			[]string{"budgets[0].service_tiers[1]: default cannot be filtered: removing the tier does not lower the default tier's spend (use on_exhausted: block)"}},
		{"pass is not a budget action", "budgets: [{name: b, window: day, limit: 10, on_exhausted: pass}]\n",
			[]string{"budgets[0].on_exhausted: pass is not a budget action (want filter or block)"}},
		{"an unknown window names the choices", "budgets: [{name: b, window: hour, limit: 10, on_exhausted: block}]\n",
			[]string{`budgets[0].window: unknown window "hour" (want day, week or month)`}},
		{"a limit of zero is refused", "budgets: [{name: b, window: day, limit: 0, on_exhausted: block}]\n",
			[]string{"budgets[0].limit: must be greater than 0"}},
		{"a limit with seven decimals is refused", "budgets: [{name: b, window: day, limit: 0.0000001, on_exhausted: block}]\n",
			[]string{"budgets[0].limit: more than 6 decimals"}},
		{"a limit written as a string is refused", "budgets: [{name: b, window: day, limit: '200', on_exhausted: block}]\n",
			[]string{`budgets[0].limit: want a number of currency units, got string "200"`}},
		{"all is not a budget tier", "budgets: [{name: b, window: day, limit: 1, on_exhausted: block, service_tiers: [all]}]\n",
			[]string{"budgets[0].service_tiers[0]: all is not a tier a request can be forced to (want priority, flex, auto, default, scale or ultrafast)"}},
		{"missing required budget fields are named", "budgets: [{groups: [g]}]\n",
			[]string{
				"budgets[0].name: required",
				"budgets[0].window: required (day, week or month)",
				"budgets[0].limit: required (the cap, in units of the price table's currency)",
				"budgets[0].on_exhausted: required (filter or block)",
			}},
		{"an unknown budget field is refused", "budgets: [{name: b, window: day, limit: 1, on_exhausted: block, shadows: true}]\n",
			[]string{"budgets[0].shadows: unknown field (known: groups, limit, models, name, on_exhausted, service_tiers, shadow, window)"}},
		{"a budget's reserved group is refused", "budgets: [{name: b, window: day, limit: 1, on_exhausted: block, groups: [other]}]\n",
			[]string{`budgets[0].groups[0]: "other" is reserved (it names the spend and metrics of group header values the policy does not name)`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkProblems(t, budgetTestPrices+tc.file, tc.want)
		})
	}
}

func TestABudgetNeedsPrices(t *testing.T) {
	t.Parallel()
	_, err := Load([]byte("budgets: [{name: b, window: day, limit: 10, on_exhausted: block}]\n"))
	want := "budgets: budgets need prices: (spend is the priced cost of each request; without a price table no budget would ever move)"
	if err == nil || err.Error() != want {
		t.Errorf("Load = %v, want %q", err, want)
	}
}

// checkProblems checks that file is refused with a *ConfigError whose
// lines are want, in any order.
func checkProblems(t *testing.T, file string, want []string) {
	t.Helper()
	_, err := Load([]byte(file))
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("Load returned %v, want a *ConfigError", err)
	}
	got := strings.Split(err.Error(), "\n")
	if strings.Join(got, "\n") != strings.Join(sortedCopy(want, got), "\n") {
		t.Errorf("problems:\n%s\nwant (any order):\n%s", err, strings.Join(want, "\n"))
	}
}

// problemLines returns the problems of err, one line each; the test fails
// unless err is a *ConfigError.
func problemLines(t *testing.T, err error) []string {
	t.Helper()
	ce, ok := err.(*ConfigError)
	if !ok {
		t.Fatalf("err = %v, want a ConfigError", err)
	}
	var got []string
	for _, p := range ce.Problems {
		got = append(got, p.String())
	}
	return got
}

// sortedCopy returns want in got's order when both hold the same lines, so
// a comparison ignores order; otherwise want unchanged.
func sortedCopy(want, got []string) []string {
	if len(want) != len(got) {
		return want
	}
	left := map[string]int{}
	for _, w := range want {
		left[w]++
	}
	for _, g := range got {
		if left[g] == 0 {
			return want
		}
		left[g]--
	}
	return got
}

func TestBudgetConfigAccepted(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, budgetTestPrices+`
budgets:
- name: codex-fast-daily
  groups: [codex-fast]
  service_tiers: [priority]
  models: ["gpt-5.5*"]
  window: day
  limit: 200.125
  on_exhausted: filter
- name: everyone-monthly
  window: month
  limit: 1000
  on_exhausted: block
`)
	bs := p.Budgets()
	if len(bs) != 2 {
		t.Fatalf("got %d budgets, want 2", len(bs))
	}
	if bs[0].Limit != 200_125_000 || bs[0].Action != ActionFilter || bs[0].Window != WindowDay {
		t.Errorf("first budget compiled as %+v", bs[0])
	}
	if bs[1].Limit != 1000*MicrosPerUnit || bs[1].Action != ActionBlock || bs[1].Window != WindowMonth {
		t.Errorf("second budget compiled as %+v", bs[1])
	}
	if got := p.GroupBucket("codex-fast"); got != "codex-fast" {
		t.Errorf("a group named only by a budget has bucket %q, want its own", got)
	}
	if got := p.GroupBucket("stranger"); got != "other" {
		t.Errorf("an unnamed header value has bucket %q, want other", got)
	}
	if got := p.GroupBucket(""); got != "none" {
		t.Errorf("no group has bucket %q, want none", got)
	}
}

func TestAReloadMayNotChangeTheCurrencyUnderBudgets(t *testing.T) {
	t.Parallel()
	withBudget := budgetTestPrices + "budgets: [{name: b, window: day, limit: 10, on_exhausted: block}]\n"
	usd := mustLoad(t, withBudget)
	eur := mustLoad(t, strings.Replace(withBudget, "currency: USD", "currency: EUR", 1))
	eurNoBudgets := mustLoad(t, strings.Replace(budgetTestPrices, "currency: USD", "currency: EUR", 1))
	if err := checkSuccessor(usd, eur); err == nil || !strings.Contains(err.Error(), "prices.currency: changes from USD to EUR") {
		t.Errorf("USD to EUR with budgets: %v, want a refusal naming prices.currency", err)
	}
	if err := checkSuccessor(usd, eurNoBudgets); err != nil {
		t.Errorf("dropping the budgets with the currency change: %v, want it accepted", err)
	}
	if err := checkSuccessor(usd, mustLoad(t, strings.Replace(withBudget, "limit: 10", "limit: 20", 1))); err != nil {
		t.Errorf("changing a limit: %v, want it accepted", err)
	}
}

func TestPolicyEndpointShowsBudgetsInTheFilesTerms(t *testing.T) {
	t.Parallel()
	p := mustLoad(t, budgetTestPrices+`
budgets:
- name: fast
  groups: [codex-fast]
  service_tiers: [priority]
  models: ["gpt-5.5*"]
  window: week
  limit: 200.125
  on_exhausted: filter
`)
	raw, err := p.RedactedJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `"budgets":[{"name":"fast","groups":["codex-fast"],"service_tiers":["priority"],"models":["gpt-5.5*"],"window":"week","limit":200.125,"on_exhausted":"filter"}]`
	if !strings.Contains(string(raw), want) {
		t.Errorf("/policy\n%s\nlacks\n%s", raw, want)
	}
}

func TestWatcherRefusesACurrencyChangeUnderBudgetsAndReportsReloads(t *testing.T) {
	t.Parallel()
	withBudget := budgetTestPrices + "budgets: [{name: b, window: day, limit: 10, on_exhausted: block}]\n"
	dir := newKubeletDir(t, withBudget)
	first := mustLoad(t, withBudget)
	store := NewStore(first)
	var reloaded []*Policy
	w, err := NewWatcher(dir.path(), store, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)),
		WatcherOptions{Reloaded: func(p *Policy) { reloaded = append(reloaded, p) }})
	if err != nil {
		t.Fatal(err)
	}
	dir.update(strings.Replace(withBudget, "currency: USD", "currency: EUR", 1))
	if got := w.reload(); got != reloadInvalid || store.Load() != first {
		t.Fatalf("a currency change under budgets: %q, want it refused and the policy kept", got)
	}
	dir.update(strings.Replace(withBudget, "limit: 10", "limit: 20", 1))
	if got := w.reload(); got != reloadSuccess {
		t.Fatalf("a new limit: %q, want success", got)
	}
	if len(reloaded) != 1 || reloaded[0] != store.Load() || reloaded[0].Budgets()[0].Limit != 20*MicrosPerUnit {
		t.Errorf("Reloaded saw %d policies, want the one with the new limit", len(reloaded))
	}
}
