package policy

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The example price tables: docs/prices.yaml and the example overlay's
// policy, which carries a copy.
const (
	docsPrices    = "../docs/prices.yaml"
	overlayPolicy = "../k8s/overlays/example/policy/tiergate.yaml"
)

// sourceLine is the comment every price entry carries above it.
var sourceLine = regexp.MustCompile(`^\s*# source: https?://\S+, read \d{4}-\d{2}-\d{2}\b`)

// TestExamplePricesNameTheirSources: every entry of the example price
// tables says which page its prices were read from, and when; the tables
// load, are headed as examples, and the overlay's is the docs' one.
func TestExamplePricesNameTheirSources(t *testing.T) {
	t.Parallel()
	docs := readExample(t, docsPrices)
	if first, _, _ := strings.Cut(docs, "\n"); !strings.Contains(first, "example: verify before use") {
		t.Errorf("%s starts %q; want the heading \"example: verify before use\"", docsPrices, first)
	}
	overlay := readExample(t, overlayPolicy)
	before, after, ok := strings.Cut(overlay, "\nprices:\n")
	if !ok {
		t.Fatalf("%s has no prices section", overlayPolicy)
	}
	if lines := strings.Split(before, "\n"); !strings.Contains(strings.Join(lines[max(len(lines)-3, 0):], "\n"), "example: verify before use") {
		t.Errorf("%s: the prices section is not headed \"example: verify before use\"", overlayPolicy)
	}
	if _, docsSection, _ := strings.Cut(docs, "\nprices:\n"); docsSection != after {
		t.Errorf("the overlay's prices differ from %s; copy them again", docsPrices)
	}
	for _, f := range []struct{ name, text string }{{docsPrices, docs}, {overlayPolicy, overlay}} {
		p, err := Load([]byte(f.text))
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		entries := 0
		lines := strings.Split(f.text, "\n")
		for i, l := range lines {
			if !strings.HasPrefix(strings.TrimSpace(l), "- model:") {
				continue
			}
			entries++
			j := i - 1
			for j >= 0 && sourceLine.MatchString(lines[j]) {
				j--
			}
			if j == i-1 {
				t.Errorf("%s:%d: %q has no \"# source: <url>, read <date>\" comment above it", f.name, i+1, strings.TrimSpace(l))
			}
		}
		if n := len(p.Config().GetPrices().GetModels()); entries != n || n == 0 {
			t.Errorf("%s: %d entries seen, %d loaded", f.name, entries, n)
		}
	}
}

func readExample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
