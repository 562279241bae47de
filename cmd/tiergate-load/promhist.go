package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// tiergate's histogram of server-side time per ext_proc message and the
// values of its phase label, as the README's metrics section names them:
// the load tool reads them off /metrics, as an operator would.
const (
	serverHistogram      = "tiergate_extproc_message_duration_seconds"
	phaseHeaders         = "request_headers"
	phaseBody            = "request_body"
	phaseResponseHeaders = "response_headers"
	phaseResponseBody    = "response_body"
	phaseOther           = "other"
)

// serverTarget is the target for server-side time per body message at p99
// (issue 3). The histogram has a bucket boundary exactly here, so the share
// of messages within it is exact where the interpolated p99 is not.
const serverTarget = 100e-6

// bucket is one cumulative histogram bucket: count observations <= upper.
type bucket struct {
	upper float64
	count float64
}

// scrapeHistograms reads name from a Prometheus text endpoint and returns
// its buckets by the value of the label phase.
func scrapeHistograms(ctx context.Context, client *http.Client, metricsURL, name string) (map[string][]bucket, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	families, err := scrapeFamilies(ctx, client, metricsURL)
	if err != nil {
		return nil, err
	}
	mf, ok := families[name]
	if !ok || mf.GetType() != dto.MetricType_HISTOGRAM {
		return nil, fmt.Errorf("GET %s: no histogram %s (is the target tiergate?)", metricsURL, name)
	}
	out := map[string][]bucket{}
	for _, m := range mf.GetMetric() {
		phase := ""
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "phase" {
				phase = lp.GetValue()
			}
		}
		out[phase] = histogramBuckets(m.GetHistogram())
	}
	return out, nil
}

// histogramBuckets returns h's buckets in order, ending with +Inf (which the
// text format carries but the parsed form may leave implicit in the count).
func histogramBuckets(h *dto.Histogram) []bucket {
	var bs []bucket
	for _, b := range h.GetBucket() {
		bs = append(bs, bucket{b.GetUpperBound(), float64(b.GetCumulativeCount())})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].upper < bs[j].upper })
	if len(bs) == 0 || !math.IsInf(bs[len(bs)-1].upper, 1) {
		bs = append(bs, bucket{math.Inf(1), float64(h.GetSampleCount())})
	}
	return bs
}

// deltaBuckets is after minus before, bucket by bucket: the observations
// made between two scrapes.
func deltaBuckets(before, after []bucket) []bucket {
	prev := map[float64]float64{}
	for _, b := range before {
		prev[b.upper] = b.count
	}
	out := make([]bucket, len(after))
	for i, b := range after {
		out[i] = bucket{b.upper, b.count - prev[b.upper]}
	}
	return out
}

// quantile estimates the q-quantile of cumulative buckets the way PromQL's
// histogram_quantile does: find the bucket the rank falls in and
// interpolate linearly inside it (the first bucket starts at 0); a rank in
// the +Inf bucket gives the highest finite bound. NaN when empty.
func quantile(q float64, bs []bucket) float64 {
	if len(bs) == 0 {
		return math.NaN()
	}
	total := bs[len(bs)-1].count
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	i := sort.Search(len(bs), func(i int) bool { return bs[i].count >= rank })
	if i >= len(bs) {
		i = len(bs) - 1
	}
	if math.IsInf(bs[i].upper, 1) {
		if i == 0 {
			return math.NaN()
		}
		return bs[i-1].upper
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = bs[i-1].upper, bs[i-1].count
	}
	inBucket := bs[i].count - below
	if inBucket <= 0 {
		return bs[i].upper
	}
	return lower + (bs[i].upper-lower)*(rank-below)/inBucket
}

// shareWithin is the fraction of observations <= upper, exact when upper is
// a bucket boundary; NaN when it is not one or nothing was observed.
func shareWithin(upper float64, bs []bucket) float64 {
	if len(bs) == 0 || bs[len(bs)-1].count <= 0 {
		return math.NaN()
	}
	for _, b := range bs {
		if b.upper == upper {
			return b.count / bs[len(bs)-1].count
		}
	}
	return math.NaN()
}

// metricsURL turns --admin (a base URL, or a /metrics URL) into the URL of
// the metrics page.
func metricsURL(admin string) string {
	admin = strings.TrimSuffix(admin, "/")
	if strings.HasSuffix(admin, "/metrics") {
		return admin
	}
	if !strings.Contains(admin, "://") {
		admin = "http://" + admin
	}
	return admin + "/metrics"
}

// scrapeFamilies reads every metric family from a Prometheus text endpoint.
func scrapeFamilies(ctx context.Context, client *http.Client, metricsURL string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return nil, err
	}
	// The classic text format: the parser below reads nothing else.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", metricsURL, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", metricsURL, err)
	}
	return families, nil
}
