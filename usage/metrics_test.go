package usage

import (
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsAdd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		adds  []Usage
		want  string // exposition text of tiergate_tokens_total, without HELP and TYPE
		count int    // series
	}{
		{
			name: "every known count is added under its type",
			adds: []Usage{known(100, 60, 20, 5, "", "", "", "")},
			want: `
tiergate_tokens_total{endpoint="responses",group="team-a",model="gpt-5.5",service_tier="priority",type="cached_input"} 60
tiergate_tokens_total{endpoint="responses",group="team-a",model="gpt-5.5",service_tier="priority",type="input"} 100
tiergate_tokens_total{endpoint="responses",group="team-a",model="gpt-5.5",service_tier="priority",type="output"} 20
tiergate_tokens_total{endpoint="responses",group="team-a",model="gpt-5.5",service_tier="priority",type="reasoning"} 5
`,
			count: 4,
		},
		{
			name: "unknown counts add nothing and make no series, while a known zero does",
			adds: []Usage{known(10, 0, -1, -1, "", "", "", "")},
			want: `
tiergate_tokens_total{endpoint="responses",group="team-a",model="gpt-5.5",service_tier="priority",type="cached_input"} 0
tiergate_tokens_total{endpoint="responses",group="team-a",model="gpt-5.5",service_tier="priority",type="input"} 10
`,
			count: 2,
		},
		{
			name: "counts add up across responses",
			adds: []Usage{known(10, -1, 1, -1, "", "", "", ""), known(5, -1, 2, -1, "", "", "", "")},
			want: `
tiergate_tokens_total{endpoint="responses",group="team-a",model="gpt-5.5",service_tier="priority",type="input"} 15
tiergate_tokens_total{endpoint="responses",group="team-a",model="gpt-5.5",service_tier="priority",type="output"} 3
`,
			count: 2,
		},
		{
			name: "a type unknown at first gets its series when a later response reports it",
			adds: []Usage{known(10, -1, -1, -1, "", "", "", ""), known(5, 3, -1, -1, "", "", "", "")},
			want: `
tiergate_tokens_total{endpoint="responses",group="team-a",model="gpt-5.5",service_tier="priority",type="cached_input"} 3
tiergate_tokens_total{endpoint="responses",group="team-a",model="gpt-5.5",service_tier="priority",type="input"} 15
`,
			count: 2,
		},
		{
			name:  "a usage with nothing known makes no series at all",
			adds:  []Usage{Unknown()},
			count: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			m, err := NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range tt.adds {
				m.Add("responses", "gpt-5.5", "priority", "team-a", u)
			}
			if n := testutil.CollectAndCount(m.tokens, TokensMetric); n != tt.count {
				t.Fatalf("%d series, want %d", n, tt.count)
			}
			if tt.count == 0 {
				return
			}
			want := "# HELP " + TokensMetric + " " + helpOf(t, reg) + "\n# TYPE " + TokensMetric + " counter" + tt.want
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), TokensMetric); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestMetricsAddConcurrently: responses counted at once from many goroutines,
// into series resolved for the first time as they go, lose nothing (and,
// under -race, share the series cache safely).
func TestMetricsAddConcurrently(t *testing.T) {
	t.Parallel()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 8, 200
	groups := []string{"team-a", "team-b", "team-c"}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				u := known(2, -1, 1, -1, "", "", "", "")
				if (g+i)%2 == 0 {
					u.CachedInputTokens = 1 // half the responses report cached input
				}
				m.Add("responses", "gpt-5.5", "priority", groups[i%len(groups)], u)
			}
		})
	}
	wg.Wait()
	sum := func(typ string) float64 {
		total := 0.0
		for _, g := range groups {
			total += testutil.ToFloat64(m.tokens.WithLabelValues("responses", "gpt-5.5", "priority", g, typ))
		}
		return total
	}
	for _, tc := range []struct {
		typ  string
		want float64
	}{
		{TokenInput, 2 * goroutines * each},
		{TokenOutput, goroutines * each},
		{TokenCachedInput, goroutines * each / 2},
	} {
		if got := sum(tc.typ); got != tc.want {
			t.Errorf("%s: %v tokens counted, want %v", tc.typ, got, tc.want)
		}
	}
}

