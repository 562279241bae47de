package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tiergate/tiergate/internal/syncbuf"
)

func TestRoundAgainstTheNullServerCompletesWithoutErrors(t *testing.T) {
	t.Parallel()
	addr, admin := startNull(t)
	rep, err := runRound(t, shortRound(addr, "--expect", "continue", "--pid", strconv.Itoa(os.Getpid()), "--admin", admin))
	if err != nil {
		t.Fatalf("run: %v (errors %v)", err, rep.ErrorExamples)
	}
	if rep.Transactions == 0 || rep.Errors != 0 {
		t.Fatalf("transactions %d, errors %d %v; want some and none", rep.Transactions, rep.Errors, rep.ErrorExamples)
	}
	if rep.TxPerSecond <= 0 || rep.LatencyMicros == nil || rep.LatencyMicros.P99 < rep.LatencyMicros.P50 {
		t.Errorf("rate %v, latency %+v; want a rate and ordered percentiles", rep.TxPerSecond, rep.LatencyMicros)
	}
	if rep.RSS == nil || rep.RSS.IdleBytes <= 0 || rep.RSS.PeakBytes <= 0 {
		t.Errorf("rss %+v; want idle and peak of this process", rep.RSS)
	}
	if c := rep.CPU; c == nil || c.ServerMicrosPerTx == nil || *c.ServerMicrosPerTx <= 0 || c.LoadMicrosPerTx <= 0 {
		t.Errorf("cpu %+v; want CPU time per transaction (the server is this process)", c)
	}
	// The null server times its messages with tiergate's histogram.
	if s := rep.Server; s == nil || s.BodyMessages == 0 || s.BodyP99Micros == nil {
		t.Errorf("server figures %+v; want the null server's request_body histogram", s)
	}
}

func TestRoundAgainstTheEchoingNullServerSeesEveryBodyRewritten(t *testing.T) {
	t.Parallel()
	addr, _ := startNull(t, "--echo")
	rep, err := runRound(t, shortRound(addr, "--expect", "rewrite", "--body-size", "65536"))
	if err != nil || rep.Transactions == 0 || rep.Errors != 0 {
		t.Fatalf("run: %v; transactions %d, errors %d %v; want some and none", err, rep.Transactions, rep.Errors, rep.ErrorExamples)
	}
}

func TestRoundAgainstTiergateSeesEveryBodyFilteredAndReadsItsHistogram(t *testing.T) {
	t.Parallel()
	addr, admin := startTiergate(t)
	// A longer round than shortRound's: the scrapes at its edges take their
	// own time under load, which must stay small beside the window.
	rep, err := runRound(t, shortRound(addr, "--admin", admin, "--duration", "1s"))
	if err != nil {
		t.Fatalf("run: %v (errors %v)", err, rep.ErrorExamples)
	}
	if rep.Transactions == 0 || rep.Errors != 0 {
		t.Fatalf("transactions %d, errors %d %v; want some and none", rep.Transactions, rep.Errors, rep.ErrorExamples)
	}
	s := rep.Server
	if s == nil || s.BodyMessages == 0 || s.BodyP99Micros == nil || s.BodyShareWithin100us == nil {
		t.Fatalf("server figures %+v; want the request_body histogram over the round", s)
	}
	// The histogram is read at the window's edges while the load runs, so it
	// sees about as many body messages as the client counted.
	if s.BodyMessages < float64(rep.Transactions)/2 || s.BodyMessages > float64(rep.Transactions)*2 {
		t.Errorf("server saw %v body messages for %d transactions", s.BodyMessages, rep.Transactions)
	}
}

func TestWrongAnswerKindsAreCountedAsErrors(t *testing.T) {
	t.Parallel()
	nullAddr, _ := startNull(t)
	tiergateAddr, _ := startTiergate(t)
	for _, tc := range []struct {
		name, target, expect, kind string
	}{
		{"an unchanged body is an error when the body should be filtered", nullAddr, "filter", "no body mutation"},
		{"a rewritten body is an error when it should pass unchanged", tiergateAddr, "continue", "mutates the body"},
		{"an unchanged body is an error when a rewrite is expected", nullAddr, "rewrite", "no body mutation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rep, err := runRound(t, shortRound(tc.target, "--expect", tc.expect))
			var code exitCode
			if !errors.As(err, &code) || code != 1 {
				t.Errorf("run returned %v; want exit status 1", err)
			}
			if rep.Errors == 0 || rep.Transactions != 0 {
				t.Fatalf("errors %d, transactions %d; want every transaction an error", rep.Errors, rep.Transactions)
			}
			for kind := range rep.ErrorKinds {
				if !strings.Contains(kind, tc.kind) {
					t.Errorf("error kind %q; want %q", kind, tc.kind)
				}
			}
		})
	}
}

