package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// report is one round's figures; with --json it is printed as is.
type report struct {
	Target   string `json:"target"`
	Expect   string `json:"expect"`
	Streams  int    `json:"streams"`
	Conns    int    `json:"conns"`
	BodySize int    `json:"body_size"`
	// WarmupSeconds of load ran before the measured time and are not counted.
	WarmupSeconds float64 `json:"warmup_seconds"`
	// Seconds is the measured time: from the end of the warm-up to the end of
	// the last counted transaction.
	Seconds      float64 `json:"seconds"`
	Transactions int     `json:"transactions"`
	TxPerSecond  float64 `json:"tx_per_second"`
	Errors       int     `json:"errors"`
	// ErrorKinds counts errors by kind; ErrorExamples holds one full message
	// of each.
	ErrorKinds    map[string]int    `json:"error_kinds,omitempty"`
	ErrorExamples map[string]string `json:"error_examples,omitempty"`
	// LatencyMicros is the client's time per transaction, stream open to
	// stream end.
	LatencyMicros *latency `json:"latency_us,omitempty"`
	// Server is from tiergate's own histogram (--admin).
	Server *serverFigures `json:"server,omitempty"`
	// RSS is the server's resident memory (--pid).
	RSS *rssFigures `json:"rss,omitempty"`
	// CPU is CPU time per transaction over the measured time: the server's
	// (--pid) and the load tool's own, which shares the machine with it.
	CPU *cpuFigures `json:"cpu,omitempty"`
}

type cpuFigures struct {
	ServerMicrosPerTx *float64 `json:"server_us_per_tx,omitempty"`
	ServerCores       *float64 `json:"server_cores,omitempty"`
	LoadMicrosPerTx   float64  `json:"load_us_per_tx"`
	LoadCores         float64  `json:"load_cores"`
	// OtherCores is what the rest of the machine kept busy meanwhile (all
	// busy CPU less the server's and the load tool's; without --pid the
	// server is in it), and StealCores what the hypervisor took: the noise
	// a round ran in.
	OtherCores float64 `json:"other_cores"`
	StealCores float64 `json:"steal_cores"`
}

type latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// serverFigures come from the deltas of tiergate_extproc_message_duration_seconds
// over the measured time. Quantiles are interpolated inside buckets, as
// PromQL's histogram_quantile does (so they are estimates, coarse between
// bucket bounds); the share within 100 µs is exact (a bucket bound).
type serverFigures struct {
	BodyMessages          float64      `json:"request_body_messages"`
	BodyP50Micros         *float64     `json:"request_body_p50_us,omitempty"`
	BodyP99Micros         *float64     `json:"request_body_p99_us,omitempty"`
	BodyShareWithin100us  *float64     `json:"request_body_share_within_100us,omitempty"`
	HeadersP99Micros      *float64     `json:"request_headers_p99_us,omitempty"`
	HeadersMessages       float64      `json:"request_headers_messages"`
	BodyBucketsCumulative []bucketJSON `json:"request_body_buckets,omitempty"`
}

type bucketJSON struct {
	LE    string  `json:"le"`
	Count float64 `json:"count"`
}

type rssFigures struct {
	PID       int   `json:"pid"`
	IdleBytes int64 `json:"idle_bytes"`
	PeakBytes int64 `json:"peak_bytes"`
}

func newReport(cfg *extprocConfig) *report {
	return &report{
		Target: cfg.target, Expect: string(cfg.expect), Streams: cfg.streams, Conns: cfg.conns,
		BodySize: cfg.bodySize, WarmupSeconds: cfg.warmup.Seconds(),
	}
}

func (r *report) setIdleRSS(pid int, idle int64) {
	r.RSS = &rssFigures{PID: pid, IdleBytes: idle}
}

func (r *report) setPeakRSS(peak int64) { r.RSS.PeakBytes = peak }

// setResults merges the workers' results. The measured time runs from
// from to the end of the last counted transaction (falling back to the
// nominal duration when nothing completed).
func (r *report) setResults(results []workerResult, from time.Time, nominal time.Duration) {
	r.Errors, r.ErrorKinds, r.ErrorExamples = mergeErrors(results)
	var last time.Time
	for _, w := range results {
		if w.lastEnd.After(last) {
			last = w.lastEnd
		}
	}
	elapsed := nominal
	if !last.IsZero() && last.After(from) {
		elapsed = last.Sub(from)
	}
	r.Seconds = elapsed.Seconds()
	r.Transactions, r.LatencyMicros = summarizeLatency(results)
	r.TxPerSecond = float64(r.Transactions) / elapsed.Seconds()
}

// mergeErrors adds up the workers' errors by kind, keeping one example
// message of each (both reports share it).
func mergeErrors(results []workerResult) (total int, kinds map[string]int, examples map[string]string) {
	for _, w := range results {
		for k, n := range w.errors {
			if kinds == nil {
				kinds, examples = map[string]int{}, map[string]string{}
			}
			kinds[k] += n
			total += n
			if _, ok := examples[k]; !ok {
				examples[k] = w.examples[k]
			}
		}
	}
	return total, kinds, examples
}