// BenchmarkMetricsAdd is one response's counting: four known counts into
// series resolved before.
func BenchmarkMetricsAdd(b *testing.B) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	u := known(1200, 800, 300, 100, "", "", "", "")
	b.ReportAllocs()
	for b.Loop() {
		m.Add("responses", "gpt-5.5", "priority", "team-a", u)
	}
}

// helpOf returns the counter's help text, so the comparisons above stay about
// the samples; TestMetricsHelp pins the text itself.
func helpOf(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == TokensMetric {
			return mf.GetHelp()
		}
	}
	t.Fatalf("%s not registered", TokensMetric)
	return ""
}

func TestMetricsHelp(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Add("messages", "other", "default", "", known(1, -1, -1, -1, "", "", "", ""))
	help := helpOf(t, reg)
	for _, word := range []string{"tokens", "input", "cached_input", "output", "reasoning"} {
		if !strings.Contains(help, word) {
			t.Errorf("help %q does not mention %q", help, word)
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestNewMetrics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		reg     func() prometheus.Registerer
		wantErr bool
	}{
		{"a second registration on one registry reuses the counter", func() prometheus.Registerer {
			reg := prometheus.NewRegistry()
			if _, err := NewMetrics(reg); err != nil {
				t.Fatal(err)
			}
			return reg
		}, false},
		{"a different collector under the same name is refused", func() prometheus.Registerer {
			reg := prometheus.NewRegistry()
			reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: TokensMetric, Help: "other"}))
			return reg
		}, true},
		{"a nil registerer counts without exporting", func() prometheus.Registerer { return nil }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := NewMetrics(tt.reg())
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewMetrics error = %v, want error %v", err, tt.wantErr)
			}
			if err == nil {
				m.Add("responses", "other", "default", "", known(3, -1, -1, -1, "", "", "", ""))
				if got := testutil.ToFloat64(m.tokens.WithLabelValues("responses", "other", "default", "", TokenInput)); got < 3 {
					t.Fatalf("input = %v, want at least 3", got)
				}
			}
		})
	}
}

func TestMetricsNilIsANoOp(t *testing.T) {
	t.Parallel()
	var m *Metrics
	m.Add("responses", "m", "t", "g", known(1, 1, 1, 1, "", "", "", ""))
}

func TestCostMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.StartUnpriced("realtime", "no_usage", "audio")
	m.AddCost("responses", "gpt-5.5", "priority", "team-a", 5_892_500_000)
	m.AddCost("responses", "gpt-5.5", "priority", "team-a", 2_357_000_000) // the cached series
	m.AddCost("responses", "gpt-5.5", "default", "team-a", 1)
	m.Unpriced("realtime", "audio")
	want := `
# HELP tiergate_cost_total ` + help(t, reg, CostMetric) + `
# TYPE tiergate_cost_total counter
tiergate_cost_total{endpoint="responses",group="team-a",model="gpt-5.5",price_tier="default"} 1e-12
tiergate_cost_total{endpoint="responses",group="team-a",model="gpt-5.5",price_tier="priority"} 0.0082495
# HELP tiergate_cost_unpriced_total ` + help(t, reg, CostUnpricedMetric) + `
# TYPE tiergate_cost_unpriced_total counter
tiergate_cost_unpriced_total{endpoint="realtime",reason="audio"} 1
tiergate_cost_unpriced_total{endpoint="realtime",reason="no_usage"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), CostMetric, CostUnpricedMetric); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	var none *Metrics // a nil *Metrics counts nothing and does not panic
	none.AddCost("responses", "m", "default", "g", 1)
	none.Unpriced("responses", "no_price")
	none.StartUnpriced("responses", "no_price")
}

func help(t *testing.T, reg *prometheus.Registry, name string) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetHelp()
		}
	}
	t.Fatalf("%s not registered", name)
	return ""
}