func TestTextReportNamesTheFigures(t *testing.T) {
	t.Parallel()
	addr, _ := startNull(t)
	var stdout, stderr syncbuf.Buffer
	args := []string{"extproc", "--target", addr, "--expect", "continue", "--streams", "2", "--conns", "1",
		"--warmup", "0s", "--duration", "100ms"}
	if err := run(t.Context(), args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s%s", err, stdout.Bytes(), stderr.Bytes())
	}
	out := string(stdout.Bytes())
	for _, want := range []string{"transactions", "errors        0", "latency", "p99"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestUnreachableTargetFailsAtOnce(t *testing.T) {
	t.Parallel()
	var stdout, stderr syncbuf.Buffer
	// Port 1 on loopback: nothing listens there, and the refusal is immediate.
	err := run(t.Context(), []string{"extproc", "--target", "127.0.0.1:1", "--duration", "100ms"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "cannot connect") {
		t.Errorf("run returned %v; want a connection error", err)
	}
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		code exitCode // 0: run succeeds
		want string   // in stdout or stderr
	}{
		{"no command prints usage", nil, 2, "usage: tiergate-load"},
		{"an unknown command is named", []string{"bench"}, 2, `unknown command "bench"`},
		{"help lists the subcommands", []string{"help"}, 0, "null-extproc"},
		{"a subcommand's -h lists its flags", []string{"extproc", "-h"}, 0, "-body-size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr syncbuf.Buffer
			err := run(t.Context(), tc.args, &stdout, &stderr)
			var code exitCode
			if errors.As(err, &code); code != tc.code || (tc.code == 0 && err != nil) {
				t.Errorf("run returned %v; want exit status %d", err, tc.code)
			}
			if out := string(stdout.Bytes()) + string(stderr.Bytes()); !strings.Contains(out, tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out)
			}
		})
	}
	for _, args := range [][]string{
		{"extproc", "--expect", "block"},
		{"extproc", "--streams", "0"},
		{"extproc", "--body-size", "10"},
		{"extproc", "stray"},
	} {
		var stdout, stderr syncbuf.Buffer
		if err := run(t.Context(), args, &stdout, &stderr); err == nil {
			t.Errorf("run %v succeeded; want a flag error", args)
		}
	}
}

// TestResponseHalfReachesTiergatesAccounting: with --response, every
// transaction also carries response_headers and a response_body with
// usage, tiergate answers both as Envoy needs, and its token counters move.
func TestResponseHalfReachesTiergatesAccounting(t *testing.T) {
	t.Parallel()
	addr, admin := startTiergate(t)
	rep, err := runRound(t, shortRound(addr, "--response"))
	if err != nil || rep.Transactions == 0 || rep.Errors != 0 {
		t.Fatalf("run: %v; transactions %d, errors %d %v; want some and none", err, rep.Transactions, rep.Errors, rep.ErrorExamples)
	}
	resp, err := http.Get(admin)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	// upstreamResponse reports 38 output tokens per response.
	re := regexp.MustCompile(`(?m)^tiergate_tokens_total\{[^}]*type="output"[^}]*\} (\S+)$`)
	m := re.FindSubmatch(metrics)
	if m == nil {
		t.Fatalf("no output token counter in tiergate's metrics:\n%s", metrics)
	}
	if n, _ := strconv.ParseFloat(string(m[1]), 64); n < float64(38*rep.Transactions) {
		t.Errorf("%v output tokens counted for %d responses of 38 each", n, rep.Transactions)
	}
}

func TestResponseHalfAgainstTheNullServerCompletesWithoutErrors(t *testing.T) {
	t.Parallel()
	addr, _ := startNull(t)
	rep, err := runRound(t, shortRound(addr, "--expect", "continue", "--response"))
	if err != nil || rep.Transactions == 0 || rep.Errors != 0 {
		t.Fatalf("run: %v; transactions %d, errors %d %v; want some and none", err, rep.Transactions, rep.Errors, rep.ErrorExamples)
	}
}

func TestResponseAnswerChecks(t *testing.T) {
	t.Parallel()
	headers := func(c *extprocv3.CommonResponse, mo *filterv3.ProcessingMode) *extprocv3.ProcessingResponse {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extprocv3.HeadersResponse{Response: c}}, ModeOverride: mo}
	}
	body := func(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{Response: c}}}
	}
	for _, tc := range []struct {
		name  string
		check func(*extprocv3.ProcessingResponse) error
		r     *extprocv3.ProcessingResponse
		ok    bool
	}{
		{"a plain CONTINUE to the response headers passes", checkResponseHeadersAnswer, headers(nil, nil), true},
		{"response headers answered as request headers fail", checkResponseHeadersAnswer, nullRequestHeaders, false},
		{"a mode override that drops the response body fails", checkResponseHeadersAnswer,
			headers(nil, &filterv3.ProcessingMode{ResponseBodyMode: filterv3.ProcessingMode_NONE}), false},
		{"a plain CONTINUE to the response body passes", checkResponseBodyAnswer, body(nil), true},
		{"a response body that is rewritten fails", checkResponseBodyAnswer, body(&extprocv3.CommonResponse{
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("{}")}}}), false},
		{"a response body answered by an immediate response fails", checkResponseBodyAnswer,
			&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := tc.check(tc.r); (err == nil) != tc.ok {
				t.Errorf("error %v, want ok %v", err, tc.ok)
			}
		})
	}
}
