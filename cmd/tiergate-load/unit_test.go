package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

func TestResponsesBodyIsValidJSONOfExactlyTheAskedSize(t *testing.T) {
	t.Parallel()
	// Every cut through the filler, escapes included, then the sizes benchmarked.
	sizes := []int{2 << 10, 64 << 10, 1 << 20}
	for n := minBodySize; n < minBodySize+3*len(fillerText); n++ {
		sizes = append(sizes, n)
	}
	for _, n := range sizes {
		b, err := responsesBody(n)
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		if len(b) != n || !json.Valid(b) {
			t.Fatalf("size %d: got %d bytes, valid JSON %v", n, len(b), json.Valid(b))
		}
		var req struct {
			ServiceTier string `json:"service_tier"`
			Model       string `json:"model"`
		}
		if err := json.Unmarshal(b, &req); err != nil || req.ServiceTier != "priority" || req.Model == "" {
			t.Fatalf("size %d: %+v %v; want a model and priority", n, req, err)
		}
		if bytes.Count(b, []byte("service_tier")) != 1 {
			t.Fatalf("size %d: service_tier must occur once, or a filtered body would look unfiltered", n)
		}
	}
	if _, err := responsesBody(minBodySize - 1); err == nil {
		t.Error("a body below the smallest Responses body was built")
	}
}

func TestRequestHeadersAreWhatEnvoySends(t *testing.T) {
	t.Parallel()
	m := newRequestMessages(3, "api.openai.com", []byte(`{}`))
	m.setRequestID(42)
	got := map[string]string{}
	for _, h := range m.headers.GetRequestHeaders().GetHeaders().GetHeaders() {
		if h.Value != "" {
			t.Errorf("%s: value set; Envoy sends raw_value only", h.Key)
		}
		got[h.Key] = string(h.RawValue)
	}
	for k, v := range map[string]string{
		":method": "POST", ":path": "/v1/responses", ":authority": "api.openai.com",
		"content-type": "application/json", "content-length": "2",
		"x-request-id": "00000003-0000-4000-8000-00000000002a",
	} {
		if got[k] != v {
			t.Errorf("%s = %q; want %q", k, got[k], v)
		}
	}
	if got["authorization"] == "" {
		t.Error("no authorization header")
	}
	if m.headers.GetRequestHeaders().GetEndOfStream() || !m.body.GetRequestBody().GetEndOfStream() {
		t.Error("want the body to follow the headers, and to be whole (BUFFERED)")
	}
}

