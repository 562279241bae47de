package main

import (
	"context"
	"net/http"
	"slices"
	"testing"
)

// TestNullHistogramHasTiergatesShape: the null server's histogram of time
// per message has the name, phases and bucket bounds that tiergate's own
// /metrics shows, so one report reads either server. Both are read off
// /metrics, as the load tool reads them.
func TestNullHistogramHasTiergatesShape(t *testing.T) {
	t.Parallel()
	_, tiergateAdmin := startTiergate(t)
	_, nullAdmin := startNull(t)
	ctx := context.Background()
	tiergate, err := scrapeHistograms(ctx, http.DefaultClient, tiergateAdmin, serverHistogram)
	if err != nil {
		t.Fatal(err)
	}
	null, err := scrapeHistograms(ctx, http.DefaultClient, metricsURL(nullAdmin), serverHistogram)
	if err != nil {
		t.Fatal(err)
	}
	bounds := func(bs []bucket) []float64 {
		var out []float64
		for _, b := range bs {
			out = append(out, b.upper)
		}
		return out
	}
	for _, phase := range []string{phaseHeaders, phaseBody, phaseResponseHeaders, phaseResponseBody} {
		tb, ok := tiergate[phase]
		if !ok {
			t.Errorf("tiergate's /metrics has no phase %q", phase)
			continue
		}
		nb, ok := null[phase]
		if !ok {
			t.Errorf("the null server's /metrics has no phase %q", phase)
			continue
		}
		if !slices.Equal(bounds(tb), bounds(nb)) {
			t.Errorf("phase %s: tiergate's bounds %v, the null server's %v", phase, bounds(tb), bounds(nb))
		}
		if !slices.Contains(bounds(nb), serverTarget) {
			t.Errorf("phase %s: no bucket bound at the target %v", phase, serverTarget)
		}
	}
	if _, ok := tiergate[phaseOther]; !ok {
		t.Errorf("tiergate's /metrics has no phase %q", phaseOther)
	}
}