// summarizeLatency counts the workers' measured latencies and summarizes
// them (nil when there are none).
func summarizeLatency(results []workerResult) (int, *latency) {
	var all []time.Duration
	for _, w := range results {
		all = append(all, w.latencies...)
	}
	if len(all) == 0 {
		return 0, nil
	}
	slices.Sort(all)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return len(all), &latency{
		P50: us(nearestRank(all, 0.50)), P90: us(nearestRank(all, 0.90)),
		P99: us(nearestRank(all, 0.99)), Max: us(all[len(all)-1]),
	}
}

// nearestRank is the q-quantile of sorted values: the smallest value with
// at least q of them at or below it.
func nearestRank(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func (r *report) setServer(before, after map[string][]bucket) {
	body := deltaBuckets(before[phaseBody], after[phaseBody])
	headers := deltaBuckets(before[phaseHeaders], after[phaseHeaders])
	s := &serverFigures{}
	micros := func(v float64) *float64 { return finite(v * 1e6) }
	if len(body) > 0 {
		s.BodyMessages = body[len(body)-1].count
		s.BodyP50Micros = micros(quantile(0.50, body))
		s.BodyP99Micros = micros(quantile(0.99, body))
		s.BodyShareWithin100us = finite(shareWithin(serverTarget, body))
		for _, b := range body {
			s.BodyBucketsCumulative = append(s.BodyBucketsCumulative, bucketJSON{formatLE(b.upper), b.count})
		}
	}
	if len(headers) > 0 {
		s.HeadersMessages = headers[len(headers)-1].count
		s.HeadersP99Micros = micros(quantile(0.99, headers))
	}
	r.Server = s
}

// setCPU sets CPU time per transaction and cores kept busy, from the
// snapshots at the edges of the measured time (after setResults).
func (r *report) setCPU(pid int, before, after *snapshot) {
	u, ok := measureCPU(pid, before.cpu, after.cpu, float64(r.Transactions))
	if !ok {
		return
	}
	r.CPU = &cpuFigures{
		ServerMicrosPerTx: u.targetPerUnit, ServerCores: u.targetCores,
		LoadMicrosPerTx: u.selfPerUnit, LoadCores: u.selfCores,
		OtherCores: u.otherCores, StealCores: u.stealCores,
	}
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func formatLE(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return fmt.Sprint(v)
}

func (r *report) writeText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ext_proc %s: %d streams over %d connections, %d-byte body, %.2fs measured after %.1fs warm-up, expect %s\n",
		r.Target, r.Streams, r.Conns, r.BodySize, r.Seconds, r.WarmupSeconds, r.Expect)
	fmt.Fprintf(&b, "transactions  %d (%.0f/s)\n", r.Transactions, r.TxPerSecond)
	fmt.Fprintf(&b, "errors        %d\n", r.Errors)
	writeErrorKinds(&b, r.ErrorKinds, r.ErrorExamples)
	if l := r.LatencyMicros; l != nil {
		fmt.Fprintf(&b, "latency       p50 %s  p90 %s  p99 %s  max %s (client, per transaction)\n",
			fmtMicros(&l.P50), fmtMicros(&l.P90), fmtMicros(&l.P99), fmtMicros(&l.Max))
	}
	if s := r.Server; s != nil {
		share := "n/a"
		if s.BodyShareWithin100us != nil {
			share = fmt.Sprintf("%.2f%%", *s.BodyShareWithin100us*100)
		}
		fmt.Fprintf(&b, "server        request_body p50 %s  p99 %s  within 100µs %s (%.0f messages); request_headers p99 %s\n",
			fmtMicros(s.BodyP50Micros), fmtMicros(s.BodyP99Micros), share, s.BodyMessages, fmtMicros(s.HeadersP99Micros))
	}
	if c := r.CPU; c != nil {
		server := "n/a"
		if c.ServerMicrosPerTx != nil {
			server = fmt.Sprintf("%.1fµs/tx (%.2f cores)", *c.ServerMicrosPerTx, *c.ServerCores)
		}
		fmt.Fprintf(&b, "cpu           server %s  load tool %.1fµs/tx (%.2f cores)  rest of the machine %.2f cores (steal %.2f)\n",
			server, c.LoadMicrosPerTx, c.LoadCores, c.OtherCores, c.StealCores)
	}
	if m := r.RSS; m != nil {
		fmt.Fprintf(&b, "rss           idle %.1f MiB  peak %.1f MiB (pid %d)\n",
			float64(m.IdleBytes)/(1<<20), float64(m.PeakBytes)/(1<<20), m.PID)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func fmtMicros(v *float64) string {
	switch {
	case v == nil:
		return "n/a"
	case *v >= 1000:
		return fmt.Sprintf("%.2fms", *v/1000)
	}
	return fmt.Sprintf("%.1fµs", *v)
}

// writeErrorKinds lists error counts by kind, each with one example.
func writeErrorKinds(b *strings.Builder, counts map[string]int, examples map[string]string) {
	kinds := make([]string, 0, len(counts))
	for k := range counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(b, "  %6d  %s (e.g. %s)\n", counts[k], k, examples[k])
	}
}