func TestBodyAnswerChecks(t *testing.T) {
	t.Parallel()
	body := func(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: &extprocv3.BodyResponse{Response: c}}}
	}
	mutation := func(b, contentLength string) *extprocv3.CommonResponse {
		c := &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
			Mutation: &extprocv3.BodyMutation_Body{Body: []byte(b)}}}
		if contentLength != "" {
			c.HeaderMutation = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{
				Header: &corev3.HeaderValue{Key: "content-length", RawValue: []byte(contentLength)}}}}
		}
		return c
	}
	withHeader := func(c *extprocv3.CommonResponse, h *corev3.HeaderValue) *extprocv3.CommonResponse {
		c.HeaderMutation.SetHeaders = append(c.HeaderMutation.SetHeaders, &corev3.HeaderValueOption{Header: h})
		return c
	}
	filtered := `{"model":"gpt-5.5"}`
	for _, tc := range []struct {
		name   string
		expect expectation
		answer *extprocv3.ProcessingResponse
		ok     bool
	}{
		{"a filtered body with its new length passes", expectFilter, body(mutation(filtered, "19")), true},
		{"an unchanged body passes when nothing should change", expectContinue, body(&extprocv3.CommonResponse{}), true},
		{"an unchanged body fails when it should be filtered", expectFilter, body(&extprocv3.CommonResponse{}), false},
		{"a rewrite that keeps service_tier fails", expectFilter, body(mutation(`{"service_tier":"priority"}`, "27")), false},
		{"a rewrite with a stale content-length fails", expectFilter, body(mutation(filtered, "2048")), false},
		{"a rewrite without content-length fails", expectFilter, body(mutation(filtered, "")), false},
		{"a rewrite fails when nothing should change", expectContinue, body(mutation(filtered, "19")), false},
		{"an echoed body passes when any rewrite is expected", expectRewrite, body(mutation(`{"service_tier":"priority"}`, "27")), true},
		{"an echo with a stale content-length fails", expectRewrite, body(mutation(filtered, "27")), false},
		{"an unchanged body fails when a rewrite is expected", expectRewrite, body(&extprocv3.CommonResponse{}), false},
		{"a header with both value and raw_value fails", expectFilter, body(withHeader(mutation(filtered, "19"),
			&corev3.HeaderValue{Key: "x-tier", Value: "a", RawValue: []byte("a")})), false},
		{"a header named in upper case fails", expectFilter, body(withHeader(mutation(filtered, "19"),
			&corev3.HeaderValue{Key: "X-Tier", RawValue: []byte("a")})), false},
		{"a header mutation alone is checked when nothing should change", expectContinue, body(&extprocv3.CommonResponse{
			HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{{
				Header: &corev3.HeaderValue{Key: "x-tier", Value: "a", RawValue: []byte("a")}}}}}), false},
		{"a lower-case raw_value header passes", expectFilter, body(withHeader(mutation(filtered, "19"),
			&corev3.HeaderValue{Key: "x-tier", RawValue: []byte("a")})), true},
		{"CONTINUE_AND_REPLACE fails", expectContinue, body(&extprocv3.CommonResponse{Status: extprocv3.CommonResponse_CONTINUE_AND_REPLACE}), false},
		{"an immediate response fails", expectFilter, &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
			ImmediateResponse: &extprocv3.ImmediateResponse{}}}, false},
		{"a headers answer to the body fails", expectContinue, nullRequestHeaders, false},
		{"an empty answer fails", expectContinue, &extprocv3.ProcessingResponse{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.expect.checkBodyAnswer(tc.answer)
			if (err == nil) != tc.ok {
				t.Errorf("check: %v; want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestHeadersAnswerChecks(t *testing.T) {
	t.Parallel()
	withOverride := &extprocv3.ProcessingResponse{
		Response:     nullRequestHeaders.Response,
		ModeOverride: &filterv3.ProcessingMode{RequestBodyMode: filterv3.ProcessingMode_NONE},
	}
	for _, tc := range []struct {
		name   string
		answer *extprocv3.ProcessingResponse
		ok     bool
	}{
		{"CONTINUE passes", nullRequestHeaders, true},
		{"a body answer to the headers fails", nullRequestBody, false},
		{"a mode_override turning the body off fails", withOverride, false},
		{"an immediate response fails", &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
			ImmediateResponse: &extprocv3.ImmediateResponse{}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkHeadersAnswer(tc.answer); (err == nil) != tc.ok {
				t.Errorf("check: %v; want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestQuantileInterpolatesAsHistogramQuantileDoes(t *testing.T) {
	t.Parallel()
	inf := math.Inf(1)
	// 100 observations: 50 <= 10µs, 40 in (10, 50], 9 in (50, 100], 1 above 1ms.
	bs := []bucket{{10e-6, 50}, {50e-6, 90}, {100e-6, 99}, {1e-3, 99}, {inf, 100}}
	for _, tc := range []struct {
		name string
		q    float64
		want float64
	}{
		{"the median is the top of the first bucket", 0.5, 10e-6},
		{"p25 interpolates inside the first bucket from zero", 0.25, 5e-6},
		{"p70 interpolates inside the second bucket", 0.7, 30e-6},
		{"p99 is the top of the bucket it falls in", 0.99, 100e-6},
		{"a rank in +Inf gives the highest finite bound", 0.999, 1e-3},
	} {
		if got := quantile(tc.q, bs); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: quantile(%v) = %v; want %v", tc.name, tc.q, got, tc.want)
		}
	}
	if got := shareWithin(100e-6, bs); got != 0.99 {
		t.Errorf("share within 100µs = %v; want 0.99", got)
	}
	before := []bucket{{10e-6, 10}, {50e-6, 10}, {100e-6, 10}, {1e-3, 10}, {inf, 10}}
	d := deltaBuckets(before, bs)
	if d[0].count != 40 || d[4].count != 90 {
		t.Errorf("delta %+v; want after minus before", d)
	}
	if !math.IsNaN(quantile(0.99, []bucket{{10e-6, 0}, {inf, 0}})) {
		t.Error("the quantile of nothing should be NaN")
	}
}

func TestParseVmRSS(t *testing.T) {
	t.Parallel()
	status := []byte("Name:\ttiergate\nVmPeak:\t 1000 kB\nVmRSS:\t   20480 kB\nThreads:\t7\n")
	got, err := parseVmRSS(status)
	if err != nil || got != 20<<20 {
		t.Errorf("parseVmRSS = %d, %v; want 20 MiB", got, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tkthreadd\n")); err == nil {
		t.Error("a status without VmRSS parsed")
	}
}

func TestParseStatCPU(t *testing.T) {
	t.Parallel()
	// A command name with a space and a parenthesis; utime 250 and stime 50 ticks.
	stat := []byte("4242 (tier gate) (x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 0 0")
	got, err := parseStatCPU(stat)
	if err != nil || got != 3*time.Second {
		t.Errorf("parseStatCPU = %v, %v; want 3s", got, err)
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1")); err == nil {
		t.Error("a truncated stat parsed")
	}
}

func TestParseProcStat(t *testing.T) {
	t.Parallel()
	stat := []byte("cpu  100 10 50 9000 5 3 2 40 0 0\ncpu0 50 5 25 4500 2 1 1 20 0 0\n")
	got, err := parseProcStat(stat)
	if err != nil || got.busy != 2050*time.Millisecond || got.steal != 400*time.Millisecond {
		t.Errorf("parseProcStat = %+v, %v; want busy 2.05s, steal 0.4s", got, err)
	}
	if _, err := parseProcStat([]byte("intr 1 2 3\n")); err == nil {
		t.Error("a stat without the cpu line parsed")
	}
}

func TestMetricsURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://127.0.0.1:9464":         "http://127.0.0.1:9464/metrics",
		"http://127.0.0.1:9464/":        "http://127.0.0.1:9464/metrics",
		"http://127.0.0.1:9464/metrics": "http://127.0.0.1:9464/metrics",
		"127.0.0.1:9464":                "http://127.0.0.1:9464/metrics",
	} {
		if got := metricsURL(in); got != want {
			t.Errorf("metricsURL(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestMeasureCPU: CPU per unit of work and cores over the window between
// the snapshots, the rest of the machine as what neither process used.
func TestMeasureCPU(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	before := cpuSnapshot{at: t0, self: time.Second, target: 2 * time.Second, machine: machineCPU{busy: 10 * time.Second, steal: 0}}
	after := cpuSnapshot{at: t0.Add(2 * time.Second), self: 2 * time.Second, target: 4 * time.Second,
		machine: machineCPU{busy: 14 * time.Second, steal: 200 * time.Millisecond}}
	u, ok := measureCPU(42, before, after, 1000)
	if !ok {
		t.Fatal("no figures")
	}
	// self 1 s and target 2 s over 2 s and 1,000 units; busy 4 s in all.
	if u.selfPerUnit != 1000 || u.selfCores != 0.5 || *u.targetPerUnit != 2000 || *u.targetCores != 1 ||
		u.otherCores != 0.5 || u.stealCores != 0.1 {
		t.Errorf("measureCPU = %+v (target %v/%v)", u, *u.targetPerUnit, *u.targetCores)
	}
	// Without --pid the target is part of the rest of the machine.
	if u, _ := measureCPU(0, before, after, 1000); u.targetPerUnit != nil || u.otherCores != 1.5 {
		t.Errorf("without a pid: %+v", u)
	}
	for name, tc := range map[string]struct {
		after cpuSnapshot
		units float64
	}{"no work": {after, 0}, "no time": {before, 1000}} {
		if _, ok := measureCPU(42, before, tc.after, tc.units); ok {
			t.Errorf("%s: figures reported", name)
		}
	}
}

// TestMergeErrorsAndLatency: errors add up by kind with the first example
// of each; latencies of every worker are summarized together.
func TestMergeErrorsAndLatency(t *testing.T) {
	t.Parallel()
	var a, b workerResult
	a.fail("timeout", errors.New("first timeout"))
	b.fail("timeout", errors.New("second timeout"))
	b.fail("reset", errors.New("reset"))
	for i := 1; i <= 100; i++ {
		w := &a
		if i%2 == 0 {
			w = &b
		}
		w.latencies = append(w.latencies, time.Duration(i)*time.Microsecond)
	}
	total, kinds, examples := mergeErrors([]workerResult{a, b})
	if total != 3 || kinds["timeout"] != 2 || kinds["reset"] != 1 || examples["timeout"] != "first timeout" {
		t.Errorf("mergeErrors = %d %v %v", total, kinds, examples)
	}
	n, l := summarizeLatency([]workerResult{a, b})
	if n != 100 || l.P50 != 50 || l.P90 != 90 || l.P99 != 99 || l.Max != 100 {
		t.Errorf("summarizeLatency = %d %+v", n, l)
	}
	if n, l := summarizeLatency([]workerResult{{}}); n != 0 || l != nil {
		t.Errorf("no latencies: %d %+v", n, l)
	}
}
